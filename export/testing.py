"""Random small quantized models for property tests: a hypothesis strategy, reused by hw/ and sim/.

`model_specs()` draws a `RandomModel` (a layer sequence from the vocabulary: padded and strided
convs with folded batch norm and per-channel scales, max/average/global pools, NP and P linear
layers; channels, kernels 1-5, bit widths 2-8, sparsity 0-95%, a seed; with the "standard"
vocabulary also residual blocks, grouped and depthwise convs, kh x kw kernels with per-axis strides
and pads, averages over any count, H x W inputs and signed int8 inputs); `materialize(spec,
folder)` builds the Brevitas model with weights that include +-max and all-zero rows, exports it
to ONNX and compiles it, returning the ONNX path and the plan. Needs hypothesis (the `test` extra).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from export.plan import Plan
from quant.model import LayerSpec, ModelConfig


@dataclass(frozen=True)
class RandomModel:
    config: ModelConfig  # the float description; batch norm, where drawn, is folded before QAT
    seed: int

    def __repr__(self) -> str:  # shown by hypothesis on failure
        def one(l: LayerSpec) -> str:
            if l.kind == "conv":
                return (f"conv({l.out},k{l.kernel},s{l.stride},p{l.padding},w{l.w_bits},a{l.a_bits}"
                        f"{f',g{l.groups}' if l.groups > 1 else ''}{',bn' if l.bn else ''}{',pc' if l.per_channel else ''})")
            if l.kind == "residual":
                return f"residual({l.out},s{l.stride},w{l.w_bits},a{l.a_bits}{',bn' if l.bn else ''})"
            if l.kind == "linear":
                return f"linear({l.out},w{l.w_bits},a{l.a_bits},{l.cls},{l.sparsity:.2f}{',pc' if l.per_channel else ''})"
            return f"{l.kind}({l.kernel})" if l.kind in ("maxpool", "avgpool") else l.kind
        signed = ", int8" if self.config.in_signed else ""
        return f"RandomModel(in={self.config.in_shape}{signed}, seed={self.seed}, [{', '.join(one(l) for l in self.config.layers)}])"


# basic: valid stride-1 convs, 2x2 max-pool, per-tensor scales; full: the chain vocabulary below;
# standard: full plus what MLPerf Tiny's models need (residual blocks, groups, per-axis kernels, any average, any input)
VOCABULARIES = ("full", "basic", "standard")


@st.composite
def model_specs(draw, max_size: int = 10, classes: int | None = None, w_bits: int | None = None,
                a_bits: int | None = None, pruned: bool | None = None, vocabulary: str = "full") -> RandomModel:
    """A small model of the layer vocabulary; fixed widths or pruning when given.

    "full" draws zero padding (any pad up to k-1, or same), strides 1-2, batch norm (folded),
    per-channel weight scales, k x k max-pools, 2x2 average pools and global average pools."""
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"vocabulary {vocabulary!r}: use one of {VOCABULARIES}")
    if vocabulary == "standard":
        return draw(_standard_specs(max_size, classes, w_bits, a_bits))
    full = vocabulary == "full"
    bits = lambda fixed: st.just(fixed) if fixed is not None else st.integers(2, 8)
    c = draw(st.integers(1, 3))
    size = draw(st.integers(4, max_size))
    h, layers = size, []
    for _ in range(draw(st.integers(1, 2))):
        k = draw(st.integers(1, min(5, h)))
        pad, stride, bn, pc = 0, 1, False, False
        if full:
            pad = draw(st.sampled_from(["same", 0, k - 1] if k % 2 else [0, k - 1]))
            stride = draw(st.integers(1, 2))
            bn, pc = draw(st.booleans()), draw(st.booleans())
        layers.append(LayerSpec("conv", draw(st.integers(1, 4)), k, draw(bits(w_bits)), draw(bits(a_bits)),
                                stride=stride, padding=pad, bn=bn, per_channel=pc))
        p = (k - 1) // 2 if pad == "same" else pad
        h = (h + 2 * p - k) // stride + 1
        pool = draw(st.sampled_from(["none", "maxpool", "avgpool"] if full else ["none", "maxpool"]))
        pk = draw(st.integers(2, 3)) if full and pool == "maxpool" else 2
        if h >= pk and pool != "none":
            layers.append(LayerSpec(pool, kernel=pk, a_bits=draw(bits(a_bits))))
            h //= pk
    if full and h * h & (h * h - 1) == 0 and draw(st.booleans()):
        layers.append(LayerSpec("globalavgpool", a_bits=draw(bits(a_bits))))
    return _head(draw, layers, ModelConfig("random", [], 0, (c, size, size)), classes, w_bits, a_bits, pruned, full)


def _head(draw, layers: list[LayerSpec], cfg: ModelConfig, classes: int | None, w_bits: int | None, a_bits: int | None,
          pruned: bool | None, full: bool) -> RandomModel:
    """Flatten, an optional hidden NP or P linear layer, the logits; the drawn model."""
    bits = lambda fixed: st.just(fixed) if fixed is not None else st.integers(2, 8)
    layers.append(LayerSpec("flatten"))
    want_p = draw(st.booleans()) if pruned is None else pruned
    if want_p or draw(st.booleans()):
        cls = "P" if want_p else "NP"
        sparsity = draw(st.sampled_from([0.0, 0.5, 0.8, 0.95])) if cls == "P" else 0.0
        layers.append(LayerSpec("linear", draw(st.integers(1, 12)), w_bits=draw(bits(w_bits)), a_bits=draw(bits(a_bits)),
                                cls=cls, sparsity=sparsity, per_channel=full and draw(st.booleans())))
    n = classes or draw(st.integers(2, 5))
    layers.append(LayerSpec("linear", n, w_bits=draw(bits(w_bits)), relu=False))
    cfg = ModelConfig("random", layers, n, cfg.in_shape, in_signed=cfg.in_signed)
    return RandomModel(cfg.validate(), draw(st.integers(0, 2**31 - 1)))


@st.composite
def _standard_specs(draw, max_size: int, classes: int | None, w_bits: int | None, a_bits: int | None) -> RandomModel:
    """The "standard" vocabulary: an H x W input (uint8, or int8 at 2^-7), then up to three of conv
    (kh x kw, per-axis stride and pad, groups: 1, some, or depthwise), residual block and pool
    (max, or an average over any kh x kw count), an optional global average, the linear head."""
    bits = lambda fixed: st.just(fixed) if fixed is not None else st.integers(2, 8)
    in_shape = (draw(st.integers(1, 3)), draw(st.integers(3, max_size)), draw(st.integers(3, max_size)))
    shape, layers = in_shape, []
    for _ in range(draw(st.integers(1, 3))):
        c, h, w = shape
        what = draw(st.sampled_from(["conv", "conv", "residual", "pool"]))
        if what == "conv":
            kh, kw = draw(st.integers(1, min(5, h))), draw(st.integers(1, min(5, w)))
            groups = draw(st.sampled_from(sorted({1, c} | {g for g in (2, 3) if c % g == 0})))
            out = groups * draw(st.integers(1, 2 if groups > 1 else 4))
            pad = "same" if kh % 2 and kw % 2 and draw(st.booleans()) else [draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))]
            l = LayerSpec("conv", out, [kh, kw], draw(bits(w_bits)), draw(bits(a_bits)), stride=[draw(st.integers(1, 2)), draw(st.integers(1, 2))],
                          padding=pad, groups=groups, bn=draw(st.booleans()), per_channel=draw(st.booleans()))
        elif what == "residual":
            l = LayerSpec("residual", draw(st.integers(1, 4)), w_bits=draw(bits(w_bits)), a_bits=draw(bits(a_bits)),
                          stride=draw(st.integers(1, 2)), bn=draw(st.booleans()), per_channel=draw(st.booleans()))
        elif h >= 2 and w >= 2:
            kind = draw(st.sampled_from(["maxpool", "avgpool"]))
            l = LayerSpec(kind, kernel=[draw(st.integers(1, min(3, h))), draw(st.integers(2, min(3, w)))], a_bits=draw(bits(a_bits)))
        else:
            continue
        try:
            l.unit.validate(l, "drawn layer")
            new = l.unit.out_shape(l, shape, "drawn layer")
        except ValueError:  # e.g. groups that do not divide the channels
            continue
        if min(new) < 1:
            continue
        layers.append(l)
        shape = new
    if draw(st.booleans()):
        layers.append(LayerSpec("globalavgpool", a_bits=draw(bits(a_bits))))
    return _head(draw, layers, ModelConfig("random", [], 0, in_shape, in_signed=draw(st.booleans())),
                 classes, w_bits, a_bits, None, True)


def _set_weights(model, spec: RandomModel) -> None:
    """Weights on a power-of-two grid that reaches +-max, with all-zero rows and pruned entries.

    Per-channel layers get exponents that differ per channel (by up to 10), and no zero row
    (a zero row has no scale)."""
    import torch
    rng = np.random.default_rng(spec.seed)
    specs = [l for l in spec.config.layers if l.kind in ("conv", "linear")]
    for m, l in zip(model.weighted, specs):
        top = (1 << (l.w_bits - 1)) - 1
        q = rng.integers(-top, top + 1, size=tuple(m.weight.shape))
        q.reshape(-1)[rng.integers(q.size)] = top * rng.choice([-1, 1])
        q[0] = np.abs(q[0])  # with its positive bias, output 0 is > 0 for any input: no ReLU sees only zeros
        if q.shape[0] > 1 and rng.random() < 0.5 and not l.per_channel:
            q[rng.integers(q.shape[0])] = 0  # an all-zero row
        if l.sparsity:
            q[rng.random(q.shape) < l.sparsity] = 0
        if l.per_channel:
            rows = q.reshape(q.shape[0], -1)
            rows[np.arange(rows.shape[0]), rng.integers(rows.shape[1], size=rows.shape[0])] = top
            exp = rng.integers(-12, -3, size=q.shape[0]).reshape((-1,) + (1,) * (q.ndim - 1))
        else:
            if not np.any(np.abs(q) == top):
                q.reshape(-1)[0] = top
            exp = int(rng.integers(-7, -3))
        with torch.no_grad():
            m.weight.copy_(torch.as_tensor(q * 2.0 ** exp, dtype=torch.float32))
            m.bias.copy_(torch.as_tensor(np.abs(rng.normal(0, 0.5, m.bias.shape)) + 0.05, dtype=torch.float32))


def _set_batchnorm(model, seed: int) -> None:
    """Batch-norm statistics whose fold keeps the weights on a power-of-two grid: var + eps = 1, gamma = 2^j."""
    import torch
    rng = np.random.default_rng(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_var.fill_(1.0 - m.eps)
                m.running_mean.copy_(torch.as_tensor(rng.normal(0, 0.2, n), dtype=torch.float32))
                m.weight.copy_(torch.as_tensor(2.0 ** rng.integers(-1, 2, n), dtype=torch.float32))
                m.bias.copy_(torch.as_tensor(np.abs(rng.normal(0, 0.3, n)) + 0.3, dtype=torch.float32))


def materialize(spec: RandomModel, folder: str | Path) -> tuple[Path, Plan]:
    """Build (folding batch norm), calibrate, export and compile one random model."""
    import torch

    from export.compile import compile_onnx
    from export.onnx_export import export_model
    from quant.fold import fold_batchnorm, needs_folding
    from quant.model import build, quantized_twin
    torch.manual_seed(spec.seed)
    fl = build(spec.config)
    _set_weights(fl, spec)
    _set_batchnorm(fl, spec.seed)
    state = fl.state_dict()
    if needs_folding(spec.config):
        state = fold_batchnorm(spec.config, state)[1]
    model = build(quantized_twin(spec.config))
    model.load_state_dict(state, strict=False)
    model.train()
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():  # let the activation quantizers see data (their scales stay powers of two)
        for _ in range(3):
            x = torch.randint(0, 256, (8, *spec.config.in_shape), generator=gen).float()
            x = (x - 128) / 128.0 if spec.config.in_signed else x / 256.0
            model(x)
    model.eval()
    path = export_model(model, {"class_names": json.dumps([f"class{i}" for i in range(spec.config.num_classes)])},
                        Path(folder) / f"random_{spec.seed}.onnx")
    return path, compile_onnx(path)


def random_images(plan: Plan, n: int, seed: int = 0) -> np.ndarray:
    """Integer inputs of the plan's type (uint8, or int8 for a signed input) with both extremes included."""
    rng = np.random.default_rng(seed)
    t = plan.input_type
    lo, hi = (-(1 << (t.bits - 1)), (1 << (t.bits - 1)) - 1) if t.signed else (0, (1 << t.bits) - 1)
    x = rng.integers(lo, hi + 1, size=(n, *plan.input_shape)).astype(np.int8 if t.signed else np.uint8)
    if n >= 2:
        x[0] = lo
        x[1] = hi
    return x
