"""The one place that creates ONNX Runtime sessions for the golden model (contract rule 8).

At ORT's default (ALL) or EXTENDED level the QDQ pattern is fused into QLinearConv/QGemm, whose
x86 kernels can saturate intermediate sums; BASIC runs the graph as written, exactly.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from export.golden import golden_model


def golden_session(model_path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session at ORT_ENABLE_BASIC on the golden model of `model_path` (export/golden.py: QONNX
    converted, a trailing Softmax cut off); `threads` sets the intra-op thread count (ORT's default
    when None: one per physical core)."""
    return session_of(golden_model(model_path), threads)


def session_of(model: onnx.ModelProto, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session at ORT_ENABLE_BASIC on a loaded model."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def host_throughput(model_path: str | Path, images: np.ndarray, batch: int = 64, threads: int | None = None,
                    min_seconds: float = 1.0) -> dict:
    """Images/s of the golden model on this host's CPU at the exact (BASIC) level: batches of
    `batch` images (the given ones repeated), one warm-up batch, then whole batches until
    `min_seconds` have passed. A model exported with a fixed batch runs at that batch."""
    session = golden_session(model_path, threads)
    fixed = session.get_inputs()[0].shape[0]
    batch = fixed if isinstance(fixed, int) else batch
    reps = -(-batch // max(1, len(images)))
    x = np.concatenate([np.asarray(images)] * reps)[:batch]
    run_logits(session, x, batch)  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        run_logits(session, x, batch)
        n += batch
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
    return {"images_per_second": round(n / elapsed, 1), "batch": batch, "images": n, "seconds": round(elapsed, 3),
            "threads": threads if threads is not None else (os.cpu_count() or 1),
            "threads_note": "intra-op threads as set" if threads is not None else "ORT's default (one per core); os.cpu_count() shown",
            "level": "ORT_ENABLE_BASIC", "provider": "CPUExecutionProvider"}


def run_logits(session: ort.InferenceSession, images: np.ndarray, batch: int = 256, exp: int = -8) -> np.ndarray:
    """float32 logits for integer inputs (N, ...), fed as q * 2**exp (contract rule 2; uint8 images: p/256)."""
    name = session.get_inputs()[0].name
    x = (np.asarray(images, dtype=np.float64) * 2.0 ** exp).astype(np.float32)
    outs = [session.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)

