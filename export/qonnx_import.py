"""QONNX input: a model with Quant nodes (Brevitas `export_qonnx`, the qonnx model zoo, FINN's and
hls4ml's interchange) turned into the QCDQ golden model the compiler and ONNX Runtime take.

Constant Quant nodes (weights, and 32-bit biases, which qonnx's QuantToQCDQ leaves alone) become
integer initializers behind `[Clip] -> DequantizeLinear`, as Brevitas's QCDQ export writes them;
qonnx's QuantToQCDQ then turns the activations' Quant nodes into QuantizeLinear -> [Clip] ->
DequantizeLinear. Bipolar, 1-bit and threshold (MultiThreshold) quantization has no QCDQ form and
is refused in one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.walker import CompileError

QONNX_OPS = ("Quant", "BipolarQuant", "Trunc", "MultiThreshold")
REFUSED = ("BipolarQuant", "Trunc", "MultiThreshold")


def is_qonnx(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QONNX_OPS for n in model.graph.node)


def to_qcdq(model: onnx.ModelProto, path: str | Path = "the model") -> onnx.ModelProto:
    """The QCDQ form of a QONNX model; a CompileError naming every node that has none."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.qonnx_to_qcdq import QuantToQCDQ
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    bad = [f"{n.name or '(unnamed)'!r} ({n.op_type})" for n in model.graph.node if n.op_type in REFUSED]
    bad += [f"{n.name or '(unnamed)'!r} (Quant, 1-bit)" for n in model.graph.node
            if n.op_type == "Quant" and n.input[3] in consts and float(consts[n.input[3]]) < 2]
    if bad:
        raise CompileError(f"{path}: a QONNX model with bipolar, 1-bit or threshold quantization ({', '.join(bad)}); the "
                           "accelerator takes Quant nodes of 2..8 bits (and 32-bit biases) at power-of-two scales")
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    _fold_constant_quants(folded, consts)
    out = ModelWrapper(folded).transform(QuantToQCDQ()).model
    left = [f"{n.name or '(unnamed)'!r}" for n in out.graph.node if n.op_type == "Quant"]
    if left:
        raise CompileError(f"{path}: QONNX Quant nodes {', '.join(left)} have no QCDQ form (a scale, zero point or bit width "
                           "that is not a constant, a non-zero zero point, or a rounding mode other than ROUND)")
    real = [i for i in out.graph.input if i.name not in consts]  # initializers listed as inputs (older exporters do)
    del out.graph.input[:]
    out.graph.input.extend(real)
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    return out


def _fold_constant_quants(model: onnx.ModelProto, consts: dict[str, np.ndarray]) -> None:
    """Each Quant of an initializer -> integer initializer -> [Clip] -> DequantizeLinear, in place."""
    from qonnx.custom_op.general.intquant import int_quant, max_int, min_int
    g = model.graph
    nodes = []
    for n in g.node:
        if n.op_type != "Quant" or not all(i in consts for i in n.input[:4]):
            nodes.append(n)
            continue
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        x, scale, zp, bits = (consts[i] for i in n.input[:4])
        signed, narrow = int(a.get("signed", 1)), int(a.get("narrow", 0))
        q = np.round(int_quant(x, scale, zp, bits, signed, narrow, a.get("rounding_mode", b"ROUND").decode()
                               if isinstance(a.get("rounding_mode"), bytes) else a.get("rounding_mode", "ROUND")) / scale)
        bits = int(bits)
        dtype = (np.int8 if signed else np.uint8) if bits <= 8 else np.int32
        s = np.asarray(scale, np.float32)
        axis = {}
        if s.size > 1:  # per output channel: a vector along axis 0
            s, axis = s.reshape(-1), {"axis": 0}
        else:
            s = s.reshape(())
        stem = n.output[0]
        inits = [numpy_helper.from_array(q.astype(dtype), f"{stem}_int"),
                 numpy_helper.from_array(s, f"{stem}_scale"),
                 numpy_helper.from_array(np.zeros(s.shape, dtype), f"{stem}_zp")]
        src = f"{stem}_int"
        if bits <= 8 and (narrow or bits < 8):
            lo, hi = int(min_int(signed, narrow, bits)), int(max_int(signed, narrow, bits))
            inits += [numpy_helper.from_array(np.asarray(lo, dtype), f"{stem}_lo"), numpy_helper.from_array(np.asarray(hi, dtype), f"{stem}_hi")]
            nodes.append(helper.make_node("Clip", [src, f"{stem}_lo", f"{stem}_hi"], [f"{stem}_clip"], name=f"{n.name}_clip"))
            src = f"{stem}_clip"
        nodes.append(helper.make_node("DequantizeLinear", [src, f"{stem}_scale", f"{stem}_zp"], [stem], name=n.name, **axis))
        g.initializer.extend(inits)
    del g.node[:]
    g.node.extend(nodes)

