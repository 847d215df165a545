"""Hand cases of contract rules 9-12 (padding, strides, per-channel scales, average pools, batch norm)
on hand-built QCDQ graphs: reference == ONNX Runtime, the expected integers, and one refusal per rule."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from export import reference
from export.arith import round_shift
from export.check import compare
from export.compile import CompileError, compile_model
from onnx_builders import vocab_graph


def _run(model: onnx.ModelProto, images: np.ndarray, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    plan = compile_model(model)
    res = compare(path, plan, images)
    assert res.exact == len(images), res.mismatches
    return plan, [reference.run(plan, im) for im in images]


def _images(shape, n=4, seed=0):
    x = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    x[0] = 255
    return x


def test_padding_at_the_corners_of_an_odd_map(tmp_path):
    # 3x3 ones over a 5x7 map, pads top 1, left 2, bottom 1, right 0: every corner window sums only in-map pixels
    w = np.ones((1, 1, 3, 3), np.int8)
    m = vocab_graph(w, [0], in_shape=(1, 5, 7), pads=(1, 2, 1, 0), w_exps=0, out_exp=-4)
    imgs = _images((1, 5, 7))
    plan, outs = _run(m, imgs, tmp_path)
    conv = plan.layers[0]
    assert conv.pad == (1, 2, 1, 0) and conv.out_shape == (1, 5, 7)
    x = imgs[1, 0].astype(np.int64)
    xp = np.pad(x, ((1, 1), (2, 0)))
    acc = np.array([[xp[i:i + 3, j:j + 3].sum() for j in range(7)] for i in range(5)])
    assert acc[0, 0] == x[:2, :1].sum() and acc[-1, -1] == x[-2:, -3:].sum()
    assert np.array_equal(outs[1][0][0], np.clip(round_shift(acc, 4), 0, 255))


def test_stride_two_on_an_odd_map(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.integers(-7, 8, size=(2, 1, 3, 3)).astype(np.int8)
    m = vocab_graph(w, [5, -3], in_shape=(1, 7, 7), pads=(1, 1, 1, 1), stride=2, w_exps=-3)
    imgs = _images((1, 7, 7))
    plan, outs = _run(m, imgs, tmp_path)
    assert plan.layers[0].out_shape == (2, 4, 4) and plan.layers[0].stride == 2
    xp = np.pad(imgs[2, 0].astype(np.int64), 1)
    acc = np.array([[[(xp[2 * i:2 * i + 3, 2 * j:2 * j + 3] * w[c, 0]).sum() + b for j in range(4)] for i in range(4)]
                    for c, b in enumerate((5, -3))])
    conv = plan.layers[0]
    assert np.array_equal(conv.unit.acc(conv, imgs[2]), acc)


def test_average_pool_ties_round_half_to_even(tmp_path):
    # 1x1 identity conv (shift 0), then 2x2 average at the same scale: sums 2, 6, 10, 14 are ties .5, 1.5, 2.5, 3.5
    img = np.zeros((1, 1, 2, 8), np.uint8)
    for j, s in enumerate((2, 6, 10, 14)):
        img[0, 0, :, 2 * j:2 * j + 2] = [[s // 2, 0], [0, s - s // 2]]
    m = vocab_graph(np.ones((1, 1, 1, 1), np.int8), [0], in_shape=(1, 2, 8), w_exps=0, out_exp=-8, pool="avg", pool_exp=-8)
    plan, outs = _run(m, img, tmp_path)
    assert plan.layers[1].kind == "avgpool" and plan.layers[1].shift == 2
    assert outs[0][1].reshape(-1).tolist() == [0, 2, 2, 4]


def test_per_channel_shifts_that_differ_by_more_than_eight(tmp_path):
    rng = np.random.default_rng(2)
    w = rng.integers(-127, 128, size=(3, 2, 3, 3)).astype(np.int8)
    w[:, 0, 0, 0] = 127
    m = vocab_graph(w, [100, -50, 7], in_shape=(2, 6, 6), pads=(1, 1, 1, 1), w_exps=[-2, -12, -7], out_exp=-4)
    plan, _ = _run(m, _images((2, 6, 6)), tmp_path)
    conv = plan.layers[0]
    assert conv.w_exps.tolist() == [-2, -12, -7]
    assert conv.shift.tolist() == [6, 16, 11]  # out_exp - (in_exp + w_exp[c])


def test_global_pool_over_one_pixel(tmp_path):
    m = vocab_graph(np.ones((2, 1, 3, 3), np.int8), [0, 1], in_shape=(1, 3, 3), w_exps=-4, out_exp=-10, pool="global",
                    pool_exp=-9)
    plan, outs = _run(m, _images((1, 3, 3)), tmp_path)
    gap = plan.layers[1]
    assert gap.kind == "globalavgpool" and gap.out_shape == (2, 1, 1) and gap.shift == 1
    assert np.array_equal(outs[0][1], round_shift(outs[0][0], 1))


def test_global_pool_over_an_eight_by_eight_map(tmp_path):
    m = vocab_graph(np.ones((2, 1, 3, 3), np.int8), [0, -300], in_shape=(1, 8, 8), pads=(1, 1, 1, 1), w_exps=-4,
                    out_exp=-10, pool="global", pool_exp=-10)
    plan, outs = _run(m, _images((1, 8, 8)), tmp_path)
    assert plan.layers[1].shift == 6


def test_unfolded_batch_norm_is_refused_by_name():
    m = vocab_graph(np.ones((1, 1, 3, 3), np.int8), [0], in_shape=(1, 5, 5), bn=True)
    with pytest.raises(CompileError, match=r"'bn' \(BatchNormalization\).*fold it"):
        compile_model(m)


@pytest.mark.parametrize("pool", ["avg", "global"])
def test_an_even_count_whose_quotient_can_tie_is_refused(pool):
    # 36 values at the input's own scale: S / 36 sits on .5 for S = 18, 54, ...; no multiply-shift rounds those half to even
    m = vocab_graph(np.ones((1, 1, 1, 1), np.int8), [0], in_shape=(1, 6, 6), w_exps=0, pool=pool, pool_k=6)
    with pytest.raises(CompileError, match=r"averages 36 values .*contract rule 14.*2\^-10 or finer"):
        compile_model(m)


def test_a_non_power_of_two_per_channel_scale_is_refused():
    m = vocab_graph(np.ones((2, 1, 3, 3), np.int8), [0, 0], in_shape=(1, 5, 5), w_exps=[-4, -4])
    for init in m.graph.initializer:
        if init.name == "w_s":
            init.CopyFrom(onnx.numpy_helper.from_array(np.array([2.0 ** -4, 0.3], np.float32), "w_s"))
    with pytest.raises(CompileError, match=r"'w_dq' .*0\.3.* not a power of two"):
        compile_model(m)


def test_per_channel_logits_layer_is_refused():
    m = vocab_graph(np.ones((2, 1, 3, 3), np.int8), [0, 0], in_shape=(1, 3, 3), w_exps=[-4, -5])
    g = m.graph
    for init in g.initializer:
        if init.name == "f_s":
            init.CopyFrom(onnx.numpy_helper.from_array(np.array([1.0, 0.5], np.float32), "f_s"))
        if init.name == "f_zp":
            init.CopyFrom(onnx.numpy_helper.from_array(np.zeros(2, np.int8), "f_zp"))
        if init.name in ("f_bs",):
            init.CopyFrom(onnx.numpy_helper.from_array(np.array([2.0 ** -8, 2.0 ** -9], np.float32), "f_bs"))
        if init.name == "f_bzp":
            init.CopyFrom(onnx.numpy_helper.from_array(np.zeros(2, np.int32), "f_bzp"))
    for n in g.node:
        if n.name in ("fw_dq", "fb_dq"):
            n.attribute.append(onnx.helper.make_attribute("axis", 0))
    with pytest.raises(CompileError, match="per-channel weight scales"):
        compile_model(m)


@pytest.mark.parametrize("op", ["Softmax", "Sigmoid"])
def test_a_softmax_after_the_logits_is_cut_off(op):
    m = vocab_graph(np.ones((2, 1, 3, 3), np.int8), [0, 0], in_shape=(1, 3, 3))
    plain = compile_model(m)
    g = m.graph
    g.output[0].name = "probs"
    g.node.append(onnx.helper.make_node(op, ["logits"], ["probs"], name="head", **({"axis": 1} if op == "Softmax" else {})))
    plan = compile_model(m)
    assert plan.layers == plain.layers and plan.layers[-1].tensor == "logits"
    assert plan.meta["cut_off"].startswith(f"the trailing {op} 'head' is cut off")
