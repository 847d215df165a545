"""QONNX input: a Brevitas `export_qonnx` model compiles to the plan of the same net's QCDQ export, ONNX
Runtime on the converted golden model equals qonnx's own execution, and bipolar models are refused."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from export.compile import CompileError, compile_onnx
from export.plan import Plan, fields


def _net() -> nn.Module:
    import brevitas.nn as qnn
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint

    from quant.quantizers import InputQuant as Image, PerChannelWeightQuant as PerChannel  # plain Brevitas subclasses

    act = lambda: qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
    torch.manual_seed(0)
    net = nn.Sequential(qnn.QuantIdentity(act_quant=Image, return_quant_tensor=True),
                        qnn.QuantConv2d(3, 4, 3, padding=1, bias_quant=Int32Bias, weight_quant=PerChannel, return_quant_tensor=True),
                        act(), qnn.QuantConv2d(4, 4, 3, stride=2, padding=1, groups=4, bias_quant=Int32Bias,
                                               weight_quant=Int8WeightPerTensorFixedPoint, return_quant_tensor=True),
                        act(), nn.AdaptiveAvgPool2d(1), qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True),
                        nn.Flatten(), qnn.QuantLinear(4, 3, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias))
    net.train()
    with torch.no_grad():
        net[8].bias.mul_(0.01)  # the head's bias within rule 5's bound at its fine accumulator scale
        for _ in range(3):
            net(torch.rand(8, 3, 9, 9))
    return net.eval()


def _shape(plan: Plan) -> list[tuple]:
    """The plan without its ONNX names: each layer's fields, its inputs as layer indices."""
    index = {l.name: i for i, l in enumerate(plan.layers)}
    return [tuple((f.name, getattr(l, f.name)) for f in fields(l) if f.name not in ("name", "tensor", "inputs"))
            + (tuple(index.get(n, -1) for n in l.inputs),) for l in plan.layers]


def test_a_qonnx_export_compiles_to_the_plan_of_the_qcdq_export(tmp_path):
    from brevitas.export import export_onnx_qcdq, export_qonnx

    from export.check import qonnx_agreement
    net, x = _net(), torch.zeros(1, 3, 9, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx_qcdq(net, args=x, export_path=str(tmp_path / "qcdq.onnx"), dynamo=False, input_names=["image"])
        export_qonnx(net, args=x, export_path=str(tmp_path / "qonnx.onnx"), dynamo=False, input_names=["image"])
    a, b = compile_onnx(tmp_path / "qcdq.onnx"), compile_onnx(tmp_path / "qonnx.onnx")
    assert [l.kind for l in b.layers] == ["conv2d", "conv2d", "globalavgpool", "flatten", "linear"]
    for la, lb in zip(_shape(a), _shape(b)):
        for (k, va), (_, vb) in zip(la[:-1], lb[:-1]):
            assert (np.array_equal(va, vb) if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray) else va == vb), k
        assert la[-1] == lb[-1]
    assert b.input_type == a.input_type and b.input_shape == a.input_shape
    images = np.random.default_rng(0).integers(0, 256, size=(2, 3, 9, 9))
    assert qonnx_agreement(tmp_path / "qonnx.onnx", b.input_float(images)) == (2, 0.0)


def test_a_bipolar_qonnx_model_is_refused_in_one_line(tmp_path):
    init = [helper.make_tensor("s", TensorProto.FLOAT, [], [1.0])]
    nodes = [helper.make_node("BipolarQuant", ["image", "s"], ["b"], name="sign", domain="qonnx.custom_op.general"),
             helper.make_node("Relu", ["b"], ["logits"], name="r")]
    g = helper.make_graph(nodes, "bnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])], init)
    onnx.save(helper.make_model(g), str(tmp_path / "bnn.onnx"))
    with pytest.raises(CompileError, match=r"bnn.onnx: a QONNX model with bipolar, 1-bit or threshold quantization \('sign' "
                                           r"\(BipolarQuant\)\)"):
        compile_onnx(tmp_path / "bnn.onnx")
