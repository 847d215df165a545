"""Random small quantized models for property tests: a hypothesis strategy, reused by hw/ and sim/.

`model_specs()` draws a `RandomModel` (a layer sequence from the supported set, channels,
kernels 1-5, bit widths 2-8, sparsity 0-95%, a seed); `materialize(spec, folder)` builds the
Brevitas model with weights that include +-max and all-zero rows, exports it to ONNX and compiles
it, returning the ONNX path and the plan. Needs hypothesis (the `test` extra).
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
    config: ModelConfig
    seed: int

    def __repr__(self) -> str:  # shown by hypothesis on failure
        layers = ", ".join(f"{l.kind}({l.out},{l.kernel},w{l.w_bits},a{l.a_bits},{l.cls},{l.sparsity:.2f})" for l in self.config.layers)
        return f"RandomModel(in={self.config.in_shape}, seed={self.seed}, [{layers}])"


@st.composite
def model_specs(draw, max_size: int = 10, classes: int | None = None, w_bits: int | None = None,
                a_bits: int | None = None, pruned: bool | None = None) -> RandomModel:
    """A small model of the supported layer kinds; fixed widths or pruning when given."""
    bits = lambda fixed: st.just(fixed) if fixed is not None else st.integers(2, 8)
    c = draw(st.integers(1, 3))
    size = draw(st.integers(4, max_size))
    h, layers = size, []
    for _ in range(draw(st.integers(1, 2))):
        k = draw(st.integers(1, min(5, h)))
        layers.append(LayerSpec("conv", draw(st.integers(1, 4)), k, draw(bits(w_bits)), draw(bits(a_bits))))
        h = h - k + 1
        if h >= 2 and draw(st.booleans()):
            layers.append(LayerSpec("pool", kernel=2))
            h //= 2
    layers.append(LayerSpec("flatten"))
    want_p = draw(st.booleans()) if pruned is None else pruned
    if want_p or draw(st.booleans()):
        cls = "P" if want_p else "NP"
        sparsity = draw(st.sampled_from([0.0, 0.5, 0.8, 0.95])) if cls == "P" else 0.0
        layers.append(LayerSpec("linear", draw(st.integers(1, 12)), w_bits=draw(bits(w_bits)), a_bits=draw(bits(a_bits)),
                                cls=cls, sparsity=sparsity))
    n = classes or draw(st.integers(2, 5))
    layers.append(LayerSpec("linear", n, w_bits=draw(bits(w_bits)), relu=False))
    cfg = ModelConfig("random", layers, n, (c, size, size), quantized=True)
    return RandomModel(cfg, draw(st.integers(0, 2**31 - 1)))


def _set_weights(model, spec: RandomModel) -> None:
    """Weights on a power-of-two grid that reaches +-max, with all-zero rows and pruned entries."""
    import torch
    rng = np.random.default_rng(spec.seed)
    specs = [l for l in spec.config.layers if l.kind in ("conv", "linear")]
    for m, l in zip(model.weighted, specs):
        top = (1 << (l.w_bits - 1)) - 1
        q = rng.integers(-top, top + 1, size=tuple(m.weight.shape))
        q.reshape(-1)[rng.integers(q.size)] = top * rng.choice([-1, 1])
        q[0] = np.abs(q[0])  # with its positive bias, output 0 is > 0 for any input: no ReLU sees only zeros
        if q.shape[0] > 1 and rng.random() < 0.5:
            q[rng.integers(q.shape[0])] = 0  # an all-zero row
        if l.sparsity:
            q[rng.random(q.shape) < l.sparsity] = 0
        if not np.any(np.abs(q) == top):
            q.reshape(-1)[0] = top
        exp = int(rng.integers(-7, -3))
        with torch.no_grad():
            m.weight.copy_(torch.as_tensor(q * 2.0 ** exp, dtype=torch.float32))
            m.bias.copy_(torch.as_tensor(np.abs(rng.normal(0, 0.5, m.bias.shape)) + 0.05, dtype=torch.float32))


def materialize(spec: RandomModel, folder: str | Path) -> tuple[Path, Plan]:
    """Build, calibrate, export and compile one random model."""
    import torch

    from export.compile import compile_onnx
    from export.onnx_export import export_model
    from quant.model import build
    torch.manual_seed(spec.seed)
    model = build(spec.config)
    _set_weights(model, spec)
    model.train()
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():  # let the activation quantizers see data (their scales stay powers of two)
        for _ in range(3):
            x = torch.randint(0, 256, (8, *spec.config.in_shape), generator=gen).float() / 256.0
            model(x)
    model.eval()
    path = export_model(model, {"class_names": json.dumps([f"class{i}" for i in range(spec.config.num_classes)])},
                        Path(folder) / f"random_{spec.seed}.onnx")
    return path, compile_onnx(path)


def random_images(plan: Plan, n: int, seed: int = 0) -> np.ndarray:
    """uint8 images with the extremes 0 and 255 included."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *plan.input_shape), dtype=np.uint8)
    if n >= 2:
        x[0] = 0
        x[1] = 255
    return x
