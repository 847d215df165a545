# amaranth: UnusedElaboratable=no
"""The whole Accelerator under amaranth.sim on tiny random plans == export.reference, at several
array sizes and bit widths; the cycle model is exact; bad plans are refused by layer; the
Verilog converts with the documented port names. The vocabulary (padding, strides, per-channel
shifts, average and global pools) likewise, and a plan without it generates none of its hardware."""

import re
from dataclasses import replace

import numpy as np
import pytest

from export import reference
from export.plan import IntType, Layer
from hw.config import ArrayConfig
from hw.cycles import predict, stream
from hw.engines import UnsupportedPlan
from hw.inventory import Inventory, Port
from hw.schedule import schedule
from hw.top import Accelerator, generate, resources
from hw.window import WindowFeatures, window_config
from tests.hw_helpers import (first_mismatch, random_image, random_plan, rect_plan, run_accelerator, run_images,
                               vocab_plan)


def check_against_reference(dut, plan, image) -> list:
    """Every layer written equals the reference, the logits too, and the cycles the model's; the per-pass cycles."""
    passes: list = []
    logits, cycles, writes = run_accelerator(dut, image, passes=passes)
    outs = reference.run(plan, image)
    assert first_mismatch(plan, outs, writes, dut.sched.act_width) is None
    np.testing.assert_array_equal(logits, outs[-1])
    assert cycles == predict(dut.sched)["total_cycles"]
    return passes


@pytest.mark.parametrize("array", ["1x1", "2x3", "4x4"])
@pytest.mark.parametrize("bits", [8, 4])
def test_accelerator_matches_reference(array, bits):
    rng = np.random.default_rng(bits * 31 + len(array))
    plan = random_plan(rng, act_bits=bits, w_bits=bits)
    image = random_image(rng, plan)
    dut = Accelerator(plan, ArrayConfig.parse(array))
    passes = []
    logits, cycles, writes = run_accelerator(dut, image, passes=passes)
    outs = reference.run(plan, image)
    assert first_mismatch(plan, outs, writes, dut.sched.act_width) is None
    np.testing.assert_array_equal(logits, reference.logits(plan, image))
    model = predict(dut.sched)
    assert cycles == model["total_cycles"]
    assert [c for _, c in passes] == [r["cycles"] for r in model["layers"]]


def test_accelerator_under_stalls_and_backpressure_signed_layers():
    rng = np.random.default_rng(3)
    plan = random_plan(rng, shape=(2, 12, 14), c1=5, c2=3, k2=3, signed_mid=True, hidden=7, classes=4)
    image = random_image(rng, plan)
    dut = Accelerator(plan, ArrayConfig(3, 2))
    logits, _, writes = run_accelerator(dut, image, rng=rng)
    outs = reference.run(plan, image)
    assert (outs[2] < 0).any() and (outs[3] < 0).any(), "the signed layers should see negative values"
    assert first_mismatch(plan, outs, writes, dut.sched.act_width) is None
    np.testing.assert_array_equal(logits, outs[-1])


