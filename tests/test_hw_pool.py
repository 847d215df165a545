# amaranth: UnusedElaboratable=no
"""PoolEngine (2x2, stride 2) under amaranth.sim against export.reference.maxpool: signed and
unsigned values, odd sizes (the last row/column dropped), ragged column tiles."""

import numpy as np
import pytest

from export.reference import maxpool
from hw.engines import START
from hw.pool import PoolEngine, pool_config
from tests.hw_helpers import run_engine, to_signed


@pytest.mark.parametrize("shape,cols,signed", [((3, 6, 8), 3, False), ((2, 7, 9), 4, True),
                                               ((1, 2, 2), 1, True), ((2, 10, 13), 9, False)])
def test_pool_matches_reference(shape, cols, signed):
    rng = np.random.default_rng(sum(shape) + cols)
    x = rng.integers(-128 if signed else 0, 128 if signed else 256, size=shape)
    dut = PoolEngine(cols, 10, 8)
    cfg = pool_config(*shape, cols)
    written, _, cycles = run_engine(dut, cfg, x, width=8, signed=signed)
    want = maxpool(x, 2, 2).reshape(-1)
    got = to_signed(written, 8, signed)
    assert sorted(got) == list(range(want.size)), "writes outside the output tensor"
    assert [got[a] for a in range(want.size)] == list(want)
    # four reads per output vector, then the engine's latency
    assert cycles == START + 4 * (cfg["c_m1"] + 1) * (cfg["oh_m1"] + 1) * (cfg["n_xt_m1"] + 1) + PoolEngine.LATENCY


def test_pool_validates_cols():
    with pytest.raises(ValueError, match="cols must be 1..16"):
        PoolEngine(0, 10, 8)
