"""The ONNX op handlers: each layer kind's pattern in a QCDQ graph, recognised onto the walker's state.

A handler reads a node's quantized inputs from the `Walker`, checks the number contract, and appends
a plan layer (or starts one, pending its requantizer). `HANDLERS` maps the op types that start a
layer to their handler; the compiler (export/compile.py) holds the QCDQ pattern around them and
calls `add`, `requant` and `close` itself. Every refusal names the node, its op and what to change.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from export.arith import IntType, square
from export.average import multiply_shift
from export.encoding import encode_best
from export.kinds.avgpool import Average
from export.plan import Layer
from export.walker import INT32, Act, CompileError, Pending, QConst, Walker, attrs, pool_window, where


def weight_const(w: Walker, node: onnx.NodeProto) -> QConst:
    """The integer weight a Conv/Gemm/MatMul reads (input 1), signed, behind a DequantizeLinear."""
    wq = w.qconsts.get(node.input[1])
    if wq is None or wq.itype is None:
        raise CompileError(f"{where(node)}: the weight is not an integer constant behind DequantizeLinear (QCDQ export of a quantized layer)")
    if not wq.itype.signed:
        raise CompileError(f"{where(node)}: unsigned weights; use signed (narrow-range) weight quantizers")
    return wq


def weight_exps(wq: QConst, cout: int, node: onnx.NodeProto) -> tuple[int, np.ndarray | None]:
    """(per-tensor exponent, per-channel exponents or None); a vector of equal scales is per tensor."""
    e = np.asarray(wq.exp).reshape(-1)
    if e.size == 1:
        return int(e[0]), None
    if e.size != cout:
        raise CompileError(f"{where(node)}: {e.size} weight scales for {cout} output channels; per-channel scales go along axis 0")
    if np.all(e == e[0]):
        return int(e[0]), None
    return int(e.max()), e.astype(np.int64)


def bias_ints(b: QConst, layer: Layer, node: onnx.NodeProto) -> np.ndarray:
    """The integer bias, checked to be in the accumulator's scale (rule 3, per channel under rule 10)."""
    want = np.broadcast_to(np.asarray(layer.acc_exps), (layer.out_shape[0],))
    got = np.broadcast_to(np.asarray(b.exp), (layer.out_shape[0],))
    if not np.array_equal(want, got):
        raise CompileError(f"{where(node)}: bias scale 2^{np.unique(got).tolist()} differs from s_in*s_w = "
                           f"2^{np.unique(want).tolist()} (contract rule 3); use Int32Bias")
    q = b.q.reshape(-1)
    if q.min() < INT32[0] or q.max() > INT32[1]:
        raise CompileError(f"{where(node)}: bias outside int32")
    return q.astype(np.int64)


def attach_bias(w: Walker, node: onnx.NodeProto, layer: Layer) -> None:
    """The bias a Conv/Gemm reads (input 2), or zeros."""
    ins = list(node.input)
    if len(ins) > 2 and ins[2]:
        b = w.qconsts.get(ins[2])
        if b is None:
            raise CompileError(f"{where(node)}: the bias is not an integer constant behind DequantizeLinear; use Int32Bias")
        layer.bias = bias_ints(b, layer, node)
    else:
        layer.bias = np.zeros(layer.out_shape[0], dtype=np.int64)


