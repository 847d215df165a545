"""Hand-built QCDQ graphs with onnx.helper: one layer with chosen integers, for edge cases and refusals."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _const(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def qcdq_conv(weight, bias, *, in_shape=(1, 3, 3), w_exp=-4, in_exp=-8, out_exp=-6, relu=True, out_bits=8,
              out_signed=False, attrs=None, w_scale=None, zp_out=0, op="Conv", extra_nodes=(), in_dtype=np.uint8, pool=False):
    """image -> Q/DQ (uint8, 2^in_exp) -> Conv or Gemm(w, b) -> [Relu] -> Q -> [Clip] -> DQ -> Flatten -> Gemm(logits)."""
    weight = np.asarray(weight, dtype=np.int8)
    inits = [
        _const("in_s", np.float32(2.0 ** in_exp)), _const("in_zp", in_dtype(0)),
        _const("w_q", weight), _const("w_s", np.float32(w_scale if w_scale is not None else 2.0 ** w_exp)), _const("w_zp", np.int8(0)),
        _const("b_q", np.asarray(bias, dtype=np.int32)), _const("b_s", np.float32(2.0 ** (in_exp + w_exp))), _const("b_zp", np.int32(0)),
        _const("o_s", np.float32(2.0 ** out_exp)), _const("o_zp", (np.int8 if out_signed else np.uint8)(zp_out)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["image", "in_s", "in_zp"], ["xq"], name="in_q"),
        helper.make_node("DequantizeLinear", ["xq", "in_s", "in_zp"], ["x"], name="in_dq"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], name="w_dq"),
        helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_zp"], ["b"], name="b_dq"),
    ]
    src = "x"
    if op == "Gemm":
        nodes.append(helper.make_node("Flatten", ["x"], ["xf"], name="flat0"))
        src = "xf"
    nodes.append(helper.make_node(op, [src, "w", "b"], ["acc"], name="layer", **({"transB": 1} if op == "Gemm" else {}), **(attrs or {})))
    nodes.extend(extra_nodes)
    y = "acc"
    if relu:
        nodes.append(helper.make_node("Relu", ["acc"], ["r"], name="relu"))
        y = "r"
    nodes.append(helper.make_node("QuantizeLinear", [y, "o_s", "o_zp"], ["yq"], name="out_q"))
    q = "yq"
    if out_bits < 8:
        lo, hi = ((-(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1) if out_signed else (0, (1 << out_bits) - 1))
        dt = np.int8 if out_signed else np.uint8
        inits += [_const("c_lo", dt(lo)), _const("c_hi", dt(hi))]
        nodes.append(helper.make_node("Clip", ["yq", "c_lo", "c_hi"], ["yc"], name="out_clip"))
        q = "yc"
    nodes.append(helper.make_node("DequantizeLinear", [q, "o_s", "o_zp"], ["y"], name="out_dq"))
    shape = _out_shape(weight, in_shape, op, attrs)
    if pool:
        nodes.append(helper.make_node("MaxPool", ["y"], ["yp"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
        shape = (shape[0], shape[1] // 2, shape[2] // 2)
    nodes.append(helper.make_node("Flatten", ["yp" if pool else "y"], ["yf"], name="flat"))
    n_feat = int(np.prod(shape))
    inits += [_const("f_w", np.ones((2, n_feat), np.int8)), _const("f_s", np.float32(1.0)), _const("f_zp", np.int8(0)),
              _const("f_b", np.zeros(2, np.int32)), _const("f_bs", np.float32(2.0 ** out_exp)), _const("f_bzp", np.int32(0))]
    nodes += [helper.make_node("DequantizeLinear", ["f_w", "f_s", "f_zp"], ["fw"], name="fw_dq"),
              helper.make_node("DequantizeLinear", ["f_b", "f_bs", "f_bzp"], ["fb"], name="fb_dq"),
              helper.make_node("Gemm", ["yf", "fw", "fb"], ["logits"], name="logits_gemm", transB=1)]
    g = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", *in_shape])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _out_shape(weight, in_shape, op, attrs):
    if op == "Gemm":
        return (weight.shape[0],)
    k = weight.shape[-1]
    s = (attrs or {}).get("strides", [1, 1])[0]
    return (weight.shape[0], (in_shape[1] - k) // s + 1, (in_shape[2] - k) // s + 1)


def vocab_graph(weight, bias, *, in_shape, w_exps=-4, pads=(0, 0, 0, 0), stride=1, out_exp=-8, pool=None, pool_k=2,
                pool_exp=-8, bn=False, in_exp=-8):
    """image -> Q/DQ -> Conv(pads, stride; per-channel weight scales when `w_exps` is a list) -> [BatchNormalization]
    -> Relu -> Q/DQ -> [AveragePool k | GlobalAveragePool -> Q/DQ at 2^pool_exp] -> Flatten -> Gemm(logits)."""
    weight = np.asarray(weight, dtype=np.int8)
    cout = weight.shape[0]
    per_channel = np.ndim(w_exps) > 0
    e = np.asarray(w_exps, dtype=np.float64)
    w_scale = (2.0 ** e).astype(np.float32) if per_channel else np.float32(2.0 ** float(e))
    b_scale = (2.0 ** (in_exp + e)).astype(np.float32) if per_channel else np.float32(2.0 ** (in_exp + float(e)))
    zp_w = np.zeros(cout, np.int8) if per_channel else np.int8(0)
    zp_b = np.zeros(cout, np.int32) if per_channel else np.int32(0)
    axis = {"axis": 0} if per_channel else {}
    inits = [_const("in_s", np.float32(2.0 ** in_exp)), _const("in_zp", np.uint8(0)),
             _const("w_q", weight), _const("w_s", w_scale), _const("w_zp", zp_w),
             _const("b_q", np.asarray(bias, dtype=np.int32)), _const("b_s", b_scale), _const("b_zp", zp_b),
             _const("o_s", np.float32(2.0 ** out_exp)), _const("o_zp", np.uint8(0))]
    nodes = [helper.make_node("QuantizeLinear", ["image", "in_s", "in_zp"], ["xq"], name="in_q"),
             helper.make_node("DequantizeLinear", ["xq", "in_s", "in_zp"], ["x"], name="in_dq"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], name="w_dq", **axis),
             helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_zp"], ["b"], name="b_dq", **axis),
             helper.make_node("Conv", ["x", "w", "b"], ["acc"], name="conv", pads=list(pads), strides=[stride, stride],
                              kernel_shape=list(weight.shape[2:]))]
    y = "acc"
    if bn:
        inits += [_const(n, np.full(cout, v, np.float32)) for n, v in (("g", 1.0), ("beta", 0.0), ("mu", 0.0), ("var", 1.0))]
        nodes.append(helper.make_node("BatchNormalization", ["acc", "g", "beta", "mu", "var"], ["bn"], name="bn"))
        y = "bn"
    nodes += [helper.make_node("Relu", [y], ["r"], name="relu"),
              helper.make_node("QuantizeLinear", ["r", "o_s", "o_zp"], ["yq"], name="out_q"),
              helper.make_node("DequantizeLinear", ["yq", "o_s", "o_zp"], ["y"], name="out_dq")]
    k = weight.shape[-1]
    c, h, w = cout, (in_shape[1] + pads[0] + pads[2] - k) // stride + 1, (in_shape[2] + pads[1] + pads[3] - k) // stride + 1
    last = "y"
    if pool is not None:
        if pool == "avg":
            nodes.append(helper.make_node("AveragePool", ["y"], ["p"], name="avgpool", kernel_shape=[pool_k, pool_k], strides=[pool_k, pool_k]))
            h, w = h // pool_k, w // pool_k
        else:
            nodes.append(helper.make_node("GlobalAveragePool", ["y"], ["p"], name="gap"))
            h, w = 1, 1
        inits += [_const("p_s", np.float32(2.0 ** pool_exp)), _const("p_zp", np.uint8(0))]
        nodes += [helper.make_node("QuantizeLinear", ["p", "p_s", "p_zp"], ["pq"], name="pool_q"),
                  helper.make_node("DequantizeLinear", ["pq", "p_s", "p_zp"], ["pd"], name="pool_dq")]
        last = "pd"
    lexp = pool_exp if pool is not None else out_exp
    n_feat = c * h * w
    nodes.append(helper.make_node("Flatten", [last], ["f"], name="flat"))
    inits += [_const("f_w", np.ones((2, n_feat), np.int8)), _const("f_s", np.float32(1.0)), _const("f_zp", np.int8(0)),
              _const("f_b", np.zeros(2, np.int32)), _const("f_bs", np.float32(2.0 ** lexp)), _const("f_bzp", np.int32(0))]
    nodes += [helper.make_node("DequantizeLinear", ["f_w", "f_s", "f_zp"], ["fw"], name="fw_dq"),
              helper.make_node("DequantizeLinear", ["f_b", "f_bs", "f_bzp"], ["fb"], name="fb_dq"),
              helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], name="logits_gemm", transB=1)]
    g = helper.make_graph(nodes, "vocab", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", *in_shape])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


class GraphBuilder:
    """A QCDQ graph built op by op (residual joins, grouped and non-square convs, any input):
    `x = b.input(); y = b.q(b.conv(x, ...), exp)`; each method returns the tensor name it makes."""

    def __init__(self, in_shape, in_exp=-8, in_signed=False):
        self.in_shape, self.nodes, self.inits, self.n = tuple(in_shape), [], [], 0
        self.in_exp, self.in_signed = in_exp, in_signed

    def _name(self, stem):
        self.n += 1
        return f"{stem}{self.n}"

    def _node(self, op, ins, name=None, **attrs):
        out = self._name(op.lower() + "_")
        self.nodes.append(helper.make_node(op, ins, [out], name=name or self._name(op), **attrs))
        return out

    def _const(self, arr):
        name = self._name("c")
        self.inits.append(_const(name, arr))
        return name

    def input(self):
        return self.q("image", self.in_exp, self.in_signed, name="in")

    def q(self, x, exp, signed=False, name=None, bits=8):
        """QuantizeLinear -> [Clip to `bits`] -> DequantizeLinear at 2**exp."""
        s, zp = self._const(np.float32(2.0 ** exp)), self._const((np.int8 if signed else np.uint8)(0))
        y = self._node("QuantizeLinear", [x, s, zp], name=name and f"{name}_q")
        if bits < 8:
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
            dt = np.int8 if signed else np.uint8
            y = self._node("Clip", [y, self._const(dt(lo)), self._const(dt(hi))])
        return self._node("DequantizeLinear", [y, s, zp], name=name and f"{name}_dq")

    def _weights(self, w, b, w_exp, in_exp):
        wq = self._node("DequantizeLinear", [self._const(np.asarray(w, np.int8)), self._const(np.float32(2.0 ** w_exp)),
                                             self._const(np.int8(0))])
        bq = self._node("DequantizeLinear", [self._const(np.asarray(b, np.int32)), self._const(np.float32(2.0 ** (in_exp + w_exp))),
                                             self._const(np.int32(0))])
        return wq, bq

    def conv(self, x, w, b, *, in_exp, w_exp=-4, pads=(0, 0, 0, 0), strides=(1, 1), group=1, name=None):
        wq, bq = self._weights(w, b, w_exp, in_exp)
        return self._node("Conv", [x, wq, bq], name=name, pads=list(pads), strides=list(strides), group=group,
                          kernel_shape=list(np.shape(w)[2:]))

    def gemm(self, x, w, b, *, in_exp, w_exp=-4, name=None):
        wq, bq = self._weights(w, b, w_exp, in_exp)
        return self._node("Gemm", [x, wq, bq], name=name, transB=1)

    def op(self, op, *ins, name=None, **attrs):
        return self._node(op, list(ins), name=name, **attrs)

    def model(self, n_out):
        """The graph whose output is the last node's (renamed "logits"), with `n_out` logits."""
        self.nodes[-1].output[0] = "logits"
        g = helper.make_graph(self.nodes, "built", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", *self.in_shape])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_out])], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        return m
