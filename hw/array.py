"""The PE array and the engine that runs conv and dense (NP) layers on it.

Output-stationary: PE(r, c) owns output channel og*rows + r at output column x0 + c of one output
row, and its sum stays in place for the whole reduction (Cin*k*k steps). Chosen over
weight-stationary because the reduction is long (27 and 250 for the paper model) while tiles are
many: each partial sum is written once, never re-read, and the weights need no preload phase.
Operands move systolically: an activation vector enters the top row skewed by one cycle per
column and moves down, a weight word enters the left column skewed by one cycle per row and
moves right, so PE(r, c) sees step s at cycle s + r + c and every operand net drives one PE and
one register (a broadcast drove 9-10 multipliers from one register and limited Fmax on the ECP5
to 71 MHz). Finished sums shift out row by row (each row one output channel, `cols` consecutive
pixels = one vector write) through `cols` requantizers while the next tile accumulates; the drain
is skewed like the operands and de-skewed at the array's output, so outside the array everything
is aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.memories import READ_LATENCY, ROM_LATENCY, delay_line, delayed, logit_layout, quiet, rom, write_layout
from hw.pe import PE
from hw.requant import LATENCY, Requantizer, requant_layout, shift_layout
from hw.window import WindowFeatures, WindowGenerator, window_layout


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
    """rows x cols PEs with aligned inputs and outputs; the skew lives inside.

    Operands `a`, `w` arrive in one cycle and their `en/first/last/nrows` in the same cycle (they
    are delayed ACC_DELAY - 1 cycles inside to meet the products); rows from `nrows` on (the padding of the
    last channel group) stay idle. Sums start from 0 (the engine adds the bias). PE(0, 0) takes
    the sum of operands presented in cycle t at the end of cycle t + `ACC_DELAY`; PE(r, c) r + c
    cycles later. Drain: `shift` may be raised `drain_wait` cycles after PE(0, 0) took its sum
    (all rows have taken theirs by then), once per output channel, with the tile's `drain_rows`;
    `out[c]` is the shadow of PE(0, c) as the shift asserted `out_delay` cycles earlier found it,
    and every shift moves rows 0 .. drain_rows - 1 of each column up by one.
    Every row has its own control and shift registers, each driving one PE: the same signal
    shared along an anti-diagonal (yosys merges identical registers) drove ~420 loads.
    Two tiles' last steps must be `tile_period` cycles apart, so the drain (rows - 1 cycles of
    wait, then up to `rows` shifts) ends before the next tile's sums arrive."""

    ACC_DELAY = 3

    def __init__(self, config: ArrayConfig, a_width: int, w_width: int, acc_width: int):
        self.config, self.a_width, self.w_width, self.acc_width = config, a_width, w_width, acc_width
        r, c = config.rows, config.cols
        self.drain_wait, self.out_delay, self.tile_period = r, c - 1, 2 * r - 1
        super().__init__({
            "a": In(data.ArrayLayout(signed(a_width), c)),
            "w": In(data.ArrayLayout(signed(w_width), r)),
            "en": In(1), "first": In(1), "last": In(1), "nrows": In(range(r + 1)),
            "shift": In(1), "drain_rows": In(range(r + 1)),
            "out": Out(data.ArrayLayout(signed(acc_width), c)),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.config.rows, self.config.cols
        pes = [[PE(self.a_width, self.w_width, self.acc_width) for _ in range(cols)] for _ in range(rows)]

        def skewed(value, cycles, name, reset_less=True):
            return delayed(m, value, cycles, name, reset_less=reset_less)

        ctrl = data.StructLayout({"en": 1, "first": 1, "last": 1})
        for r in range(rows):
            w_in = skewed(self.w[r], r, f"w_r{r}")
            ctrl_in = Signal(ctrl, name=f"ctrl_in{r}")
            live = self.nrows > r
            m.d.comb += [ctrl_in.en.eq(self.en & live), ctrl_in.first.eq(self.first), ctrl_in.last.eq(self.last & live)]
            c_in = skewed(ctrl_in, r + self.ACC_DELAY - 1, f"ctrl_r{r}", reset_less=False)
            shift_in = Signal(name=f"shift_in{r}")
            m.d.comb += shift_in.eq(self.shift & (self.drain_rows > r))
            shift = [skewed(shift_in, c, f"shift_r{r}_c{c}", reset_less=False) for c in range(cols)]
            for c in range(cols):
                pe = m.submodules[f"pe_{r}_{c}"] = pes[r][c]
                if r == 0:
                    m.d.comb += pe.a.eq(skewed(self.a[c], c, f"a_c{c}"))
                else:
                    m.d.comb += pe.a.eq(pes[r - 1][c].a_out)
                if c == 0:
                    m.d.comb += [pe.w.eq(w_in), pe.en.eq(c_in.en),
                                 pe.first.eq(c_in.first), pe.last.eq(c_in.last)]
                else:
                    left = pes[r][c - 1]
                    m.d.comb += [pe.w.eq(left.w_out), pe.en.eq(left.en_out),
                                 pe.first.eq(left.first_out), pe.last.eq(left.last_out)]
                m.d.comb += pe.shift.eq(shift[c])  # row r's own shift register for column c
                if r + 1 < rows:
                    m.d.comb += pe.shadow_in.eq(pes[r + 1][c].shadow)
        m.d.comb += [self.out[c].eq(skewed(pes[0][c].shadow, cols - 1 - c, f"out_c{c}")) for c in range(cols)]
        return m


def array_pass_layout(addr_width: int, acc_width: int, act_width: int, window: WindowFeatures = WindowFeatures(),
                      per_channel: bool = False) -> data.StructLayout:
    return data.StructLayout({
        "win": window_layout(addr_width, window),
        "rq": requant_layout(acc_width, act_width, per_channel),
        "logits": 1,  # the last layer: raw accumulators of column 0 go to the logits memory
    })


class ArrayEngine(wiring.Component):
    """Runs one conv / dense layer per `start` on the array, `done` one cycle after its last write.

    Pipeline: issue addresses (window generator) -> memories answer -> operand registers ->
    products -> accumulate; at a tile's last step the sums move to the shadows, then drain one
    output channel per cycle through the requantizers into `wr` (or, for the logits layer,
    column 0 into `logit`).
    Weight words hold `rows` weights (one reduction step of one channel group), bias words
    `rows` biases; both memories are initialised from the plan. A tile's bias word is read when
    its drain starts and shifts along with it, one bias per drained row, added in front of the
    requantizers. With `shift_words` (per-channel requantization) a word of `rows` shift_layout
    entries beside each bias word travels the same way. Taps outside the map (`window.pad`) are
    zeroed in front of the operand registers; with strides, output j of a tile is column j*stride.
    """

    def __init__(self, config: ArrayConfig, addr_width: int, act_width: int, w_width: int, acc_width: int,
                 weight_words: list[int], bias_words: list[int], *, window: WindowFeatures = WindowFeatures(),
                 shift_words: list[int] | None = None):
        self.config, self.addr_width, self.window = config, addr_width, window
        self.act_width, self.w_width, self.acc_width = act_width, w_width, acc_width
        self.weight_words, self.bias_words, self.shift_words = weight_words or [0], bias_words or [0], shift_words
        super().__init__({
            "start": In(1),
            "cfg": In(array_pass_layout(addr_width, acc_width, act_width, window, bool(shift_words))),
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
        gen = m.submodules.gen = WindowGenerator(rows, cols, aw, self.window)
        arr = m.submodules.array = SystolicArray(self.config, self.act_width + 1, ww, accw)
        # The generator's outputs go through plain registers first (addresses and tile tags alike):
        # its counters then only feed logic beside them, so the placer keeps them together. When
        # the tag delay line pulled a tile counter across the chip, the step enable's trip to its
        # clock enable became the critical path (11.2 ns, 9.7 ns routing).
        w_addr, act_addr = Signal(aw, name="w_addr_q"), Signal(aw, name="act_addr_q")
        m.d.sync += [w_addr.eq(gen.w_addr), act_addr.eq(gen.act_addr)]
        wdata = rom(m, "weights", rows * ww, self.weight_words, w_addr)
        m.d.comb += [gen.start.eq(self.start), gen.cfg.eq(self.cfg.win), self.raddr.eq(act_addr)]

        tile = data.StructLayout({"valid": 1, "first": 1, "last": 1, "out_addr": unsigned(aw), "b_addr": unsigned(aw),
                                  "ncols": range(cols + 1), "nrows": range(rows + 1)})
        # s[0]: the output registers; s[ROM_LATENCY]: the weights answer, then wait in registers
        # beside the activations. s[READ_LATENCY + 1]: activations answer; operands registered
        # (the array's inputs). The array takes the sums ACC_DELAY cycles later, and the drain may
        # start drain_wait after that.
        s0 = Signal(tile)
        m.d.comb += [s0.valid.eq(gen.valid), s0.first.eq(gen.first), s0.last.eq(gen.last),
                     s0.out_addr.eq(gen.out_addr), s0.b_addr.eq(gen.b_addr), s0.ncols.eq(gen.ncols), s0.nrows.eq(gen.nrows)]
        stages = delay_line(m, s0, 1 + READ_LATENCY + arr.ACC_DELAY + arr.drain_wait, "s")
        s_ops, s_drain = stages[1 + READ_LATENCY], stages[-1]
        assert READ_LATENCY > ROM_LATENCY
        wq = delay_line(m, wdata, READ_LATENCY - ROM_LATENCY, "wq", reset_less=True)[-1]
        if self.window.pad:  # the generator's taps, beside the read data
            taps = delayed(m, gen.taps, 1 + READ_LATENCY, "taps")
            m.d.sync += [arr.a[c].eq(Mux(taps[c], self.rdata[c], 0)) for c in range(cols)]
        else:
            m.d.sync += arr.a.eq(self.rdata)
        m.d.sync += [arr.w[r].eq(wq[r * ww:(r + 1) * ww].as_signed()) for r in range(rows)]
        m.d.comb += [arr.en.eq(s_ops.valid), arr.first.eq(s_ops.first), arr.last.eq(s_ops.last), arr.nrows.eq(s_ops.nrows)]

        # drain: one output channel (array row) per cycle through the requantizers
        left, addr, ncols = Signal(range(rows + 1)), Signal(aw), Signal(range(cols + 1))
        drain_rows = Signal(range(rows + 1))
        drain = Signal(data.StructLayout({"valid": 1, "addr": unsigned(aw), "count": range(cols + 1)}))
        m.d.comb += [arr.shift.eq(left != 0), arr.drain_rows.eq(drain_rows), drain.valid.eq(left != 0), drain.addr.eq(addr), drain.count.eq(ncols)]
        # the tile's bias word answers as its drain starts; row j's bias is at the bottom in
        # drain cycle j, and meets the de-skewed sums out_delay cycles later
        bdata = rom(m, "biases", rows * accw, self.bias_words, stages[-1 - ROM_LATENCY].b_addr)
        biases = Signal(rows * accw, reset_less=True)
        bias = delayed(m, biases[:accw].as_signed(), arr.out_delay, "bias", reset_less=True)
        per_channel = bool(self.shift_words)
        if per_channel:  # the tile's shift word, alongside the bias word
            sw = shift_layout(accw).size
            sdata = rom(m, "shifts", rows * sw, self.shift_words, stages[-1 - ROM_LATENCY].b_addr)
            shifts = Signal(rows * sw, reset_less=True)
            shift = delayed(m, shifts[:sw], arr.out_delay, "shift", reset_less=True)
        qs = []
        for c in range(cols):
            rq = m.submodules[f"rq{c}"] = Requantizer(accw, self.act_width, per_channel)
            m.d.comb += [rq.acc.eq(arr.out[c] + bias), rq.cfg.eq(self.cfg.rq)]
            if per_channel:
                m.d.comb += rq.shift.eq(shift)
            qs.append(rq)
        with m.If(left != 0):
            m.d.sync += [left.eq(left - 1), addr.eq(addr + self.cfg.win.out_ohow), biases.eq(biases >> accw)]
            if per_channel:
                m.d.sync += shifts.eq(shifts >> sw)
        with m.If(s_drain.valid & s_drain.last):
            m.d.sync += [left.eq(s_drain.nrows), drain_rows.eq(s_drain.nrows), addr.eq(s_drain.out_addr),
                         ncols.eq(s_drain.ncols), biases.eq(bdata)]
            if per_channel:
                m.d.sync += shifts.eq(sdata)
        tags = delay_line(m, drain, LATENCY + arr.out_delay, "drain")
        out = tags[-1]
        # output j of the tile: column j * stride
        strides = range(1, self.window.max_stride + 1)
        outputs = [qs[c].q if self.window.max_stride == 1 else
                   Array([qs[c * s].q if c * s < cols else 0 for s in strides])[self.cfg.win.stride_m1]
                   for c in range(cols)]
        m.d.comb += [self.wr.valid.eq(out.valid & ~self.cfg.logits), self.wr.addr.eq(out.addr),
                     self.wr.count.eq(out.count), *(self.wr.data[c].eq(outputs[c]) for c in range(cols)),
                     self.logit.valid.eq(out.valid & self.cfg.logits), self.logit.addr.eq(out.addr),
                     self.logit.data.eq(qs[0].raw)]

        running = Signal()
        idle = quiet(m, self.start, [gen.busy, left != 0, *(s.valid for s in stages), *(t.valid for t in tags)])
        with m.If(self.start):
            m.d.sync += running.eq(1)
        with m.Elif(running & idle):
            m.d.sync += running.eq(0)
            m.d.comb += self.done.eq(1)
        return m
