"""The compiler: a QCDQ ONNX graph -> the integer layer plan, checking the number contract.

It walks the graph in topological order and recognises one pattern per layer:
`QuantizeLinear -> [Clip] -> DequantizeLinear` (an activation, or the input), an accumulator
(`Conv`, `Gemm`, `MatMul`+`Add`, `AveragePool`, `GlobalAveragePool`, an `Add` of two activations,
or an activation itself: a requantizer) then `[Relu]` and a requantizing
`QuantizeLinear -> [Clip] -> DequantizeLinear`; `MaxPool`; `Flatten | Reshape`.
This module holds the QCDQ pattern itself; each layer kind's own op is recognised by its handler in
export/handlers.py, dispatched by op type. Constant sub-graphs (weights through Clip/DequantizeLinear)
are folded. A trailing Softmax/LogSoftmax/Sigmoid is cut off (export/golden.py). Anything else is
refused; the walk goes on past a refused node (skipping what depends on it), so one error lists
every node that breaks the contract, each with its op and what to change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from export import handlers
from export.arith import IntType
from export.golden import cut_note, cut_trailing, read_model
from export.plan import Plan
from export.walker import (Act, CompileError, Pending, QConst, Walker, attrs, check_bound, check_zero_point,
                           int_type_of, pow2_exp, where)

__all__ = ["CompileError", "compile_model", "compile_onnx", "default_onnx", "default_plan"]

PATTERN_OPS = ("Constant", "QuantizeLinear", "DequantizeLinear", "Clip", "Relu", "Add", "Cast", "Identity", "Transpose")
BN_MESSAGE = ("batch norm in the golden graph makes ONNX Runtime inexact (contract rule 12); fold it into the convolution's "
              "weights and bias before QAT (`python -m quant train --qat --init FLOAT.pt` does; in plain PyTorch, "
              "torch.nn.utils.fusion.fuse_conv_bn_eval)")


def compile_model(model: onnx.ModelProto, classes: list[str] | None = None) -> Plan:
    """Compile a loaded QCDQ ONNX model to a Plan; raises one CompileError naming every node outside the contract."""
    model, cut = cut_trailing(model)
    g = model.graph
    meta = {p.key: p.value for p in model.metadata_props}
    w = Walker(g)
    for init in g.initializer:
        w.consts[init.name] = numpy_helper.to_array(init)
    inputs = [i for i in g.input if i.name not in w.consts]
    if len(inputs) != 1:
        raise CompileError(f"the graph has {len(inputs)} inputs; the accelerator takes one input tensor")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim][1:]
    if len(dims) not in (1, 3) or min(dims) <= 0:
        raise CompileError(f"input {inputs[0].name!r}: shape {dims} is not (C, H, W) or (features,) with a batch dimension in front")
    w.input_name, w.input_shape = inputs[0].name, tuple(dims)
    w.linear_cls = [l["cls"] for l in json.loads(meta["model_config"])["layers"] if l["kind"] == "linear"] \
        if "model_config" in meta else []

    errors: list[str] = []
    skipped: set[str] = set()  # outputs of refused nodes and of nodes that read them
    for node in g.node:
        if skipped.intersection(node.input):
            skipped.update(node.output)
            errors += _static_errors(w, node)
            continue
        try:
            _step(w, node)
        except CompileError as e:
            errors.append(str(e))
            skipped.update(node.output)
    if not errors:
        try:
            last = _logits(w, [o.name for o in g.output])
        except CompileError as e:
            errors.append(str(e))
    if errors:
        raise CompileError(errors[0] if len(errors) == 1 else f"{len(errors)} nodes break the contract: " + "; ".join(errors))
    names = classes or (json.loads(meta["class_names"]) if "class_names" in meta else [str(i) for i in range(last.out_shape[0])])
    keep = {k: meta[k] for k in ("checkpoint_hash", "checkpoint") if k in meta}
    if cut is not None:
        keep["cut_off"] = cut_note(cut)
    return Plan(w.input_shape, w.input_type, w.layers, list(names), keep)


def _step(w: Walker, node: onnx.NodeProto) -> None:
    """Take one node into the walker's state, or raise a CompileError naming it."""
    op, ins, out = node.op_type, list(node.input), node.output[0]
    if op == "Constant":
        w.consts[out] = numpy_helper.to_array(node.attribute[0].t)
    elif all(i in w.consts or i == "" for i in ins) and op in ("Clip", "DequantizeLinear", "QuantizeLinear", "Cast", "Identity", "Transpose"):
        _fold(w, node)
    elif op == "QuantizeLinear":
        _quantize(w, node)
    elif op == "Clip" and ins[0] in w.quantized:
        lo, hi = (int(np.asarray(w.const(i)).reshape(-1)[0]) if i and w.const(i) is not None else None
                  for i in (ins[1] if len(ins) > 1 else "", ins[2] if len(ins) > 2 else ""))
        src, itype, qnode = w.quantized.pop(ins[0])
        lo = itype.min if lo is None else lo
        hi = itype.max if hi is None else hi
        w.quantized[out] = (src, int_type_of(np.zeros(1, np.int8 if itype.signed else np.uint8), (lo, hi), itype.exp, node), qnode)
    elif op == "DequantizeLinear" and ins[0] in w.quantized:
        src, itype, qnode = w.quantized.pop(ins[0])
        scale = w.const(ins[1])
        if scale is None or pow2_exp(scale, node) != itype.exp:
            raise CompileError(f"{where(node)}: dequantizes with another scale than its QuantizeLinear {qnode.name!r}")
        if isinstance(src, Pending):
            _finish(w, src, itype, out)
        else:  # the input quantizer (rule 2, generalised: signed or unsigned, 2..8 bits, any power-of-two scale)
            w.input_type = itype
            w.acts[out] = Act(itype, src.shape)
    elif op == "Add" and ins[0] in w.pending and ins[1] in w.qconsts:
        p = w.pending.pop(ins[0])
        p.layer.bias = handlers.bias_ints(w.qconsts[ins[1]], p.layer, node)
        w.pending[out] = p
    elif op == "Add" and all(i in w.acts for i in ins):
        handlers.add(w, node)
    elif op == "Relu" and ins[0] in w.pending and w.pending[ins[0]].layer.kind in ("conv2d", "linear", "add"):
        p = w.pending.pop(ins[0])
        p.relu = True
        w.pending[out] = p
    elif op == "BatchNormalization":
        raise CompileError(f"{where(node)}: {BN_MESSAGE}")
    elif op in handlers.HANDLERS:
        handlers.HANDLERS[op](w, node)
    elif op == "Add":
        raise CompileError(f"{where(node)}: adds {ins}, which are not two quantized activations; a residual add needs a "
                           "quantizer (Brevitas QuantIdentity) on each branch (contract rule 13)")
    else:
        raise CompileError(f"{where(node)}: not supported here (inputs {ins}); the compiler knows QuantizeLinear/"
                           f"DequantizeLinear/Clip, Relu, Add (bias or residual), {', '.join(handlers.HANDLERS)} in the QCDQ pattern")


