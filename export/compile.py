"""The compiler: a QCDQ ONNX graph -> the integer layer plan, checking the number contract.

It walks the graph in order and recognises one pattern per layer:
`QuantizeLinear -> [Clip] -> DequantizeLinear` (an activation, or the input),
`Conv | Gemm | MatMul+Add` with dequantized constant weights and bias, then `[Relu]` and a
requantizing `QuantizeLinear -> [Clip] -> DequantizeLinear`; `MaxPool`; `Flatten | Reshape`.
Constant sub-graphs (weights through Clip/DequantizeLinear) are folded. Anything else is refused
with an error that names the node, its op and what to change.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from export.encoding import encode_best
from export.plan import ACC_LIMIT, IntType, Layer, Plan

INT32 = (-(1 << 31), (1 << 31) - 1)


class CompileError(ValueError):
    """A graph the compiler refuses: the message names the node, its op and what to change."""


def _where(node: onnx.NodeProto) -> str:
    return f"node {node.name or '(unnamed)'!r} ({node.op_type})"


def pow2_exp(scale: np.ndarray, node: onnx.NodeProto) -> int:
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    if s.size != 1:
        raise CompileError(f"{_where(node)}: per-channel scales are not supported; use per-tensor quantizers")
    m, e = math.frexp(float(s[0]))
    if s[0] <= 0 or m != 0.5:
        raise CompileError(f"{_where(node)}: scale {float(s[0])!r} is not a power of two (contract rule 1); "
                           "use Brevitas *FixedPoint quantizers (restrict_scaling_type=POWER_OF_TWO)")
    return e - 1


def check_zero_point(zp: np.ndarray | None, node: onnx.NodeProto) -> None:
    if zp is not None and np.any(np.asarray(zp) != 0):
        raise CompileError(f"{_where(node)}: zero point {np.asarray(zp).reshape(-1)[:4].tolist()} is not 0; "
                           "use symmetric quantizers (the hardware has no zero-point arithmetic)")


def int_type_of(zp: np.ndarray | None, clip: tuple[int, int] | None, exp: int, node: onnx.NodeProto) -> IntType:
    """The integer type from the zero point's dtype, narrowed by a Clip's bounds when present."""
    dtype = np.asarray(zp).dtype if zp is not None else np.dtype(np.uint8)
    signed = np.issubdtype(dtype, np.signedinteger)
    bits = dtype.itemsize * 8
    if clip is not None:
        lo, hi = clip
        bits = max(1, int(hi).bit_length() + (1 if signed else 0))
        if signed and lo < -(1 << (bits - 1)):
            bits += 1
    if not 2 <= bits <= 8:
        raise CompileError(f"{_where(node)}: a {bits}-bit tensor; the hardware takes 2..8 bits")
    return IntType(bits, bool(signed), exp)


@dataclass
class QConst:
    """A dequantized constant: integers, power-of-two exponent, integer type."""

    q: np.ndarray
    exp: int
    itype: IntType | None = None


@dataclass
class Act:
    """An integer activation tensor flowing between layers."""

    itype: IntType
    shape: tuple[int, ...]


@dataclass
class Pending:
    """A conv/linear accumulator waiting for its requantizer (or the graph output)."""

    layer: Layer
    node: onnx.NodeProto
    relu: bool = False


@dataclass
class Walker:
    graph: onnx.GraphProto
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    qconsts: dict[str, QConst] = field(default_factory=dict)
    clips: dict[str, tuple[np.ndarray, tuple[int, int] | None]] = field(default_factory=dict)
    acts: dict[str, Act] = field(default_factory=dict)
    quantized: dict[str, tuple[Act | Pending, IntType, onnx.NodeProto]] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def attrs(self, node: onnx.NodeProto) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


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
    weighted_specs = _weighted_specs(meta)

    for node in g.node:
        op, ins = node.op_type, list(node.input)
        out = node.output[0]
        if op == "Constant":
            w.consts[out] = numpy_helper.to_array(node.attribute[0].t)
        elif all(i in w.consts or i == "" for i in ins) and op in ("Clip", "DequantizeLinear", "QuantizeLinear", "Cast", "Identity"):
            _fold(w, node)
        elif op == "QuantizeLinear":
            src = ins[0]
            scale, zp = w.const(ins[1]), w.const(ins[2]) if len(ins) > 2 else None
            if scale is None:
                raise CompileError(f"{_where(node)}: the scale is not a constant")
            check_zero_point(zp, node)
            itype = int_type_of(zp, None, pow2_exp(scale, node), node)
            if src == input_name:
                w.quantized[out] = (Act(itype, tuple(dims)), itype, node)
            elif src in w.pending:
                w.quantized[out] = (w.pending.pop(src), itype, node)
            elif src in w.acts:  # requantizing an activation (e.g. after a pool) to the same type is a no-op
                w.quantized[out] = (w.acts[src], itype, node)
            else:
                raise CompileError(f"{_where(node)}: quantizes {src!r}, which is not an image, activation or accumulator; "
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
                raise CompileError(f"{_where(node)}: dequantizes with another scale than its QuantizeLinear {qnode.name!r}")
            if isinstance(src, Pending):
                src.layer.tensor = out
                w.acts[out] = Act(itype, _finish(w, src, itype))
            else:
                if not w.layers and input_type is None:
                    input_type = itype
                    if itype != IntType(8, False, -8):
                        raise CompileError(f"{_where(qnode)}: the input quantizer is {itype}; the contract (rule 2) needs unsigned 8-bit with scale 2^-8")
                elif src.itype != itype:
                    raise CompileError(f"{_where(qnode)}: requantizes an activation from {src.itype} to {itype}; "
                                       "only conv/linear outputs may change type")
                w.acts[out] = Act(itype, src.shape)
        elif op in ("Conv", "Gemm", "MatMul"):
            _start_layer(w, node, weighted_specs)
        elif op == "Add" and ins[0] in w.pending and ins[1] in w.qconsts:
            p = w.pending.pop(ins[0])
            p.layer.bias = _bias(w.qconsts[ins[1]], p.layer, node)
            w.pending[out] = p
        elif op == "Relu" and ins[0] in w.pending:
            p = w.pending.pop(ins[0])
            p.relu = True
            w.pending[out] = p
        elif op == "MaxPool" and ins[0] in w.acts:
            _maxpool(w, node)
        elif op in ("Flatten", "Reshape") and ins[0] in w.acts:
            a = w.acts[ins[0]]
            if op == "Flatten" and w.attrs(node).get("axis", 1) != 1:
                raise CompileError(f"{_where(node)}: Flatten axis {w.attrs(node)['axis']}; only axis 1 is supported")
            if op == "Reshape":
                shape = w.const(ins[1])
                if shape is None or int(np.prod([s for s in shape[1:] if s > 0])) not in (int(np.prod(a.shape)), 1) or len(shape) != 2:
                    raise CompileError(f"{_where(node)}: only a reshape to (batch, features) is supported")
            n = int(np.prod(a.shape))
            w.layers.append(Layer(node.name or f"flatten{len(w.layers)}", "flatten", a.shape, (n,), a.itype, a.itype, tensor=out))
            w.acts[out] = Act(a.itype, (n,))
        else:
            raise CompileError(f"{_where(node)}: not supported here (inputs {ins}); the compiler knows QuantizeLinear/"
                               "DequantizeLinear/Clip, Conv, Gemm, MatMul+Add, Relu, MaxPool, Flatten/Reshape in the QCDQ pattern")

    outputs = [o.name for o in g.output]
    if len(outputs) != 1 or outputs[0] not in w.pending:
        raise CompileError(f"graph output {outputs}: must be the raw accumulator of a final Conv/Gemm (no Relu or requantizer after it)")
    last = w.pending.pop(outputs[0])
    if last.relu:
        raise CompileError(f"{_where(last.node)}: the logits layer has a Relu; end the model with a plain linear layer")
    _check_bound(last.layer, last.node)
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
        exp = pow2_exp(scale, node)
        clip = w.clips.get(ins[0], (None, None))[1]
        itype = int_type_of(zp, clip, exp, node) if x.dtype.itemsize == 1 else None
        w.qconsts[out] = QConst(x.astype(np.int64), exp, itype)
        w.consts[out] = (x.astype(np.float64) * 2.0 ** exp).astype(np.float32)
    elif op == "QuantizeLinear":
        raise CompileError(f"{_where(node)}: quantizes a constant at run time; export weights as integers with DequantizeLinear")
    else:
        w.consts[out] = x


def _start_layer(w: Walker, node: onnx.NodeProto, specs: list[dict]) -> None:
    ins, a = list(node.input), w.acts.get(node.input[0])
    if a is None:
        raise CompileError(f"{_where(node)}: its input {ins[0]!r} is not a quantized activation; put a quantizer before it")
    wq = w.qconsts.get(ins[1])
    if wq is None or wq.itype is None:
        raise CompileError(f"{_where(node)}: the weight is not an integer constant behind DequantizeLinear (QCDQ export of a quantized layer)")
    if not wq.itype.signed:
        raise CompileError(f"{_where(node)}: unsigned weights; use signed (narrow-range) weight quantizers")
    attrs = w.attrs(node)
    name = node.name or f"layer{len(w.layers)}"
    idx = sum(1 for l in w.layers if l.weight is not None)
    cls = specs[idx]["cls"] if idx < len(specs) else "NP"
    if node.op_type == "Conv":
        wt = wq.q
        k = wt.shape[-1]
        if wt.ndim != 4 or wt.shape[2] != wt.shape[3]:
            raise CompileError(f"{_where(node)}: only square 2-D kernels are supported, got weight shape {list(wt.shape)}")
        if any(attrs.get("pads", [0])) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise CompileError(f"{_where(node)}: padding {attrs.get('pads')} is not supported; use valid (padding=0) convolutions")
        if attrs.get("group", 1) != 1:
            raise CompileError(f"{_where(node)}: group={attrs['group']} is not supported; use ordinary (groups=1) convolutions")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise CompileError(f"{_where(node)}: dilation {attrs['dilations']} is not supported; use dilation 1")
        strides = attrs.get("strides", [1, 1])
        if len(set(strides)) != 1:
            raise CompileError(f"{_where(node)}: unequal strides {strides}; use the same stride in both directions")
        s = strides[0]
        if len(a.shape) != 3 or a.shape[0] != wt.shape[1]:
            raise CompileError(f"{_where(node)}: input shape {a.shape} does not match weight {list(wt.shape)}")
        c, h, wd = a.shape
        if h < k or wd < k:
            raise CompileError(f"{_where(node)}: a {k}x{k} kernel on a {h}x{wd} map")
        out_shape = (wt.shape[0], (h - k) // s + 1, (wd - k) // s + 1)
        if cls == "P":
            raise CompileError(f"{_where(node)}: a P (pruned) conv layer; the sparse engine runs linear layers only, mark it NP")
        layer = Layer(name, "conv2d", a.shape, out_shape, a.itype, None, kernel=k, stride=s, weight=wt.astype(np.int8),
                      w_type=IntType(wq.itype.bits, True, wq.exp), cls="NP")
    else:
        wt = wq.q
        if node.op_type == "Gemm":
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                raise CompileError(f"{_where(node)}: Gemm with transA/alpha/beta is not supported")
            if not attrs.get("transB", 0):
                wt = wt.T
        else:
            wt = wt.T
        if len(a.shape) != 1 or wt.shape[1] != a.shape[0]:
            raise CompileError(f"{_where(node)}: input shape {a.shape} does not match weight {list(wt.shape)}; flatten before a linear layer")
        layer = Layer(name, "linear", a.shape, (wt.shape[0],), a.itype, None, weight=np.ascontiguousarray(wt).astype(np.int8),
                      w_type=IntType(wq.itype.bits, True, wq.exp), cls=cls)
    if len(ins) > 2 and ins[2]:
        b = w.qconsts.get(ins[2])
        if b is None:
            raise CompileError(f"{_where(node)}: the bias is not an integer constant behind DequantizeLinear; use Int32Bias")
        layer.bias = _bias(b, layer, node)
    else:
        layer.bias = np.zeros(layer.out_shape[0], dtype=np.int64)
    w.pending[node.output[0]] = Pending(layer, node)


def _bias(b: QConst, layer: Layer, node: onnx.NodeProto) -> np.ndarray:
    if b.exp != layer.acc_exp:
        raise CompileError(f"{_where(node)}: bias scale 2^{b.exp} differs from s_in*s_w = 2^{layer.acc_exp} (contract rule 3); use Int32Bias")
    q = b.q.reshape(-1)
    if q.min() < INT32[0] or q.max() > INT32[1]:
        raise CompileError(f"{_where(node)}: bias outside int32")
    return q.astype(np.int64)


def _finish(w: Walker, p: Pending, out: IntType) -> tuple[int, ...]:
    """Close a layer at its requantizer: output type, shift, ReLU, P-layer encoding, bound check."""
    l = p.layer
    l.out, l.relu, l.shift = out, p.relu, out.exp - l.acc_exp
    _check_bound(l, p.node)
    w.layers.append(l)
    return l.out_shape


def _check_bound(l: Layer, node: onnx.NodeProto) -> None:
    if l.cls == "P":
        l.sparse = encode_best(l.weight, l.w_type.bits)
    if l.acc_bound >= ACC_LIMIT:
        raise CompileError(f"{_where(node)}: layer {l.name!r} can reach |acc| = {l.acc_bound} >= 2^24 = {ACC_LIMIT}, where float32 "
                           "stops being exact (contract rule 5); use narrower weights/activations or prune more")


def _maxpool(w: Walker, node: onnx.NodeProto) -> None:
    a = w.acts[node.input[0]]
    attrs = w.attrs(node)
    ks = attrs.get("kernel_shape", [])
    if len(ks) != 2 or ks[0] != ks[1]:
        raise CompileError(f"{_where(node)}: kernel {ks}; only square 2-D pooling is supported")
    k = ks[0]
    strides = attrs.get("strides", [1, 1])
    if any(attrs.get("pads", [0])) or attrs.get("ceil_mode", 0) or any(d != 1 for d in attrs.get("dilations", [1, 1])) or len(set(strides)) != 1:
        raise CompileError(f"{_where(node)}: padding/ceil_mode/dilation/unequal strides are not supported in MaxPool")
    s = strides[0]
    c, h, wd = a.shape
    out_shape = (c, (h - k) // s + 1, (wd - k) // s + 1)
    w.layers.append(Layer(node.name or f"pool{len(w.layers)}", "maxpool", a.shape, out_shape, a.itype, a.itype, kernel=k, stride=s,
                          tensor=node.output[0]))
    w.acts[node.output[0]] = Act(a.itype, out_shape)


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
