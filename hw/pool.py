"""2x2 / stride 2 max-pool as a buffer-to-buffer pass, `cols` outputs per four reads.

For output row oy and columns ox0 .. ox0+cols-1 it reads 2*cols consecutive inputs from each of
input rows 2*oy and 2*oy+1 (four vector reads), takes the vertical then the horizontal maximum,
and writes `cols` consecutive outputs. Works on the quantized integers (contract rule 6); the
values arrive sign-extended, so one comparison serves signed and unsigned layers. PoolUnit is its
engine unit (hw.engines).
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring

from hw.engines import EngineSignature, EngineUnit, Lowered, refuse
from hw.memories import QUIET_LATENCY, READ_LATENCY, delay_line, quiet

POOL_FIELDS = ("c_m1", "oh_m1", "n_xt_m1", "in_w", "d_ch", "out_ow", "last_cols")


def pool_layout(addr_width: int) -> data.StructLayout:
    return data.StructLayout({name: unsigned(addr_width) for name in POOL_FIELDS})


def pool_config(c: int, h: int, w: int, cols: int) -> dict:
    oh, ow = h // 2, w // 2
    n_xt = -(-ow // cols)
    return {"c_m1": c - 1, "oh_m1": oh - 1, "n_xt_m1": n_xt - 1, "in_w": w,
            "d_ch": h * w - 2 * (oh - 1) * w, "out_ow": ow, "last_cols": ow - (n_xt - 1) * cols}


class PoolEngine(wiring.Component):
    """One 2x2/2 max-pool layer per `start`, four reads per `cols` outputs; `done` one cycle
    after its last write."""

    TAG_STAGES = 1 + READ_LATENCY  # a read's tag meets its data: the address register, the buffer
    # the last read -> `done`: its tag and data, the vertical then the horizontal maxima registers
    # (the write), the first idle cycle, quiet()
    LATENCY = TAG_STAGES + 2 + 1 + QUIET_LATENCY

    def __init__(self, cols: int, addr_width: int, act_width: int):
        if not 1 <= cols <= 16:
            raise ValueError(f"cols must be 1..16, got {cols}")
        self.cols, self.addr_width, self.act_width = cols, addr_width, act_width
        super().__init__(EngineSignature(addr_width, cols=cols, act_width=act_width, cfg=pool_layout(addr_width),
                                         reads=True, writes=True))

    def elaborate(self, platform):
        m = Module()
        cfg, aw, cols = self.cfg, self.addr_width, self.cols
        busy = Signal()
        ph = Signal(2)
        ch, oy, xt = Signal(aw), Signal(aw), Signal(aw)
        row0, vec, out_row, out_vec = Signal(aw), Signal(aw), Signal(aw), Signal(aw)
        offsets = Array([0, cols, cfg.in_w, cfg.in_w + cols])
        m.d.sync += self.raddr.eq(vec + offsets[ph])  # a register: the read bus starts far away

        tag = data.StructLayout({"valid": 1, "ph": 2, "out_addr": unsigned(aw), "ncols": range(cols + 1)})
        s0 = Signal(tag)
        m.d.comb += [s0.valid.eq(busy), s0.ph.eq(ph), s0.out_addr.eq(out_vec),
                     s0.ncols.eq(Mux(xt == cfg.n_xt_m1, cfg.last_cols, cols))]
        tags = delay_line(m, s0, self.TAG_STAGES, "s")
        s1 = tags[-1]  # the read data's tag

        with m.If(self.start):
            m.d.sync += [busy.eq(1), ph.eq(0), *(s.eq(0) for s in (ch, oy, xt, row0, vec, out_row, out_vec))]
        with m.Elif(busy):
            m.d.sync += ph.eq(ph + 1)
            with m.If(ph == 3):
                with m.If(xt != cfg.n_xt_m1):
                    m.d.sync += [xt.eq(xt + 1), vec.eq(vec + 2 * cols), out_vec.eq(out_vec + cols)]
                with m.Else():
                    step = Mux(oy == cfg.oh_m1, cfg.d_ch, 2 * cfg.in_w)
                    m.d.sync += [xt.eq(0), row0.eq(row0 + step), vec.eq(row0 + step),
                                 out_row.eq(out_row + cfg.out_ow), out_vec.eq(out_row + cfg.out_ow)]
                    with m.If(oy != cfg.oh_m1):
                        m.d.sync += oy.eq(oy + 1)
                    with m.Elif(ch != cfg.c_m1):
                        m.d.sync += [oy.eq(0), ch.eq(ch + 1)]
                    with m.Else():
                        m.d.sync += busy.eq(0)

        # reads 0, 1: top row; 2, 3: bottom row. Keep the first three, combine with the fourth.
        held = [Signal(data.ArrayLayout(signed(self.act_width + 1), cols), name=f"held{i}") for i in range(3)]
        for i in range(3):
            with m.If(s1.valid & (s1.ph == i)):
                m.d.sync += held[i].eq(self.rdata)

        def vmax(a, b):
            return Mux(a > b, a, b)

        # the vertical maxima into registers, then the horizontal maxima into the write register
        wide = Signal(data.ArrayLayout(signed(self.act_width + 1), 2 * cols))
        vtag = Signal(tag)
        m.d.sync += vtag.eq(s1)
        m.d.sync += vtag.valid.eq(s1.valid & (s1.ph == 3))
        with m.If(s1.valid & (s1.ph == 3)):
            m.d.sync += [*(wide[c].eq(vmax(held[0][c], held[2][c])) for c in range(cols)),
                         *(wide[cols + c].eq(vmax(held[1][c], self.rdata[c])) for c in range(cols))]
        wvalid = Signal()
        m.d.sync += wvalid.eq(vtag.valid)
        with m.If(vtag.valid):
            m.d.sync += [self.wr.addr.eq(vtag.out_addr), self.wr.count.eq(vtag.ncols),
                         *(self.wr.data[c].eq(vmax(wide[2 * c], wide[2 * c + 1])) for c in range(cols))]
        m.d.comb += self.wr.valid.eq(wvalid)

        running = Signal()
        idle = quiet(m, self.start, [busy, *(t.valid for t in tags), vtag.valid, wvalid])
        with m.If(self.start):
            m.d.sync += running.eq(1)
        with m.Elif(running & idle):
            m.d.sync += running.eq(0)
            m.d.comb += self.done.eq(1)
        return m


class PoolUnit(EngineUnit):
    """Max-pool layers (2x2, stride 2)."""

    kind = "pool"

    def runs(self, layer) -> bool:
        return layer.kind == "maxpool"

    def lower(self, i, layer, ctx) -> Lowered:
        if layer.kernel != 2 or layer.stride != 2:
            raise refuse(i, layer, f"max-pool {layer.kernel}x{layer.kernel} stride {layer.stride}: only 2x2 stride 2 is generated")
        (c, h, w), cols = layer.in_shape, ctx.config.cols
        cfg = pool_config(c, h, w, cols)
        top = (c - 1) * h * w + (2 * cfg["oh_m1"] + 1) * w + (2 * cfg["n_xt_m1"] + 1) * cols
        return Lowered(cfg, 0, top)

    def latency(self, s) -> int:
        return PoolEngine.LATENCY

    def issue_cycles(self, p, s) -> int:
        c = p.cfg
        return 4 * (c["c_m1"] + 1) * (c["oh_m1"] + 1) * (c["n_xt_m1"] + 1)

    def build(self, s) -> PoolEngine:
        return PoolEngine(s.config.cols, s.addr_width, s.act_width)
