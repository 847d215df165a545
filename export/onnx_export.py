"""Brevitas QCDQ export of a checkpoint to the golden ONNX model.

The graph has a dynamic batch dimension and carries metadata_props: class names, the input scale,
the model config and the checkpoint's hash, so the compiler and every tool downstream read what
they need from the ONNX file alone.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from common.atomic import atomic_write
from quant import checkpoint

INPUT_NAME, OUTPUT_NAME = "image", "logits"
OPSET = 13  # Brevitas's default for the standard ONNX managers, stated so it does not warn


def export(ckpt_path: str | Path | None, out: str | Path) -> Path:
    """Export a quantized checkpoint (default: the bundled QAT+pruned one) to `out`."""
    ckpt_path = Path(ckpt_path) if ckpt_path is not None else checkpoint.BUNDLED_QAT
    ckpt = checkpoint.load(ckpt_path)
    if not ckpt["config"].get("quantized"):
        raise checkpoint.CheckpointError(
            f"{ckpt_path}: a float checkpoint; export a quantized one (train it with `python -m quant train --qat --init {ckpt_path}`)")
    meta = {"class_names": json.dumps(ckpt["class_names"]), "checkpoint_hash": checkpoint.file_hash(ckpt_path),
            "checkpoint": Path(ckpt_path).name}
    return export_model(checkpoint.model_from(ckpt), meta, out)


def export_model(model: torch.nn.Module, meta: dict[str, str], out: str | Path) -> Path:
    """QCDQ-export a quantized `quant.model.Net` with a dynamic batch; check it; write it atomically."""
    from brevitas.export import export_onnx_qcdq
    x = torch.zeros(1, *model.config.in_shape)
    # A real file, not a BytesIO: Brevitas re-reads the export from `export_path` to run its
    # onnxoptimizer passes (Constant nodes to initializers) and writes the result back there. From a
    # buffer it read nothing (the position was at the end), the optimizer printed "unable to parse
    # input model" on every export and the passes never ran. (Its QCDQ manager returns None, so
    # export_path=None gives nothing back.) Same plan either way: checked on both bundled models.
    with tempfile.TemporaryDirectory(prefix="cnn-codesign-onnx-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = Path(tmp) / "model.onnx"
        export_onnx_qcdq(model.eval(), args=x, export_path=str(raw), dynamo=False, input_names=[INPUT_NAME],
                         output_names=[OUTPUT_NAME], opset_version=OPSET,
                         dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        proto = onnx.load(str(raw))
    meta = {"input_scale": "0.00390625", "model_config": json.dumps(model.config.to_dict()),
            "producer": "cnn-codesign export", **meta}
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto)
    return atomic_write(out, lambda f: f.write(proto.SerializeToString()))


def metadata(model: str | Path | onnx.ModelProto) -> dict[str, str]:
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    return {p.key: p.value for p in proto.metadata_props}
