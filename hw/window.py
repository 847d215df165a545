"""Window generator: walks a conv (or dense) layer's tiles and reduction steps as buffer addresses.

This plays the part of line buffers without storing a copy: the activation buffer is banked so
that the `cols` inputs of one reduction step, x[ci, y+ky, x0+kx .. x0+kx+cols-1], are `cols`
consecutive addresses, read in one cycle (memories.ActivationBuffer). Where line buffers keep k
rows of the input on chip and slide over them, here the whole input tensor already is on chip
(the ping-pong buffer), so the k x k x Cin patch is produced by address arithmetic alone:
`cols` patches side by side, one (ci, ky, kx) slice per cycle. Only stride 1 is produced.

Order: output-channel group og, output row y, column tile xt, then ci, ky, kx (the weight
memory's word order). A tile's `last` step is held back until the array's drain of the previous
tile is done (SystolicArray.tile_period = 2*rows - 1 cycles between last steps), so reductions
shorter than that stall instead of overwriting.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

WINDOW_FIELDS = ("k_m1", "cin_m1", "d_ky", "d_ci", "w_base", "k_steps", "b_base", "n_og_m1", "oh_m1",
                 "n_xt_m1", "in_w", "out_ow", "out_ohow", "out_og_step", "last_cols", "last_rows")


def window_layout(addr_width: int) -> data.StructLayout:
    return data.StructLayout({name: unsigned(addr_width) for name in WINDOW_FIELDS})


def window_config(cin: int, h: int, w: int, k: int, cout: int, oh: int, ow: int, rows: int, cols: int,
                  w_base: int, b_base: int) -> dict:
    """The constants of one layer (valid conv, stride 1; a dense layer is cin=in, h=w=k=1)."""
    n_og, n_xt = -(-cout // rows), -(-ow // cols)
    return {
        "k_m1": k - 1, "cin_m1": cin - 1, "d_ky": w - k + 1, "d_ci": h * w - (k - 1) * w - (k - 1),
        "w_base": w_base, "k_steps": cin * k * k, "b_base": b_base, "n_og_m1": n_og - 1, "oh_m1": oh - 1,
        "n_xt_m1": n_xt - 1, "in_w": w, "out_ow": ow, "out_ohow": oh * ow, "out_og_step": rows * oh * ow,
        "last_cols": ow - (n_xt - 1) * cols, "last_rows": cout - (n_og - 1) * rows,
    }


class WindowGenerator(wiring.Component):
    """After `start`, one reduction step per cycle while `valid`: the activation vector address,
    weight word and bias word addresses, first/last of the tile, and the tile's output address
    (channel og*rows, row y, column xt*cols) with its valid columns and rows. `busy` until the
    last step has been issued."""

    def __init__(self, rows: int, cols: int, addr_width: int):
        if not (1 <= rows <= 16 and 1 <= cols <= 16):
            raise ValueError(f"rows and cols must be 1..16, got {rows}x{cols}")
        self.rows, self.cols, self.addr_width = rows, cols, addr_width
        super().__init__({
            "start": In(1),
            "cfg": In(window_layout(addr_width)),
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
        })

    def elaborate(self, platform):
        m = Module()
        cfg, aw = self.cfg, self.addr_width
        kx, ky, ci, og, y, xt = (Signal(aw, name=n) for n in ("kx", "ky", "ci", "og", "y", "xt"))
        a, tile, row_base = Signal(aw), Signal(aw), Signal(aw)
        w_addr, w_tile, b_addr = Signal(aw), Signal(aw), Signal(aw)
        og_out, out_row, out_tile = Signal(aw), Signal(aw), Signal(aw)
        self.tile_period = 2 * self.rows - 1  # SystolicArray.tile_period
        cool = Signal(range(self.tile_period))
        # Each counter's "at its end" is a register set together with the counter (the compare
        # is made on the value being written), and so are first, last and cool != 0: the step
        # enable `valid` is then one LUT of registers. It fans out to every counter and tile tag;
        # comparing the counters against the layer constants in front of that net was the
        # design's critical path (11.2 ns on the ECP5, most of it routing).
        kx_end, ky_end, ci_end, xt_end, y_end, og_end = (
            Signal(name=f"{n}_end") for n in ("kx", "ky", "ci", "xt", "y", "og"))
        first, last, cooling = Signal(), Signal(), Signal()
        k1, cin1 = cfg.k_m1 == 0, cfg.cin_m1 == 0  # the layer constants hold while busy
        valid = self.busy & ~(last & cooling)
        m.d.comb += [
            self.valid.eq(valid), self.first.eq(first), self.last.eq(last),
            self.act_addr.eq(a), self.w_addr.eq(w_addr), self.b_addr.eq(b_addr), self.out_addr.eq(out_tile),
            self.ncols.eq(Mux(xt_end, cfg.last_cols, self.cols)),
            self.nrows.eq(Mux(og_end, cfg.last_rows, self.rows)),
        ]
        with m.If(valid & last):
            m.d.sync += [cool.eq(self.tile_period - 1), cooling.eq(self.tile_period > 1)]
        with m.Elif(cooling):
            m.d.sync += [cool.eq(cool - 1), cooling.eq(cool != 1)]

        def tile_start():  # kx = ky = ci = 0: the first step of a tile
            return [kx.eq(0), ky.eq(0), ci.eq(0), kx_end.eq(k1), ky_end.eq(k1), ci_end.eq(cin1),
                    first.eq(1), last.eq(k1 & cin1)]

        with m.If(self.start):
            m.d.sync += [
                self.busy.eq(1), cool.eq(0), cooling.eq(0), *tile_start(),
                *(s.eq(0) for s in (og, y, xt, a, tile, row_base, og_out, out_row, out_tile)),
                xt_end.eq(cfg.n_xt_m1 == 0), y_end.eq(cfg.oh_m1 == 0), og_end.eq(cfg.n_og_m1 == 0),
                w_addr.eq(cfg.w_base), w_tile.eq(cfg.w_base), b_addr.eq(cfg.b_base),
            ]
        with m.Elif(valid & ~last):
            m.d.sync += [w_addr.eq(w_addr + 1), first.eq(0)]
            kx_at_end, ky_at_end, ci_at_end = kx + 1 == cfg.k_m1, ky + 1 == cfg.k_m1, ci + 1 == cfg.cin_m1
            with m.If(~kx_end):
                m.d.sync += [kx.eq(kx + 1), a.eq(a + 1), kx_end.eq(kx_at_end), last.eq(kx_at_end & ky_end & ci_end)]
            with m.Elif(~ky_end):
                m.d.sync += [kx.eq(0), kx_end.eq(k1), ky.eq(ky + 1), ky_end.eq(ky_at_end),
                             a.eq(a + cfg.d_ky), last.eq(k1 & ky_at_end & ci_end)]
            with m.Else():
                m.d.sync += [kx.eq(0), ky.eq(0), kx_end.eq(k1), ky_end.eq(k1), ci.eq(ci + 1),
                             ci_end.eq(ci_at_end), a.eq(a + cfg.d_ci), last.eq(k1 & ci_at_end)]
        with m.Elif(valid):  # the tile's last step: move to the next tile
            m.d.sync += [*tile_start(), w_addr.eq(w_tile)]
            with m.If(~xt_end):
                m.d.sync += [xt.eq(xt + 1), xt_end.eq(xt + 1 == cfg.n_xt_m1), tile.eq(tile + self.cols),
                             a.eq(tile + self.cols), out_tile.eq(out_tile + self.cols)]
            with m.Elif(~y_end):
                m.d.sync += [xt.eq(0), xt_end.eq(cfg.n_xt_m1 == 0), y.eq(y + 1), y_end.eq(y + 1 == cfg.oh_m1),
                             row_base.eq(row_base + cfg.in_w), tile.eq(row_base + cfg.in_w),
                             a.eq(row_base + cfg.in_w), out_row.eq(out_row + cfg.out_ow),
                             out_tile.eq(out_row + cfg.out_ow)]
            with m.Elif(~og_end):
                m.d.sync += [xt.eq(0), xt_end.eq(cfg.n_xt_m1 == 0), y.eq(0), y_end.eq(cfg.oh_m1 == 0),
                             og.eq(og + 1), og_end.eq(og + 1 == cfg.n_og_m1),
                             row_base.eq(0), tile.eq(0), a.eq(0),
                             w_tile.eq(w_tile + cfg.k_steps), w_addr.eq(w_tile + cfg.k_steps),
                             b_addr.eq(b_addr + 1), og_out.eq(og_out + cfg.out_og_step),
                             out_row.eq(og_out + cfg.out_og_step), out_tile.eq(og_out + cfg.out_og_step)]
            with m.Else():
                m.d.sync += self.busy.eq(0)
        return m
