"""Hand cases of the standard models' vocabulary (contract rules 13 and 14, rule 2 generalised): residual
adds, activation requantizers, depthwise and non-square convs, non-power-of-two averages, any input;
reference == ONNX Runtime on every tensor, and one refusal at each new boundary."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from export import reference
from export.arith import requantize, round_shift
from export.check import compare
from export.compile import CompileError, compile_model
from export.plan import INPUT, IntType, Plan
from onnx_builders import GraphBuilder


def _run(model: onnx.ModelProto, x: np.ndarray, tmp_path) -> tuple[Plan, list[list[np.ndarray]]]:
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    plan = compile_model(model)
    res = compare(path, plan, x)
    assert res.exact == len(x), res.mismatches[:2]
    return plan, [reference.run(plan, im) for im in x]


def _inputs(plan: Plan, n: int = 6, seed: int = 0) -> np.ndarray:
    t = plan.input_type
    x = np.random.default_rng(seed).integers(t.min, t.max + 1, size=(n, *plan.input_shape))
    x[0], x[1] = t.min, t.max
    return x


def _head(b: GraphBuilder, x: str, feat: int, exp: int):
    f = b.op("Flatten", x)
    b.gemm(f, np.ones((2, feat)), [0, 0], in_exp=exp, w_exp=0)
    return b.model(2)


def _residual(branch_exps=(-5, -5), relu=True, shortcut_stride=1, size=5, out_exp=-5):
    """A conv and a shortcut (identity, or a 1x1 conv with `shortcut_stride`) requantized to int8 at
    `branch_exps`, added, [Relu], requantized to uint8 at 2^out_exp, then a linear head."""
    b = GraphBuilder((2, size, size))
    x = b.input()
    a = b.q(b.conv(x, np.full((2, 2, 3, 3), 7), [100, -100], in_exp=-8, pads=(1, 1, 1, 1),
                   strides=(shortcut_stride, shortcut_stride), name="main"), branch_exps[0], signed=True, name="join_a")
    if shortcut_stride == 1:
        s = b.q(x, branch_exps[1], signed=True, name="join_b")  # an activation requantized: uint8 2^-8 -> int8
    else:
        s = b.q(b.conv(x, [[[[64]], [[-64]]], [[[-64]], [[64]]]], [0, 0], in_exp=-8, strides=(2, 2), name="short"),
                branch_exps[1], signed=True, name="join_b")
    y = b.op("Add", a, s, name="add")
    y = b.op("Relu", y) if relu else y
    y = b.q(y, out_exp, name="out")
    h = (size - 1) // shortcut_stride + 1
    return _head(b, y, 2 * h * h, out_exp)


def test_an_add_whose_branches_overflow_8_bits(tmp_path):
    m = _residual(branch_exps=(-8, -8), out_exp=-8)
    plan, outs = _run(m, _inputs(compile_model(m)), tmp_path)
    kinds = [l.kind for l in plan.layers]
    assert kinds == ["conv2d", "requant", "add", "flatten", "linear"]
    add = plan.layers[2]
    assert add.inputs == ("main", "join_b_q") and plan.layers[1].inputs == (INPUT,)
    a, s, y = outs[1][0], outs[1][1], outs[1][2]  # the all-255 image: both int8 branches saturate at 127, the sum is 254
    assert a.max() == 127 and s.max() == 127 and y.max() == 254
    assert not plan.is_chain


def test_an_add_of_two_scales_shifts_the_coarser_left(tmp_path):
    m = _residual(branch_exps=(-3, -6), relu=False)
    plan, outs = _run(m, _inputs(compile_model(m)), tmp_path)
    add = plan.layers[2]
    assert (add.inp.exp, add.inp2.exp, add.acc_exp) == (-3, -6, -6) and add.shift == 1
    got = outs[2][2]
    want = requantize((outs[2][0] << 3) + outs[2][1], 1, False, add.out)
    assert np.array_equal(got, want)


def test_a_stride_two_shortcut_on_an_odd_map(tmp_path):
    m = _residual(shortcut_stride=2, size=7)
    plan, _ = _run(m, _inputs(compile_model(m)), tmp_path)
    convs = [l for l in plan.layers if l.kind == "conv2d"]
    assert [c.out_shape for c in convs] == [(2, 4, 4), (2, 4, 4)] and all(c.stride == 2 for c in convs)
    assert plan.layers[-3].inputs == ("main", "short")


def test_an_add_beyond_float32s_exact_range_is_refused_by_rule_13():
    with pytest.raises(CompileError, match=r"'add' \(Add\): layer 'add' can reach \|acc\| = .*contract rule 13"):
        compile_model(_residual(branch_exps=(10, -8)))


def test_an_add_of_an_accumulator_is_refused_by_name():
    b = GraphBuilder((1, 3, 3))
    x = b.input()
    acc = b.conv(x, np.ones((1, 1, 1, 1)), [0], in_exp=-8)
    y = b.q(b.op("Add", acc, x, name="join"), -6)
    with pytest.raises(CompileError, match=r"'join' \(Add\): adds .* a residual add needs a quantizer .* on each branch"):
        compile_model(_head(b, y, 9, -6))


def test_a_depthwise_conv_on_one_by_one_maps_and_a_grouped_one(tmp_path):
    b = GraphBuilder((4, 1, 1))
    x = b.input()
    d = b.q(b.op("Relu", b.conv(x, np.arange(1, 37).reshape(4, 1, 3, 3) - 18, [5, 6, 7, 8], in_exp=-8, pads=(1, 1, 1, 1),
                                group=4, name="dw")), -6, name="dwq")
    g = b.q(b.op("Relu", b.conv(d, np.arange(-8, 8).reshape(4, 2, 2, 1), [0, 1, 2, 3], in_exp=-6, pads=(1, 0, 0, 0),
                                group=2, name="grouped")), -6)
    m = _head(b, g, 4, -6)
    plan, outs = _run(m, _inputs(compile_model(m)), tmp_path)
    dw, grouped = plan.layers[:2]
    assert (dw.groups, dw.out_shape, grouped.groups, grouped.kernel) == (4, (4, 1, 1), 2, (2, 1))
    x = _inputs(plan)[1].astype(np.int64)  # only the centre tap sees a pixel: acc = w[c, 0, 1, 1] * x + b
    assert np.array_equal(round_shift((np.arange(1, 37).reshape(4, 9)[:, 4] - 18) * x[:, 0, 0] + [5, 6, 7, 8], 6)
                          .clip(0, 255), outs[1][0].reshape(-1))


def test_the_ds_cnn_stem_a_10x4_kernel_with_stride_2_and_pads_5_1_on_an_int8_input(tmp_path):
    b = GraphBuilder((1, 49, 10), in_exp=-7, in_signed=True)
    x = b.input()
    w = np.random.default_rng(0).integers(-127, 128, size=(3, 1, 10, 4))
    y = b.q(b.op("Relu", b.conv(x, w, [1, 2, 3], in_exp=-7, w_exp=-7, pads=(5, 1, 5, 1), strides=(2, 2))), -4)
    m = _head(b, y, 3 * 25 * 5, -4)
    plan, _ = _run(m, _inputs(compile_model(m)), tmp_path)
    assert plan.input_type == IntType(8, True, -7) and plan.layers[0].out_shape == (3, 25, 5)
    assert plan.layers[0].kernel == (10, 4) and plan.layers[0].stride == 2


def _average(n_hw=(25, 5), in_exp=-8, out_exp=-8, out_signed=False, pool="avg"):
    b = GraphBuilder((1, *n_hw), in_exp=in_exp)
    x = b.input()
    p = (b.op("AveragePool", x, kernel_shape=list(n_hw), strides=list(n_hw), name="pool") if pool == "avg"
         else b.op("GlobalAveragePool", x, name="pool"))
    return _head(b, b.q(p, out_exp, signed=out_signed), 1, out_exp)


def test_a_25x5_average_whose_sums_sit_next_to_ties(tmp_path):
    # S / 125 at the input's scale: S = 125 t + 62 and + 63 lie 0.004 either side of t + 0.5
    sums = np.array([62, 63, 187, 188, 125 * 100 + 62, 125 * 100 + 63, 0, 125 * 255, 125 * 254 + 62, 125 * 254 + 63])
    x = np.zeros((len(sums), 1, 25, 5), np.int64)
    for i, s in enumerate(sums):
        flat = x[i].reshape(-1)
        flat[:] = s // 125
        flat[:s % 125] += 1
    plan, outs = _run(_average(), x, tmp_path)
    pool = plan.layers[0]
    assert pool.mult > 1 and pool.kernel == (25, 5)
    assert [int(o[0].reshape(-1)[0]) for o in outs] == [0, 1, 1, 2, 100, 101, 0, 255, 254, 255]


@pytest.mark.parametrize("pool, hw, out_exp", [("global", (3, 3), -8), ("global", (3, 3), -12), ("avg", (7, 7), -8),
                                               ("avg", (1, 6), -9)])
def test_averages_over_other_counts_equal_onnx_runtime_on_every_sum(tmp_path, pool, hw, out_exp):
    n = hw[0] * hw[1]
    sums = np.arange(0, 255 * n + 1)
    x = (sums[:, None] // n + (np.arange(n)[None, :] < (sums % n)[:, None])).reshape(-1, 1, *hw)
    _run(_average(hw, out_exp=out_exp, pool=pool), x, tmp_path)


def test_an_odd_count_into_a_coarser_scale_can_tie_and_is_refused_by_rule_14():
    # 49 values into a 16x coarser scale: S / (49 * 16) is t + 0.5 for S = 392 (2t + 1)
    with pytest.raises(CompileError, match=r"'pool' \(AveragePool\): averages 49 values .*contract rule 14.*2\^-8 or finer"):
        compile_model(_average((7, 7), out_exp=-4))


def test_a_flat_feature_vector_input(tmp_path):
    b = GraphBuilder((16,), in_exp=-4, in_signed=True)
    x = b.input()
    h = b.q(b.op("Relu", b.gemm(x, np.random.default_rng(1).integers(-9, 10, (8, 16)), np.arange(8), in_exp=-4)), -3)
    b.gemm(h, np.ones((2, 8)), [0, 0], in_exp=-3, w_exp=0)
    m = b.model(2)
    plan, _ = _run(m, _inputs(compile_model(m)), tmp_path)
    assert plan.input_shape == (16,) and plan.input_type == IntType(8, True, -4) and plan.is_chain


def test_a_1x49x10_int8_input_read_from_npz(tmp_path, capsys):
    from export.__main__ import main
    b = GraphBuilder((1, 49, 10), in_exp=-7, in_signed=True)
    y = b.q(b.op("Relu", b.conv(b.input(), np.ones((2, 1, 10, 4)), [0, 0], in_exp=-7, pads=(5, 1, 5, 1), strides=(2, 2))), -4)
    onnx.save(_head(b, y, 2 * 25 * 5, -4), str(tmp_path / "kws.onnx"))
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(6, 1, 49, 10), dtype=np.int8)
    x[0] = -128
    np.savez(tmp_path / "val.npz", x=x, y=np.arange(6) % 2, classes=np.array(["no", "yes"]))
    assert main(["check", str(tmp_path / "kws.onnx"), "--data", str(tmp_path), "--split", "val"]) == 0
    assert "reference == ONNX Runtime on every layer: 6/6 val images" in capsys.readouterr().out


def test_several_offenders_are_listed_in_one_error():
    b = GraphBuilder((1, 4, 4))
    x = b.input()
    y = b.q(b.conv(x, np.ones((1, 1, 1, 1)), [0], in_exp=-8, name="c1"), -6)
    m = _head(b, b.op("Erf", y, name="odd"), 16, -6)
    for init in m.graph.initializer:  # every activation scale 0.3 * 2^e
        if init.data_type == onnx.TensorProto.FLOAT and init.dims == [] and onnx.numpy_helper.to_array(init) in (2.0 ** -6,):
            init.CopyFrom(onnx.numpy_helper.from_array(np.float32(0.3 * 2 ** -6), init.name))
    with pytest.raises(CompileError) as e:
        compile_model(m)
    msg = str(e.value)
    assert msg.startswith("4 nodes break the contract: ") and "\n" not in msg
    assert "'odd' (Erf): not supported" in msg and msg.count("is not a power of two (contract rule 1)") == 3, msg
