# amaranth: UnusedElaboratable=no
"""The engine units (hw.engines) and their registry: every unit provides the whole contract, its
latency is what amaranth.sim measures (each buffer engine alone, and every pass inside the
accelerator), and the registry is the one place the schedule, the cycle model and the top
level find an engine."""

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.lib.wiring import In, Out

from export import reference
from hw.config import ArrayConfig
from hw.cycles import predict
from hw.engines import PASS_SETUP, START, EngineSignature, EngineUnit
from hw.pool import PoolUnit
from hw.schedule import EMIT, LAYER_UNITS, LOAD, REGISTRY, schedule
from hw.top import Accelerator
from tests.hw_helpers import random_image, random_plan, run_accelerator, run_engine, to_signed, vocab_plan

PLANS = {"basic": lambda: random_plan(np.random.default_rng(5)), "vocabulary": lambda: vocab_plan(np.random.default_rng(2))}


def _drain(p) -> int:
    """The array's last tile drains one cycle per output channel it holds, after the latency."""
    return p.cfg["win"]["last_rows"] if "win" in p.cfg else 0


def _buffer(x: np.ndarray, s) -> np.ndarray:
    """The activation buffer holding `x` as run_engine reads it, addresses modulo 2**addr_width
    (a padded conv's taps left of the map wrap around to the map's first elements)."""
    size = 1 << s.addr_width
    buf = np.zeros(size + s.config.cols, dtype=np.int64)
    buf[:x.size] = x.reshape(-1)
    buf[size:] = buf[:s.config.cols]
    return buf


def test_registry_lists_every_engine_once_in_pass_order():
    kinds = [u.kind for u in REGISTRY]
    assert kinds == ["load", "array", "pool", "sparse", "emit"] and REGISTRY[0] is LOAD and REGISTRY[-1] is EMIT
    assert all(isinstance(u, EngineUnit) for u in REGISTRY)


@pytest.mark.parametrize("plan", PLANS)
def test_every_unit_provides_layout_latency_cycles_and_memories(plan):
    top = Accelerator(PLANS[plan](), ArrayConfig(2, 3))
    s = top.sched
    assert list(top.engines) == s.engines == [u.kind for u in s.units]
    inits = {}
    for u in s.units:
        engine = top.engines[u.kind]
        assert isinstance(engine.signature, EngineSignature)
        assert isinstance(u.latency(s), int) and u.latency(s) >= 0
        assert set(u.memory_inits(s)) == set(u.memories)
        inits.update({k: v for k, v in u.memory_inits(s).items() if v[0]})
        for p in (p for p in s.passes if p.unit is u):
            # the pass's constants fit the engine's configuration layout (or it has none)
            assert engine.signature.cfg.const(p.cfg) is not None if p.cfg else engine.signature.cfg is None
            assert u.cycles(p, s) == PASS_SETUP + START + u.issue_cycles(p, s) + u.latency(s) + _drain(p)
            assert u.memory_bits(p, s) >= 0
    assert s.memory_inits == inits
    rows = predict(s)["layers"]
    assert [r["cycles"] for r in rows] == [p.unit.cycles(p, s) for p in s.passes]
    assert [r["memory_bits"] for r in rows] == [p.unit.memory_bits(p, s) for p in s.passes]
    Fragment.get(top, None)  # and it elaborates


@pytest.mark.parametrize("plan", PLANS)
def test_buffer_engines_alone_match_the_reference_and_their_latency(plan):
    """Each layer pass on its engine alone (a numpy buffer): the layer's output, and the cycles
    from `start` to `done` = START + its issue cycles + its latency (+ the array's last drain)."""
    plan = PLANS[plan]()
    s = schedule(plan, ArrayConfig(2, 3))
    image = random_image(np.random.default_rng(1), plan)
    outs = reference.run(plan, image)
    for p in (p for p in s.passes if 0 <= p.layer < len(plan.layers)):
        layer, x = plan.layers[p.layer], (outs[p.layer - 1] if p.layer else image)
        written, logits, cycles = run_engine(p.unit.build(s), p.cfg, _buffer(x, s), width=s.act_width,
                                             signed=p.in_signed)
        want = outs[p.layer].reshape(-1)
        if layer.out is None:
            assert logits == {a: int(v) for a, v in enumerate(want)}, p.name
        else:
            assert to_signed(written, s.act_width, layer.out.signed) == {a: int(v) for a, v in enumerate(want)}, p.name
        assert cycles - START - p.unit.issue_cycles(p, s) - _drain(p) == p.unit.latency(s), p.name


def test_latency_of_every_pass_in_the_accelerator():
    """Inside the accelerator (amaranth.sim) too, image load and logits out included."""
    plan = PLANS["basic"]()
    dut = Accelerator(plan, ArrayConfig(2, 2))
    measured = []
    run_accelerator(dut, random_image(np.random.default_rng(2), plan), passes=measured)
    s = dut.sched
    assert [kind for kind, _ in measured] == [p.kind for p in s.passes]
    for p, (_, cycles) in zip(s.passes, measured):
        assert cycles - PASS_SETUP - START - p.unit.issue_cycles(p, s) - _drain(p) == p.unit.latency(s), p.name


def test_registry_is_the_single_dispatch_point(monkeypatch):
    """A unit swapped in the registry is what the schedule assigns, the cycle model counts and
    the accelerator builds."""
    plan, config = PLANS["basic"](), ArrayConfig(2, 2)
    before = predict(schedule(plan, config))["total_cycles"]

    class SlowPool(PoolUnit):
        def latency(self, s):
            return super().latency(s) + 7

        def build(self, s):
            engine = super().build(s)
            engine.swapped = True
            return engine

    slow = SlowPool()
    units = tuple(slow if isinstance(u, PoolUnit) else u for u in LAYER_UNITS)
    monkeypatch.setattr("hw.schedule.LAYER_UNITS", units)
    monkeypatch.setattr("hw.schedule.REGISTRY", (LOAD, *units, EMIT))
    s = schedule(plan, config)
    pools = [p for p in s.passes if p.kind == "pool"]
    assert len(pools) == 2 and all(p.unit is slow for p in pools)
    assert predict(s)["total_cycles"] == before + 7 * len(pools)
    top = Accelerator(plan, config)
    assert top.engines["pool"].swapped
    Fragment.get(top, None)


def test_engine_signature():
    a = EngineSignature(10, cols=3, act_width=8, acc_width=20, reads=True, writes=True, logit=Out)
    assert a == EngineSignature(10, cols=3, act_width=8, acc_width=20, reads=True, writes=True, logit=Out)
    assert a != EngineSignature(10, cols=3, act_width=8, reads=True, writes=True)
    assert list(a.members) == ["start", "raddr", "rdata", "wr", "logit", "done"]
    assert "reads" in repr(a) and "logit=Out" in repr(a)
    with pytest.raises(ValueError, match="needs acc_width"):
        EngineSignature(10, logit=In)
    with pytest.raises(ValueError, match="must be positive"):
        EngineSignature(0)
