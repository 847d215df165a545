"""Verification ladder step 3: the generated accelerator RTL under cocotb + Verilator against
ONNX Runtime, bit for bit: random models from export's strategy on 1x1, 4x4 and 8x8 arrays at 8
and 4 bits, pruned and unpruned, of the basic and the full vocabulary (padding, stride 2,
average and global pools, per-channel shifts); random graphs of the standard vocabulary (residual
blocks, depthwise and non-square convs, signed inputs) at fixed seeds; a tiny residual network; the
mismatch report; the bundled paper model on seeded random images."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from export.testing import materialize, model_specs, random_images
from sim.golden import expected_logits
from sim.verify import locate, verify
from sim_helpers import drawn
from hw_helpers import vocabulary_specs

# (array, bits, pruned, seed): every array size, both widths, both kinds of model
CASES = [("1x1", 8, True, 3), ("4x4", 4, False, 2), ("8x8", 8, True, 3), ("8x8", 4, False, 4)]


def random_model(tmp: Path, bits: int, pruned: bool, seed: int):
    spec = drawn(model_specs(w_bits=bits, a_bits=bits, pruned=pruned, vocabulary="basic"), seed)
    onnx, plan = materialize(spec, tmp)
    assert any(l.sparse is not None for l in plan.layers) == pruned, spec
    return onnx, plan


@pytest.mark.parametrize("array,bits,pruned,seed", CASES)
def test_random_model_bit_exact(tmp_path, array, bits, pruned, seed):
    onnx, plan = random_model(tmp_path, bits, pruned, seed)
    images = random_images(plan, 6, seed=seed)
    expected = expected_logits(onnx, plan, images)
    # protocol corners on half the cases: bubbles in the pixel stream, back-pressure on logits
    out = verify(plan, array, images, expected, work_dir=tmp_path / "sim", gaps=pruned, backpressure=pruned)
    assert out.diagnosis is None, out.diagnosis
    s = out.summary
    assert s["bit_exact"] == s["class_agree"] == len(images), out.records
    assert s["cycles"]["min"] >= int(np.prod(plan.input_shape))  # it must at least take every pixel


# (array, seed): full-vocabulary models, each with padding, a stride-2 conv, an average or global
# pool and per-channel shifts (the seeds are picked so; the test checks it); seed 106 has a 3x3 max-pool
VOCAB_CASES = [("1x1", 0), ("4x4", 3), ("8x8", 82), ("4x4", 106)]


def vocab_model(tmp: Path, seed: int):
    spec = drawn(vocabulary_specs(max_size=12), seed)
    onnx, plan = materialize(spec, tmp)
    kinds = {l.kind for l in plan.layers}
    assert any(any(l.pad) for l in plan.layers) and any(l.stride == 2 for l in plan.layers if l.kind == "conv2d"), spec
    assert kinds & {"avgpool", "globalavgpool"} and any(l.per_channel for l in plan.layers), spec
    return onnx, plan


@pytest.mark.parametrize("array,seed", VOCAB_CASES)
def test_vocabulary_model_bit_exact(tmp_path, array, seed):
    onnx, plan = vocab_model(tmp_path, seed)
    images = random_images(plan, 4, seed=seed)
    out = verify(plan, array, images, expected_logits(onnx, plan, images), work_dir=tmp_path / "sim")
    assert out.diagnosis is None, out.diagnosis
    assert out.summary["bit_exact"] == len(images), out.records


def test_residual_model_bit_exact(tmp_path):
    """A tiny ResNet (a stem, an identity block, a stride-2 block with a 1x1 shortcut) in Brevitas:
    the adds run on the store of a conv, the identity's requantizer on the skip read."""
    from export.testing import RandomModel
    from quant.model import ModelConfig
    config = ModelConfig.from_dict({"arch": "tiny-resnet", "num_classes": 3, "in_shape": [3, 8, 8], "layers": [
        {"kind": "conv", "out": 4, "kernel": 3, "padding": "same"},
        {"kind": "residual", "out": 4, "stride": 1}, {"kind": "residual", "out": 6, "stride": 2},
        {"kind": "gap"}, {"kind": "flatten"}, {"kind": "linear", "out": 3, "relu": False}]})
    onnx, plan = materialize(RandomModel(config, seed=1), tmp_path)
    assert [l.kind for l in plan.layers].count("add") == 2 and "requant" in [l.kind for l in plan.layers]
    images = random_images(plan, 2, seed=1)
    out = verify(plan, "4x4", images, expected_logits(onnx, plan, images), work_dir=tmp_path / "sim")
    assert out.diagnosis is None, out.diagnosis
    assert out.summary["bit_exact"] == len(images), out.records


