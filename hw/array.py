"""The PE array and the engine that runs conv and dense (NP) layers on it.

Output-stationary: PE(r, c) owns output channel og*rows + r at output column x0 + c of one output
row, and its sum stays in place for the whole reduction (Cin*k*k steps). Chosen over
weight-stationary because the reduction is long (27 and 250 for the paper model) while tiles are
many: each partial sum is written once, never re-read, and the weights need no preload phase.
Operands move systolically: an activation vector enters the top row skewed by one cycle per
column and moves down, a weight word enters the left column skewed by one cycle per row and
moves right, so PE(r, c) sees step s at cycle s + r + c and every operand net drives one PE and
one register. Finished sums shift out row by row (each row one output channel, `cols` consecutive
pixels = one vector write) through `cols` requantizers while the next tile accumulates; the drain
is skewed like the operands and de-skewed at the array's output, so outside the array everything
is aligned. ArrayUnit is the engine unit (hw.engines): conv, dense and average-pool layers.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from export.plan import IntType, Layer, pair
from hw.config import ArrayConfig
from hw.depthwise import as_dense_groups, as_row_conv, depthwise_window, is_depthwise
from hw.engines import EngineSignature, EngineUnit, LoweredLayer, refuse
from hw.memories import QUIET_LATENCY, READ_LATENCY, ROM_LATENCY, delay_line, delayed, done_when_quiet, rom
from hw.pe import PE
from hw.requant import LATENCY, Requantizer, mult_bits, mult_config, requant_layout, shift_layout, shift_word
from hw.residual import SKIP_LATENCY, AddOnStore, add_layout, identity_config
from hw.residual import LATENCY as ADD_LATENCY
from hw.window import WindowFeatures, WindowGenerator, window_config, window_layout

AVERAGES = ("avgpool", "globalavgpool")  # pools the array runs as convs (as_conv)


class SystolicArray(wiring.Component):
    """rows x cols PEs with aligned inputs and outputs; the skew lives inside.

    Operands `a`, `w` arrive in one cycle and their `en/last/nrows` in the same cycle (they
    are delayed ACC_DELAY - 1 cycles inside to meet the products); rows from `nrows` on (the padding of the
    last channel group) stay idle. Sums start from 0 (the engine adds the bias). PE(0, 0) takes
    the sum of operands presented in cycle t at the end of cycle t + `ACC_DELAY`; PE(r, c) r + c
    cycles later. Drain: `shift` may be raised `drain_wait` cycles after PE(0, 0) took its sum
    (all rows have taken theirs by then), once per output channel, with the tile's `drain_rows`;
    `out[c]` is the shadow of PE(0, c) as the shift asserted `out_delay` cycles earlier found it,
    and every shift moves rows 0 .. drain_rows - 1 of each column up by one.
    Every row has its own control and shift registers, each driving one PE.
    Two tiles' last steps must be `tile_period` cycles apart."""

    ACC_DELAY = 3

    @staticmethod
    def drain_wait(rows: int) -> int:
        """Cycles from PE(0, 0) taking a tile's sums to the first `shift`: every row has taken them."""
        return rows

    @staticmethod
    def out_delay(cols: int) -> int:
        """Cycles from a `shift` to `out` showing the row it moved (the de-skew)."""
        return cols - 1

    @staticmethod
    def tile_period(rows: int) -> int:
        """Cycles between two tiles' last steps, at least: the drain (rows - 1 cycles of wait,
        then up to `rows` shifts) ends before the next tile's sums arrive."""
        return 2 * rows - 1

    def __init__(self, config: ArrayConfig, a_width: int, w_width: int, acc_width: int):
        self.config, self.a_width, self.w_width, self.acc_width = config, a_width, w_width, acc_width
        r, c = config.rows, config.cols
        super().__init__({
            "a": In(data.ArrayLayout(signed(a_width), c)),
            "w": In(data.ArrayLayout(signed(w_width), r)),
            "en": In(1), "last": In(1), "nrows": In(range(r + 1)),
            "shift": In(1), "drain_rows": In(range(r + 1)),
            "out": Out(data.ArrayLayout(signed(acc_width), c)),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.config.rows, self.config.cols
        pes = [[PE(self.a_width, self.w_width, self.acc_width) for _ in range(cols)] for _ in range(rows)]

        def skewed(value, cycles, name, reset_less=True):
            return delayed(m, value, cycles, name, reset_less=reset_less)

        ctrl = data.StructLayout({"en": 1, "last": 1})
        for r in range(rows):
            w_in = skewed(self.w[r], r, f"w_r{r}")
            ctrl_in = Signal(ctrl, name=f"ctrl_in{r}")
            live = self.nrows > r
            m.d.comb += [ctrl_in.en.eq(self.en & live), ctrl_in.last.eq(self.last & live)]
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
                    m.d.comb += [pe.w.eq(w_in), pe.en.eq(c_in.en), pe.last.eq(c_in.last)]
                else:
                    left = pes[r][c - 1]
                    m.d.comb += [pe.w.eq(left.w_out), pe.en.eq(left.en_out), pe.last.eq(left.last_out)]
                m.d.comb += pe.shift.eq(shift[c])  # row r's own shift register for column c
                if r + 1 < rows:
                    m.d.comb += pe.shadow_in.eq(pes[r + 1][c].shadow)
        m.d.comb += [self.out[c].eq(skewed(pes[0][c].shadow, cols - 1 - c, f"out_c{c}")) for c in range(cols)]
        return m


def array_pass_layout(addr_width: int, acc_width: int, act_width: int, window: WindowFeatures = WindowFeatures(),
                      per_channel: bool = False, adds: bool = False, mult_bits: int = 0) -> data.StructLayout:
    return data.StructLayout({
        "win": window_layout(addr_width, window),
        "rq": requant_layout(acc_width, act_width, per_channel, mult_bits),
        "logits": 1,  # the last layer: raw accumulators of column 0 go to the logits memory
        **({"add": add_layout(act_width, acc_width)} if adds else {}),  # hw.residual
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
    zeroed in front of the operand registers; with strides, output j of a tile is still column j
    (the activation buffer reads the inputs `stride` apart).
    With `adds`, every written vector goes through hw.residual's AddOnStore, which adds the vector
    read on the skip bus at the same addresses when the pass stores a residual add. With
    `mult_bits`, the requantizers multiply by an average's multiplier (contract rule 14).
    """

    @staticmethod
    def tile_stages(config: ArrayConfig) -> int:
        """A tile tag's trip from its issue to the drain: the address registers, the buffer, the
        operand registers (with the weights), the PEs (ACC_DELAY), the drain wait."""
        return 1 + READ_LATENCY + SystolicArray.ACC_DELAY + SystolicArray.drain_wait(config.rows)

    @staticmethod
    def requant_stages(config: ArrayConfig) -> int:
        """A drained row's trip to its requantized outputs: the de-skew, the requantizers."""
        return LATENCY + SystolicArray.out_delay(config.cols)

    @staticmethod
    def skip_wait(config: ArrayConfig) -> int:
        """With adds: cycles the requantized outputs wait for the skip vector, whose read starts
        (READ_LATENCY, then the skip's requantizer) no earlier than the drain."""
        return max(0, READ_LATENCY + SKIP_LATENCY - ArrayEngine.requant_stages(config))

    @staticmethod
    def drain_stages(config: ArrayConfig, adds: bool = False) -> int:
        """A drained row's trip to the write: the de-skew, the requantizers (with adds: the wait
        for the skip vector, the add's requantizer)."""
        extra = ArrayEngine.skip_wait(config) + ADD_LATENCY if adds else 0
        return ArrayEngine.requant_stages(config) + extra

    @staticmethod
    def latency(config: ArrayConfig, adds: bool = False) -> int:
        """Cycles from the last reduction step's issue to `done`, besides the last tile's drain
        (one cycle per output channel it holds): the tile's tag, then the last drained row's trip
        to the write, the first idle cycle, quiet()."""
        return ArrayEngine.tile_stages(config) + ArrayEngine.drain_stages(config, adds) + 1 + QUIET_LATENCY

    def __init__(self, config: ArrayConfig, addr_width: int, act_width: int, w_width: int, acc_width: int,
                 weight_words: list[int], bias_words: list[int], *, window: WindowFeatures = WindowFeatures(),
                 shift_words: list[int] | None = None, adds: bool = False, mult_bits: int = 0):
        self.config, self.addr_width, self.window, self.adds = config, addr_width, window, adds
        self.mult_bits = mult_bits
        self.act_width, self.w_width, self.acc_width = act_width, w_width, acc_width
        self.weight_words, self.bias_words, self.shift_words = weight_words or [0], bias_words or [0], shift_words
        super().__init__(EngineSignature(addr_width, cols=config.cols, act_width=act_width, acc_width=acc_width,
                                         cfg=array_pass_layout(addr_width, acc_width, act_width, window, bool(shift_words),
                                                               adds, mult_bits),
                                         reads=True, writes=True, logit=Out, skips=adds))

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.config.rows, self.config.cols
        aw, ww, accw = self.addr_width, self.w_width, self.acc_width
        gen = m.submodules.gen = WindowGenerator(rows, cols, aw, self.window, tile_period=SystolicArray.tile_period(rows))
        arr = m.submodules.array = SystolicArray(self.config, self.act_width + 1, ww, accw)
        # The generator's outputs go through plain registers first (addresses and tile tags alike):
        # its counters then only feed logic beside them, so the placer keeps them together.
        w_addr, act_addr = Signal(aw, name="w_addr_q"), Signal(aw, name="act_addr_q")
        m.d.sync += [w_addr.eq(gen.w_addr), act_addr.eq(gen.act_addr)]
        wdata = rom(m, "weights", rows * ww, self.weight_words, w_addr)
        m.d.comb += [gen.start.eq(self.start), gen.cfg.eq(self.cfg.win), self.raddr.eq(act_addr)]

        tile = data.StructLayout({"valid": 1, "last": 1, "out_addr": unsigned(aw), "b_addr": unsigned(aw),
                                  "ncols": range(cols + 1), "nrows": range(rows + 1)})
        # s[0]: the output registers; s[ROM_LATENCY]: the weights answer, then wait in registers
        # beside the activations. s[READ_LATENCY + 1]: activations answer; operands registered
        # (the array's inputs). The array takes the sums ACC_DELAY cycles later, and the drain may
        # start drain_wait after that.
        s0 = Signal(tile)
        m.d.comb += [s0.valid.eq(gen.valid), s0.last.eq(gen.last),
                     s0.out_addr.eq(gen.out_addr), s0.b_addr.eq(gen.b_addr), s0.ncols.eq(gen.ncols), s0.nrows.eq(gen.nrows)]
        stages = delay_line(m, s0, self.tile_stages(self.config), "s")
        s_ops, s_drain = stages[1 + READ_LATENCY], stages[-1]
        assert READ_LATENCY > ROM_LATENCY
        wq = delay_line(m, wdata, READ_LATENCY - ROM_LATENCY, "wq", reset_less=True)[-1]
        if self.window.pad:  # the generator's taps, beside the read data
            taps = delayed(m, gen.taps, 1 + READ_LATENCY, "taps")
            m.d.sync += [arr.a[c].eq(Mux(taps[c], self.rdata[c], 0)) for c in range(cols)]
        else:
            m.d.sync += arr.a.eq(self.rdata)
        m.d.sync += [arr.w[r].eq(wq[r * ww:(r + 1) * ww].as_signed()) for r in range(rows)]
        m.d.comb += [arr.en.eq(s_ops.valid), arr.last.eq(s_ops.last), arr.nrows.eq(s_ops.nrows)]

        # drain: one output channel (array row) per cycle through the requantizers
        left, addr, ncols = Signal(range(rows + 1)), Signal(aw), Signal(range(cols + 1))
        drain_rows = Signal(range(rows + 1))
        drain = Signal(data.StructLayout({"valid": 1, "addr": unsigned(aw), "count": range(cols + 1)}))
        m.d.comb += [arr.shift.eq(left != 0), arr.drain_rows.eq(drain_rows), drain.valid.eq(left != 0), drain.addr.eq(addr), drain.count.eq(ncols)]
        # the tile's bias word answers as its drain starts; row j's bias is at the bottom in
        # drain cycle j, and meets the de-skewed sums out_delay cycles later
        bdata = rom(m, "biases", rows * accw, self.bias_words, stages[-1 - ROM_LATENCY].b_addr)
        biases = Signal(rows * accw, reset_less=True)
        out_delay = arr.out_delay(cols)
        bias = delayed(m, biases[:accw].as_signed(), out_delay, "bias", reset_less=True)
        per_channel = bool(self.shift_words)
        if per_channel:  # the tile's shift word, alongside the bias word
            sw = shift_layout(accw).size
            sdata = rom(m, "shifts", rows * sw, self.shift_words, stages[-1 - ROM_LATENCY].b_addr)
            shifts = Signal(rows * sw, reset_less=True)
            shift = delayed(m, shifts[:sw], out_delay, "shift", reset_less=True)
        qs = []
        for c in range(cols):
            rq = m.submodules[f"rq{c}"] = Requantizer(accw, self.act_width, per_channel, self.mult_bits)
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
        tags = delay_line(m, drain, self.drain_stages(self.config, self.adds), "drain")
        out = tags[self.requant_stages(self.config) - 1]
        # output j of the tile is column j, at any stride (the buffer's strided reads)
        outputs = [q.q for q in qs]
        written = tags[-1]
        if self.adds:  # the skip vector at the write's addresses, read to meet the outputs
            aos = m.submodules.add = AddOnStore(cols, self.act_width, accw)
            wait = self.skip_wait(self.config)
            issue = len(tags) - ADD_LATENCY - SKIP_LATENCY - READ_LATENCY  # tags[issue - 1] is that far ahead
            m.d.comb += [self.skip_addr.eq((tags[issue - 1] if issue else drain).addr), aos.cfg.eq(self.cfg.add),
                         aos.skip.eq(self.skip_data)]
            m.d.comb += [aos.q[c].eq(delayed(m, outputs[c], wait, f"q{c}_wait", reset_less=True)) for c in range(cols)]
            outputs = list(aos.out)
        m.d.comb += [self.wr.valid.eq(written.valid & ~self.cfg.logits), self.wr.addr.eq(written.addr),
                     self.wr.count.eq(written.count), *(self.wr.data[c].eq(outputs[c]) for c in range(cols)),
                     self.logit.valid.eq(out.valid & self.cfg.logits), self.logit.addr.eq(out.addr),
                     self.logit.data.eq(qs[0].raw)]

        done_when_quiet(m, self.start, self.done, [gen.busy, left != 0, *(s.valid for s in stages), *(t.valid for t in tags)])
        return m


# per PE: accumulator, shadow register, operand registers and their muxes, about 6 LUTs per
# accumulator bit (measured: the paper model on 10x9 took 16.9k ECP5 LUTs with 26-bit sums)
LUTS_PER_PE_ACC_BIT = 6
# residual adds on the store (hw.residual): per array column a 9-bit and an accumulator-wide
# requantizer, the shifted add and the skip bus's data mux; an allowance, not measured alone
LUTS_PER_ADD_COL = 200


def as_conv(l: Layer) -> Layer:
    """An average pool (or an activation requantizer) as the conv the array runs, bit-exact: no
    bias, the layer's shift, no ReLU (a requantizer keeps its own).

    A global pool (or an average pool whose non-square window is the whole map)
    with one shift is one 1-channel conv over the buffer read as a (1, C*H, W) image: an H x W
    window of ones, stride (H, W), one output per channel (H*W weights, one output column, so no
    stride hardware). Otherwise weight[c, c] = 1 over the window (a kh x kw window, stride the
    window; the global pool one window over the map, zero-padded to a square): C times the
    additions it needs, and C*C*kh*kw weights. An average's multiplier stays with the layer (its
    requantizer's, contract rule 14)."""
    if l.kind == "requant":  # acc = x: an identity 1x1 conv into the layer's requantizer
        c = l.in_shape[0]
        return replace(l, kind="conv2d", weight=np.eye(c, dtype=np.int8).reshape(c, c, 1, 1),
                       bias=np.zeros(c, dtype=np.int64), w_type=IntType(2, True, 0))
    c, h, w = l.in_shape
    whole = l.kind == "globalavgpool" or l.kind == "avgpool" and l.kernel_hw == (h, w) and h != w
    if whole and np.ndim(l.shift) == 0:
        k = h if h == w else (h, w)
        return replace(l, kind="conv2d", in_shape=(1, c * h, w), out_shape=(1, c, 1), kernel=k, stride=k,
                       pad=(0, 0, 0, 0), weight=np.ones((1, 1, h, w), dtype=np.int8), bias=np.zeros(1, dtype=np.int64),
                       w_type=IntType(2, True, 0), relu=False)
    k, stride, pad = (l.kernel, l.kernel, (0, 0, 0, 0)) if l.kind == "avgpool" else (max(h, w), 1, (0, 0, max(w - h, 0), max(h - w, 0)))
    weight = np.zeros((c, c, *pair(k)), dtype=np.int8)
    weight[np.arange(c), np.arange(c)] = 1
    return replace(l, kind="conv2d", kernel=k, stride=stride, pad=pad, weight=weight, bias=np.zeros(c, dtype=np.int64),
                   w_type=IntType(2, True, 0), relu=False)


def _strided(l: Layer) -> bool:
    """Whether the conv needs the window generator's stride hardware: a column stride over more
    than one output column (window_config: otherwise a stride steps only rows)."""
    return l.stride_hw[1] > 1 and l.out_shape[-1] > 1


def window_features(layers: list[Layer]) -> WindowFeatures:
    """What the plan's convs and average pools need of the window generator: padding, column strides,
    non-square kernels, depthwise groups (as hw.depthwise's tall kernels)."""
    convs = [as_conv(l) if l.kind in AVERAGES else l for l in layers if l.kind in ("conv2d", *AVERAGES)]
    depthwise = any(is_depthwise(l) for l in convs)
    return WindowFeatures(pad=any(any(l.pad) for l in convs),
                          max_stride=min(16, max([1] + [l.stride_hw[1] for l in convs if _strided(l)])),
                          rect=depthwise or any(len(set(l.kernel_hw)) > 1 for l in convs), depthwise=depthwise)


def average_mult_bits(layers: list[Layer]) -> int:
    """Bits of the requantizers' multiplier for the plan's averages (0: none, contract rule 11 only)."""
    return mult_bits([l.mult for l in layers if l.kind in AVERAGES])


def _pack_rows(matrix: np.ndarray, width: int) -> list[int]:
    """Each row of `matrix` as one word: element j at bits [j*width, (j+1)*width), two's complement."""
    m = (matrix.astype(np.int64) & ((1 << width) - 1)).astype(object)
    words = np.zeros(m.shape[0], dtype=object)
    for j in range(m.shape[1]):
        words = words + (m[:, j] << (j * width))
    return [int(w) for w in words]


class ArrayUnit(EngineUnit):
    """Conv and dense (NP) layers, depthwise convs (hw.depthwise), and average pools as convs, on
    the PE array."""

    kind = "array"
    memories = ("array_weights", "array_biases", "array_shifts")

    def runs(self, layer) -> bool:
        return (layer.kind in ("conv2d", *AVERAGES) or (layer.kind == "linear" and layer.sparse is None)
                or (layer.kind == "requant" and len(layer.in_shape) == 3))

    def lower(self, i, layer, ctx) -> LoweredLayer:
        """The layer's window constants; its weight, bias (and shift) words appended to the memories."""
        # an average pool's useful work: one addition per input element it sums
        macs = (layer.macs_dense if layer.kind not in (*AVERAGES, "requant") else
                int(np.prod(layer.out_shape)) * (layer.unit.count(layer) if layer.kind in AVERAGES else 1))
        rows, cols, mem = ctx.config.rows, ctx.config.cols, ctx.memory_contents
        dw = is_depthwise(layer)
        l = (as_conv(layer) if layer.kind in (*AVERAGES, "requant") else as_row_conv(layer, rows) if dw else
             as_dense_groups(layer) if layer.kind == "conv2d" and layer.groups > 1 else layer)
        if l.kind == "conv2d":
            if len(l.in_shape) != 3:
                raise refuse(i, l, f"input shape {tuple(l.in_shape)}: a conv needs a (C, H, W) input")
            if _strided(l) and l.stride_hw[1] > ctx.window.max_stride:
                raise refuse(i, l, f"stride {l.stride_hw[1]}: the window generator makes strides up to {ctx.window.max_stride}")
            (cin, h, w), (cout, oh, ow), k, s, pad = l.in_shape, l.out_shape, l.kernel, l.stride, tuple(l.pad)
        else:
            (cin,), (cout,), h, w, k, oh, ow, s, pad = l.in_shape, l.out_shape, 1, 1, 1, 1, 1, 1, (0, 0, 0, 0)
        (kh, kw), sy = pair(k), pair(s)[0]
        win = window_config(cin, h, w, k, cout, oh, ow, rows, cols, len(mem["array_weights"]), len(mem["array_biases"]),
                            stride=s, pad=pad, features=ctx.window)
        win, reach = depthwise_window(win, layer, rows) if dw else (win, 0)
        w2 = l.weight.reshape(cout, -1).astype(np.int64)
        n_og = -(-cout // rows)
        wpad = np.zeros((n_og * rows, w2.shape[1]), dtype=np.int64)
        wpad[:cout] = w2
        bpad = np.zeros(n_og * rows, dtype=np.int64)
        bpad[:cout] = l.bias
        spad = np.zeros(n_og * rows, dtype=np.int64)
        spad[:cout] = l.shift if l.out is not None else 0
        # word (og, kidx) holds the rows of group og at reduction step kidx
        mem["array_weights"] += _pack_rows(wpad.reshape(n_og, rows, -1).transpose(0, 2, 1).reshape(-1, rows), ctx.w_width)
        mem["array_biases"] += _pack_rows(bpad.reshape(n_og, rows), ctx.acc_width)
        if self.kind in ctx.per_channel:
            words = np.array([shift_word(int(v), ctx.acc_width) for v in spad], dtype=object)
            mem["array_shifts"] += _pack_rows(words.reshape(n_og, rows), shift_layout(ctx.acc_width).size)
        # the last element a tap inside the map reads, as the start of a vector: the last input row
        # it reaches, the last column tile's start
        last_row = min(h - 1, (oh - 1) * sy + kh - 1 - pad[0])
        last_col = max(0, win["n_xt_m1"] * (win.get("tile_step") or cols) + kw - 1 - pad[1])
        top = (cin - 1) * h * w + last_row * w + last_col + reach
        cfg = {"win": win, "rq": {**self.requant(layer, ctx), **mult_config(layer.mult)}, "logits": int(layer.out is None)}
        if ctx.adds is not None:  # a store that adds (hw.graph fused it), or passes its outputs on
            cfg["add"] = ctx.adds.get(i) or identity_config(layer.out, ctx.act_width, ctx.acc_width)
        return LoweredLayer(cfg, macs, top)

    def latency(self, s) -> int:
        return ArrayEngine.latency(s.config, s.adds)

    def issue_cycles(self, p, s) -> int:
        """k steps per tile, tiles at least SystolicArray.tile_period apart."""
        w = p.cfg["win"]
        k, tiles = w["k_steps"], (w["n_og_m1"] + 1) * (w["oh_m1"] + 1) * (w["n_xt_m1"] + 1)
        return k + (tiles - 1) * max(k, SystolicArray.tile_period(s.config.rows))

    def cycles(self, p, s) -> int:
        """The issue, the latency, and the last tile's drain: one cycle per output channel it holds."""
        return super().cycles(p, s) + p.cfg["win"]["last_rows"]

    def work(self, p, s, cycles: int) -> dict:
        pes = s.config.pes
        return {"macs": p.macs, "ideal_cycles": p.macs / pes, "utilisation": p.macs / pes / cycles}

    def memory_inits(self, s) -> dict[str, tuple[list[int], int]]:
        rows, mem = s.config.rows, s.memory_contents
        return {"array_weights": (mem["array_weights"], rows * s.w_width),
                "array_biases": (mem["array_biases"], rows * s.acc_width),
                "array_shifts": (mem["array_shifts"], rows * s.shift_width)}

    def memory_bits(self, p, s) -> int:
        rows, groups, k = s.config.rows, p.cfg["win"]["n_og_m1"] + 1, p.cfg["win"]["k_steps"]
        shifts = bool(s.memory_contents["array_shifts"])
        return groups * k * rows * s.w_width + groups * rows * (s.acc_width + s.shift_width * shifts)

    def address_constants(self, p) -> list[int]:
        return [v for v in p.cfg["win"].values() if isinstance(v, int)]

    def multipliers(self, s) -> int:
        """The PEs', and with averages over non-power-of-two counts the requantizers' (one a column)."""
        return s.config.pes + s.config.cols * bool(average_mult_bits(s.plan.layers))

    def luts(self, s) -> int:
        """Per PE its accumulator, shadow and operand registers and their muxes; per column, with
        residual adds, the store's adder and requantizers."""
        return s.config.pes * LUTS_PER_PE_ACC_BIT * s.acc_width + s.adds * LUTS_PER_ADD_COL * s.config.cols

    def build(self, s) -> ArrayEngine:
        mem = s.memory_contents
        return ArrayEngine(s.config, s.addr_width, s.act_width, s.w_width, s.acc_width, mem["array_weights"],
                           mem["array_biases"], window=s.window, shift_words=mem["array_shifts"], adds=s.adds,
                           mult_bits=average_mult_bits(s.plan.layers))
