"""Hand cases of the number contract and one refusal per rule, on hand-built QCDQ graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from export import reference
from export.check import compare
from export.compile import CompileError, compile_model
from export.plan import IntType
from onnx_builders import qcdq_conv


def _run(model: onnx.ModelProto, image: np.ndarray, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    plan = compile_model(model)
    res = compare(path, plan, image[None])
    assert res.exact == 1, res.mismatches
    return plan, reference.run(plan, image)


def ramp(n: int = 256) -> np.ndarray:
    return np.arange(n, dtype=np.uint8).reshape(1, 1, n)


def test_round_half_even_ties_positive_and_negative(tmp_path):
    # acc = p - 128 over every pixel value; shift 6: ties at acc = +-32, +-96, 160 ...
    m = qcdq_conv([[[[1]]]], [-128 << 0], in_shape=(1, 1, 256), relu=False, out_signed=True)
    plan, outs = _run(m, ramp(), tmp_path)
    assert plan.layers[0].shift == 6
    q = outs[0].reshape(-1)
    acc = np.arange(256) - 128
    for a, want in ((32, 0), (96, 2), (-32, 0), (-96, -2), (-64, -1), (33, 1), (-33, -1), (127, 2), (-128, -2)):
        assert q[a + 128] == want, (a, q[a + 128])
    assert np.array_equal(q, np.round(acc / 64))  # numpy rounds half to even too


def test_relu_at_zero_and_saturation_both_ends(tmp_path):
    m = qcdq_conv([[[[127]]]], [-127 * 128], in_shape=(1, 1, 256), relu=True, out_exp=-12)
    plan, outs = _run(m, ramp(), tmp_path)
    q = outs[0].reshape(-1)  # acc = 127 (p - 128), shift 0
    assert q[:129].max() == 0 and q[129] == 127 and q[-1] == 255 and (q == 255).sum() > 100
    m = qcdq_conv([[[[127]]]], [-127 * 128], in_shape=(1, 1, 256), relu=False, out_exp=-12, out_signed=True)
    _, outs = _run(m, ramp(), tmp_path)
    q = outs[0].reshape(-1)
    assert q.min() == -128 and q.max() == 127


def test_narrow_output_bits_saturate(tmp_path):
    m = qcdq_conv([[[[1]]]], [0], in_shape=(1, 1, 256), relu=True, out_bits=4, out_exp=-8)
    plan, outs = _run(m, ramp(), tmp_path)
    assert plan.layers[0].out.bits == 4 and outs[0].max() == 15


def test_maxpool_with_equal_values(tmp_path):
    img = np.full((1, 4, 4), 77, dtype=np.uint8)
    m = qcdq_conv([[[[1]]]], [0], in_shape=(1, 4, 4), relu=True, out_exp=-12, pool=True)
    plan, outs = _run(m, img, tmp_path)
    assert [l.kind for l in plan.layers] == ["conv2d", "maxpool", "flatten", "linear"]
    assert (outs[1] == 77).all()


def test_bias_near_the_bound_passes_and_at_int32_edge_is_refused(tmp_path):
    ok = (1 << 24) - 1 - 255
    m = qcdq_conv([[[[1]]]], [ok], in_shape=(1, 1, 4), relu=False, out_signed=True)
    plan = compile_model(m)
    assert plan.layers[0].acc_bound == (1 << 24) - 1
    with pytest.raises(CompileError, match=r"'layer'.*2\^24"):
        compile_model(qcdq_conv([[[[1]]]], [(1 << 31) - 1], in_shape=(1, 1, 4)))


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(w_scale=0.3), r"node 'w_dq' \(DequantizeLinear\).*not a power of two"),
    (dict(zp_out=3), r"node 'out_q' \(QuantizeLinear\).*zero point"),
    (dict(attrs={"pads": [1, 1, 1, 1]}), r"node 'layer' \(Conv\).*padding"),
    (dict(attrs={"dilations": [2, 2]}), r"node 'layer' \(Conv\).*dilation"),
])
def test_refusals_name_the_node(kwargs, pattern):
    with pytest.raises(CompileError, match=pattern):
        compile_model(qcdq_conv(np.ones((1, 1, 1, 1)), [0], in_shape=(1, 4, 4), **kwargs))


def test_refuses_groups_that_do_not_split_the_channels():
    m = qcdq_conv(np.ones((2, 1, 1, 1)), [0, 0], in_shape=(3, 4, 4), attrs={"group": 2})
    with pytest.raises(CompileError, match=r"node 'layer' \(Conv\).*does not match weight \[2, 1, 1, 1\] in 2 group"):
        compile_model(m)


def test_refuses_unknown_op():
    sig = helper.make_node("Sigmoid", ["acc"], ["acc_s"], name="squash")
    m = qcdq_conv(np.ones((1, 1, 1, 1)), [0], in_shape=(1, 4, 4), relu=False, extra_nodes=[sig])
    with pytest.raises(CompileError, match=r"node 'squash' \(Sigmoid\): not supported"):
        compile_model(m)


def test_refuses_a_shape_the_hardware_cannot_take():
    m = qcdq_conv(np.ones((1, 1, 3, 3)), [0], in_shape=(1, 2, 2))
    with pytest.raises(CompileError, match=r"node 'layer' \(Conv\).*3x3 kernel on a 2x2 map"):
        compile_model(m)


def test_the_input_may_take_any_power_of_two_scale_but_not_more_than_8_bits():
    plan = compile_model(qcdq_conv(np.ones((1, 1, 1, 1)), [0], in_shape=(1, 4, 4), in_exp=-7))
    assert plan.input_type == IntType(8, False, -7)
    with pytest.raises(CompileError, match=r"node 'in_q' \(QuantizeLinear\): a 16-bit tensor; the hardware takes 2..8 bits"):
        compile_model(qcdq_conv(np.ones((1, 1, 1, 1)), [0], in_shape=(1, 4, 4), in_dtype=np.int16))
