"""The PE array and the engine that runs conv and dense (NP) layers on it.

Output-stationary: PE(r, c) owns output channel og*rows + r at output column x0 + c of one output
row, and its sum stays in place for the whole reduction (Cin*k*k steps). Chosen over
weight-stationary because the reduction is long (27 and 250 for the paper model) while tiles are
many: each partial sum is written once, never re-read, and the weights need no preload phase.
Operands are broadcast (one weight word along a row, one activation vector down a column); at
16x16 the fan-out is 16, so no skew registers are needed. Finished sums shift out row by row
(each row one output channel, `cols` consecutive pixels = one vector write) through `cols`
requantizers while the next tile accumulates.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.memories import READ_LATENCY, delay_line, logit_layout, write_layout
from hw.pe import PE
from hw.requant import LATENCY, Requantizer, requant_layout
from hw.window import WindowGenerator, window_layout


@dataclass(frozen=True)
class ArrayConfig:
    """rows: output channels in parallel; cols: output pixels of one row in parallel."""

    rows: int = 10
    cols: int = 9

    def __post_init__(self):
        if not (isinstance(self.rows, int) and isinstance(self.cols, int) and 1 <= self.rows <= 16 and 1 <= self.cols <= 16):
            raise ValueError(f"array must be 1..16 x 1..16, got {self.rows}x{self.cols}")

    @classmethod
    def parse(cls, text: str) -> "ArrayConfig":
        """'10x9' -> ArrayConfig(10, 9)."""
        try:
            r, c = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"array must be written RxC, e.g. 10x9, got {text!r}") from None
        return cls(r, c)

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"


class SystolicArray(wiring.Component):
    """rows x cols PEs; operands and their `en/first/last/bias` arrive together and are summed
    two cycles later (the control waits one cycle for the PEs' product registers). `out[c]` is
    the shadow of PE(0, c); `shift` moves every row up by one."""

    def __init__(self, config: ArrayConfig, a_width: int, w_width: int, acc_width: int):
        self.config, self.a_width, self.w_width, self.acc_width = config, a_width, w_width, acc_width
        r, c = config.rows, config.cols
        super().__init__({
            "a": In(data.ArrayLayout(signed(a_width), c)),
            "w": In(data.ArrayLayout(signed(w_width), r)),
            "bias": In(data.ArrayLayout(signed(acc_width), r)),
            "en": In(1), "first": In(1), "last": In(1), "shift": In(1),
            "out": Out(data.ArrayLayout(signed(acc_width), c)),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.config.rows, self.config.cols
        pes = [[PE(self.a_width, self.w_width, self.acc_width) for _ in range(cols)] for _ in range(rows)]
        en, first, last = Signal(), Signal(), Signal()
        bias = Signal.like(self.bias)
        m.d.sync += [en.eq(self.en), first.eq(self.first), last.eq(self.last), bias.eq(self.bias)]
        for r in range(rows):
            for c in range(cols):
                pe = m.submodules[f"pe_{r}_{c}"] = pes[r][c]
                m.d.comb += [pe.a.eq(self.a[c]), pe.w.eq(self.w[r]), pe.bias.eq(bias[r]),
                             pe.en.eq(en), pe.first.eq(first), pe.last.eq(last), pe.shift.eq(self.shift)]
                if r + 1 < rows:
                    m.d.comb += pe.shadow_in.eq(pes[r + 1][c].shadow)
        m.d.comb += [self.out[c].eq(pes[0][c].shadow) for c in range(cols)]
        return m


def array_pass_layout(addr_width: int, acc_width: int, act_width: int) -> data.StructLayout:
    return data.StructLayout({
        "win": window_layout(addr_width),
        "rq": requant_layout(acc_width, act_width),
        "logits": 1,  # the last layer: raw accumulators of column 0 go to the logits memory
    })


class ArrayEngine(wiring.Component):
    """Runs one conv / dense layer per `start` on the array, `done` one cycle after its last write.

    Pipeline: issue addresses (window generator) -> memories answer -> operand registers ->
    products -> accumulate; at a tile's last step the sums move to the shadows, then drain one
    output channel per cycle through the requantizers into `wr` (or, for the logits layer,
    column 0 into `logit`).
    Weight words hold `rows` weights (one reduction step of one channel group), bias words
    `rows` biases; both memories are initialised from the plan.
    """

    def __init__(self, config: ArrayConfig, addr_width: int, act_width: int, w_width: int, acc_width: int,
                 weight_words: list[int], bias_words: list[int]):
        self.config, self.addr_width = config, addr_width
        self.act_width, self.w_width, self.acc_width = act_width, w_width, acc_width
        self.weight_words, self.bias_words = weight_words or [0], bias_words or [0]
        super().__init__({
            "start": In(1),
            "cfg": In(array_pass_layout(addr_width, acc_width, act_width)),
            "raddr": Out(addr_width),
            "rdata": In(data.ArrayLayout(signed(act_width + 1), config.cols)),
            "wr": Out(write_layout(addr_width, config.cols, act_width)),
            "logit": Out(logit_layout(addr_width, acc_width)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.config.rows, self.config.cols
        aw, ww, accw = self.addr_width, self.w_width, self.acc_width
        gen = m.submodules.gen = WindowGenerator(rows, cols, aw)
        arr = m.submodules.array = SystolicArray(self.config, self.act_width + 1, ww, accw)
        wmem = m.submodules.weights = Memory(shape=unsigned(rows * ww), depth=len(self.weight_words), init=self.weight_words)
        bmem = m.submodules.biases = Memory(shape=unsigned(rows * accw), depth=len(self.bias_words), init=self.bias_words)
        wrd, brd = wmem.read_port(), bmem.read_port()
        m.d.comb += [gen.start.eq(self.start), gen.cfg.eq(self.cfg.win),
                     self.raddr.eq(gen.act_addr), wrd.addr.eq(gen.w_addr), brd.addr.eq(gen.b_addr)]

        tile = data.StructLayout({"valid": 1, "first": 1, "last": 1, "out_addr": unsigned(aw),
                                  "ncols": range(cols + 1), "nrows": range(rows + 1)})
        # s1: weights / biases answer, then wait in registers beside the activations.
        # s[READ_LATENCY]: activations answer; operands registered.  Next: the array's products;
        # then accumulate (and capture at a tile's last step).
        s0 = Signal(tile)
        m.d.comb += [s0.valid.eq(gen.valid), s0.first.eq(gen.first), s0.last.eq(gen.last),
                     s0.out_addr.eq(gen.out_addr), s0.ncols.eq(gen.ncols), s0.nrows.eq(gen.nrows)]
        stages = delay_line(m, s0, READ_LATENCY + 2, "s")
        s_prod, s_acc = stages[-2], stages[-1]
        wq = delay_line(m, wrd.data, READ_LATENCY - 1, "wq")[-1]
        bq = delay_line(m, brd.data, READ_LATENCY - 1, "bq")[-1]
        m.d.sync += [arr.a.eq(self.rdata),
                     *(arr.w[r].eq(wq[r * ww:(r + 1) * ww].as_signed()) for r in range(rows)),
                     *(arr.bias[r].eq(bq[r * accw:(r + 1) * accw].as_signed()) for r in range(rows))]
        m.d.comb += [arr.en.eq(s_prod.valid), arr.first.eq(s_prod.first), arr.last.eq(s_prod.last)]

        # drain: one output channel (array row) per cycle through the requantizers
        left, addr, ncols = Signal(range(rows + 1)), Signal(aw), Signal(range(cols + 1))
        drain = Signal(data.StructLayout({"valid": 1, "addr": unsigned(aw), "count": range(cols + 1)}))
        m.d.comb += [arr.shift.eq(left != 0), drain.valid.eq(left != 0), drain.addr.eq(addr), drain.count.eq(ncols)]
        qs = []
        for c in range(cols):
            rq = m.submodules[f"rq{c}"] = Requantizer(accw, self.act_width)
            m.d.comb += [rq.acc.eq(arr.out[c]), rq.cfg.eq(self.cfg.rq)]
            qs.append(rq)
        with m.If(left != 0):
            m.d.sync += [left.eq(left - 1), addr.eq(addr + self.cfg.win.out_ohow)]
        with m.If(s_acc.valid & s_acc.last):
            m.d.sync += [left.eq(s_acc.nrows), addr.eq(s_acc.out_addr), ncols.eq(s_acc.ncols)]
        tags = delay_line(m, drain, LATENCY, "drain")
        out = tags[-1]
        m.d.comb += [self.wr.valid.eq(out.valid & ~self.cfg.logits), self.wr.addr.eq(out.addr),
                     self.wr.count.eq(out.count), *(self.wr.data[c].eq(qs[c].q) for c in range(cols)),
                     self.logit.valid.eq(out.valid & self.cfg.logits), self.logit.addr.eq(out.addr),
                     self.logit.data.eq(qs[0].raw)]

        running = Signal()
        with m.If(self.start):
            m.d.sync += running.eq(1)
        with m.Elif(running & ~gen.busy & ~Cat(s.valid for s in stages).any() & (left == 0)
                    & ~Cat(t.valid for t in tags).any()):
            m.d.sync += running.eq(0)
            m.d.comb += self.done.eq(1)
        return m
