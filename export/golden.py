"""The golden model ONNX Runtime runs: the file as given, a QONNX model converted to QCDQ, and a
trailing Softmax, LogSoftmax or Sigmoid cut off so that the graph ends at the logits."""

from __future__ import annotations

from pathlib import Path

import onnx

from export.qonnx_import import is_qonnx, to_qcdq
from export.walker import CompileError

TRAILING = ("Softmax", "LogSoftmax", "Sigmoid")


def cut_trailing(model: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.NodeProto | None]:
    """The model without a Softmax/LogSoftmax/Sigmoid that makes its one output, and that node (None when there is none).

    The accelerator returns the logits; the host applies the function."""
    g = model.graph
    if len(g.output) != 1:
        return model, None
    last = next((n for n in g.node if g.output[0].name in n.output), None)
    if last is None or last.op_type not in TRAILING or sum(last.input[0] in n.input for n in g.node) != 1:
        return model, None
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    cg = cut.graph
    cg.node.remove(next(n for n in cg.node if n.output[0] == last.output[0]))
    out = onnx.helper.make_empty_tensor_value_info(last.input[0])
    out.type.CopyFrom(g.output[0].type)
    del cg.output[:]
    cg.output.append(out)
    return cut, last


def read_model(path: str | Path) -> onnx.ModelProto:
    """An ONNX file as a QCDQ model: QONNX (Quant nodes) converted (export/qonnx_import.py); the trailing
    function, if any, still there. An unreadable file is a CompileError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CompileError(f"{path}: no such ONNX file (write one with `python -m export onnx --out {path}`)")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError and friends
        raise CompileError(f"{path}: not a readable ONNX model ({e.__class__.__name__})") from None
    return to_qcdq(model, path) if is_qonnx(model) else model


def golden_model(path: str | Path) -> onnx.ModelProto:
    """The model ONNX Runtime runs as the golden model: `read_model`, with a trailing function cut off."""
    return cut_trailing(read_model(path))[0]


def cut_note(node: onnx.NodeProto) -> str:
    return (f"the trailing {node.op_type} {node.name or '(unnamed)'!r} is cut off: the accelerator returns the logits "
            f"(apply {node.op_type} on the host), and the comparison with ONNX Runtime is at the logits")