def conv2d(w: Walker, node: onnx.NodeProto) -> None:
    """Conv: a kh x kw convolution, grouped or depthwise, zero-padded (rule 9), its accumulator pending."""
    a = w.act(node)
    wq = weight_const(w, node)
    at = attrs(node)
    wt = wq.q
    if wt.ndim != 4:
        raise CompileError(f"{where(node)}: only 2-D kernels are supported, got weight shape {list(wt.shape)}")
    kh, kw = wt.shape[2:]
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise CompileError(f"{where(node)}: auto_pad {at['auto_pad']!r}; export explicit pads (Brevitas does)")
    pads = tuple(int(p) for p in at.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4 or any(not 0 <= p < k for p, k in zip(pads, (kh, kw, kh, kw))):
        raise CompileError(f"{where(node)}: pads {list(pads)}; zero padding of 0..k-1 per side (kernel {kh}x{kw}) is "
                           "supported (contract rule 9)")
    if any(d != 1 for d in at.get("dilations", [1, 1])):
        raise CompileError(f"{where(node)}: dilation {at['dilations']} is not supported; use dilation 1")
    sh, sw = (int(s) for s in at.get("strides", [1, 1]))
    groups = int(at.get("group", 1))
    if len(a.shape) != 3 or a.shape[0] != wt.shape[1] * groups or wt.shape[0] % groups:
        raise CompileError(f"{where(node)}: input shape {a.shape} does not match weight {list(wt.shape)} in {groups} group(s)")
    c, h, wd = a.shape
    ph, pw = h + pads[0] + pads[2], wd + pads[1] + pads[3]
    if ph < kh or pw < kw:
        raise CompileError(f"{where(node)}: a {kh}x{kw} kernel on a {h}x{wd} map padded to {ph}x{pw}")
    exp, exps = weight_exps(wq, wt.shape[0], node)
    layer = Layer(w.layer_name(node, "conv"), "conv2d", a.shape, (wt.shape[0], (ph - kh) // sh + 1, (pw - kw) // sw + 1),
                  a.itype, None, kernel=square(kh, kw), stride=square(sh, sw), pad=pads, weight=wt.astype(np.int8),
                  w_type=IntType(wq.itype.bits, True, exp), w_exps=exps, cls="NP", inputs=(a.src,), groups=groups)
    attach_bias(w, node, layer)
    w.pending[node.output[0]] = Pending(layer, node)


def linear(w: Walker, node: onnx.NodeProto) -> None:
    """Gemm, or MatMul (its bias the Add after it): a linear layer, NP or P as the model description says."""
    a = w.act(node)
    wq = weight_const(w, node)
    wt = wq.q
    if node.op_type == "Gemm":
        at = attrs(node)
        if at.get("transA", 0) or at.get("alpha", 1.0) != 1.0 or at.get("beta", 1.0) != 1.0:
            raise CompileError(f"{where(node)}: Gemm with transA/alpha/beta is not supported")
        if not at.get("transB", 0):
            wt = wt.T
    else:
        wt = wt.T
    if len(a.shape) != 1 or wt.ndim != 2 or wt.shape[1] != a.shape[0]:
        raise CompileError(f"{where(node)}: input shape {a.shape} does not match weight {list(wt.shape)}; flatten before a linear layer")
    idx = sum(1 for l in w.layers if l.kind == "linear") + sum(1 for p in w.pending.values() if p.layer.kind == "linear")
    cls = w.linear_cls[idx] if idx < len(w.linear_cls) else "NP"
    exp, exps = weight_exps(wq, wt.shape[0], node)
    layer = Layer(w.layer_name(node, "linear"), "linear", a.shape, (wt.shape[0],), a.itype, None,
                  weight=np.ascontiguousarray(wt).astype(np.int8), w_type=IntType(wq.itype.bits, True, exp),
                  w_exps=exps, cls=cls, inputs=(a.src,))
    if cls == "P":
        layer.sparse = encode_best(layer.weight, layer.w_type.bits)
    attach_bias(w, node, layer)
    w.pending[node.output[0]] = Pending(layer, node)


def maxpool(w: Walker, node: onnx.NodeProto) -> None:
    """MaxPool without padding: a layer on the integers (rule 6), its output the input's type."""
    a = w.act(node)
    (kh, kw), (sh, sw) = pool_window(node, attrs(node), "MaxPool")
    if len(a.shape) != 3 or a.shape[1] < kh or a.shape[2] < kw:
        raise CompileError(f"{where(node)}: a {kh}x{kw} max-pool on a map of shape {a.shape}")
    c, h, wd = a.shape
    out_shape = (c, (h - kh) // sh + 1, (wd - kw) // sw + 1)
    name = w.layer_name(node, "pool")
    w.layers.append(Layer(name, "maxpool", a.shape, out_shape, a.itype, a.itype, kernel=square(kh, kw),
                          stride=square(sh, sw), tensor=node.output[0], inputs=(a.src,)))
    w.acts[node.output[0]] = Act(a.itype, out_shape, name)


def avgpool(w: Walker, node: onnx.NodeProto) -> None:
    """AveragePool with stride = kernel: the window's sum, pending its requantizer."""
    a = w.act(node)
    (kh, kw), s = pool_window(node, attrs(node), "AveragePool")
    if s != (kh, kw):
        raise CompileError(f"{where(node)}: an average pool with stride {list(s)} over {kh}x{kw}; only stride = kernel is supported")
    if len(a.shape) != 3 or a.shape[1] < kh or a.shape[2] < kw:
        raise CompileError(f"{where(node)}: a {kh}x{kw} average pool on a map of shape {a.shape}")
    c, h, wd = a.shape
    layer = Layer(w.layer_name(node, "avgpool"), "avgpool", a.shape, (c, h // kh, wd // kw), a.itype, None,
                  kernel=square(kh, kw), stride=square(kh, kw), inputs=(a.src,))
    w.pending[node.output[0]] = Pending(layer, node)


def globalavgpool(w: Walker, node: onnx.NodeProto) -> None:
    """GlobalAveragePool, and ReduceMean over H and W (`x.mean((2, 3))`), which with keepdims=0 also
    flattens: a flatten layer then follows its requantizer."""
    a = w.act(node)
    if len(a.shape) != 3:
        raise CompileError(f"{where(node)}: a global pool on a map of shape {a.shape}")
    flatten = False
    if node.op_type == "ReduceMean":
        at = attrs(node)
        axes = at.get("axes") if len(node.input) < 2 or not node.input[1] else w.const(node.input[1])
        if axes is None or sorted(int(x) % 4 for x in np.asarray(axes).reshape(-1)) != [2, 3]:
            raise CompileError(f"{where(node)}: a mean over axes {None if axes is None else np.asarray(axes).tolist()}; "
                               "only the mean over height and width (axes 2, 3: a global average pool) is supported")
        flatten = not at.get("keepdims", 1)
    c, h, wd = a.shape
    layer = Layer(w.layer_name(node, "gap"), "globalavgpool", a.shape, (c, 1, 1), a.itype, None, kernel=square(h, wd),
                  inputs=(a.src,))
    w.pending[node.output[0]] = Pending(layer, node, flatten=flatten)


def flatten(w: Walker, node: onnx.NodeProto) -> None:
    """Flatten (axis 1), or a Reshape to (batch, features)."""
    a = w.act(node)
    if node.op_type == "Flatten" and attrs(node).get("axis", 1) != 1:
        raise CompileError(f"{where(node)}: Flatten axis {attrs(node)['axis']}; only axis 1 is supported")
    n = int(np.prod(a.shape))
    if node.op_type == "Reshape":
        shape = w.const(node.input[1])
        if shape is None or len(shape) != 2 or int(np.prod([s for s in shape[1:] if s > 0])) not in (n, 1):
            raise CompileError(f"{where(node)}: only a reshape to (batch, features) is supported")
    if len(a.shape) == 1:  # already flat (a feature-vector input): nothing to do
        w.acts[node.output[0]] = a
        return
    append_flatten(w, w.layer_name(node, "flatten"), a, node.output[0])


def append_flatten(w: Walker, name: str, a: Act, tensor: str) -> None:
    """A flatten layer of activation `a` into the plan; `tensor` (its ONNX name) becomes the flat activation."""
    n = int(np.prod(a.shape))
    w.layers.append(Layer(name, "flatten", a.shape, (n,), a.itype, a.itype, tensor=tensor, inputs=(a.src,)))
    w.acts[tensor] = Act(a.itype, (n,), name)


def add(w: Walker, node: onnx.NodeProto) -> None:
    """An Add of two activations: a residual join (rule 13), pending its requantizer."""
    a, b = w.act(node, 0), w.act(node, 1)
    if a.shape != b.shape:
        raise CompileError(f"{where(node)}: adds shapes {a.shape} and {b.shape}; a residual add needs equal shapes")
    layer = Layer(w.layer_name(node, "add"), "add", a.shape, a.shape, a.itype, None, inputs=(a.src, b.src), inp2=b.itype)
    w.pending[node.output[0]] = Pending(layer, node)


def requant(w: Walker, node: onnx.NodeProto, a: Act) -> Pending:
    """A QuantizeLinear of activation `a`: a requant layer, pending the type its DequantizeLinear gives."""
    return Pending(Layer(w.layer_name(node, "requant"), "requant", a.shape, a.shape, a.itype, None, inputs=(a.src,)), node)


def close(layer: Layer, out: IntType, node: onnx.NodeProto) -> None:
    """Set the requantizer that closes the layer's accumulator into `out`: a shift, or for an average
    over a count that is not a power of two a proven multiply and shift (contract rule 14)."""
    unit = layer.unit
    if isinstance(unit, Average) and unit.count_log2(layer) is None:
        n = unit.count(layer)
        found = multiply_shift(n, layer.inp, out)
        if found is None:
            finest = layer.inp.exp - ((n & -n).bit_length() - 1)  # s_in / (the largest power of two dividing n)
            raise CompileError(f"{where(node)}: averages {n} values from 2^{layer.inp.exp} into 2^{out.exp}, where the exact "
                               "quotient can sit on a rounding tie that no integer multiply and shift rounds as ONNX Runtime "
                               f"does (contract rule 14); quantize the average at 2^{finest} or finer")
        layer.out, layer.mult, layer.shift = out, *found
        return
    shift = out.exp - layer.acc_exps
    layer.out, layer.shift = out, shift if isinstance(shift, np.ndarray) else int(shift)


# the op types that start a layer, in the order the compiler's refusal lists them
HANDLERS: dict[str, Callable[[Walker, onnx.NodeProto], None]] = {
    "AveragePool": avgpool, "GlobalAveragePool": globalavgpool, "ReduceMean": globalavgpool, "Conv": conv2d,
    "Flatten": flatten, "Reshape": flatten, "Gemm": linear, "MatMul": linear, "MaxPool": maxpool}
