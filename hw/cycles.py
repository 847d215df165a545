"""Cycle model: the cycles each pass takes, from its engine unit's model (hw.engines).

Exact for a pixel stream without gaps and a logits stream that is always ready (the tests check
it against amaranth.sim): predict() per pass and per image (latency), stream() per image of a
stream in which the pipeline's stages overlap images, period() its steady state. Utilisation of an
array layer = dense MACs / (rows*cols) / cycles, the fraction of PE-cycles doing useful work; the
sparse engine's is stored entries / (lanes * cycles).
"""

from __future__ import annotations

from hw.engines import PASS_SETUP, START, Pass, Schedule

__all__ = ["PASS_SETUP", "START", "pass_cycles", "pass_memory_bits", "predict", "stage_cycles", "stream"]


def pass_cycles(p: Pass, s: Schedule) -> int:
    """Cycles from the sequencer entering this pass to entering the next one."""
    return p.unit.cycles(p, s)


def pass_memory_bits(p: Pass, s: Schedule) -> int:
    """Bits the pass's layer occupies in the plan-initialised memories (weights, biases, indices)."""
    return p.unit.memory_bits(p, s)


def stage_cycles(s: Schedule) -> list[list[int]]:
    """Each pipeline stage's passes' cycles (Schedule.stages), in order."""
    return [[pass_cycles(p, s) for p in st] for st in s.stages]


def stream(s: Schedule, images: int, gap: int = 0) -> list[tuple[int, int]]:
    """Each image's (start, done) cycle in a stream of `images`, the first `start` at cycle 0 and
    each next one `gap` cycles after `busy` falls; `done` is the cycle the last stage's sequencer
    finishes (the top's `done` rises one later). Exact for the same streams as predict().

    The stages (Schedule.stages) run images in order, one at a time each. A stage starts an image
    the cycle after it finds its input buffer full (a cycle after the writer's pass ended), and
    after idling a cycle; the pass that writes the next stage's buffer waits until the reader's
    first pass has ended for the image before. `busy` falls as the first layer stage's first
    pass ends (the image buffer is free again)."""
    cyc = stage_cycles(s)
    last = len(cyc) - 1
    took = [[0] * images for _ in cyc]  # a stage's first pass ends (its input is read)
    end = [[0] * images for _ in cyc]  # its last pass ends
    out = []
    for i in range(images):
        start = 0 if i == 0 else took[1][i - 1] + 1 + gap
        end[0][i] = start + sum(cyc[0])  # the load: no wait (start is taken only while the buffer is free)
        for k in range(1, last + 1):
            e = max(end[k][i - 1] + 1 if i else 0, end[k - 1][i] + 1) + 1
            for j, c in enumerate(cyc[k]):
                if j == len(cyc[k]) - 1 and k < last and i:
                    e = max(e, took[k + 1][i - 1] + 1)
                fin = e + c - 1
                if j == 0:
                    took[k][i] = fin
                e = fin + 1
            end[k][i] = fin
        out.append((start, end[last][i]))
    return out


def predict(s: Schedule) -> dict:
    """Per-pass cycles, utilisation and memory bits, and the total from `start` to `done`."""
    layers = []
    for p in s.passes:
        cyc = pass_cycles(p, s)
        layers.append({"pass": p.kind, "layer": p.layer, "name": p.name, "cycles": cyc,
                       "memory_bits": pass_memory_bits(p, s), **p.unit.work(p, s, cyc)})
    # each handoff between stages costs a cycle: the full flag, then the next stage's sequencer
    return {"layers": layers, "total_cycles": 1 + sum(r["cycles"] for r in layers) + len(s.stages) - 1,
            "period_cycles": period(s)}


def period(s: Schedule) -> int:
    """Cycles between two images' `done` in a long stream (each next `start` as `busy` falls):
    the slowest stage, and what its neighbours make it wait."""
    dones = [d for _, d in stream(s, 4)]
    return dones[-1] - dones[-2]