def _quantize(w: Walker, node: onnx.NodeProto) -> None:
    """A QuantizeLinear of the input, of an accumulator (the layer's requantizer) or of an activation (a requant layer)."""
    src, ins = node.input[0], list(node.input)
    scale, zp = w.const(ins[1]), w.const(ins[2]) if len(ins) > 2 else None
    if scale is None:
        raise CompileError(f"{where(node)}: the scale is not a constant")
    check_zero_point(zp, node)
    itype = int_type_of(zp, None, pow2_exp(scale, node), node)
    if src == w.input_name:
        if w.input_type is not None or any(isinstance(s, Act) for s, _, _ in w.quantized.values()):
            raise CompileError(f"{where(node)}: a second quantizer of the input; quantize the input once")
        w.quantized[node.output[0]] = (Act(itype, w.input_shape), itype, node)
    elif src in w.pending:
        w.quantized[node.output[0]] = (w.pending.pop(src), itype, node)
    elif src in w.acts:
        w.quantized[node.output[0]] = (handlers.requant(w, node, w.acts[src]), itype, node)
    else:
        raise CompileError(f"{where(node)}: quantizes {src!r}, which is not the input, an activation or an accumulator; "
                           "the supported pattern is Conv/Gemm -> [Relu] -> QuantizeLinear -> DequantizeLinear")


def _static_errors(w: Walker, node: onnx.NodeProto) -> list[str]:
    """What is wrong with a node that reads a refused one, judged from the node alone: its op, its scale."""
    op = node.op_type
    if op == "BatchNormalization":
        return [f"{where(node)}: {BN_MESSAGE}"]
    if op not in PATTERN_OPS and op not in handlers.HANDLERS:
        return [f"{where(node)}: not supported here"]
    if op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 1 and w.const(node.input[1]) is not None:
        try:
            pow2_exp(w.const(node.input[1]), node, per_channel=True)
        except CompileError as e:
            return [str(e)]
    return []


