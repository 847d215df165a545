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


def _pattern_net(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """Small plain-Brevitas models with what users write: patterns the chain takes (exact) and ones
    it refuses."""
    import brevitas.nn as qnn
    from brevitas.inject.enum import ScalingImplType
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias,
                                Uint8ActPerTensorFixedPoint)

    class Image(Uint8ActPerTensorFixedPoint):
        scaling_impl_type = ScalingImplType.CONST
        scaling_const = 1.0
        max_val = 1.0

    class W4(Int8WeightPerTensorFixedPoint):
        bit_width = 4

    class A4(Uint8ActPerTensorFixedPoint):
        bit_width = 4

    def conv(ci, co, k=3, stride=1, pad=1, bias=True, wq=Int8WeightPerTensorFixedPoint, **kw):
        return qnn.QuantConv2d(ci, co, k, stride=stride, padding=pad, bias=bias, bias_quant=Int32Bias if bias else None,
                               weight_quant=wq, return_quant_tensor=True, **kw)

    act = lambda q=Uint8ActPerTensorFixedPoint: qnn.QuantReLU(act_quant=q, return_quant_tensor=True)
    requant = lambda q=Uint8ActPerTensorFixedPoint: qnn.QuantIdentity(act_quant=q, return_quant_tensor=True)
    head = lambda n, bias=True, wq=Int8WeightPerTensorFixedPoint: qnn.QuantLinear(
        n, 3, bias=bias, weight_quant=wq, bias_quant=Int32Bias if bias else None)
    gap = lambda: [nn.AdaptiveAvgPool2d(1), requant(), nn.Flatten()]

    class ViewFlatten(nn.Module):  # x.view(x.size(0), -1): Shape/Gather/Concat/Reshape in the graph
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(qnn.QuantIdentity(act_quant=Image, return_quant_tensor=True), conv(3, 4, stride=2),
                                      act(), nn.MaxPool2d(2))
            self.fc = head(4 * 4 * 4)

        def forward(self, x):
            x = self.body(x)
            return self.fc(x.view(x.size(0), -1))

    class Mean(nn.Module):  # x.mean(axes) instead of a pooling module: ReduceMean in the graph
        def __init__(self, axes, keepdim):
            super().__init__()
            self.body = nn.Sequential(qnn.QuantIdentity(act_quant=Image, return_quant_tensor=True), conv(3, 4, stride=2),
                                      qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint), nn.MaxPool2d(2))
            self.requant, self.fc, self.axes, self.keepdim = requant(), head(16 if 1 in axes else 4), axes, keepdim

        def forward(self, x):
            x = self.requant(self.body(x).mean(self.axes, keepdim=self.keepdim))
            return self.fc(torch.flatten(x, 1) if self.keepdim else x)

    if name == "view_flatten":
        return ViewFlatten(), (3, 16, 16)
    if name.startswith("mean"):
        return Mean(*{"mean_over_hw": ((2, 3), False), "mean_keepdim": ((-2, -1), True),
                      "mean_over_channels": ((1,), True)}[name]), (3, 16, 16)
    body = {
        "4bit_5x5_1x1": [conv(3, 6, 5, pad=2, wq=W4), act(A4), nn.MaxPool2d(2), conv(6, 4, 1, pad=0, wq=W4), act(A4),
                         nn.MaxPool2d(2), nn.Flatten(), qnn.QuantLinear(4 * 4 * 4, 8, bias=True, weight_quant=W4,
                                                                       bias_quant=Int32Bias, return_quant_tensor=True),
                         act(A4), head(8, wq=W4)],
        "signed_between_layers": [conv(3, 4, stride=2), act(), conv(4, 4, stride=2), requant(Int8ActPerTensorFixedPoint),
                                  conv(4, 4), act(), *gap(), head(4)],
        "signed_max_pool_no_bias": [conv(3, 4, stride=2, bias=False), requant(Int8ActPerTensorFixedPoint), nn.MaxPool2d(2),
                                    conv(4, 4), act(), *gap(), head(4, bias=False)],
        "depthwise": [conv(3, 4), act(), conv(4, 4, groups=4), act(), *gap(), head(4)],
        "dilated": [conv(3, 4, pad=2, dilation=2), act(), *gap(), head(4)],
        "rectangular_kernel": [conv(3, 4, (3, 1), pad=(1, 0)), act(), *gap(), head(4)],
        "padded_max_pool": [conv(3, 4, stride=2), act(), nn.MaxPool2d(3, 2, padding=1), *gap(), head(4)],
        "relu_after_pool": [conv(3, 4), requant(Int8ActPerTensorFixedPoint), nn.MaxPool2d(2), act(), *gap(), head(4)],
        "softmax_at_the_end": [conv(3, 4, stride=2), act(), *gap(), head(4), nn.Softmax(dim=1)],
        "overlapping_max_pool": [conv(3, 4, stride=2), act(), nn.MaxPool2d(2, 1), nn.MaxPool2d(7), requant(),
                                 nn.Flatten(), head(4)],
    }[name]
    return nn.Sequential(qnn.QuantIdentity(act_quant=Image, return_quant_tensor=True), *body), (3, 16, 16)


@pytest.mark.parametrize("name, opset, refused", [
    ("4bit_5x5_1x1", 13, None),
    ("signed_between_layers", 17, None),
    ("signed_max_pool_no_bias", 13, None),
    ("view_flatten", 13, None),
    ("mean_over_hw", 13, None),
    ("mean_keepdim", 13, None),
    ("mean_over_channels", 13, r"\(ReduceMean\): a mean over axes \[1\]; only the mean over height and width"),
    ("depthwise", 13, None),
    ("dilated", 13, r"\(Conv\): dilation \[2, 2\] is not supported; use dilation 1"),
    ("rectangular_kernel", 13, None),
    ("padded_max_pool", 13, r"\(MaxPool\): padding/ceil_mode/dilation are not supported"),
    ("relu_after_pool", 13, r"\(Relu\): not supported here"),
    ("softmax_at_the_end", 13, None),
    ("overlapping_max_pool", 13, r"\(maxpool\): max-pool 2x2 stride 1: the pool engine makes k x k stride k"),
])
def test_what_users_write_is_compiled_exactly_or_refused_by_name(tmp_path, name, opset, refused):
    from brevitas.export import export_onnx_qcdq

    from export.walker import CompileError
    from hw.config import ArrayConfig
    from hw.engines import UnsupportedPlan
    from hw.schedule import schedule
    torch.manual_seed(0)
    net, shape = _pattern_net(name)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(8, *shape))
    net.eval()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx_qcdq(net, args=torch.zeros(1, *shape), export_path=str(path), dynamo=False, opset_version=opset,
                         input_names=["image"], output_names=["logits"])
    if refused is None:
        plan = compile_onnx(path)
        schedule(plan, ArrayConfig())  # the hardware takes it too
        res = compare(path, plan, random_images(plan, 4, seed=1))
        assert res.exact == res.images == 4, res.mismatches[:1]
    else:
        with pytest.raises((CompileError, UnsupportedPlan), match=refused):
            schedule(compile_onnx(path), ArrayConfig())
