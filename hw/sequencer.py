"""From a plan to a schedule of passes, and the sequencer that steps through it.

`schedule(plan, config)` is all the static work, in Python: it refuses what the hardware cannot
run (one line naming the layer and what to change), picks the datapath widths, lays out the
weight / bias / sparse memories and computes every pass's constants. The `Sequencer` is a
generated FSM, two states per pass: load the pass's constants into registers, then start its
engine and wait for its `done`. No descriptor memory: the constants are the FSM's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from amaranth import Module, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from export.plan import IntType, Layer, Plan
from hw.array import ArrayConfig
from hw.memories import banks_for, buffer_rows
from hw.pool import pool_config
from hw.requant import MAX_LEFT, requant_config, shift_layout, shift_word
from hw.window import WindowFeatures, window_config

MAX_BITS = 8  # activation and weight widths the datapath is generated for


class UnsupportedPlan(ValueError):
    """A plan the generator refuses; the message names the layer and what to change."""


@dataclass
class Pass:
    """One engine run: `kind` in ENGINES, reading buffer `src`, writing buffer `dst`."""

    kind: str
    layer: int  # index in plan.layers (-1: the image load, len(layers): the logits out)
    name: str
    src: int = 0
    dst: int = 0
    in_signed: bool = False
    cfg: dict = field(default_factory=dict)
    macs: int = 0  # dense MACs (array) or stored entries (sparse)


ENGINES = ("load", "array", "pool", "sparse", "emit")


@dataclass
class Schedule:
    """Everything static about one plan on one array."""

    plan: Plan
    config: ArrayConfig
    passes: list[Pass]
    act_width: int
    w_width: int
    acc_width: int
    addr_width: int
    buffer_depths: tuple[int, int]
    weight_words: list[int]
    bias_words: list[int]
    sparse_entries: list[int]
    sparse_row_end: list[int]
    sparse_biases: list[int]
    value_bits: int
    index_bits: int
    window: WindowFeatures = WindowFeatures()
    shift_words: list[int] = field(default_factory=list)  # per-channel array shifts, beside bias_words
    sparse_shifts: list[int] = field(default_factory=list)  # per-channel sparse shifts, beside sparse_biases

    @property
    def engines(self) -> list[str]:
        return [e for e in ENGINES if any(p.kind == e for p in self.passes)]

    @property
    def num_classes(self) -> int:
        return int(self.plan.layers[-1].out_shape[0])

    @property
    def memory_inits(self) -> dict[str, tuple[list[int], int]]:
        """Each plan-initialised memory: (words, word width)."""
        rows, sw = self.config.rows, self.shift_width
        inits = {"array_weights": (self.weight_words, rows * self.w_width),
                 "array_biases": (self.bias_words, rows * self.acc_width),
                 "array_shifts": (self.shift_words, rows * sw),
                 "sparse_entries": (self.sparse_entries, self.value_bits + self.index_bits),
                 "sparse_row_end": (self.sparse_row_end, self.addr_width),
                 "sparse_biases": (self.sparse_biases, self.acc_width),
                 "sparse_shifts": (self.sparse_shifts, sw)}
        return {k: v for k, v in inits.items() if v[0]}

    @property
    def shift_width(self) -> int:
        """Bits of one per-channel shift entry (hw.requant.shift_layout)."""
        return shift_layout(self.acc_width).size

    @property
    def memory_bits(self) -> dict[str, int]:
        """Bits of every on-chip memory: the two activation buffers, the plan's, the logits."""
        bits = {f"act_buffer{i}": banks_for(self.config.cols) * buffer_rows(d, self.config.cols) * self.act_width
                for i, d in enumerate(self.buffer_depths)}
        bits.update({k: len(words) * width for k, (words, width) in self.memory_inits.items()})
        bits["logits"] = self.num_classes * self.acc_width
        return bits


def _refuse(i: int, layer: Layer, what: str) -> UnsupportedPlan:
    return UnsupportedPlan(f"layer {i} {layer.name!r} ({layer.kind}): {what}")


def _pack_rows(matrix: np.ndarray, width: int) -> list[int]:
    """Each row of `matrix` as one word: element j at bits [j*width, (j+1)*width), two's complement."""
    m = (matrix.astype(np.int64) & ((1 << width) - 1)).astype(object)
    words = np.zeros(m.shape[0], dtype=object)
    for j in range(m.shape[1]):
        words = words + (m[:, j] << (j * width))
    return [int(w) for w in words]