def _logits(w: Walker, outputs: list[str]):
    """Close the graph's output, the logits layer's raw accumulator."""
    if len(outputs) != 1 or outputs[0] not in w.pending:
        raise CompileError(f"graph output {outputs}: must be the raw accumulator of a final Conv/Gemm (no Relu or requantizer after it)")
    last = w.pending.pop(outputs[0])
    if last.relu:
        raise CompileError(f"{where(last.node)}: the logits layer has a Relu; end the model with a plain linear layer")
    if last.layer.weight is None:
        raise CompileError(f"{where(last.node)}: the graph ends in a {last.layer.kind}; end the model with a linear (or conv) layer")
    if last.layer.per_channel:
        raise CompileError(f"{where(last.node)}: the logits layer has per-channel weight scales, so its integer logits have "
                           "no common scale; use a per-tensor weight quantizer on the last layer")
    check_bound(last.layer, last.node)
    last.layer.tensor = outputs[0]
    w.layers.append(last.layer)
    if w.input_type is None:
        raise CompileError("the input is not quantized by a QuantizeLinear (contract rule 2)")
    return last.layer


def compile_onnx(path: str | Path) -> Plan:
    """Compile an ONNX file: QCDQ, or QONNX (converted to QCDQ first, export/qonnx_import.py)."""
    return compile_model(read_model(path))


def _fold(w: Walker, node: onnx.NodeProto) -> None:
    """Evaluate a constant Clip / DequantizeLinear, remembering integer constants' types."""
    op, ins, out = node.op_type, list(node.input), node.output[0]
    x = w.consts[ins[0]]
    if op == "Clip":
        lo = w.consts[ins[1]] if len(ins) > 1 and ins[1] else None
        hi = w.consts[ins[2]] if len(ins) > 2 and ins[2] else None
        w.consts[out] = np.clip(x, lo, hi).astype(x.dtype)
        if np.issubdtype(x.dtype, np.integer) and lo is not None and hi is not None:
            w.clips[out] = (w.consts[out], (int(lo), int(hi)))
    elif op == "DequantizeLinear":
        scale, zp = w.consts[ins[1]], w.consts[ins[2]] if len(ins) > 2 else None
        check_zero_point(zp, node)
        exp = pow2_exp(scale, node, per_channel=True)
        clip = w.clips.get(ins[0], (None, None))[1]
        top = int(np.max(exp))
        itype = int_type_of(zp, clip, top, node) if x.dtype.itemsize == 1 else None
        w.qconsts[out] = QConst(x.astype(np.int64), exp, itype)
        e = np.asarray(exp, dtype=np.float64)
        w.consts[out] = (x.astype(np.float64) * 2.0 ** e.reshape(e.shape + (1,) * (x.ndim - e.ndim) if e.ndim else ())).astype(np.float32)
    elif op == "QuantizeLinear":
        raise CompileError(f"{where(node)}: quantizes a constant at run time; export weights as integers with DequantizeLinear")
    elif op == "Transpose":  # a QuantLinear without bias exports DequantizeLinear(W) -> Transpose -> MatMul
        perm = attrs(node).get("perm") or list(reversed(range(x.ndim)))
        w.consts[out] = np.transpose(x, perm)
        q = w.qconsts.get(ins[0])
        if q is not None and x.ndim == 2:  # a per-channel scale stays with its output channel (MatMul's axis 1)
            w.qconsts[out] = QConst(np.transpose(q.q, perm), q.exp, q.itype)
    else:
        w.consts[out] = x


def _finish(w: Walker, p: Pending, out: IntType, tensor: str) -> None:
    """Close a layer at its requantizer: output type, requantizer, ReLU, bound check; `tensor` holds its output."""
    l = p.layer
    if l.kind == "requant" and out == l.inp:  # requantizing an activation to its own type is no layer
        w.acts[tensor] = Act(out, l.in_shape, l.inputs[0])
        return
    handlers.close(l, out, p.node)
    l.relu, l.tensor = p.relu, tensor
    check_bound(l, p.node)
    w.layers.append(l)
    w.acts[tensor] = Act(out, l.out_shape, l.name)
    if p.flatten:  # the flatten the op did besides (ReduceMean, keepdims=0); the same tensor
        handlers.append_flatten(w, f"{l.name}_flatten", w.acts[tensor], tensor)


def default_onnx(cache_dir: str | Path | None = None) -> Path:
    """The bundled QAT+pruned checkpoint exported to ONNX, cached by the checkpoint's hash."""
    from export.onnx_export import export
    from quant import checkpoint
    h = checkpoint.file_hash(checkpoint.BUNDLED_QAT)
    cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "cnn-codesign"
    path = cache / f"paper_qat_pruned-{h}.onnx"
    if not path.is_file():
        export(checkpoint.BUNDLED_QAT, path)
    return path


def default_plan() -> Plan:
    """The plan of the bundled model."""
    return compile_onnx(default_onnx())

