"""Small chain models in plain Brevitas with power-of-two quantizers, at the standard models' input
shapes: signed int8 1x28x28 and 1x49x10 tensors (scale 2^-7) and a 3x32x32 RGB image (uint8 at 2^-8)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

SHAPES = {"int8_1x28x28": (1, 28, 28), "int8_1x49x10": (1, 49, 10), "uint8_3x32x32": (3, 32, 32)}


def chain_onnx(kind: str, path: str | Path) -> Path:
    """Export the `kind` model (a key of SHAPES), random weights calibrated on random inputs, to `path`.

    int8_1x28x28: conv 3x3 pad 1, max-pool 2, conv 3x3 pad 1, max-pool 2, linear 10.
    int8_1x49x10: DS-CNN's first layer (conv 10x4, stride 2, pads 5/1) -> 25x5, max-pool 2, linear 10.
    uint8_3x32x32: conv 3x3 pad 1, max-pool 2, conv 3x3 stride 2 pad 1, global average pool over 8x8, linear 10."""
    import brevitas.nn as qnn
    import torch
    from brevitas.export import export_onnx_qcdq
    from brevitas.inject.enum import ScalingImplType
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias,
                                Uint8ActPerTensorFixedPoint)
    from torch import nn

    signed = kind.startswith("int8")

    class InputQuant(Int8ActPerTensorFixedPoint if signed else Uint8ActPerTensorFixedPoint):
        scaling_impl_type = ScalingImplType.CONST
        scaling_const = 1.0
        max_val = 1.0
        min_val = -1.0 if signed else 0.0

    def conv(ci, co, stride=1, k=3, padding=1):
        return qnn.QuantConv2d(ci, co, k, stride=stride, padding=padding, bias_quant=Int32Bias, return_quant_tensor=True,
                               weight_quant=Int8WeightPerTensorFixedPoint)

    relu = lambda: qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
    head = lambda n: qnn.QuantLinear(n, 10, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias)
    shape = SHAPES[kind]
    if kind == "int8_1x28x28":
        body = [conv(1, 4), relu(), nn.MaxPool2d(2), conv(4, 8), relu(), nn.MaxPool2d(2), nn.Flatten(), head(8 * 7 * 7)]
    elif kind == "int8_1x49x10":
        body = [conv(1, 8, 2, (10, 4), (5, 1)), relu(), nn.MaxPool2d(2), nn.Flatten(), head(8 * 12 * 2)]
    else:
        body = [conv(3, 8), relu(), nn.MaxPool2d(2), conv(8, 8, stride=2), relu(), nn.AdaptiveAvgPool2d(1),
                qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True), nn.Flatten(), head(8)]
    torch.manual_seed(0)
    net = nn.Sequential(qnn.QuantIdentity(act_quant=InputQuant, return_quant_tensor=True), *body)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            x = torch.rand(8, *shape)
            net(x * 2 - 1 if signed else x)
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx_qcdq(net, args=torch.zeros(1, *shape), export_path=str(path), dynamo=False,
                         input_names=["image"], output_names=["logits"])
    return Path(path)


def write_npz(folder: str | Path, shape: tuple[int, ...], n: int, split: str = "val", seed: int = 0) -> Path:
    """`folder/<split>.npz`: `n` random int8 tensors (the extremes -128 and 127 in the first) and labels 0..9."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(n, *shape), dtype=np.int8)
    x.reshape(n, -1)[0, :2] = -128, 127
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{split}.npz", x=x, y=np.arange(n) % 10)
    return folder / f"{split}.npz"
