"""k x k / stride k max-pool as a buffer-to-buffer pass, `cols` outputs per k*k reads.

For output row oy and columns ox0 .. ox0+cols-1 it reads k*cols consecutive inputs (k vectors)
from each of input rows k*oy .. k*oy+k-1, takes the vertical then the horizontal maximum, and
writes `cols` consecutive outputs. Works on the quantized integers (contract rule 6); the values
arrive sign-extended, so one comparison serves signed and unsigned layers. Floor semantics, as
ONNX: the last h % k rows and w % k columns are never read into an output. PoolUnit is its
engine unit (hw.engines).

A plan whose pools are all 2x2 gets the 2x2 engine alone (four reads, three held vectors); other
kernels (`PoolFeatures.kernels`, 2..MAX_KERNEL) get the general one: a running vertical maximum
per vector of the row, the horizontal maximum over k neighbours; with several kernels in the plan
the pass's kernel is one of its constants (`k_m2`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring

from hw.engines import EngineSignature, EngineUnit, LoweredLayer, refuse
from hw.memories import QUIET_LATENCY, READ_LATENCY, delay_line, done_when_quiet

POOL_FIELDS = ("c_m1", "oh_m1", "n_xt_m1", "in_w", "d_ch", "out_ow", "last_cols")
MAX_KERNEL = 8  # the largest k x k the general engine is generated for


@dataclass(frozen=True)
class PoolFeatures:
    """The kernels the plan's max-pools use (ascending); (2,) is the 2x2 engine alone."""

    kernels: tuple[int, ...] = (2,)

    def __post_init__(self):
        ks = self.kernels
        if not ks or list(ks) != sorted(set(ks)) or not all(2 <= k <= MAX_KERNEL for k in ks):
            raise ValueError(f"kernels must be ascending, distinct, 2..{MAX_KERNEL}, got {ks}")

    @property
    def general(self) -> bool:
        return self.kernels != (2,)


def pool_features(layers) -> PoolFeatures:
    """What the plan's max-pools need of the engine: their kernels."""
    return PoolFeatures(tuple(sorted({l.kernel for l in layers if l.kind == "maxpool"})) or (2,))


def pool_layout(addr_width: int, features: PoolFeatures = PoolFeatures()) -> data.StructLayout:
    """The pass's constants; a general engine's also `k_m2`, the kernel minus 2, which pool_config
    leaves out for k = 2 (a missing field is 0), so a pool's constants do not depend on its plan."""
    fields = {name: unsigned(addr_width) for name in POOL_FIELDS}
    if features.general:
        fields["k_m2"] = range(MAX_KERNEL - 1)
    return data.StructLayout(fields)


