"""From a plan to a schedule of passes in pipeline stages: all the static work, in Python.

`schedule(plan, config)` refuses what the hardware cannot run (one line naming the layer and what
to change), picks the datapath widths, hands each layer to the engine unit that runs it (REGISTRY,
hw.engines) for its pass's constants and memory contents, groups the passes into stages that
share no engine (the image load; the array and pool layers; the sparse layers and the logits
out), and sizes the buffers and addresses. The stages work on different images at once, each
stepped by its own hw.sequencer.Sequencer.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from export.plan import Layer, Plan
from hw.array import AVERAGES, ArrayUnit, window_features
from hw.config import ArrayConfig
from hw.cycles import stage_cycles
from hw.engines import EngineUnit, LoweringContext, Pass, Schedule, UnsupportedPlan, refuse
from hw.graph import INPUT_TENSOR, Buffers, check_shapes, steps
from hw.memories import banks_for
from hw.pool import PoolUnit
from hw.requant import MAX_LEFT
from hw.residual import add_config
from hw.sparse import SparseUnit, auto_lanes, sparse_encoding
from hw.stream_io import PIXEL_BITS, EmitUnit, LoadUnit

MAX_BITS = 8  # activation and weight widths the datapath is generated for

LOAD, EMIT = LoadUnit(), EmitUnit()
SPARSE = SparseUnit()
LAYER_UNITS: tuple[EngineUnit, ...] = (ArrayUnit(), PoolUnit(), SPARSE)  # the engines that run plan layers
REGISTRY: tuple[EngineUnit, ...] = (LOAD, *LAYER_UNITS, EMIT)  # every engine, in pass order


def _check_types(i: int, l: Layer) -> None:
    for what, t in (("input", l.inp), ("output", l.out)):
        if t is not None and not 1 <= t.bits <= MAX_BITS:
            raise refuse(i, l, f"{what} is {t.bits}-bit; the datapath takes 1..{MAX_BITS} bits, quantize it narrower")
    if l.w_type is not None and not 2 <= l.w_type.bits <= MAX_BITS:
        raise refuse(i, l, f"weights are {l.w_type.bits}-bit; the array takes 2..{MAX_BITS} bits")
    if l.out is not None and np.min(l.shift) < -MAX_LEFT:
        raise refuse(i, l, f"requant left shift {-int(np.min(l.shift))} exceeds {MAX_LEFT}; rescale the layer")


def _check_kind(i: int, l: Layer) -> None:
    """The engines run convs of any groups (hw.depthwise), and square max-pool windows and strides;
    convs and averages take any kh x kw; graphs of them with residual adds (hw.graph)."""
    square = isinstance(l.kernel, int) and isinstance(l.stride, int)
    if not square and l.kind not in ("conv2d", "avgpool", "globalavgpool"):
        raise refuse(i, l, f"kernel {l.kernel} / stride {l.stride}: the max-pool engine takes square windows and "
                           "strides; use a k x k pool")


def _unit_for(layer: Layer, after_sparse: bool = False) -> EngineUnit | None:
    """The engine that runs `layer`; a dense linear layer after a sparse one runs on the sparse
    engine too (stored as all its nonzero weights), so the linear tail is one pipeline stage."""
    if after_sparse and layer.kind == "linear":
        return SPARSE
    return next((u for u in LAYER_UNITS if u.runs(layer)), None)


def _units(layers: list[Layer]) -> list[EngineUnit | None]:
    units, after = [], False
    for l in layers:
        u = _unit_for(l, after)
        after = after or u is SPARSE
        units.append(u)
    return units


def schedule(plan: Plan, config: ArrayConfig) -> Schedule:
    """Check `plan` against the hardware and compute every constant of every pass.

    Without lanes in `config`, the sparse engine gets the fewest lanes (up to hw.sparse.auto_lanes)
    with which its stage is not the pipeline's slowest: more would cost logic, block RAM and
    place-and-route time without making a stream faster (on 10x9 the paper model's array stage
    takes 59k cycles an image and one lane 47k; on 10x14 the array stage takes 40k, so two)."""
    if config.lanes is not None:
        return _schedule(plan, config)
    most = auto_lanes(plan.layers)
    for n in range(1, most):
        s = _schedule(plan, replace(config, lanes=n))
        if not _sparse_bound(s):
            return replace(s, config=config)
    return replace(_schedule(plan, replace(config, lanes=most)), config=config)


def _sparse_bound(s: Schedule) -> bool:
    """Whether a stage with a sparse pass is slower than every other stage."""
    cyc = [(sum(c), any(p.kind == "sparse" for p in st)) for c, st in zip(stage_cycles(s), s.stages)]
    slowest = max(c for c, _ in cyc)
    return any(sp and c == slowest for c, sp in cyc) and sum(c == slowest for c, _ in cyc) == 1


def _schedule(plan: Plan, config: ArrayConfig) -> Schedule:
    layers = plan.layers
    if len(plan.input_shape) != 3:
        raise UnsupportedPlan(f"input shape {plan.input_shape}: the accelerator takes one (C, H, W) image")
    if not 1 <= plan.input_type.bits <= PIXEL_BITS:
        raise UnsupportedPlan(f"input type {plan.input_type}: the pixel stream carries {PIXEL_BITS}-bit integers; "
                              f"quantize the input to at most {PIXEL_BITS} bits")
    if not layers or layers[-1].kind != "linear" or layers[-1].out is not None:
        raise UnsupportedPlan("the last layer must be a linear layer emitting raw accumulators (out=None)")
    for i, l in enumerate(layers):
        _check_kind(i, l)
        _check_types(i, l)
    check_shapes(plan)
    graph = steps(plan)
    compute = [l for l in layers if l.weight is not None]
    acc_width = max((l.acc_bound * l.mult).bit_length() + 1 for l in compute + [l for l in layers if l.kind in (*AVERAGES, "add")])
    if acc_width > 32:
        raise UnsupportedPlan(f"accumulators need {acc_width} bits; logits are 32-bit (contract rule 5 bounds them by 2**24)")
    act_width = max([PIXEL_BITS] + [l.out.bits for l in layers if l.out is not None])
    units = _units(layers)
    encoded = {i: sparse_encoding(l) for i, (l, u) in enumerate(zip(layers, units)) if u is SPARSE}
    w_width = max([2] + [l.w_type.bits + (not l.w_type.signed) for l, u in zip(layers, units)
                         if l.weight is not None and u is not SPARSE])
    value_bits = max([1] + [e.value_bits for e in encoded.values()])
    index_bits = max([1] + [e.index_bits for e in encoded.values()])

    # the engines whose layers' shifts come per channel, from a memory beside the biases
    per_channel = {u.kind for l, u in zip(layers, units) if isinstance(l.shift, np.ndarray) and l.out is not None
                   and u is not None}
    lanes = config.lanes
    type_of = lambda t: plan.input_type if t == INPUT_TENSOR else layers[t].out  # noqa: E731  (a tensor's integer type)
    adds = {}  # the add constants of each conv whose store adds (hw.residual)
    for st in graph:
        if st.add is not None:
            try:
                adds[st.run] = add_config(layers[st.add], st.branch, type_of(st.skip),
                                          layers[st.requant] if st.requant is not None else None, act_width, acc_width)
            except ValueError as e:
                raise refuse(st.add, layers[st.add], str(e)) from None
    ctx = LoweringContext(config, acc_width, w_width, value_bits, index_bits, window_features(layers), per_channel,
                          {name: [] for u in REGISTRY for name in u.memories}, lanes, encoded, act_width,
                          adds if adds else None)
    # Buffers (hw.graph.Buffers): 0 holds the image (the load's stage hands it to the first
    # layer's); each layer stage has buffers of its own, reused as its tensors die, and writes its
    # last output into a new buffer that the next stage reads. A stage boundary lies where the
    # engines change from the array's (and the pool's) to the sparse engine's, so the stages share no engine.
    passes = [Pass(LOAD, -1, "image", dst=0)]
    stage_of = []
    for j, st in enumerate(graph):
        u, prev = units[st.run], units[graph[j - 1].run] if j else None
        stage_of.append(1 if j == 0 else stage_of[-1] + (u is SPARSE and prev is not SPARSE))
    bufs = Buffers(plan, graph, stage_of)
    for j, st in enumerate(graph):
        i, l, out = st.run, layers[st.run], layers[st.out]
        if min(out.out_shape) <= 0:
            raise refuse(st.out, out, f"output shape {tuple(out.out_shape)} is empty; use a larger input or smaller kernels")
        if out.out is None and st.out != len(layers) - 1:
            raise refuse(st.out, out, "only the last layer may emit raw accumulators (out=None)")
        if l.kind == "linear" and len(l.in_shape) != 1:
            raise refuse(i, l, f"input shape {tuple(l.in_shape)}: put a flatten before a linear layer")
        unit = units[i]
        if unit is None:
            raise refuse(i, l, f"kind {l.kind!r} is not generated (conv2d, maxpool, avgpool, globalavgpool, flatten, "
                               "linear, requant, and add on the store of a conv are)")
        low = unit.lower(i, l, ctx)
        src = bufs.read(j, st.src, low.top)
        skip = -1 if st.skip is None else bufs.read(j, st.skip, int(np.prod(out.out_shape)) - 1)
        dst = bufs.write(j, st.out, int(np.prod(out.out_shape)))
        bufs.release(j)
        name = l.name if st.add is None else f"{l.name} + {out.name}"
        passes.append(Pass(unit, st.out, name, src=src, dst=dst, in_signed=type_of(st.src).signed, skip=skip,
                           skip_signed=skip >= 0 and type_of(st.skip).signed, cfg=low.cfg, macs=low.macs,
                           stage=stage_of[j]))
    passes.append(Pass(EMIT, len(layers), "logits", src=-1, dst=-1, stage=passes[-1].stage))
    sizes, reads = bufs.sizes, bufs.reads
    used = sorted({b for p in passes for b in (p.src, p.dst, p.skip) if b >= 0})
    assert used == list(range(len(sizes))), (used, len(sizes))

    # a vector read at `top` touches bank rows up to (top >> log2 banks) + 1
    banks = banks_for(config.cols)
    depths = tuple(max(sizes[b], reads[b] + 2 * banks + 1) for b in range(len(sizes)))
    consts = [v for p in passes for v in p.unit.address_constants(p)]
    counters = [v for u in REGISTRY for v in u.addresses(ctx.memory_contents)]
    addr_width = max(int(abs(d) + banks).bit_length() for d in (*depths, *consts, *counters))
    units_used = [u for u in REGISTRY if any(p.unit is u for p in passes)]
    return Schedule(plan, config, passes, units_used, act_width, w_width, acc_width, addr_width, depths, value_bits,
                    index_bits, ctx.window, ctx.memory_contents, lanes, bool(adds))


__all__ = ["EMIT", "LAYER_UNITS", "LOAD", "MAX_BITS", "REGISTRY", "SPARSE", "schedule"]
