"""Verification ladder, step 1: the integer reference against ONNX Runtime, every layer.

Each plan layer names the ONNX tensor holding its output; the graph is re-served with those
tensors as outputs, so every intermediate integer tensor is compared, not just the logits.
`qonnx_agreement` checks a QONNX input's conversion: qonnx's own execution against ONNX Runtime
on the QCDQ golden model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from export import reference
from export.golden import golden_model
from export.ort import session_of
from export.plan import Layer, Plan


@dataclass
class Mismatch:
    image: int
    layer: str
    index: tuple[int, ...]
    expected: int  # ONNX Runtime
    got: int  # reference

    def __str__(self) -> str:
        return f"image {self.image}, layer {self.layer!r}, index {self.index}: ONNX Runtime {self.expected}, reference {self.got}"


@dataclass
class Agreement:
    images: int = 0
    exact: int = 0  # images whose every layer matched
    mismatches: list[Mismatch] = field(default_factory=list)


def layer_exp(layer: Layer) -> int:
    return layer.acc_exp if layer.out is None else layer.out.exp


def traced_session(model_path: str | Path, plan: Plan):
    """An ORT session on the golden model that also outputs every plan layer's tensor."""
    model = golden_model(model_path)
    have = {o.name for o in model.graph.output}
    for l in plan.layers:
        if l.tensor and l.tensor not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(l.tensor))
            have.add(l.tensor)
    return session_of(model)


def compare(model_path: str | Path, plan: Plan, images: np.ndarray, progress: bool = False) -> Agreement:
    """Reference vs ONNX Runtime, layer by layer, on integer inputs (N, *plan.input_shape), fed to ORT as q * 2**e."""
    sess = traced_session(model_path, plan)
    names = [o.name for o in sess.get_outputs()]
    inp = sess.get_inputs()[0].name
    res = Agreement()
    bar = tqdm(total=len(images), desc="reference vs ONNX Runtime", unit="img", disable=not progress)
    dim = sess.get_inputs()[0].shape[0]
    batch = dim if isinstance(dim, int) and dim > 0 else 64  # a model exported with a fixed batch (often 1) runs in its own
    for start in range(0, len(images), batch):
        chunk = np.asarray(images[start:start + batch])
        outs = dict(zip(names, sess.run(names, {inp: plan.input_float(chunk)})))
        for j, img in enumerate(chunk):
            n = start + j
            ok = True
            for l, got in zip(plan.layers, reference.run(plan, img)):
                if not l.tensor:
                    continue
                exp = np.round(outs[l.tensor][j].astype(np.float64) * 2.0 ** -layer_exp(l)).astype(np.int64).reshape(got.shape)
                if not np.array_equal(exp, got):
                    idx = tuple(int(i) for i in np.argwhere(exp != got)[0])
                    res.mismatches.append(Mismatch(n, l.name, idx, int(exp[idx]), int(got[idx])))
                    ok = False
                    break
            res.images += 1
            res.exact += ok
        bar.update(len(chunk))
    bar.close()
    return res


def qonnx_agreement(path: str | Path, inputs: np.ndarray) -> tuple[int, float]:
    """qonnx's own execution of the original QONNX model (qonnx.core.onnx_exec) vs ONNX Runtime on its
    QCDQ golden model, at the golden model's output: (inputs whose outputs are equal, max |difference|).
    `inputs` are float32 ONNX inputs (N, ...), run one at a time."""
    from qonnx.core.modelwrapper import ModelWrapper  # optional, and only QONNX inputs need it
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes
    golden = golden_model(path)
    out_name = golden.graph.output[0].name
    sess = session_of(golden)
    original = ModelWrapper(str(path)).transform(InferShapes())
    in_name = original.graph.input[0].name
    equal, worst = 0, 0.0
    for x in inputs:
        ours = sess.run([out_name], {sess.get_inputs()[0].name: x[None]})[0]
        theirs = execute_onnx(original, {in_name: x[None]}, return_full_exec_context=True)[out_name]
        diff = float(np.abs(ours.astype(np.float64) - theirs).max())
        equal += diff == 0.0
        worst = max(worst, diff)
    return equal, worst
