"""The compiler: a QCDQ ONNX graph -> the integer layer plan, checking the number contract.

It walks the graph in order and recognises one pattern per layer:
`QuantizeLinear -> [Clip] -> DequantizeLinear` (an activation, or the input), an accumulator
(`Conv`, `Gemm`, `MatMul`+`Add`, `AveragePool`, `GlobalAveragePool`) then `[Relu]` and a
requantizing `QuantizeLinear -> [Clip] -> DequantizeLinear`; `MaxPool`; `Flatten | Reshape`.
This module holds the QCDQ pattern itself; each layer kind's own op is recognised by its unit in
export/kinds/, dispatched by op type. Constant sub-graphs (weights through Clip/DequantizeLinear)
are folded. Anything else is refused with an error that names the node, its op and what to change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from export.kinds import HANDLERS
from export.kinds.flatten import append_flatten
from export.plan import IntType, Plan
from export.kinds.weighted import bias_ints
from export.walker import (Act, CompileError, Pending, QConst, Walker, attrs, check_bound, check_zero_point,
                           int_type_of, pow2_exp, where)

__all__ = ["CompileError", "compile_model", "compile_onnx", "default_onnx", "default_plan"]


def compile_model(model: onnx.ModelProto, classes: list[str] | None = None) -> Plan:
    """Compile a loaded ONNX model to a Plan; raises CompileError on anything outside the contract."""
    g = model.graph
    meta = {p.key: p.value for p in model.metadata_props}
    w = Walker(g)
    for init in g.initializer:
        w.consts[init.name] = numpy_helper.to_array(init)
    init_names = set(w.consts)
    inputs = [i for i in g.input if i.name not in init_names]
    if len(inputs) != 1:
        raise CompileError(f"the graph has {len(inputs)} inputs; the accelerator takes one image input")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim][1:]
    if len(dims) != 3 or min(dims) <= 0:
        raise CompileError(f"input {inputs[0].name!r}: shape {dims} is not (C, H, W) with a batch dimension in front")
    input_name = inputs[0].name
    input_type: IntType | None = None
    w.weighted_specs = _weighted_specs(meta)

    for node in g.node:
        op, ins = node.op_type, list(node.input)
        out = node.output[0]
        if op == "Constant":
            w.consts[out] = numpy_helper.to_array(node.attribute[0].t)
        elif all(i in w.consts or i == "" for i in ins) and op in ("Clip", "DequantizeLinear", "QuantizeLinear", "Cast", "Identity", "Transpose"):
            _fold(w, node)
        elif op == "QuantizeLinear":
            src = ins[0]
            scale, zp = w.const(ins[1]), w.const(ins[2]) if len(ins) > 2 else None
            if scale is None:
                raise CompileError(f"{where(node)}: the scale is not a constant")
            check_zero_point(zp, node)
            itype = int_type_of(zp, None, pow2_exp(scale, node), node)
            if src == input_name:
                w.quantized[out] = (Act(itype, tuple(dims)), itype, node)
            elif src in w.pending:
                w.quantized[out] = (w.pending.pop(src), itype, node)
            elif src in w.acts:  # requantizing an activation (e.g. after a pool) to the same type is a no-op
                w.quantized[out] = (w.acts[src], itype, node)
            else:
                raise CompileError(f"{where(node)}: quantizes {src!r}, which is not an image, activation or accumulator; "
                                   "the supported pattern is Conv/Gemm -> [Relu] -> QuantizeLinear -> DequantizeLinear")
        elif op == "Clip" and ins[0] in w.quantized:
            lo, hi = (int(np.asarray(w.const(i)).reshape(-1)[0]) if len(ins) > k and ins[k] and w.const(ins[k]) is not None else None
                      for k, i in ((1, ins[1] if len(ins) > 1 else ""), (2, ins[2] if len(ins) > 2 else "")))
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
                src.layer.tensor = out
                w.acts[out] = Act(itype, _finish(w, src, itype))
                if src.flatten:  # the flatten the op did besides (ReduceMean, keepdims=0); the same tensor
                    append_flatten(w, f"{src.layer.name}_flatten", w.acts[out], out)
            else:
                if not w.layers and input_type is None:
                    input_type = itype
                    if itype != IntType(8, False, -8):
                        raise CompileError(f"{where(qnode)}: the input quantizer is {itype}; the contract (rule 2) needs unsigned 8-bit with scale 2^-8")
                elif src.itype != itype:
                    raise CompileError(f"{where(qnode)}: requantizes an activation from {src.itype} to {itype}; "
                                       "only conv/linear outputs may change type")
                w.acts[out] = Act(itype, src.shape)
        elif op == "Add" and ins[0] in w.pending and ins[1] in w.qconsts:
            p = w.pending.pop(ins[0])
            p.layer.bias = bias_ints(w.qconsts[ins[1]], p.layer, node)
            w.pending[out] = p
        elif op == "Relu" and ins[0] in w.pending and p_weighted(w.pending[ins[0]]):
            p = w.pending.pop(ins[0])
            p.relu = True
            w.pending[out] = p
        elif op == "BatchNormalization":
            raise CompileError(f"{where(node)}: batch norm in the golden graph makes ONNX Runtime inexact (contract rule 12); "
                               "fold it into the convolution's weights and bias before QAT (`python -m quant train --qat "
                               "--init FLOAT.pt` does; in plain PyTorch, torch.nn.utils.fusion.fuse_conv_bn_eval)")
        elif op in HANDLERS:
            HANDLERS[op].compile(w, node)
        elif op in ("Softmax", "LogSoftmax", "Sigmoid") and ins[0] in w.pending and out in {o.name for o in g.output}:
            raise CompileError(f"{where(node)}: a {op} after the logits layer; export the model without it: the "
                               f"accelerator returns the integer logits, whose argmax is the class (apply {op} on the host)")
        else:
            raise CompileError(f"{where(node)}: not supported here (inputs {ins}); the compiler knows QuantizeLinear/"
                               f"DequantizeLinear/Clip, Relu, Add (bias), {', '.join(HANDLERS)} in the QCDQ pattern")

    outputs = [o.name for o in g.output]
    if len(outputs) != 1 or outputs[0] not in w.pending:
        raise CompileError(f"graph output {outputs}: must be the raw accumulator of a final Conv/Gemm (no Relu or requantizer after it)")
    last = w.pending.pop(outputs[0])
    if last.relu:
        raise CompileError(f"{where(last.node)}: the logits layer has a Relu; end the model with a plain linear layer")
    if last.layer.weight is None:
        raise CompileError(f"{where(last.node)}: the graph ends in a pool; end the model with a linear (or conv) layer")
    if last.layer.per_channel:
        raise CompileError(f"{where(last.node)}: the logits layer has per-channel weight scales, so its integer logits have "
                           "no common scale; use a per-tensor weight quantizer on the last layer")
    check_bound(last.layer, last.node)
    last.layer.tensor = outputs[0]
    w.layers.append(last.layer)
    if input_type is None:
        raise CompileError("the input is not quantized by a QuantizeLinear (contract rule 2)")
    names = classes or (json.loads(meta["class_names"]) if "class_names" in meta else [str(i) for i in range(last.layer.out_shape[0])])
    return Plan(tuple(dims), input_type, w.layers, list(names),
                {k: meta[k] for k in ("checkpoint_hash", "checkpoint") if k in meta})


def compile_onnx(path: str | Path) -> Plan:
    path = Path(path)
    if not path.is_file():
        raise CompileError(f"{path}: no such ONNX file (write one with `python -m export onnx --out {path}`)")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError and friends
        raise CompileError(f"{path}: not a readable ONNX model ({e.__class__.__name__})") from None
    return compile_model(model)


def _weighted_specs(meta: dict) -> list[dict]:
    if "model_config" not in meta:
        return []
    return [l for l in json.loads(meta["model_config"])["layers"] if l["kind"] in ("conv", "linear")]


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


def _finish(w: Walker, p: Pending, out: IntType) -> tuple[int, ...]:
    """Close a layer at its requantizer: output type, shift, ReLU, P-layer encoding, bound check."""
    l = p.layer
    shift = out.exp - l.acc_exps
    l.out, l.relu, l.shift = out, p.relu, shift if isinstance(shift, np.ndarray) else int(shift)
    check_bound(l, p.node)
    w.layers.append(l)
    return l.out_shape


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


def p_weighted(p: Pending) -> bool:
    """A ReLU may follow a conv/linear accumulator, not an average pool's sum."""
    return p.layer.weight is not None