def _check_types(i: int, l: Layer) -> None:
    for what, t in (("input", l.inp), ("output", l.out)):
        if t is not None and not 1 <= t.bits <= MAX_BITS:
            raise _refuse(i, l, f"{what} is {t.bits}-bit; the datapath takes 1..{MAX_BITS} bits, quantize it narrower")
    if l.w_type is not None and not 2 <= l.w_type.bits <= MAX_BITS:
        raise _refuse(i, l, f"weights are {l.w_type.bits}-bit; the array takes 2..{MAX_BITS} bits")
    if l.out is not None and np.min(l.shift) < -MAX_LEFT:
        raise _refuse(i, l, f"requant left shift {-int(np.min(l.shift))} exceeds {MAX_LEFT}; rescale the layer")


@dataclass
class _Images:
    """The plan-initialised memories' contents, filled layer by layer."""

    weight_words: list[int] = field(default_factory=list)
    bias_words: list[int] = field(default_factory=list)
    entries: list[int] = field(default_factory=list)
    row_end: list[int] = field(default_factory=list)
    biases: list[int] = field(default_factory=list)
    shift_words: list[int] = field(default_factory=list)
    sparse_shifts: list[int] = field(default_factory=list)


AVERAGES = ("avgpool", "globalavgpool")


def as_conv(l: Layer) -> Layer:
    """An average pool as the conv the array runs, bit-exact: no bias, the pool's shift, no ReLU.

    A global pool over a square map with one shift is one 1-channel conv over the buffer read as
    a (1, C*H, W) image: an H x H window of ones, stride H, one output per channel (H*H weights,
    one output column, so no stride hardware). Otherwise weight[c, c] = 1 over the window (a k x k
    window, stride k; the global pool one window over the map, zero-padded to a square): C times
    the additions it needs, and C*C*k*k weights."""
    c, h, w = l.in_shape
    if l.kind == "globalavgpool" and h == w and np.ndim(l.shift) == 0:
        return replace(l, kind="conv2d", in_shape=(1, c * h, w), out_shape=(1, c, 1), kernel=h, stride=h,
                       pad=(0, 0, 0, 0), weight=np.ones((1, 1, h, h), dtype=np.int8), bias=np.zeros(1, dtype=np.int64),
                       w_type=IntType(2, True, 0), relu=False)
    k, stride, pad = (l.kernel, l.kernel, (0, 0, 0, 0)) if l.kind == "avgpool" else (max(h, w), 1, (0, 0, max(w - h, 0), max(h - w, 0)))
    weight = np.zeros((c, c, k, k), dtype=np.int8)
    weight[np.arange(c), np.arange(c)] = 1
    return replace(l, kind="conv2d", kernel=k, stride=stride, pad=pad, weight=weight, bias=np.zeros(c, dtype=np.int64),
                   w_type=IntType(2, True, 0), relu=False)


def _strided(l: Layer) -> bool:
    """Whether the conv needs the window generator's stride hardware (window_config: with one
    output column a stride steps only rows)."""
    return l.stride > 1 and l.out_shape[-1] > 1


def _features(layers: list[Layer], config: ArrayConfig) -> tuple[WindowFeatures, bool, bool]:
    """What the plan needs beyond the basic engines: the window generator's padding and strides,
    per-channel shifts on the array, on the sparse engine."""
    convs = [as_conv(l) if l.kind in AVERAGES else l for l in layers if l.kind in ("conv2d", *AVERAGES)]
    per_channel = [l for l in layers if isinstance(l.shift, np.ndarray) and l.out is not None]
    window = WindowFeatures(pad=any(any(l.pad) for l in convs),
                            max_stride=min(16, max([1] + [l.stride for l in convs if _strided(l)])))
    return (window, any(l.sparse is None for l in per_channel), any(l.sparse is not None for l in per_channel))


