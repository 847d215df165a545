"""Shared helpers for the hw/ tests: tiny random plans and an amaranth.sim run of the accelerator."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from export.encoding import encode_best
from export.plan import IntType, Layer, Plan, pair
from hw.stream_io import pixel_bytes


def _weights(rng, shape, bits, density=1.0):
    lim = (1 << (bits - 1)) - 1
    w = rng.integers(-lim - 1, lim + 1, size=shape)
    if density < 1.0:
        w = w * (rng.random(shape) < density)
    return w.astype(np.int8 if bits <= 8 else np.int16)


def _layer(rng, name, kind, in_shape, out_shape, inp, out_bits, w_bits, kernel=1, relu=True, signed_out=False,
           density=1.0, sparse=False, last=False, shift=None):
    cout = out_shape[0]
    wshape = (cout, in_shape[0], *pair(kernel)) if kind == "conv2d" else (cout, in_shape[0])
    w = _weights(rng, wshape, w_bits, density)
    w_type = IntType(w_bits, True, -(w_bits - 1))
    k = int(np.prod(wshape[1:]))
    typical = max(1, int(np.sqrt(k)) * inp.max_abs * (1 << (w_bits - 1)) // 2)
    bias = rng.integers(-typical, typical + 1, size=cout).astype(np.int64)
    out = None if last else IntType(out_bits, signed_out, 0)
    if shift is None:
        shift = max(0, typical.bit_length() - out_bits + int(rng.integers(-1, 2)))
    layer = Layer(name, kind, tuple(in_shape), tuple(out_shape), inp, out, kernel=kernel, stride=1,
                  weight=w, bias=bias, w_type=w_type, shift=0 if last else shift, relu=relu and not last,
                  cls="P" if sparse else "NP", sparse=encode_best(w, w_bits) if sparse else None)
    return layer


def random_plan(rng: np.random.Generator, shape=(3, 8, 8), c1=3, k1=3, c2=4, k2=2, hidden=6, classes=3,
                act_bits=8, w_bits=8, density=0.3, signed_mid=False, fc_bits=None,
                img: IntType = IntType(8, False, -8)) -> Plan:
    """conv k1 (ReLU) -> maxpool 2 -> conv k2 -> maxpool 2 -> flatten -> linear P (sparse) -> linear NP.
    (The shape must leave at least one pixel after the second pool.)
    The paper model's shape, small. `signed_mid`: the second conv has no ReLU and a signed output.
    `img`: the input's type."""
    a = IntType(act_bits, False, -4)
    C, H, W = shape
    layers = []
    l1 = _layer(rng, "conv1", "conv2d", shape, (c1, H - k1 + 1, W - k1 + 1), img, act_bits, w_bits, k1)
    layers.append(l1)
    p1 = (c1, l1.out_shape[1] // 2, l1.out_shape[2] // 2)
    layers.append(Layer("pool1", "maxpool", l1.out_shape, p1, l1.out, l1.out, kernel=2, stride=2))
    t2 = IntType(act_bits, signed_mid, -4)
    l2 = _layer(rng, "conv2", "conv2d", p1, (c2, p1[1] - k2 + 1, p1[2] - k2 + 1), l1.out, act_bits, w_bits, k2,
                relu=not signed_mid, signed_out=signed_mid)
    layers.append(l2)
    p2 = (c2, l2.out_shape[1] // 2, l2.out_shape[2] // 2)
    layers.append(Layer("pool2", "maxpool", l2.out_shape, p2, t2, t2, kernel=2, stride=2))
    flat = (int(np.prod(p2)),)
    layers.append(Layer("flatten", "flatten", p2, flat, t2, t2))
    l3 = _layer(rng, "fc1", "linear", flat, (hidden,), t2, act_bits, fc_bits or w_bits, density=density, sparse=True)
    layers.append(l3)
    layers.append(_layer(rng, "fc2", "linear", (hidden,), (classes,), l3.out, act_bits, w_bits, last=True))
    return Plan(tuple(shape), img, layers, [f"c{i}" for i in range(classes)])


def vocabulary_specs(**kwargs):
    """export.testing's full-vocabulary models, all of which the hardware runs (max-pools up to 8 x 8)."""
    from export.testing import model_specs
    from hw.pool import MAX_KERNEL
    return model_specs(vocabulary="full", **kwargs).filter(
        lambda spec: all(l.kind != "maxpool" or l.kernel <= MAX_KERNEL for l in spec.config.layers))


def random_image(rng: np.random.Generator, plan: Plan) -> np.ndarray:
    """Integers over the plan's whole input range, at its input shape."""
    t = plan.input_type
    return rng.integers(t.min, t.max + 1, size=plan.input_shape).astype(np.int16)


def run_accelerator(dut, image: np.ndarray, **kwargs):
    """One image: (logits, cycles, writes); see run_images."""
    return run_images(dut, [image], **kwargs)[0]


def run_images(dut, images, *, rng=None, max_cycles: int = 200_000, passes: list | None = None,
               poke_start: bool = False, spans: list | None = None):
    """Stream each (C, H, W) image in HWC order after a `start` pulse, collect its logits and
    trace; returns [(logits, cycles, writes)] per image, images back to back in one simulation.

    `rng` adds random stalls on the pixel stream and back-pressure on the logits stream.
    `writes` is every trace record: (layer, addr, [values...]) as raw unsigned elements.
    With `passes` (a list), appends (kind, cycles) per engine run, counted as hw.cycles does.
    `poke_start` pulses `start` again while the accelerator is busy (it must be ignored).
    Each image starts as soon as `busy` is low, so images overlap in the pipeline's stages; with
    `spans` (a list), appends each image's (start cycle, done cycle) on one count.
    """
    classes, width = dut.sched.num_classes, dut.sched.act_width
    results = [{"logits": [], "cycles": None, "writes": []} for _ in images]
    started, now = [], [0]  # the images started; the collector's cycle count

    async def feeder(ctx):
        for image in images:
            while ctx.get(dut.busy):
                await ctx.tick()
            ctx.set(dut.start, 1)
            results[len(started)]["start_at"] = now[0]
            started.append(1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            hwc = pixel_bytes(np.transpose(image, (1, 2, 0)).reshape(-1), dut.plan.input_type)
            i = 0
            while i < len(hwc):
                stall = rng is not None and rng.random() < 0.3
                ctx.set(dut.pixels.valid, 0 if stall else 1)
                ctx.set(dut.pixels.payload, int(hwc[i]))
                _, _, ready, valid = await ctx.tick().sample(dut.pixels.ready, dut.pixels.valid)
                if ready and valid:
                    i += 1
            ctx.set(dut.pixels.valid, 0)
            if poke_start:
                ctx.set(dut.start, 1)
                await ctx.tick()
                ctx.set(dut.start, 0)
            await ctx.tick()

    engines = list(dut.engines.items())
    from hw.top import trace_name
    stages = dut.sched.stages
    traces = [getattr(dut, trace_name(k)) for k in range(1, len(stages))]
    stage_engines = [[e for kind, e in engines if any(p.kind == kind for p in st)] for st in stages[1:]]
    fields = ("valid", "layer", "addr", "count", "data")

    async def collector(ctx):
        # the images are in flight together: a stage's trace write belongs to the image whose pass
        # that stage's engines last started (passes of a stage run in order, one image at a time)
        began, starts = {}, [0] * len(traces)
        logits_seen = done_seen = 0
        for n in range(max_cycles):
            now[0] = n
            if done_seen == len(images):
                return
            if passes is not None:
                for kind, e in engines:
                    if ctx.get(e.start):
                        began[kind] = n
                    if ctx.get(e.done):
                        passes.append((kind, n - began.pop(kind) + 2))
            ready = not (rng is not None and rng.random() < 0.4)
            ctx.set(dut.logits.ready, 1 if ready else 0)
            _, _, valid, payload, done, cycles, *tr = await ctx.tick().sample(
                dut.logits.valid, dut.logits.payload, dut.done, dut.cycles,
                *(getattr(t, f) for t in traces for f in fields),
                *(e.start for es in stage_engines for e in es))
            go = tr[5 * len(traces):]
            for k in range(len(traces)):
                tv, tl, ta, tc, td = tr[5 * k:5 * k + 5]
                if tv:
                    vals = [(int(td) >> (i * width)) & ((1 << width) - 1) for i in range(int(tc))]
                    results[(starts[k] - 1) // len(stages[k + 1])]["writes"].append((int(tl), int(ta), vals))
            at = 0
            for k, es in enumerate(stage_engines):
                starts[k] += sum(bool(v) for v in go[at:at + len(es)])
                at += len(es)
            if valid and ready:
                results[logits_seen // classes]["logits"].append(int(payload))
                logits_seen += 1
            if done:
                results[done_seen]["cycles"] = int(cycles)
                results[done_seen]["done_at"] = n
                done_seen += 1
        raise AssertionError(f"{done_seen} of {len(images)} done within {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feeder)
    sim.add_testbench(collector)
    sim.run()
    out = []
    for r in results:
        assert len(r["logits"]) == classes, f"got {len(r['logits'])} logits, want {classes}"
        out.append((np.array(r["logits"], dtype=np.int64), r["cycles"], r["writes"]))
    if spans is not None:
        spans += [(r["start_at"], r["done_at"]) for r in results]
    return out


def first_mismatch(plan: Plan, outs: list[np.ndarray], writes, width: int, stored: set[int] | None = None) -> str | None:
    """Replay the trace into per-layer tensors; name the first layer/channel/pixel that differs.
    `stored`: the layers whose outputs the accelerator writes (None: all but flatten and the logits)."""
    got = {}
    for layer, addr, vals in writes:
        buf = got.setdefault(layer, {})
        for i, v in enumerate(vals):
            buf[addr + i] = v
    for i, (l, ref) in enumerate(zip(plan.layers, outs)):
        if l.kind == "flatten" or l.out is None or (stored is not None and i not in stored):
            continue
        flat = ref.reshape(-1)
        for a, want in enumerate(flat):
            v = got.get(i, {}).get(a)
            if v is not None and l.out.signed and v >= 1 << (width - 1):
                v -= 1 << width
            if v != want:
                c, rest = divmod(a, int(np.prod(ref.shape[1:])) if ref.ndim == 3 else 1)
                return f"layer {i} {l.name}: flat {a} (channel {c}, pixel {rest}) want {int(want)} got {v}"
    return None


def run_engine(engine, cfg: dict, tensor: np.ndarray, *, width: int, signed: bool, max_cycles: int = 20_000):
    """Run one pass of an array / pool / sparse engine against a numpy activation buffer.

    The buffer answers `raddr` READ_LATENCY cycles later with `rdata[c] = tensor[raddr + c * s]` (0
    past the end; s the pass's column stride, 1 but for a strided conv), as
    hw.memories.ActivationBuffer does. Returns (written {addr: raw value}, logits
    {addr: value}, cycles from start to done inclusive).
    """
    from hw.memories import READ_LATENCY

    flat = np.asarray(tensor, dtype=np.int64).reshape(-1)
    cols = len(engine.rdata)
    stride = cfg.get("win", {}).get("stride_m1", 0) + 1
    written, logits = {}, {}
    out = {}

    def element(a):
        v = int(flat[a]) if 0 <= a < flat.size else 0
        v &= (1 << width) - 1
        return v - (1 << width) if signed and v >= 1 << (width - 1) else v

    async def bench(ctx):
        ctx.set(engine.cfg, engine.cfg.shape().const(cfg))
        ctx.set(engine.start, 1)
        asked = [0] * (READ_LATENCY - 1)
        for n in range(max_cycles):
            asked.append(ctx.get(engine.raddr))
            wr = ctx.get(engine.wr)
            if wr.valid:
                for i in range(wr.count):
                    written[wr.addr + i] = int(wr.data[i])
            if hasattr(engine, "logit"):
                lg = ctx.get(engine.logit)
                if lg.valid:
                    logits[lg.addr] = int(lg.data) - ((1 << engine.acc_width) if lg.data >> (engine.acc_width - 1) else 0)
            if ctx.get(engine.done):
                out["cycles"] = n + 1
                return
            await ctx.tick()
            ctx.set(engine.start, 0)
            addr = asked.pop(0)
            for c in range(cols):
                ctx.set(engine.rdata[c], element(addr + c * stride))
        raise AssertionError(f"engine not done within {max_cycles} cycles")

    sim = Simulator(engine)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return written, logits, out["cycles"]


def to_signed(raw: dict, width: int, signed: bool) -> dict:
    if not signed:
        return raw
    return {a: v - (1 << width) if v >= 1 << (width - 1) else v for a, v in raw.items()}


def rect_plan(rng: np.random.Generator, shape=(1, 13, 6), img: IntType = IntType(8, True, -7), c1=3,
              k1=(5, 2), stride1=(2, 1), pad1=(2, 1, 2, 0), c2=4, k2=(1, 3), stride2=(1, 2), classes=3) -> Plan:
    """Non-square kernels with per-axis strides and pads (DS-CNN's first layer, small): conv k1
    strided and padded (ReLU) -> conv k2 strided, signed -> flatten -> linear NP."""
    def out_hw(hw, k, s, pad):
        (h, w), (kh, kw), (sy, sx) = hw, pair(k), pair(s)
        return (h + pad[0] + pad[2] - kh) // sy + 1, (w + pad[1] + pad[3] - kw) // sx + 1

    l1 = _layer(rng, "conv1", "conv2d", shape, (c1, *out_hw(shape[1:], k1, stride1, pad1)), img, 8, 8, k1)
    l1.stride, l1.pad = stride1, tuple(pad1)
    o2 = (c2, *out_hw(l1.out_shape[1:], k2, stride2, (0, 0, 0, 0)))
    l2 = _layer(rng, "conv2", "conv2d", l1.out_shape, o2, l1.out, 8, 8, k2, relu=False, signed_out=True)
    l2.stride = stride2
    flat = Layer("flatten", "flatten", o2, (int(np.prod(o2)),), l2.out, l2.out)
    fc = _layer(rng, "fc", "linear", flat.out_shape, (classes,), l2.out, 8, 8, last=True)
    return Plan(tuple(shape), img, [l1, l2, flat, fc], [f"c{i}" for i in range(classes)])


def vocab_plan(rng: np.random.Generator, shape=(2, 9, 9), c1=3, c2=4, pad1=(1, 1, 1, 1), stride1=2,
               pad2=(0, 1, 1, 0), k2=2, hidden=5, classes=3, act_bits=8) -> Plan:
    """The vocabulary beyond random_plan: conv 3x3 padded and strided with per-channel shifts ->
    avgpool 2 -> conv k2 padded -> global average pool -> flatten -> linear P per channel -> linear NP.
    (The second conv's map must be square with a power-of-two pixel count.)"""
    img = IntType(8, False, -8)
    C, H, W = shape

    def per_channel(l, spread=2):
        l.shift = (l.shift + rng.integers(-spread, spread + 1, size=l.out_shape[0])).clip(-2).astype(np.int64)
        l.w_exps = np.zeros(l.out_shape[0], dtype=np.int64)
        return l

    oh, ow = (H + pad1[0] + pad1[2] - 3) // stride1 + 1, (W + pad1[1] + pad1[3] - 3) // stride1 + 1
    l1 = per_channel(_layer(rng, "conv1", "conv2d", shape, (c1, oh, ow), img, act_bits, 8, 3))
    l1.stride, l1.pad = stride1, tuple(pad1)
    t1 = l1.out
    p1 = (c1, oh // 2, ow // 2)
    a1 = IntType(act_bits, False, -3)
    pool = Layer("pool1", "avgpool", l1.out_shape, p1, t1, a1, kernel=2, stride=2, shift=int(rng.integers(0, 3)))
    oh2, ow2 = p1[1] + pad2[0] + pad2[2] - k2 + 1, p1[2] + pad2[1] + pad2[3] - k2 + 1
    t2 = IntType(act_bits, True, -4)
    l2 = _layer(rng, "conv2", "conv2d", p1, (c2, oh2, ow2), a1, act_bits, 8, k2, relu=False, signed_out=True)
    l2.pad = tuple(pad2)
    gap = Layer("gap", "globalavgpool", l2.out_shape, (c2, 1, 1), t2, t2, kernel=oh2, shift=int((oh2 * ow2).bit_length() - 1))
    flat = Layer("flatten", "flatten", (c2, 1, 1), (c2,), t2, t2)
    l3 = per_channel(_layer(rng, "fc1", "linear", (c2,), (hidden,), t2, act_bits, 8, density=0.6, sparse=True))
    l4 = _layer(rng, "fc2", "linear", (hidden,), (classes,), l3.out, act_bits, 8, last=True)
    return Plan(tuple(shape), img, [l1, pool, l2, gap, flat, l3, l4], [f"c{i}" for i in range(classes)])
