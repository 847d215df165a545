"""Cycle model: the cycles each pass takes, from its engine unit's model (hw.engines).

Exact for a pixel stream without gaps and a logits stream that is always ready (the tests check
it against amaranth.sim). Utilisation of an array layer = dense MACs / (rows*cols) / cycles, the
fraction of PE-cycles doing useful work; the sparse engine's is stored entries / cycles.
"""

from __future__ import annotations

from hw.engines import PASS_SETUP, START
from hw.sequencer import Pass, Schedule

__all__ = ["PASS_SETUP", "START", "pass_cycles", "pass_memory_bits", "predict"]


def pass_cycles(p: Pass, s: Schedule) -> int:
    """Cycles from the sequencer entering this pass to entering the next one."""
    return p.unit.cycles(p, s)


def pass_memory_bits(p: Pass, s: Schedule) -> int:
    """Bits the pass's layer occupies in the plan-initialised memories (weights, biases, indices)."""
    return p.unit.memory_bits(p, s)


def predict(s: Schedule) -> dict:
    """Per-pass cycles, utilisation and memory bits, and the total from `start` to `done`."""
    layers = []
    for p in s.passes:
        cyc = pass_cycles(p, s)
        layers.append({"pass": p.kind, "layer": p.layer, "name": p.name, "cycles": cyc,
                       "memory_bits": pass_memory_bits(p, s), **p.unit.work(p, s, cyc)})
    return {"layers": layers, "total_cycles": 1 + sum(r["cycles"] for r in layers)}
