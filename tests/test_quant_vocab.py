"""The model description's vocabulary for MLPerf Tiny's models: grouped and depthwise convs, non-square
kernels with per-axis strides and pads, averages over any count, signed inputs; each through QAT,
export, the compiler and the reference (== ONNX Runtime)."""

import warnings

import numpy as np
import pytest
import torch

from export.check import compare
from export.compile import compile_onnx
from export.onnx_export import export
from quant.data import read_split
from quant.model import ConfigError, build, load_arch, named_config, quantized_twin, shapes
from quant.train import TrainConfig, train
from quant_helpers import arch_file


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_dscnn_is_mlperf_tinys_keyword_spotting_reference():
    """conv 64 (10x4, stride 2, pads 5/1) on a signed 1x49x10 MFCC tensor, four depthwise-separable
    blocks, an average over the whole 25x5 map, linear 12."""
    cfg = named_config("dscnn")
    assert cfg.in_shape == (1, 49, 10) and cfg.in_signed and cfg.num_classes == 12
    assert shapes(cfg)[0] == (64, 25, 5) and shapes(cfg)[-3:] == [(64, 1, 1), (64,), (12,)]
    depthwise = [m for m in build(cfg).modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert [(m.groups, m.in_channels, tuple(m.weight.shape)) for m in depthwise] == [(64, 64, (64, 1, 3, 3))] * 4


@pytest.mark.parametrize("layer, match", [
    ({"kind": "conv", "out": 6, "kernel": 3, "groups": 4}, "'groups' must be a positive integer that divides 'out'"),
    ({"kind": "conv", "out": 4, "kernel": 3, "groups": 4}, "'groups' 4 does not divide the 3 input channels"),
    ({"kind": "conv", "out": 4, "kernel": [3, 2, 1]}, "field 'kernel' has the wrong type"),
    ({"kind": "conv", "out": 4, "kernel": [3, 2], "padding": "same"}, "\"same\" needs an odd kernel"),
    ({"kind": "conv", "out": 4, "kernel": [3, 2], "padding": [1, 2]}, "from 0 to the kernel size - 1"),
    ({"kind": "avgpool", "kernel": [1, 1]}, "'kernel' must be an integer >= 2 or \\[height, width\\]"),
])
def test_a_bad_conv_or_pool_field_is_one_error_naming_it(tmp_path, layer, match):
    f = arch_file(tmp_path / "net.json", [layer, {"kind": "flatten"}, {"kind": "linear", "out": 5, "relu": False}],
                  in_shape=[3, 8, 8])
    with pytest.raises(ConfigError, match=match):
        load_arch(f).validate()


def _npz(folder, n, shape, signed, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi, dt = (-128, 128, np.int8) if signed else (0, 256, np.uint8)
    np.savez(folder, x=rng.integers(lo, hi, (n, *shape), dtype=dt), y=np.arange(n) % classes)


def test_a_depthwise_separable_model_on_signed_npz_tensors_trains_exports_and_compiles_exactly(tmp_path):
    """A DS-CNN in miniature: a 5x3 stride-(2,1) conv with per-axis pads, depthwise 3x3, grouped 1x1,
    pointwise, an average over a 3x5 map (15 values: rule 14), on int8 inputs seen as q / 128."""
    layers = [{"kind": "conv", "out": 8, "kernel": [5, 3], "stride": [2, 1], "padding": [2, 1], "per_channel": True},
              {"kind": "conv", "out": 8, "kernel": 3, "padding": "same", "groups": 8, "per_channel": True},
              {"kind": "conv", "out": 8, "kernel": 1, "groups": 2},
              {"kind": "conv", "out": 8, "kernel": 1, "per_channel": True},
              {"kind": "avgpool", "kernel": [3, 5]}, {"kind": "flatten"}, {"kind": "linear", "out": 3, "relu": False}]
    cfg = load_arch(arch_file(tmp_path / "ds.json", layers, in_shape=[1, 6, 5], in_signed=True, num_classes=3)).validate()
    assert shapes(cfg)[:1] == [(8, 3, 5)]
    for split, n in (("train", 24), ("val", 6)):
        _npz(tmp_path / f"{split}.npz", n, (1, 6, 5), signed=True, seed=n)
    tr, va = read_split(tmp_path, "train", shape=cfg.in_shape), read_split(tmp_path, "val", shape=cfg.in_shape)
    train(quantized_twin(cfg), tr, va, TrainConfig(epochs=1, batch=8, lr=5e-4), tmp_path / "q.pt", progress=False)
    plan = compile_onnx(export(tmp_path / "q.pt", tmp_path / "q.onnx"))
    assert plan.input_type.signed and plan.input_type.bits == 8 and plan.input_type.exp == -7
    assert {l.kind for l in plan.layers} >= {"conv2d", "avgpool", "linear"}
    assert any(l.groups == 8 for l in plan.layers) and any(l.groups == 2 for l in plan.layers)
    res = compare(tmp_path / "q.onnx", plan, va.images)
    assert res.exact == res.images == 6, res.mismatches[:1]


def test_data_of_the_other_signedness_is_refused_by_name(tmp_path):
    cfg = load_arch(arch_file(tmp_path / "n.json", [{"kind": "flatten"}, {"kind": "linear", "out": 3, "relu": False}],
                              in_shape=[1, 4, 4], num_classes=3)).validate()
    for split in ("train", "val"):
        _npz(tmp_path / f"{split}.npz", 6, (1, 4, 4), signed=True)
    tr = read_split(tmp_path, "train", shape=cfg.in_shape)
    with pytest.raises(ConfigError, match="holds int8 inputs, but the model takes unsigned uint8 ones; set \"in_signed\": true"):
        train(cfg, tr, tr, TrainConfig(epochs=1), tmp_path / "f.pt", progress=False)