def _array_pass(i: int, l: Layer, config: ArrayConfig, w_width: int, acc_width: int, window: WindowFeatures,
                per_channel: bool, img: _Images) -> tuple[dict, int]:
    """A conv or dense layer on the array: its window constants, and the highest address it reads."""
    rows, cols = config.rows, config.cols
    if l.kind == "conv2d":
        if len(l.in_shape) != 3:
            raise _refuse(i, l, f"input shape {tuple(l.in_shape)}: a conv needs a (C, H, W) input")
        if _strided(l) and l.stride > window.max_stride:
            raise _refuse(i, l, f"stride {l.stride}: the window generator makes strides up to {window.max_stride}")
        (cin, h, w), (cout, oh, ow), k, s, pad = l.in_shape, l.out_shape, l.kernel, l.stride, tuple(l.pad)
    else:
        (cin,), (cout,), h, w, k, oh, ow, s, pad = l.in_shape, l.out_shape, 1, 1, 1, 1, 1, 1, (0, 0, 0, 0)
    win = window_config(cin, h, w, k, cout, oh, ow, rows, cols, len(img.weight_words), len(img.bias_words),
                        stride=s, pad=pad, features=window)
    w2 = l.weight.reshape(cout, -1).astype(np.int64)
    n_og = -(-cout // rows)
    wpad = np.zeros((n_og * rows, w2.shape[1]), dtype=np.int64)
    wpad[:cout] = w2
    bpad = np.zeros(n_og * rows, dtype=np.int64)
    bpad[:cout] = l.bias
    spad = np.zeros(n_og * rows, dtype=np.int64)
    spad[:cout] = l.shift if l.out is not None else 0
    # word (og, kidx) holds the rows of group og at reduction step kidx
    img.weight_words += _pack_rows(wpad.reshape(n_og, rows, -1).transpose(0, 2, 1).reshape(-1, rows), w_width)
    img.bias_words += _pack_rows(bpad.reshape(n_og, rows), acc_width)
    if per_channel:
        words = np.array([shift_word(int(v), acc_width) for v in spad], dtype=object)
        img.shift_words += _pack_rows(words.reshape(n_og, rows), shift_layout(acc_width).size)
    # the last element a tap inside the map reads, as the start of a vector: the last input row
    # it reaches, the last column tile's start
    last_row = min(h - 1, (oh - 1) * s + k - 1 - pad[0])
    last_col = max(0, win["n_xt_m1"] * (win.get("tile_step") or cols) + k - 1 - pad[1])
    top = (cin - 1) * h * w + last_row * w + last_col
    return win, top


def _sparse_pass(l: Layer, value_bits: int, index_bits: int, acc_width: int, per_channel: bool,
                 img: _Images) -> tuple[dict, int]:
    """A P-layer on the sparse engine: its bases in the shared memories, the highest address it reads."""
    sp = l.sparse
    base_e, base_r = len(img.entries), len(img.row_end)
    img.entries += [((int(v) & ((1 << value_bits) - 1)) << index_bits) | int(d) for v, d in zip(sp.values, sp.deltas)]
    img.row_end += [base_e + int(e) for e in sp.row_ptr[1:]]
    img.biases += [int(b) for b in l.bias]
    if per_channel:
        shifts = np.broadcast_to(l.shift if l.out is not None else 0, l.bias.shape)
        img.sparse_shifts += [shift_word(int(v), acc_width) for v in shifts]
    return {"rows_m1": sp.row_ptr.size - 2, "row_base": base_r, "e_base": base_e}, l.in_shape[0] - 1


def schedule(plan: Plan, config: ArrayConfig) -> Schedule:
    """Check `plan` against the hardware and compute every constant of every pass."""
    layers = plan.layers
    if len(plan.input_shape) != 3:
        raise UnsupportedPlan(f"input shape {plan.input_shape}: the accelerator takes one (C, H, W) image")
    if plan.input_type.bits != 8 or plan.input_type.signed:
        raise UnsupportedPlan(f"input type {plan.input_type}: the pixel stream carries uint8; quantize the input as unsigned 8-bit")
    if not layers or layers[-1].kind != "linear" or layers[-1].out is not None:
        raise UnsupportedPlan("the last layer must be a linear layer emitting raw accumulators (out=None)")
    compute = [l for l in layers if l.weight is not None]
    acc_width = max(l.acc_bound.bit_length() + 1 for l in compute + [l for l in layers if l.kind in AVERAGES])
    if acc_width > 32:
        raise UnsupportedPlan(f"accumulators need {acc_width} bits; logits are 32-bit (contract rule 5 bounds them by 2**24)")
    act_width = max([8] + [l.out.bits for l in layers if l.out is not None])
    w_width = max([2] + [l.w_type.bits + (not l.w_type.signed) for l in compute if l.sparse is None])
    value_bits = max([1] + [l.sparse.value_bits for l in compute if l.sparse is not None])
    index_bits = max([1] + [l.sparse.index_bits for l in compute if l.sparse is not None])

    window, array_pc, sparse_pc = _features(layers, config)
    passes = [Pass("load", -1, "image", dst=0)]
    sizes, reads, img = [int(np.prod(plan.input_shape)), 0], [0, 0], _Images()
    cur, shape, signed = 0, tuple(plan.input_shape), False
    for i, l in enumerate(layers):
        _check_types(i, l)
        if min(l.out_shape) <= 0:
            raise _refuse(i, l, f"output shape {tuple(l.out_shape)} is empty; use a larger input or smaller kernels")
        if tuple(l.in_shape) != shape:
            raise _refuse(i, l, f"input shape {tuple(l.in_shape)} does not follow the previous output {shape}")
        last = i == len(layers) - 1
        if l.out is None and not last:
            raise _refuse(i, l, "only the last layer may emit raw accumulators (out=None)")
        if l.kind == "linear" and len(l.in_shape) != 1:
            raise _refuse(i, l, f"input shape {tuple(l.in_shape)}: put a flatten before a linear layer")
        if l.kind == "flatten":
            shape = tuple(l.out_shape)
            continue
        on_array = l.kind in ("conv2d", *AVERAGES) or (l.kind == "linear" and l.sparse is None)
        shift = None if (array_pc if on_array else sparse_pc) else l.shift
        rq = {} if l.out is None else requant_config(shift, l.relu, l.out, acc_width)
        p = Pass("", i, l.name, src=cur, dst=-1 if last else 1 - cur, in_signed=signed)
        if on_array:
            # an average pool's useful work: one addition per input element it sums
            macs = l.macs_dense if l.kind not in AVERAGES else int(np.prod(l.out_shape)) * l.unit.count(l)
            win, top = _array_pass(i, as_conv(l) if l.kind in AVERAGES else l, config, w_width, acc_width, window,
                                   array_pc, img)
            p.kind, p.macs, p.cfg = "array", macs, {"win": win, "rq": rq, "logits": int(last)}
        elif l.kind == "linear":
            cfg, top = _sparse_pass(l, value_bits, index_bits, acc_width, sparse_pc, img)
            p.kind, p.macs, p.cfg = "sparse", l.sparse.entries, {**cfg, "rq": rq, "logits": int(last)}
        elif l.kind == "maxpool":
            if l.kernel != 2 or l.stride != 2:
                raise _refuse(i, l, f"max-pool {l.kernel}x{l.kernel} stride {l.stride}: only 2x2 stride 2 is generated")
            c, h, w = l.in_shape
            p.kind, p.cfg = "pool", pool_config(c, h, w, config.cols)
            top = (c - 1) * h * w + (2 * p.cfg["oh_m1"] + 1) * w + (2 * p.cfg["n_xt_m1"] + 1) * config.cols
        else:
            raise _refuse(i, l, f"kind {l.kind!r} is not generated (conv2d, maxpool, avgpool, globalavgpool, flatten, linear are)")
        reads[cur] = max(reads[cur], top)
        passes.append(p)
        shape = tuple(l.out_shape)
        if not last:
            cur = 1 - cur
            sizes[cur] = max(sizes[cur], int(np.prod(l.out_shape)))
            signed = l.out.signed
    passes.append(Pass("emit", len(layers), "logits", src=cur))

    # a vector read at `top` touches bank rows up to (top >> log2 banks) + 1
    banks = banks_for(config.cols)
    depths = tuple(max(sizes[b], reads[b] + 2 * banks + 1) for b in (0, 1))
    consts = [v for p in passes for v in (p.cfg.get("win") or p.cfg).values() if isinstance(v, int)]
    addr_width = max(int(abs(d) + banks).bit_length() for d in
                     (*depths, *consts, len(img.weight_words), len(img.bias_words), len(img.entries) + 1, len(img.row_end)))
    return Schedule(plan, config, passes, act_width, w_width, acc_width, addr_width, depths, img.weight_words,
                    img.bias_words, img.entries, img.row_end, img.biases, value_bits, index_bits, window,
                    img.shift_words, img.sparse_shifts)


class Sequencer(wiring.Component):
    """IDLE until `start`; then per pass: constants into `cfg`, one-cycle `go[kind]`, wait for
    `finished[kind]`. `done` pulses after the last pass (the logits emitter)."""

    def __init__(self, sched: Schedule, layouts: dict[str, data.StructLayout]):
        self.sched, self.layouts = sched, layouts
        engines = sched.engines
        nlayers = len(sched.plan.layers)
        super().__init__({
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "go": Out(data.StructLayout({e: 1 for e in engines})),
            "finished": In(data.StructLayout({e: 1 for e in engines})),
            "cfg": Out(data.StructLayout(layouts)),
            "kind": Out(data.StructLayout({e: 1 for e in engines})),  # one-hot: the running engine
            "src": Out(1),
            "dst": Out(2),  # 0/1: that buffer, 2: the logits memory
            "in_signed": Out(1),
            "layer": Out(range(nlayers + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        passes = self.sched.passes
        for e in self.sched.engines:
            m.d.sync += self.go[e].eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.next = "P0"
            for i, p in enumerate(passes):
                with m.State(f"P{i}"):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += [self.go[p.kind].eq(1), self.src.eq(p.src), self.dst.eq(2 if p.dst < 0 else p.dst),
                                 self.in_signed.eq(p.in_signed), self.layer.eq(max(p.layer, 0)),
                                 *(self.kind[e].eq(e == p.kind) for e in self.sched.engines)]
                    if p.kind in self.layouts:
                        m.d.sync += self.cfg[p.kind].eq(self.layouts[p.kind].const(p.cfg))
                    m.next = f"R{i}"
                with m.State(f"R{i}"):
                    m.d.comb += self.busy.eq(1)
                    with m.If(self.finished[p.kind]):
                        if i + 1 < len(passes):
                            m.next = f"P{i + 1}"
                        else:
                            m.d.comb += self.done.eq(1)
                            m.next = "IDLE"
        return m