# (array, seed): random graphs of the "standard" vocabulary that the hardware runs. Seed 40: a
# depthwise 4x3 conv, stride (2, 1), pads (0, 2), int8 input. Seed 58: a depthwise 3x2 stride-2
# conv, a 1x2 average (rule 14), a stride-2 residual block, a global average, a P-layer. Seed 129:
# a depthwise 3x3 stride-2 "same" conv, an identity residual block, a 3x3 max-pool, a global average.
# Seed 74: a global average over a non-square 7x3 map. Seed 75: a grouped conv (2 groups of 1 -> 2
# channels, on the array as its block-diagonal dense conv).
STANDARD_CASES = [("4x4", 40), ("3x5", 58), ("8x8", 129), ("2x3", 74), ("4x4", 75)]


@pytest.mark.parametrize("array,seed", STANDARD_CASES)
def test_standard_graph_bit_exact(tmp_path, array, seed):
    spec = drawn(model_specs(vocabulary="standard", max_size=10), seed)
    onnx, plan = materialize(spec, tmp_path)
    kinds = [l.kind for l in plan.layers]
    assert any(l.kind == "conv2d" and l.groups > 1 for l in plan.layers), spec
    assert seed != 58 or ("add" in kinds and "avgpool" in kinds and any(l.sparse is not None for l in plan.layers)), spec
    images = random_images(plan, 3, seed=seed)
    out = verify(plan, array, images, expected_logits(onnx, plan, images), work_dir=tmp_path / "sim")
    assert out.diagnosis is None, out.diagnosis
    assert out.summary["bit_exact"] == len(images), out.records


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One random model (at least 3 output channels in its first conv) simulated once on 4x4."""
    tmp = tmp_path_factory.mktemp("mismatch")
    onnx, plan = random_model(tmp, 4, False, 2)
    images = random_images(plan, 3, seed=2)
    return plan, images, expected_logits(onnx, plan, images), tmp


def test_mismatch_against_onnx_is_reported_with_a_waveform(small):
    plan, images, expected, tmp = small
    wrong = expected.copy()
    wrong[1, 0] += 1  # ONNX Runtime "says" something the RTL (and the reference) do not
    out = verify(plan, "4x4", images, wrong, work_dir=tmp / "a")
    assert out.mismatches == [1] and out.summary["bit_exact"] == 2
    assert f"RTL logits {expected[1].tolist()}, ONNX Runtime {wrong[1].tolist()}" in out.diagnosis
    assert "the RTL equals export.reference" in out.diagnosis
    assert out.waveform.is_file() and out.waveform.stat().st_size > 1000
    assert str(out.waveform) in out.diagnosis


def test_mismatch_names_layer_channel_and_pixel(small):
    plan, images, expected, tmp = small
    out = verify(plan, "4x4", images, expected, work_dir=tmp / "b", diagnose=False)
    assert out.summary["bit_exact"] == 3
    # a reference that departs from the RTL in layer 0, channel 2 only: locate must find it there
    bad = copy.deepcopy(plan)
    l0 = bad.layers[0]
    assert l0.kind == "conv2d" and l0.out_shape[0] >= 3
    l0.bias = l0.bias.copy()
    l0.bias[2] -= 3 << max(0, l0.shift)
    msg, wave = locate(bad, "4x4", tmp / "b" / "rtl", images, 0, tmp / "b", got=out.records[0])
    assert f"layer 0 {l0.name!r} (conv2d), channel 2, pixel (y=0, x=0): expected" in msg
    assert wave.is_file()


def test_paper_model_on_random_images(tmp_path):
    """The bundled model on the default array; the whole validation split is `-m slow` (test_sim_benchmark)."""
    from export.compile import compile_onnx, default_onnx
    from hw.config import ArrayConfig
    onnx = default_onnx()
    plan = compile_onnx(onnx)
    images = random_images(plan, 16, seed=5)  # with an all-0 and an all-255 image
    labels = np.arange(len(images)) % len(plan.class_names)  # arbitrary: checks that both accuracies are counted alike
    expected = expected_logits(onnx, plan, images)
    out = verify(plan, str(ArrayConfig()), images, expected, labels=labels, work_dir=tmp_path)
    s = out.summary
    assert s["bit_exact"] == s["class_agree"] == s["images"] == len(images), out.diagnosis
    assert s["rtl_accuracy"] == s["onnx_accuracy"]
    print(f"paper model: {s}")
