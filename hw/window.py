"""Window generator: walks a conv (or dense) layer's tiles and reduction steps as buffer addresses.

This plays the part of line buffers without storing a copy: the activation buffer is banked so
that the `cols` inputs of one reduction step, x[ci, y+ky, x0+kx .. x0+kx+cols-1], are `cols`
consecutive addresses, read in one cycle (memories.ActivationBuffer). Where line buffers keep k
rows of the input on chip and slide over them, here the whole input tensor already is on chip
(the ping-pong buffer), so the k x k x Cin patch is produced by address arithmetic alone:
`cols` patches side by side, one (ci, ky, kx) slice per cycle.

Zero padding (`WindowFeatures.pad`): the walk runs over the padded map, with addresses in the
unpadded buffer (modulo 2**addr_width, so a tap left of or above the map has a "negative"
address), and `taps` says which columns' taps lie inside the map; the engine zeroes the others.
Strides (sy, sx) (`WindowFeatures.max_stride` bounds sx): rows step by sy; along a row PE column
c computes output position x0 + c, reading input columns sx apart (the buffer's strided read,
memories.ActivationBuffer: rdata[c] is the element at raddr + c * sx). A strided read must stay
within one turn of the banks, so a tile holds `strided_cols(cols, sx)` = min(cols,
(banks - 1) // sx + 1) outputs (8 of 9 columns at sx = 2 on 16 banks) and the next tile starts sx
times that many input positions on.
Kernels kh x kw: non-square ones (`WindowFeatures.rect`) count kx to their own end, `kw_m1`.
Depthwise convs (`WindowFeatures.depthwise`, hw.depthwise) run with `dw` set: group og reads input
channel og (its base steps by `in_og_step`), and the tiles of its last output row hold `last_rows` rows.

Order: output-channel group og, output row y, column tile xt, then ci, ky, kx (the weight
memory's word order). A tile's `last` step is held back until the array's drain of the previous
tile is done (`tile_period` cycles between last steps, SystolicArray.tile_period), so reductions
shorter than that stall instead of overwriting.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from export.plan import pair
from hw.memories import banks_for

WINDOW_FIELDS = ("k_m1", "cin_m1", "d_ky", "d_ci", "w_base", "k_steps", "b_base", "n_og_m1", "oh_m1",
                 "n_xt_m1", "in_w", "out_ow", "out_ohow", "out_og_step", "last_cols", "last_rows")
STRIDE_FIELDS = ("stride_m1", "tile_step", "tile_cols")  # unsigned
RECT_FIELDS = ("kw_m1",)  # unsigned; without them k_m1 is the width too
DEPTHWISE_FIELDS = ("dw", "in_og_step")  # unsigned
PAD_FIELDS = ("a_base", "iy_base", "ix_base", "iy_step", "map_h", "map_w")  # signed


@dataclass(frozen=True)
class WindowFeatures:
    """What the generator makes beyond valid stride-1 square windows: zero padding, column strides
    1..max_stride (row strides need nothing), non-square kernels (`rect`), depthwise groups."""

    pad: bool = False
    max_stride: int = 1
    rect: bool = False
    depthwise: bool = False

    def __post_init__(self):
        if not 1 <= self.max_stride <= 16:
            raise ValueError(f"max_stride must be 1..16, got {self.max_stride}")


def window_layout(addr_width: int, features: WindowFeatures = WindowFeatures()) -> data.StructLayout:
    fields = {name: unsigned(addr_width) for name in WINDOW_FIELDS}
    if features.max_stride > 1:
        fields.update({name: unsigned(addr_width) for name in STRIDE_FIELDS})
    if features.pad:
        fields.update({name: signed(addr_width + 1) for name in PAD_FIELDS})
    if features.rect:
        fields.update({name: unsigned(addr_width) for name in RECT_FIELDS})
    if features.depthwise:
        fields.update({"dw": 1, "in_og_step": unsigned(addr_width)})
    return data.StructLayout(fields)


def strided_cols(cols: int, stride: int) -> int:
    """The outputs of one tile at column stride `stride`: the columns whose inputs, `stride`
    apart, lie within one turn of the activation buffer's banks (memories.banks_for)."""
    return cols if stride == 1 else min(cols, (banks_for(cols) - 1) // stride + 1)


def window_config(cin: int, h: int, w: int, k: int | tuple[int, int], cout: int, oh: int, ow: int, rows: int,
                  cols: int, w_base: int, b_base: int, *, stride: int | tuple[int, int] = 1,
                  pad: tuple[int, int, int, int] = (0, 0, 0, 0), features: WindowFeatures = WindowFeatures()) -> dict:
    """The constants of one layer (a conv over (cin, h, w) with a k = (kh, kw) kernel and strides
    (sy, sx), an int when square, zero-padded by (top, left, bottom, right); a dense layer is
    cin=in, h=w=k=1)."""
    (kh, kw), (sy, sx) = pair(k), pair(stride)
    # with one output column the stride steps only rows (in_w, iy_step), no stride hardware
    col_stride = 1 if ow == 1 else sx
    if col_stride > features.max_stride or (any(pad) and not features.pad) or (kh != kw and not features.rect):
        raise ValueError(f"kernel {kh}x{kw}, stride {sy}x{sx}, padding {list(pad)}: the generator makes {features}")
    tile_cols = strided_cols(cols, col_stride)
    n_og, n_xt = -(-cout // rows), -(-ow // tile_cols)
    cfg = {
        "k_m1": kh - 1, "cin_m1": cin - 1, "d_ky": w - kw + 1, "d_ci": h * w - (kh - 1) * w - (kw - 1),
        "w_base": w_base, "k_steps": cin * kh * kw, "b_base": b_base, "n_og_m1": n_og - 1, "oh_m1": oh - 1,
        "n_xt_m1": n_xt - 1, "in_w": sy * w, "out_ow": ow, "out_ohow": oh * ow, "out_og_step": rows * oh * ow,
        "last_cols": ow - (n_xt - 1) * tile_cols, "last_rows": cout - (n_og - 1) * rows,
    }
    if features.max_stride > 1:
        cfg.update({"stride_m1": col_stride - 1, "tile_step": col_stride * tile_cols, "tile_cols": tile_cols})
    if features.pad:
        cfg.update({"a_base": -pad[0] * w - pad[1], "iy_base": -pad[0], "ix_base": -pad[1], "iy_step": sy,
                    "map_h": h, "map_w": w})
    if features.rect:
        cfg["kw_m1"] = kw - 1
    if features.depthwise:
        cfg.update({"dw": 0, "in_og_step": 0})
    return cfg


class WindowGenerator(wiring.Component):
    """After `start`, one reduction step per cycle while `valid`: the activation vector address,
    weight word and bias word addresses, first/last of the tile, and the tile's output address
    (channel og*rows, row y, output column xt*ceil(cols/stride)) with its valid output columns
    and rows; with padding, `taps` bit c: column c's tap is inside the map. Two tiles' last steps
    are at least `tile_period` cycles apart. `busy` until the last step has been issued."""

    def __init__(self, rows: int, cols: int, addr_width: int, features: WindowFeatures = WindowFeatures(), *,
                 tile_period: int):
        if not (1 <= rows <= 16 and 1 <= cols <= 16):
            raise ValueError(f"rows and cols must be 1..16, got {rows}x{cols}")
        if tile_period < 1:
            raise ValueError(f"tile_period must be at least 1, got {tile_period}")
        self.rows, self.cols, self.addr_width, self.features = rows, cols, addr_width, features
        self.tile_period = tile_period
        super().__init__({
            "start": In(1),
            "cfg": In(window_layout(addr_width, features)),
            "busy": Out(1),
            "valid": Out(1),
            "act_addr": Out(addr_width),
            "w_addr": Out(addr_width),
            "b_addr": Out(addr_width),
            "first": Out(1),
            "last": Out(1),
            "out_addr": Out(addr_width),
            "ncols": Out(range(cols + 1)),
            "nrows": Out(range(rows + 1)),
            **({"taps": Out(cols)} if features.pad else {}),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, aw = self.cfg, self.addr_width
        kx, ky, ci, og, y, xt = (Signal(aw, name=n) for n in ("kx", "ky", "ci", "og", "y", "xt"))
        a, tile, row_base = Signal(aw), Signal(aw), Signal(aw)
        w_addr, w_tile, b_addr = Signal(aw), Signal(aw), Signal(aw)
        og_out, out_row, out_tile = Signal(aw), Signal(aw), Signal(aw)
        dw = self.features.depthwise
        og_in = Signal(aw)  # with depthwise: group og's input base, a_base + og * in_og_step
        cool = Signal(range(self.tile_period))
        # Each counter's "at its end" is a register set together with the counter (the compare
        # is made on the value being written), and so are first, last and cool != 0: the step
        # enable `valid` is then one LUT of registers. It fans out to every counter and tile tag;
        # comparing the counters against the layer constants in front of that net was the
        # design's critical path (11.2 ns on the ECP5, most of it routing).
        kx_end, ky_end, ci_end, xt_end, y_end, og_end = (
            Signal(name=f"{n}_end") for n in ("kx", "ky", "ci", "xt", "y", "og"))
        first, last, cooling = Signal(), Signal(), Signal()
        # the layer constants hold while busy; k1: the kernel is one tap, kw1: one column
        kw_m1 = cfg.kw_m1 if self.features.rect else cfg.k_m1
        kh1, cin1 = cfg.k_m1 == 0, cfg.cin_m1 == 0
        kw1 = kw_m1 == 0 if self.features.rect else kh1
        k1 = kh1 & kw1 if self.features.rect else kh1
        valid = self.busy & ~(last & cooling)
        strided, pad = self.features.max_stride > 1, self.features.pad
        tile_step, tile_cols = (cfg.tile_step, cfg.tile_cols) if strided else (self.cols, self.cols)
        a_base = cfg.a_base if pad else 0
        # with padding: the tap's input row and column 0's input column (signed), for `taps`
        iy_row, iy, ix_tile, ix = (Signal(signed(aw + 1), name=n) for n in ("iy_row", "iy", "ix_tile", "ix"))
        if pad:
            # column c's input column: ix + c * stride, the offset a register per column (the
            # constants are set a cycle before `start`)
            offs = list(range(self.cols))
            if strided:
                offs = [Signal(range(c * self.features.max_stride + 1), name=f"tap_off{c}") for c in range(self.cols)]
                m.d.sync += [o.eq(Array(c * s for s in range(1, self.features.max_stride + 1))[cfg.stride_m1])
                             for c, o in enumerate(offs)]
            m.d.comb += self.taps.eq(Cat(((iy >= 0) & (iy < cfg.map_h) & (ix + offs[c] >= 0) & (ix + offs[c] < cfg.map_w))
                                         for c in range(self.cols)))
        m.d.comb += [
            self.valid.eq(valid), self.first.eq(first), self.last.eq(last),
            self.act_addr.eq(a), self.w_addr.eq(w_addr), self.b_addr.eq(b_addr), self.out_addr.eq(out_tile),
            self.ncols.eq(Mux(xt_end, cfg.last_cols, tile_cols)),
            self.nrows.eq(Mux(Mux(cfg.dw, y_end, og_end) if dw else og_end, cfg.last_rows, self.rows)),
        ]
        with m.If(valid & last):
            m.d.sync += [cool.eq(self.tile_period - 1), cooling.eq(self.tile_period > 1)]
        with m.Elif(cooling):
            m.d.sync += [cool.eq(cool - 1), cooling.eq(cool != 1)]

        def tile_start():  # kx = ky = ci = 0: the first step of a tile
            return [kx.eq(0), ky.eq(0), ci.eq(0), kx_end.eq(kw1), ky_end.eq(kh1), ci_end.eq(cin1),
                    first.eq(1), last.eq(k1 & cin1)]

        def taps_at(row, col):  # the tap walk restarts at input row `row`, column `col`
            return [iy.eq(row), ix.eq(col)] if pad else []

        with m.If(self.start):
            m.d.sync += [
                self.busy.eq(1), cool.eq(0), cooling.eq(0), *tile_start(),
                *(s.eq(a_base if i in (3, 4, 5) else 0) for i, s in enumerate((og, y, xt, a, tile, row_base, og_out, out_row, out_tile))),
                xt_end.eq(cfg.n_xt_m1 == 0), y_end.eq(cfg.oh_m1 == 0), og_end.eq(cfg.n_og_m1 == 0),
                w_addr.eq(cfg.w_base), w_tile.eq(cfg.w_base), b_addr.eq(cfg.b_base),
            ]
            if dw:
                m.d.sync += og_in.eq(a_base)
            if pad:
                m.d.sync += [iy_row.eq(cfg.iy_base), ix_tile.eq(cfg.ix_base), *taps_at(cfg.iy_base, cfg.ix_base)]
        with m.Elif(valid & ~last):
            m.d.sync += [w_addr.eq(w_addr + 1), first.eq(0)]
            kx_at_end, ky_at_end, ci_at_end = kx + 1 == kw_m1, ky + 1 == cfg.k_m1, ci + 1 == cfg.cin_m1
            with m.If(~kx_end):
                m.d.sync += [kx.eq(kx + 1), a.eq(a + 1), kx_end.eq(kx_at_end), last.eq(kx_at_end & ky_end & ci_end),
                             *taps_at(iy, ix + 1)]
            with m.Elif(~ky_end):
                m.d.sync += [kx.eq(0), kx_end.eq(kw1), ky.eq(ky + 1), ky_end.eq(ky_at_end),
                             a.eq(a + cfg.d_ky), last.eq(kw1 & ky_at_end & ci_end), *taps_at(iy + 1, ix_tile)]
            with m.Else():
                m.d.sync += [kx.eq(0), ky.eq(0), kx_end.eq(kw1), ky_end.eq(kh1), ci.eq(ci + 1),
                             ci_end.eq(ci_at_end), a.eq(a + cfg.d_ci), last.eq(k1 & ci_at_end), *taps_at(iy_row, ix_tile)]
        with m.Elif(valid):  # the tile's last step: move to the next tile
            m.d.sync += [*tile_start(), w_addr.eq(w_tile)]
            with m.If(~xt_end):
                m.d.sync += [xt.eq(xt + 1), xt_end.eq(xt + 1 == cfg.n_xt_m1), tile.eq(tile + tile_step),
                             a.eq(tile + tile_step), out_tile.eq(out_tile + tile_cols)]
                if pad:
                    m.d.sync += [ix_tile.eq(ix_tile + tile_step), *taps_at(iy_row, ix_tile + tile_step)]
            with m.Elif(~y_end):
                m.d.sync += [xt.eq(0), xt_end.eq(cfg.n_xt_m1 == 0), y.eq(y + 1), y_end.eq(y + 1 == cfg.oh_m1),
                             row_base.eq(row_base + cfg.in_w), tile.eq(row_base + cfg.in_w),
                             a.eq(row_base + cfg.in_w), out_row.eq(out_row + cfg.out_ow),
                             out_tile.eq(out_row + cfg.out_ow)]
                if pad:
                    m.d.sync += [ix_tile.eq(cfg.ix_base), iy_row.eq(iy_row + cfg.iy_step),
                                 *taps_at(iy_row + cfg.iy_step, cfg.ix_base)]
            with m.Elif(~og_end):
                og_base = og_in + cfg.in_og_step if dw else a_base
                if dw:
                    m.d.sync += og_in.eq(og_base)
                m.d.sync += [xt.eq(0), xt_end.eq(cfg.n_xt_m1 == 0), y.eq(0), y_end.eq(cfg.oh_m1 == 0),
                             og.eq(og + 1), og_end.eq(og + 1 == cfg.n_og_m1),
                             row_base.eq(og_base), tile.eq(og_base), a.eq(og_base),
                             w_tile.eq(w_tile + cfg.k_steps), w_addr.eq(w_tile + cfg.k_steps),
                             b_addr.eq(b_addr + 1), og_out.eq(og_out + cfg.out_og_step),
                             out_row.eq(og_out + cfg.out_og_step), out_tile.eq(og_out + cfg.out_og_step)]
                if pad:
                    m.d.sync += [ix_tile.eq(cfg.ix_base), iy_row.eq(cfg.iy_base), *taps_at(cfg.iy_base, cfg.ix_base)]
            with m.Else():
                m.d.sync += self.busy.eq(0)
        return m
