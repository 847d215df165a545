"""Cycle model: the cycles each pass takes, derived from the engines' pipelines.

Exact for a pixel stream without gaps and a logits stream that is always ready (the tests check
it against amaranth.sim). Utilisation of an array layer = dense MACs / (rows*cols) / cycles, the
fraction of PE-cycles doing useful work; the sparse engine's is stored entries / cycles.
"""

from __future__ import annotations

from hw.array import SystolicArray
from hw.memories import QUIET_LATENCY, READ_LATENCY, ROM_LATENCY
from hw.requant import LATENCY
from hw.sequencer import Pass, Schedule

PASS_SETUP = 1  # the sequencer's state that loads a pass's constants
# cycles from an engine's last issue to its `done`: output registers, memories, operand/product registers, the
# requantizer (LATENCY), the write, `done`
ARRAY_FLUSH = 5 + READ_LATENCY + LATENCY + QUIET_LATENCY  # + the systolic skew and one drain cycle per output channel of the last tile
SPARSE_FLUSH = 6 + ROM_LATENCY + READ_LATENCY + LATENCY + QUIET_LATENCY
POOL_FLUSH = 5 + READ_LATENCY + QUIET_LATENCY  # address register, tags, vertical then horizontal maxima, write, `done`


def pass_cycles(p: Pass, s: Schedule) -> int:
    """Cycles from the sequencer entering this pass to entering the next one."""
    rows = s.config.rows
    if p.kind == "load":
        c, h, w = s.plan.input_shape
        return PASS_SETUP + c * h * w + 3
    if p.kind == "array":
        w = p.cfg["win"]
        k, tiles = w["k_steps"], (w["n_og_m1"] + 1) * (w["oh_m1"] + 1) * (w["n_xt_m1"] + 1)
        skew = SystolicArray.ACC_DELAY - 1 + (rows - 1) + (s.config.cols - 1)  # operand hop, drain wait, de-skew
        period = max(k, 2 * rows - 1)  # SystolicArray.tile_period
        return PASS_SETUP + k + (tiles - 1) * period + ARRAY_FLUSH + skew + w["last_rows"]
    if p.kind == "pool":
        c = p.cfg
        return PASS_SETUP + 4 * (c["c_m1"] + 1) * (c["oh_m1"] + 1) * (c["n_xt_m1"] + 1) + POOL_FLUSH
    if p.kind == "sparse":
        return PASS_SETUP + (ROM_LATENCY + 1) * (p.cfg["rows_m1"] + 1) + p.macs + SPARSE_FLUSH
    if p.kind == "emit":
        return PASS_SETUP + 2 * s.num_classes + 1
    raise ValueError(f"unknown pass kind {p.kind!r}")


def pass_memory_bits(p: Pass, s: Schedule) -> int:
    """Bits the pass's layer occupies in the plan-initialised memories (weights, biases, indices)."""
    rows = s.config.rows
    if p.kind == "array":
        groups, k = p.cfg["win"]["n_og_m1"] + 1, p.cfg["win"]["k_steps"]
        return groups * k * rows * s.w_width + groups * rows * (s.acc_width + s.shift_width * bool(s.shift_words))
    if p.kind == "sparse":
        return p.macs * (s.value_bits + s.index_bits) + (p.cfg["rows_m1"] + 1) * (
            s.addr_width + s.acc_width + s.shift_width * bool(s.sparse_shifts))
    return 0


def predict(s: Schedule) -> dict:
    """Per-pass cycles, utilisation and memory bits, and the total from `start` to `done`."""
    pes = s.config.pes
    layers = []
    for p in s.passes:
        cyc = pass_cycles(p, s)
        row = {"pass": p.kind, "layer": p.layer, "name": p.name, "cycles": cyc, "memory_bits": pass_memory_bits(p, s)}
        if p.kind == "array":
            row["macs"] = p.macs
            row["ideal_cycles"] = p.macs / pes
            row["utilisation"] = p.macs / pes / cyc
        elif p.kind == "sparse":
            row["entries"] = p.macs
            row["utilisation"] = p.macs / cyc
        layers.append(row)
    return {"layers": layers, "total_cycles": 1 + sum(r["cycles"] for r in layers)}
