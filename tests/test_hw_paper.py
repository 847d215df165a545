"""The paper model's shape (3x64x64 -> conv 10@3x3 -> pool -> conv 20@5x5 -> pool -> linear 128
P 4-bit 90% pruned -> linear 5) on the default 10x9 array: conv utilisation >= 90%, predicted
(fast) and measured in amaranth.sim (slow, about 3 minutes: `pytest -m slow`)."""

import numpy as np
import pytest

from export import reference
from hw.config import ArrayConfig
from hw.cycles import predict
from hw.schedule import schedule
from hw.sparse import DEFAULT_LANES
from hw.top import Accelerator
from tests.hw_helpers import random_image, random_plan, run_accelerator


def paper_like(rng):
    return random_plan(rng, shape=(3, 64, 64), c1=10, k1=3, c2=20, k2=5, hidden=128, classes=5,
                       density=0.1, fc_bits=4)


def test_default_array_predicts_90_percent_on_the_convs():
    model = predict(schedule(paper_like(np.random.default_rng(0)), ArrayConfig()))
    convs = [r for r in model["layers"] if r["name"].startswith("conv")]
    assert len(convs) == 2 and all(r["utilisation"] >= 0.9 for r in convs), convs
    sparse = next(r for r in model["layers"] if r["pass"] == "sparse")
    # stored entries per lane-cycle: the input vector's copy and the rows' waits take the rest
    assert sparse["utilisation"] >= 0.9
    # one lane: the sparse stage is then still faster than the array stage on 10x9
    assert sparse["lanes"] == 1 and DEFAULT_LANES == 2


def test_the_schedule_gives_the_sparse_engine_the_fewest_lanes_that_keep_pace():
    """Without lanes in the config, the sparse engine gets the fewest lanes (up to DEFAULT_LANES)
    with which its stage is not the slowest: one on 10x9 (the array stage takes longer), two on
    10x14, whose array stage one lane would hold back; lanes asked for are kept."""
    from hw.cycles import stage_cycles

    plan = paper_like(np.random.default_rng(0))

    def stage_totals(s):
        return [sum(c) for c in stage_cycles(s)]

    for config, lanes in ((ArrayConfig(10, 9), 1), (ArrayConfig(10, 14), 2), (ArrayConfig(10, 9, 2), 2)):
        s = schedule(plan, config)
        assert s.lanes == lanes and s.config == config, config
        cyc = stage_totals(s)
        if config.lanes is None:
            assert cyc[-1] < max(cyc[:-1]), (config, cyc)  # the sparse stage is not the slowest
            fewer = stage_totals(schedule(plan, ArrayConfig(config.rows, config.cols, lanes - 1))) if lanes > 1 else None
            assert fewer is None or fewer[-1] > max(fewer[:-1]), (config, fewer)  # one lane less would be


@pytest.mark.slow
def test_default_array_measures_90_percent_on_the_convs():
    rng = np.random.default_rng(0)
    plan = paper_like(rng)
    image = random_image(rng, plan)
    dut = Accelerator(plan, ArrayConfig())
    passes = []
    logits, cycles, _ = run_accelerator(dut, image, passes=passes, max_cycles=400_000)
    np.testing.assert_array_equal(logits, reference.logits(plan, image))
    model = predict(dut.sched)
    assert cycles == model["total_cycles"]
    for (kind, measured), row in zip(passes, model["layers"]):
        assert measured == row["cycles"]
        if row["name"].startswith("conv"):
            assert row["macs"] / ArrayConfig().pes / measured >= 0.9