def pool_config(c: int, h: int, w: int, cols: int, k: int = 2) -> dict:
    """The constants of a k x k / k pool over (c, h, w)."""
    oh, ow = h // k, w // k
    n_xt = -(-ow // cols)
    cfg = {"c_m1": c - 1, "oh_m1": oh - 1, "n_xt_m1": n_xt - 1, "in_w": w,
           "d_ch": h * w - k * (oh - 1) * w, "out_ow": ow, "last_cols": ow - (n_xt - 1) * cols}
    return cfg if k == 2 else {**cfg, "k_m2": k - 2}


def vmax(a, b):
    return Mux(a > b, a, b)


class PoolEngine(wiring.Component):
    """One k x k/k max-pool layer per `start`, k*k reads per `cols` outputs; `done` one cycle
    after its last write. `features` says which kernels it runs."""

    TAG_STAGES = 1 + READ_LATENCY  # a read's tag meets its data: the address register, the buffer
    # the last read -> `done`: its tag and data, the vertical then the horizontal maxima registers
    # (the write), the first idle cycle, quiet()
    LATENCY = TAG_STAGES + 2 + 1 + QUIET_LATENCY

    def __init__(self, cols: int, addr_width: int, act_width: int, features: PoolFeatures = PoolFeatures()):
        if not 1 <= cols <= 16:
            raise ValueError(f"cols must be 1..16, got {cols}")
        self.cols, self.addr_width, self.act_width, self.features = cols, addr_width, act_width, features
        super().__init__(EngineSignature(addr_width, cols=cols, act_width=act_width,
                                         cfg=pool_layout(addr_width, features), reads=True, writes=True))

    def per_kernel(self, f):
        """f(k) for the pass's kernel k: f itself with one kernel, else a mux on `k_m2`."""
        ks = self.features.kernels
        return reduce(lambda v, k: Mux(self.cfg.k_m2 == k - 2, f(k), v), reversed(ks[:-1]), f(ks[-1]))

    def elaborate(self, platform):
        m = Module()
        aw = self.addr_width
        busy = Signal()
        ch, oy, xt = Signal(aw), Signal(aw), Signal(aw)
        row0, vec, out_row, out_vec = Signal(aw), Signal(aw), Signal(aw), Signal(aw)
        build = self._general if self.features.general else self._two
        tags, vtag, wvalid = build(m, busy, (ch, oy, xt, row0, vec, out_row, out_vec))

        done_when_quiet(m, self.start, self.done, [busy, *(t.valid for t in tags), vtag.valid, wvalid])
        return m

    def _next_tile(self, m, busy, regs, tile_step, row_step, starts):
        """After a tile's last read: the next column tile, output row or channel, or the end.
        `starts`: the registers that take the next tile's first address."""
        cfg, cols = self.cfg, self.cols
        ch, oy, xt, row0, vec, out_row, out_vec = regs
        with m.If(xt != cfg.n_xt_m1):
            m.d.sync += [xt.eq(xt + 1), *(s.eq(vec + tile_step) for s in starts), out_vec.eq(out_vec + cols)]
        with m.Else():
            step = Mux(oy == cfg.oh_m1, cfg.d_ch, row_step)
            m.d.sync += [xt.eq(0), row0.eq(row0 + step), *(s.eq(row0 + step) for s in starts),
                         out_row.eq(out_row + cfg.out_ow), out_vec.eq(out_row + cfg.out_ow)]
            with m.If(oy != cfg.oh_m1):
                m.d.sync += oy.eq(oy + 1)
            with m.Elif(ch != cfg.c_m1):
                m.d.sync += [oy.eq(0), ch.eq(ch + 1)]
            with m.Else():
                m.d.sync += busy.eq(0)

    @staticmethod
    def _last_tag(m, s1, at_last, tag):
        """The tag of a tile's last read, one cycle on: beside the vertical maxima."""
        vtag = Signal(tag)
        m.d.sync += vtag.eq(s1)
        m.d.sync += vtag.valid.eq(s1.valid & at_last)
        return vtag

    def _write(self, m, vtag, hmax):
        """The write register: output c is hmax(c), the horizontal maxima; returns its valid."""
        wvalid = Signal()
        m.d.sync += wvalid.eq(vtag.valid)
        with m.If(vtag.valid):
            m.d.sync += [self.wr.addr.eq(vtag.out_addr), self.wr.count.eq(vtag.ncols),
                         *(self.wr.data[c].eq(hmax(c)) for c in range(self.cols))]
        m.d.comb += self.wr.valid.eq(wvalid)
        return wvalid

    def _two(self, m, busy, regs):
        """2x2: four reads at fixed offsets; the first three held, combined with the fourth."""
        cfg, aw, cols = self.cfg, self.addr_width, self.cols
        xt, vec, out_vec = regs[2], regs[4], regs[6]
        ph = Signal(2)
        offsets = Array([0, cols, cfg.in_w, cfg.in_w + cols])
        m.d.sync += self.raddr.eq(vec + offsets[ph])  # a register: the read bus starts far away

        tag = data.StructLayout({"valid": 1, "ph": 2, "out_addr": unsigned(aw), "ncols": range(cols + 1)})
        s0 = Signal(tag)
        m.d.comb += [s0.valid.eq(busy), s0.ph.eq(ph), s0.out_addr.eq(out_vec),
                     s0.ncols.eq(Mux(xt == cfg.n_xt_m1, cfg.last_cols, cols))]
        tags = delay_line(m, s0, self.TAG_STAGES, "s")
        s1 = tags[-1]  # the read data's tag

        with m.If(self.start):
            m.d.sync += [busy.eq(1), ph.eq(0), *(s.eq(0) for s in regs)]
        with m.Elif(busy):
            m.d.sync += ph.eq(ph + 1)
            with m.If(ph == 3):
                self._next_tile(m, busy, regs, 2 * cols, 2 * cfg.in_w, [vec])

        # reads 0, 1: top row; 2, 3: bottom row. Keep the first three, combine with the fourth.
        held = [Signal(data.ArrayLayout(signed(self.act_width + 1), cols), name=f"held{i}") for i in range(3)]
        for i in range(3):
            with m.If(s1.valid & (s1.ph == i)):
                m.d.sync += held[i].eq(self.rdata)

        # the vertical maxima into registers, then the horizontal maxima into the write register
        wide = Signal(data.ArrayLayout(signed(self.act_width + 1), 2 * cols))
        vtag = self._last_tag(m, s1, s1.ph == 3, tag)
        with m.If(s1.valid & (s1.ph == 3)):
            m.d.sync += [*(wide[c].eq(vmax(held[0][c], held[2][c])) for c in range(cols)),
                         *(wide[cols + c].eq(vmax(held[1][c], self.rdata[c])) for c in range(cols))]
        return tags, vtag, self._write(m, vtag, lambda c: vmax(wide[2 * c], wide[2 * c + 1]))

    def _general(self, m, busy, regs):
        """k x k: reads (dy, j), vector j of input row dy, row by row; acc[j] keeps vector j's
        running vertical maximum, complete (every j) the cycle after the tile's last read."""
        cfg, aw, cols, kmax = self.cfg, self.addr_width, self.cols, self.features.kernels[-1]
        xt, vec, out_vec = regs[2], regs[4], regs[6]
        dy, j = Signal(range(kmax)), Signal(range(kmax))
        line = Signal(aw)  # the address of vector 0 of input row dy in the tile
        last_j = self.per_kernel(lambda k: k - 1)
        m.d.sync += self.raddr.eq(line + Array(i * cols for i in range(kmax))[j])  # a register, as in _two

        tag = data.StructLayout({"valid": 1, "top": 1, "last": 1, "j": range(kmax), "out_addr": unsigned(aw),
                                 "ncols": range(cols + 1)})
        s0 = Signal(tag)
        m.d.comb += [s0.valid.eq(busy), s0.top.eq(dy == 0), s0.last.eq((j == last_j) & (dy == last_j)), s0.j.eq(j),
                     s0.out_addr.eq(out_vec), s0.ncols.eq(Mux(xt == cfg.n_xt_m1, cfg.last_cols, cols))]
        tags = delay_line(m, s0, self.TAG_STAGES, "s")
        s1 = tags[-1]  # the read data's tag

        with m.If(self.start):
            m.d.sync += [busy.eq(1), dy.eq(0), j.eq(0), line.eq(0), *(s.eq(0) for s in regs)]
        with m.Elif(busy):
            with m.If(j != last_j):
                m.d.sync += j.eq(j + 1)
            with m.Elif(dy != last_j):
                m.d.sync += [j.eq(0), dy.eq(dy + 1), line.eq(line + cfg.in_w)]
            with m.Else():
                m.d.sync += [j.eq(0), dy.eq(0)]
                self._next_tile(m, busy, regs, self.per_kernel(lambda k: k * cols),
                                self.per_kernel(lambda k: k * cfg.in_w), [vec, line])

        acc = [Signal(data.ArrayLayout(signed(self.act_width + 1), cols), name=f"acc{i}") for i in range(kmax)]
        for i in range(kmax):
            with m.If(s1.valid & (s1.j == i)):
                m.d.sync += [acc[i][c].eq(Mux(s1.top, self.rdata[c], vmax(acc[i][c], self.rdata[c]))) for c in range(cols)]
        vtag = self._last_tag(m, s1, s1.last, tag)

        def tree(vals):
            return vals[0] if len(vals) == 1 else vmax(tree(vals[:len(vals) // 2]), tree(vals[len(vals) // 2:]))

        def hmax(c):  # output c: the maximum of the row's elements k*c .. k*c+k-1
            return self.per_kernel(lambda k: tree([acc[e // cols][e % cols] for e in range(k * c, k * c + k)]))

        return tags, vtag, self._write(m, vtag, hmax)


class PoolUnit(EngineUnit):
    """Max-pool layers (k x k, stride k, k = 2..MAX_KERNEL)."""

    kind = "pool"

    def runs(self, layer) -> bool:
        return layer.kind == "maxpool"

    def lower(self, i, layer, ctx) -> LoweredLayer:
        k = layer.kernel
        if layer.stride != k or not 2 <= k <= MAX_KERNEL:
            raise refuse(i, layer, f"max-pool {k}x{k} stride {layer.stride}: the pool engine makes k x k stride k "
                                   f"for k = 2..{MAX_KERNEL}; use one of those (a larger pool is two, e.g. 9 = 3 x 3)")
        (c, h, w), cols = layer.in_shape, ctx.config.cols
        cfg = pool_config(c, h, w, cols, k)
        top = (c - 1) * h * w + (k * cfg["oh_m1"] + k - 1) * w + (k * cfg["n_xt_m1"] + k - 1) * cols
        return LoweredLayer(cfg, 0, top)

    def latency(self, s) -> int:
        return PoolEngine.LATENCY

    def issue_cycles(self, p, s) -> int:
        """k * k reads per column tile."""
        c, k = p.cfg, s.plan.layers[p.layer].kernel
        return k * k * (c["c_m1"] + 1) * (c["oh_m1"] + 1) * (c["n_xt_m1"] + 1)

    def build(self, s) -> PoolEngine:
        return PoolEngine(s.config.cols, s.addr_width, s.act_width, pool_features(s.plan.layers))