def test_trace_names_the_first_difference():
    rng = np.random.default_rng(1)
    plan = random_plan(rng)
    image = random_image(rng, plan)
    dut = Accelerator(plan, ArrayConfig(2, 3))
    _, _, writes = run_accelerator(dut, image)
    outs = reference.run(plan, image)
    layer, addr, vals = writes[len(writes) // 2]
    writes[len(writes) // 2] = (layer, addr, [(vals[0] + 1) % 256] + vals[1:])
    assert first_mismatch(plan, outs, writes, dut.sched.act_width).startswith(f"layer {layer} ")


def _refused(plan, match):
    with pytest.raises(UnsupportedPlan, match=match):
        schedule(plan, ArrayConfig(2, 2))


def test_refusals_name_the_layer():
    rng = np.random.default_rng(2)
    plan = random_plan(rng)
    bad = replace(plan, layers=[replace(plan.layers[0], stride=17)] + plan.layers[1:])
    _refused(bad, r"layer 0 'conv1' \(conv2d\): stride 17: the window generator makes strides up to 16")
    big = replace(plan.layers[0], shift=np.array([3, -16, 2]))
    _refused(replace(plan, layers=[big] + plan.layers[1:]), r"layer 0 'conv1' .*left shift 16 exceeds 15")
    bad = replace(plan, layers=plan.layers[:1] + [replace(plan.layers[1], kernel=3, stride=1)] + plan.layers[2:])
    _refused(bad, r"layer 1 'pool1' \(maxpool\): max-pool 3x3")
    wide = IntType(12, False, 0)
    bad = replace(plan, layers=[replace(plan.layers[0], out=wide)] + plan.layers[1:])
    _refused(bad, r"layer 0 'conv1' .*12-bit")
    bad = replace(plan, layers=plan.layers[:-1])
    _refused(bad, "last layer must be a linear layer")
    odd = Layer("norm", "batchnorm", plan.layers[1].in_shape, plan.layers[1].out_shape, plan.layers[1].inp,
                plan.layers[1].out)
    bad = replace(plan, layers=plan.layers[:1] + [odd] + plan.layers[2:])
    _refused(bad, r"layer 1 'norm' \(batchnorm\): kind 'batchnorm' is not generated")
    with pytest.raises(ValueError, match="array must be 1..16 x 1..16"):
        ArrayConfig(17, 2)


def test_generate_writes_verilog_and_memories(tmp_path):
    plan = random_plan(np.random.default_rng(3))
    info = generate(plan, ArrayConfig(2, 3), tmp_path)
    text = (tmp_path / "accelerator.v").read_text()
    assert re.search(r"^module accelerator\(", text, re.M)
    for port in ("clk", "rst", "pixels__valid", "pixels__ready", "pixels__payload", "logits__valid",
                 "logits__ready", "logits__payload", "start", "busy", "done", "cycles", "trace__valid",
                 "trace__layer", "trace__addr", "trace__count", "trace__data"):
        assert re.search(rf"\b(input|output)\b[^;]*\b{port}\b", text), port
    # no memory files: the plan's contents are inline; the inventory names the ports and memories
    assert [p.name for p in tmp_path.glob("*.hex")] == ["tb_image.hex"]  # the SystemVerilog testbench's image
    assert {"accelerator.v", "accelerator.json"} <= set(info["files"])
    inv = Inventory.load(tmp_path / "accelerator.json")
    header = re.search(r"^module accelerator\((.*?)\);", text, re.S | re.M).group(1)
    assert sorted(n.strip() for n in header.split(",")) == sorted(inv.ports)
    assert inv.ports["trace__data"] == Port("output", 3 * 8) and inv.ports["pixels__ready"] == Port("output", 1)
    weights = [m for m in inv.memories if m.name.startswith("array.weights")]
    assert sum(m.depth for m in weights) == len(schedule(plan, ArrayConfig(2, 3)).memory_contents["array_weights"])
    assert all(m.initialised and m.read_ports == 1 and m.write_ports == 0 for m in weights)
    banks = [m for m in inv.memories if m.name.startswith("buf")]
    assert banks and all(not m.initialised and m.read_ports == m.write_ports == 1 for m in banks)
    assert info["total_cycles"] == predict(schedule(plan, ArrayConfig(2, 3)))["total_cycles"]
    res = resources(plan, ArrayConfig(2, 3))
    assert res["multipliers"] == 2 * 3 + 1
    assert res["memory_bits_total"] == info["memory_bits_total"] > 0


def test_two_images_back_to_back_ignore_start_while_busy():
    rng = np.random.default_rng(8)
    plan = random_plan(rng)
    images = [random_image(rng, plan), np.full(plan.input_shape, 255, dtype=np.uint8)]
    dut = Accelerator(plan, ArrayConfig(2, 2))
    results = run_images(dut, images, poke_start=True)
    for image, (logits, cycles, _) in zip(images, results):
        np.testing.assert_array_equal(logits, reference.logits(plan, image))
        assert cycles == predict(dut.sched)["total_cycles"]



@pytest.mark.parametrize("array,seed", [("2x3", 3), ("1x1", 5)])
def test_images_overlap_in_the_stages_bit_exact_as_the_stream_model_says(array, seed):
    """Image i+1 is loaded and computed while image i is in later stages; every image's logits and
    layers equal the reference, and every `done` comes when hw.cycles.stream says."""
    rng = np.random.default_rng(seed)
    plan = random_plan(rng, shape=(3, 10, 10))
    dut = Accelerator(plan, ArrayConfig.parse(array))
    assert [[p.kind for p in st] for st in dut.sched.stages] == [
        ["load"], ["array", "pool", "array", "pool"], ["sparse", "sparse", "emit"]]
    images = [random_image(rng, plan) for _ in range(4)]
    spans: list = []
    results = run_images(dut, images, spans=spans, max_cycles=200_000)
    for image, (logits, _, writes) in zip(images, results):
        outs = reference.run(plan, image)
        assert first_mismatch(plan, outs, writes, dut.sched.act_width) is None
        np.testing.assert_array_equal(logits, outs[-1])
    model = stream(dut.sched, len(images))
    assert [d for _, d in spans] == [done + 1 for _, done in model]  # the top's `done` is registered
    assert all(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))  # they do overlap
    assert results[0][1] == predict(dut.sched)["total_cycles"]
    period = spans[-1][1] - spans[-2][1]
    assert period < predict(dut.sched)["total_cycles"]


def test_a_plan_without_sparse_layers_has_two_stages_and_streams():
    rng = np.random.default_rng(11)
    plan = vocab_plan(rng, pad2=(1, 1, 1, 1))
    plan = replace(plan, layers=[replace(l, cls="NP", sparse=None) for l in plan.layers])
    dut = Accelerator(plan, ArrayConfig(2, 2))
    assert len(dut.sched.stages) == 2 and dut.sched.stages[1][-1].kind == "emit"
    images = [random_image(rng, plan) for _ in range(3)]
    spans: list = []
    for image, (logits, _, _) in zip(images, run_images(dut, images, spans=spans, max_cycles=400_000)):
        np.testing.assert_array_equal(logits, reference.logits(plan, image))
    assert [d for _, d in spans] == [done + 1 for _, done in stream(dut.sched, len(images))]

def test_sparse_logits_layer_and_dense_hidden_layer():
    """The logits from the sparse engine, and a dense (NP) hidden linear layer on the array."""
    from export.encoding import encode_best

    rng = np.random.default_rng(9)
    plan = random_plan(rng)
    fc1, fc2 = plan.layers[-2], plan.layers[-1]
    w = fc2.weight * (rng.random(fc2.weight.shape) < 0.5)
    layers = plan.layers[:-2] + [replace(fc1, cls="NP", sparse=None),
                                 replace(fc2, weight=w, cls="P", sparse=encode_best(w, fc2.w_type.bits))]
    plan = replace(plan, layers=layers)
    image = random_image(rng, plan)
    dut = Accelerator(plan, ArrayConfig(3, 3))
    check_against_reference(dut, plan, image)


@pytest.mark.parametrize("array,seed", [("1x1", 1), ("2x3", 2), ("4x4", 3), ("3x2", 4)])
def test_vocabulary_matches_reference_cycle_exact(array, seed):
    """Padded, strided, per-channel convs, an average pool, a global pool, a per-channel P-layer."""
    rng = np.random.default_rng(seed)
    plan = vocab_plan(rng, pad2=[(0, 1, 1, 0), (1, 1, 1, 1), (1, 0, 0, 1)][seed % 3])
    image = random_image(rng, plan)
    dut = Accelerator(plan, ArrayConfig.parse(array))
    s = dut.sched
    mem = s.memory_contents
    assert s.window == WindowFeatures(pad=True, max_stride=2) and mem["array_shifts"] and mem["sparse_shifts"]
    passes, model = check_against_reference(dut, plan, image), predict(s)
    assert [c for _, c in passes] == [r["cycles"] for r in model["layers"]]


def test_global_pool_over_a_non_square_map():
    """A global pool over 2 x 4 runs as a 4 x 4 window over the map padded below."""
    rng = np.random.default_rng(6)
    plan = vocab_plan(rng, shape=(1, 8, 12), pad2=(0, 0, 0, 1), k2=1)
    assert plan.layers[3].in_shape[1:] == (2, 4)
    image = random_image(rng, plan)
    dut = Accelerator(plan, ArrayConfig(2, 2))
    check_against_reference(dut, plan, image)


@pytest.mark.parametrize("array", ["1x1", "3x4"])
def test_global_pool_runs_as_a_one_channel_conv_without_stride_hardware(array):
    """A global pool over a square map (the edge model's over 8x8 x 128 channels): one output per
    channel from an H x H window of ones over the buffer read as (1, C*H, W), stride H on the rows
    only; H*H weights instead of C*C*H*H, and no stride hardware for it."""
    rng = np.random.default_rng(11)
    plan = vocab_plan(rng, shape=(2, 8, 8), stride1=1, pad2=(1, 1, 1, 1), k2=3, c2=5)
    gap = plan.layers[3]
    assert gap.kind == "globalavgpool" and gap.in_shape == (5, 4, 4)
    image = random_image(rng, plan)
    dut = Accelerator(plan, ArrayConfig.parse(array))
    s = dut.sched
    win = next(p for p in s.passes if p.layer == 3).cfg["win"]
    assert (win["k_steps"], win["n_og_m1"], win["oh_m1"], win["in_w"], win["stride_m1"]) == (16, 0, 4, 16, 0)
    # one output column: the stride steps rows alone, so the pool asks no stride hardware
    assert window_config(1, 20, 4, 4, 1, 5, 1, 3, 4, 0, 0, stride=4)["in_w"] == 16
    passes = []
    logits, cycles, writes = run_accelerator(dut, image, passes=passes)
    outs = reference.run(plan, image)
    assert first_mismatch(plan, outs, writes, s.act_width) is None
    np.testing.assert_array_equal(logits, outs[-1])
    model = predict(s)
    assert [c for _, c in passes] == [r["cycles"] for r in model["layers"]] and cycles == model["total_cycles"]


def test_basic_plan_generates_no_vocabulary_hardware():
    s = schedule(random_plan(np.random.default_rng(4)), ArrayConfig(2, 2))
    assert s.window == WindowFeatures() and not s.memory_contents["array_shifts"] and not s.memory_contents["sparse_shifts"]
    assert not {"array_shifts", "sparse_shifts"} & set(s.memory_inits)


@pytest.mark.parametrize("shape, img", [((1, 13, 9), IntType(8, True, -7)), ((3, 10, 12), IntType(8, False, -8)),
                                        ((2, 11, 10), IntType(4, True, -3))])
def test_any_input_shape_and_type_matches_reference_cycle_exact(shape, img):
    """1 to 3 channels, any H x W, signed or unsigned inputs of up to 8 bits, extremes included."""
    rng = np.random.default_rng(sum(shape))
    plan = random_plan(rng, shape=shape, img=img)
    image = random_image(rng, plan)
    image.reshape(-1)[:2] = img.min, img.max
    check_against_reference(Accelerator(plan, ArrayConfig(2, 3)), plan, image)


def test_an_input_wider_than_the_pixel_stream_is_refused():
    plan = random_plan(np.random.default_rng(0), img=IntType(9, True, -8))
    _refused(plan, "input type .*: the pixel stream carries 8-bit integers")


@pytest.mark.parametrize("array, k1, stride1, pad1, k2, stride2", [
    ("2x3", (5, 2), (2, 1), (2, 1, 2, 0), (1, 3), (1, 2)),  # DS-CNN's first layer, small; a wide kernel, a column stride
    ("3x2", (2, 4), (1, 2), (0, 1, 1, 2), (3, 1), (2, 1)),  # a wide kernel with a column stride; a tall one, a row stride
])
def test_non_square_kernels_per_axis_strides_and_pads_match_reference_cycle_exact(array, k1, stride1, pad1, k2, stride2):
    rng = np.random.default_rng(len(array) + k1[0])
    plan = rect_plan(rng, k1=k1, stride1=stride1, pad1=pad1, k2=k2, stride2=stride2)
    dut = Accelerator(plan, ArrayConfig.parse(array))
    assert dut.sched.window.rect
    check_against_reference(dut, plan, random_image(rng, plan))
