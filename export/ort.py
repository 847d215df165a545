"""The one place that creates ONNX Runtime sessions for the golden model (contract rule 8).

At ORT's default (ALL) or EXTENDED level the QDQ pattern is fused into QLinearConv/QGemm, whose
x86 kernels can saturate intermediate sums; BASIC runs the graph as written, exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def golden_session(model_path: str | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def run_logits(session: ort.InferenceSession, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """float32 logits for uint8 (N, 3, H, W) images, fed as p/256 (contract rule 2)."""
    name = session.get_inputs()[0].name
    x = np.asarray(images, dtype=np.float32) / 256.0
    outs = [session.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def run_all(session: ort.InferenceSession, image: np.ndarray) -> dict[str, np.ndarray]:
    """Every intermediate tensor for one image (the session must expose them as outputs)."""
    names = [o.name for o in session.get_outputs()]
    x = np.asarray(image, dtype=np.float32)[None] / 256.0
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x})))
