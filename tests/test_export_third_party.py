"""Models written in plain Brevitas (no quant/ behind them), exported with export_onnx_qcdq: the
compiler takes them and the reference equals ONNX Runtime on every layer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from export.check import compare
from export.compile import compile_onnx
from export.testing import random_images


def _brevitas_net(variant: int) -> nn.Module:
    import brevitas.nn as qnn
    from brevitas.inject.enum import ScalingImplType
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint

    class Image(Uint8ActPerTensorFixedPoint):
        scaling_impl_type = ScalingImplType.CONST
        scaling_const = 1.0
        max_val = 1.0

    class PerChannel(Int8WeightPerTensorFixedPoint):
        scaling_per_output_channel = True

    def conv(ci, co, k, stride, pad, per_channel):
        return qnn.QuantConv2d(ci, co, k, stride=stride, padding=pad, bias_quant=Int32Bias, return_quant_tensor=True,
                               weight_quant=PerChannel if per_channel else Int8WeightPerTensorFixedPoint)

    act = lambda: qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
    requant = lambda: qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
    head = lambda n: qnn.QuantLinear(n, 3, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias)
    if variant == 0:  # 5x5 with pad 2 and stride 2 on an odd map, a 4x4 average, a global pool over 1x1
        body = [conv(3, 6, 5, 2, 2, True), act(), nn.AvgPool2d(4), requant(), conv(6, 4, 2, 1, 0, False), act(),
                nn.AdaptiveAvgPool2d(1), requant(), nn.Flatten(), head(4)]
        shape = (3, 17, 17)
    elif variant == 1:  # asymmetric-free "same" 3x3, a 3x3 max-pool, per-channel everywhere before the head
        body = [conv(2, 5, 3, 1, 1, True), act(), nn.MaxPool2d(3), conv(5, 8, 3, 1, 1, True), act(),
                nn.AvgPool2d(2), requant(), nn.Flatten(), head(8 * 2 * 2)]
        shape = (2, 12, 12)
    else:  # no bias anywhere: a bias-less QuantLinear exports DequantizeLinear(W) -> Transpose -> MatMul
        body = [conv(3, 4, 3, 2, 1, True), act(), nn.Flatten(),
                qnn.QuantLinear(4 * 5 * 5, 6, bias=False, weight_quant=PerChannel, return_quant_tensor=True), act(),
                qnn.QuantLinear(6, 3, bias=False, weight_quant=Int8WeightPerTensorFixedPoint)]
        body[0] = qnn.QuantConv2d(3, 4, 3, stride=2, padding=1, bias=False, return_quant_tensor=True, weight_quant=PerChannel)
        shape = (3, 9, 9)
    net = nn.Sequential(qnn.QuantIdentity(act_quant=Image, return_quant_tensor=True), *body)
    net.shape = shape
    return net


@pytest.mark.parametrize("variant, batch", [(0, "fixed"), (1, "dynamic"), (2, "dynamic")])
def test_a_plain_brevitas_model_compiles_and_checks(tmp_path, variant, batch):
    from brevitas.export import export_onnx_qcdq
    torch.manual_seed(variant)
    net = _brevitas_net(variant)
    with torch.no_grad():  # channel scales 2^6 apart in the first conv (and in variant 2's hidden linear layer)
        net[1].weight[0] /= 64
        if variant == 2:
            net[4].weight[0] /= 64
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(8, *net.shape))
    net.eval()
    path = tmp_path / "their.onnx"
    kw = {} if batch == "fixed" else {"dynamic_axes": {"image": {0: "batch"}, "logits": {0: "batch"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx_qcdq(net, args=torch.zeros(1, *net.shape), export_path=str(path), dynamo=False,
                         input_names=["image"], output_names=["logits"], **kw)
    plan = compile_onnx(path)
    kinds = [l.kind for l in plan.layers]
    assert ("avgpool" in kinds if variant < 2 else kinds.count("linear") == 2) and plan.class_names == ["0", "1", "2"]
    if variant == 2:
        assert all(not l.bias.any() for l in plan.layers if l.weight is not None)
        hidden = plan.layers[2].w_exps  # the hidden layer's per-channel scales survive the transpose
        assert hidden is not None and hidden.max() - hidden.min() >= 6
    first = plan.layers[0]
    assert first.w_exps is not None and first.w_exps.max() - first.w_exps.min() >= 6
    res = compare(path, plan, random_images(plan, 5, seed=variant))
    assert res.exact == res.images == 5, res.mismatches[:1]
    ref = compare(path, plan, random_images(plan, 2, seed=9))
    assert ref.exact == 2
