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
