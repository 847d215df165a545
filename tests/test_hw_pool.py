# amaranth: UnusedElaboratable=no
"""PoolEngine (k x k, stride k) under amaranth.sim against export.reference.maxpool: k = 2, 3, 4
(and 8), signed and unsigned values, maps whose sizes are and are not multiples of k and of
cols (floor semantics: the last rows/columns dropped), ragged column tiles, one kernel or
several in a plan; its issue cycles exact. The whole accelerator with 3x3 and 4x4 pools; a plan
of 2x2 pools gets the 2x2 engine alone; too large a kernel is refused."""

from dataclasses import replace

import numpy as np
import pytest

from export.kinds.maxpool import maxpool
from export.plan import IntType, Layer, Plan
from hw.config import ArrayConfig
from hw.engines import START, UnsupportedPlan
from hw.pool import POOL_FIELDS, PoolEngine, PoolFeatures, pool_config, pool_features, pool_layout
from hw.schedule import schedule
from hw.top import Accelerator
from tests.hw_helpers import _layer, random_image, random_plan, run_engine, to_signed
from tests.test_hw_top import check_against_reference


@pytest.mark.parametrize("shape,cols,k,kernels,signed", [
    ((3, 6, 8), 3, 2, (2,), False), ((2, 7, 9), 4, 2, (2,), True), ((1, 2, 2), 1, 2, (2,), True),
    ((2, 10, 13), 9, 2, (2,), False),
    ((2, 9, 12), 2, 3, (3,), True),  # multiples of k and of cols
    ((2, 7, 10), 3, 3, (3,), False),  # neither: one row, one column dropped; a ragged last tile
    ((1, 3, 3), 1, 3, (2, 3), True), ((2, 11, 14), 4, 3, (2, 3), True),
    ((2, 8, 16), 4, 4, (4,), False), ((1, 10, 11), 3, 4, (2, 4), True), ((1, 6, 7), 2, 2, (2, 3, 4), False),
    ((1, 17, 19), 2, 8, (3, 8), True),
])
def test_pool_matches_reference(shape, cols, k, kernels, signed):
    rng = np.random.default_rng(sum(shape) + cols + k)
    x = rng.integers(-128 if signed else 0, 128 if signed else 256, size=shape)
    dut = PoolEngine(cols, 10, 8, PoolFeatures(kernels))
    cfg = pool_config(*shape, cols, k)
    written, _, cycles = run_engine(dut, cfg, x, width=8, signed=signed)
    want = maxpool(x, k, k).reshape(-1)
    got = to_signed(written, 8, signed)
    assert sorted(got) == list(range(want.size)), "writes outside the output tensor"
    assert [got[a] for a in range(want.size)] == list(want)
    # k * k reads per output vector, then the engine's latency
    assert cycles == START + k * k * (cfg["c_m1"] + 1) * (cfg["oh_m1"] + 1) * (cfg["n_xt_m1"] + 1) + PoolEngine.LATENCY


def test_pool_validates_cols_and_kernels():
    with pytest.raises(ValueError, match="cols must be 1..16"):
        PoolEngine(0, 10, 8)
    for bad in ((), (3, 2), (2, 9), (1,)):
        with pytest.raises(ValueError, match="kernels must be ascending, distinct, 2..8"):
            PoolFeatures(bad)


def pool_plan(rng, shape, pools, k2, c1=3, c2=2, hidden=5, classes=3) -> Plan:
    """conv 3x3 -> maxpool pools[0] -> conv k2 -> maxpool pools[1] -> flatten -> linear P -> linear NP."""
    img, a = IntType(8, False, -8), IntType(8, False, -4)
    layers = [_layer(rng, "conv1", "conv2d", shape, (c1, shape[1] - 2, shape[2] - 2), img, 8, 8, 3)]
    for n, (k, conv) in enumerate(zip(pools, (k2, None)), 1):
        (c, h, w), t = layers[-1].out_shape, layers[-1].out
        layers.append(Layer(f"pool{n}", "maxpool", (c, h, w), (c, h // k, w // k), t, t, kernel=k, stride=k))
        if conv is not None:
            (c, h, w) = layers[-1].out_shape
            layers.append(_layer(rng, "conv2", "conv2d", (c, h, w), (c2, h - k2 + 1, w - k2 + 1), t, 8, 8, k2))
    p2 = layers[-1].out_shape
    flat = (int(np.prod(p2)),)
    layers.append(Layer("flatten", "flatten", p2, flat, a, a))
    layers.append(_layer(rng, "fc1", "linear", flat, (hidden,), a, 8, 8, density=0.5, sparse=True))
    layers.append(_layer(rng, "fc2", "linear", (hidden,), (classes,), layers[-1].out, 8, 8, last=True))
    return Plan(tuple(shape), img, layers, [f"c{i}" for i in range(classes)])


@pytest.mark.parametrize("shape,pools,k2,array", [
    ((2, 13, 14), (3, 3), 1, "2x3"),  # 11 x 12 -> 3 x 4 (two rows dropped) -> 3 x 4 -> 1 x 1 (one column)
    ((2, 12, 11), (2, 3), 2, "3x2"),  # both kernels in one engine: 10 x 9 -> 5 x 4 -> 4 x 3 -> 1 x 1
    ((1, 14, 12), (4, 2), 1, "1x1"),  # 12 x 10 -> 3 x 2 -> 1 x 1
])
def test_accelerator_with_k_by_k_pools_matches_reference_cycle_exact(shape, pools, k2, array):
    rng = np.random.default_rng(sum(shape) + sum(pools))
    plan = pool_plan(rng, shape, pools, k2)
    dut = Accelerator(plan, ArrayConfig.parse(array))
    assert dut.engines["pool"].features == PoolFeatures(tuple(sorted(set(pools))))
    check_against_reference(dut, plan, random_image(rng, plan))


def test_plan_of_2x2_pools_gets_the_2x2_engine_alone():
    plan = random_plan(np.random.default_rng(4))
    assert pool_features(plan.layers) == PoolFeatures()
    assert tuple(pool_layout(10, pool_features(plan.layers)).members) == POOL_FIELDS
    three = replace(plan, layers=[replace(l, kernel=3, stride=3) if l.name == "pool2" else l for l in plan.layers])
    assert pool_features(three.layers) == PoolFeatures((2, 3))
    assert tuple(pool_layout(10, PoolFeatures((2, 3))).members) == (*POOL_FIELDS, "k_m2")


def test_too_large_or_unequal_stride_pool_is_refused_by_layer():
    plan = pool_plan(np.random.default_rng(1), (1, 20, 20), (9, 2), 1)
    with pytest.raises(UnsupportedPlan, match=r"^layer 1 'pool1' \(maxpool\): max-pool 9x9 stride 9: the pool engine "
                                              r"makes k x k stride k for k = 2..8; use one of those"):
        schedule(plan, ArrayConfig(2, 2))
    bad = replace(plan, layers=[replace(l, kernel=3, stride=2) if l.name == "pool1" else l for l in plan.layers])
    with pytest.raises(UnsupportedPlan, match=r"layer 1 'pool1' \(maxpool\): max-pool 3x3 stride 2: "):
        schedule(bad, ArrayConfig(2, 2))
