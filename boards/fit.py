"""Fit check before synthesis: do the design's memories and multipliers fit the board's part?

Memories are mapped the way yosys maps them: each memory onto whole block RAMs in the block's
best width x depth configuration (ECP5 DP16KD 18 Kbit, iCE40 SB_RAM40_4K 4 Kbit, 7-series
RAMB18 halves of a 36 Kbit block); memories that are never initialised and use one port may
go to iCE40 SPRAM. yosys maps every multiplier onto a DSP, so on the open toolchains the
multipliers must not outnumber the DSPs, and on an ECP5 they may take only DSP_BUDGET of them
(a fuller systolic array did not place and route); Vivado builds the rest from LUTs, estimated at
a_bits * b_bits LUT4s each. With the design's own logic estimate they must stay within 80% of
the part's LUTs. LUT figures are estimates; nextpnr's report after the build is the measurement.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from boards.errors import BoardError
from boards.profiles import PROFILES, BoardProfile

# (width, depth) configurations of one block RAM, per toolchain
BLOCK_SHAPES = {
    "ecp5": [(1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512)],
    "ice40": [(2, 2048), (4, 1024), (8, 512), (16, 256)],
    # RAMB18 shapes; one RAMB18 is half of the profile's 36 Kbit block
    "vendor": [(1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512)],
}
BLOCKS_PER_SHAPE = {"ecp5": 1.0, "ice40": 1.0, "vendor": 0.5}
SPRAM_SHAPE = (16, 16384)
LUTRAM_MAX_DEPTH = {"ecp5": 16, "ice40": 0, "vendor": 64}  # yosys keeps these in LUTs
DSP_MAX_BITS = {"ecp5": (18, 18), "ice40": (16, 16), "vendor": (25, 18)}
# yosys (synth_ecp5, synth_ice40 -dsp) puts every multiplier on a DSP whatever their number, and
# nextpnr then fails; only the vendor tools fall back to LUTs
DSP_ONLY = {"ecp5", "ice40"}
LUT_BUDGET = 0.8  # of the part's LUTs; the rest for routing slack, UART and glue logic
# of the part's DSPs, by toolchain: nextpnr places a systolic array along the ECP5's few DSP rows,
# and the more of them it fills the longer its operand chains get (docs/boards.md: the paper
# model's 10x9, 91 of 156, routes at 110.7 MHz; its 10x12 and 10x14 did not)
DSP_BUDGET = {"ecp5": 0.6}
# logic cells per estimated LUT4, by toolchain: an iCE40 flip-flop without a LUT in front takes a
# cell of its own (measured: the tiny test model on a 2x3 array, 4,869 UP5K cells where the
# estimate said 3,940 LUT4s, and no legal placement at 92%)
CELLS_PER_LUT = {"ice40": 1.24}


@dataclass(frozen=True)
class MemoryNeed:
    """One memory of the design: `initialised` from the plan (weights) or written at run time."""

    name: str
    width: int
    depth: int
    initialised: bool = False
    single_port: bool = False

    @property
    def bits(self) -> int:
        return self.width * self.depth


@dataclass(frozen=True)
class Demand:
    """What the design needs of the part, known before synthesis."""

    memories: tuple[MemoryNeed, ...]
    multipliers: int
    mult_bits: tuple[int, int] = (9, 8)
    logic_luts: int = 0  # estimated LUTs of everything but multipliers and memories

    @property
    def memory_bits(self) -> int:
        return sum(m.bits for m in self.memories)


def blocks_for(mem: MemoryNeed, toolchain: str) -> float:
    """Block RAMs one memory takes in its cheapest configuration (0 when it stays in LUTs)."""
    if mem.depth <= LUTRAM_MAX_DEPTH[toolchain]:
        return 0.0
    best = min(math.ceil(mem.width / w) * math.ceil(mem.depth / d) for w, d in BLOCK_SHAPES[toolchain])
    return best * BLOCKS_PER_SHAPE[toolchain]


def sprams_for(mem: MemoryNeed) -> int:
    w, d = SPRAM_SHAPE
    return math.ceil(mem.width / w) * math.ceil(mem.depth / d)


@dataclass(frozen=True)
class Check:
    resource: str
    need: float
    have: float
    unit: str

    @property
    def ok(self) -> bool:
        return self.need <= self.have

    def __str__(self) -> str:
        return f"{self.resource}: {self.need:g} of {self.have:g} {self.unit}"


@dataclass
class FitResult:
    """The checks, where each memory went, and, when it misses, what would help."""

    board: str
    part: str
    checks: list[Check]
    placement: dict[str, str] = field(default_factory=dict)  # memory -> "bram" | "spram" | "lut"
    knobs: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return all(c.ok for c in self.checks)

    def message(self) -> str:
        """One line: what misses and by how much, then what helps."""
        if self.fits:
            return f"fits {self.board} ({self.part}): " + "; ".join(map(str, self.checks))
        misses = [f"{c.resource} needs {c.need:g} {c.unit}, the {self.part} has {c.have:g} "
                  f"({c.need / c.have:.1f}x, {c.need - c.have:g} over)" if c.have else
                  f"{c.resource} needs {c.need:g} {c.unit}, the {self.part} has none"
                  for c in self.checks if not c.ok]
        return f"does not fit {self.board}: " + "; ".join(misses) + ". Try: " + "; ".join(self.knobs)

    def to_dict(self) -> dict:
        return {"board": self.board, "part": self.part, "fits": self.fits,
                "checks": [{"resource": c.resource, "need": c.need, "have": c.have, "unit": c.unit}
                           for c in self.checks],
                "placement": self.placement, "message": self.message()}


def check_fit(demand: Demand, profile: BoardProfile, *, knobs: bool = True) -> FitResult:
    """Map `demand` onto `profile`'s part; the result says whether and by how much it misses."""
    tc = profile.toolchain
    placement: dict[str, str] = {}
    bram = 0.0
    spram_left = profile.spram_bits // (SPRAM_SHAPE[0] * SPRAM_SHAPE[1])
    spram = 0
    # biggest first, so SPRAM (if any) takes the memories that would cost the most blocks
    for mem in sorted(demand.memories, key=lambda m: -m.bits):
        if mem.single_port and not mem.initialised and 0 < sprams_for(mem) <= spram_left:
            spram_left -= sprams_for(mem)
            spram += sprams_for(mem)
            placement[mem.name] = "spram"
            continue
        blocks = blocks_for(mem, tc)
        bram += blocks
        placement[mem.name] = "bram" if blocks else "lut"
    block_kbit = profile.bram_block_bits // 1024
    in_bram = sum(m.bits for m in demand.memories if placement[m.name] == "bram")
    checks = [Check(f"block RAM ({in_bram / 1024:.0f} Kbit of memories)", bram, profile.bram_blocks,
                    f"blocks of {block_kbit} Kbit")]
    if spram or profile.spram_bits:
        checks.append(Check("SPRAM", spram, profile.spram_bits // (SPRAM_SHAPE[0] * SPRAM_SHAPE[1]), "blocks of 256 Kbit"))
    dsps = int(profile.dsps * DSP_BUDGET.get(tc, 1.0))
    share = f", {DSP_BUDGET[tc]:.0%} of the part's {profile.dsps}: more do not place and route" if tc in DSP_BUDGET else ""
    if tc in DSP_ONLY:
        in_luts = 0
        checks.append(Check(f"multipliers (yosys maps each onto a DSP{share})", demand.multipliers, dsps, "DSPs"))
    else:
        on_dsp = min(demand.multipliers, dsps) if _dsp_can_take(demand.mult_bits, tc) else 0
        in_luts = demand.multipliers - on_dsp
        checks.append(Check(f"multipliers on DSPs{share}", on_dsp, dsps, "DSPs"))
    luts = round((demand.logic_luts + in_luts * demand.mult_bits[0] * demand.mult_bits[1]) * CELLS_PER_LUT.get(tc, 1.0))
    if luts:
        what = f"logic + {in_luts} multipliers beyond the DSPs" if in_luts else "logic"
        unit = "logic cells" if tc in CELLS_PER_LUT else "LUT4s"
        checks.append(Check(f"LUTs for {what} (estimate)", luts, int(profile.luts * LUT_BUDGET), unit))
    result = FitResult(profile.name, profile.part, checks, placement)
    if knobs and not result.fits:
        result.knobs = _knobs(demand, profile, result)
    return result


def _dsp_can_take(bits: tuple[int, int], toolchain: str) -> bool:
    a, b = sorted(bits, reverse=True)
    da, db = sorted(DSP_MAX_BITS[toolchain], reverse=True)
    return a <= da and b <= db


def _knobs(demand: Demand, profile: BoardProfile, result: FitResult) -> list[str]:
    knobs = []
    failed = {c.resource.split(" ")[0] for c in result.checks if not c.ok}
    if failed & {"block", "SPRAM"}:
        in_bram = [m for m in demand.memories if result.placement.get(m.name) == "bram"]
        blocks = sum(blocks_for(m, profile.toolchain) for m in in_bram)
        filled = sum(m.bits for m in in_bram) / max(1, blocks * profile.bram_block_bits)
        if filled < 0.5:
            knobs.append(f"{len(in_bram)} memories fill their blocks only {filled:.0%}: fewer array columns "
                         f"(fewer activation-buffer banks)")
        weights = sum(m.bits for m in demand.memories if m.initialised)
        buffers = demand.memory_bits - weights
        # hw.memories.rom() splits a deep memory into block-deep pieces named name0, name1, ...
        whole: dict[str, int] = {}
        for m in demand.memories:
            base = re.sub(r"\d+$", "", m.name) if m.initialised else m.name
            whole[base] = whole.get(base, 0) + m.bits
        biggest_name, biggest_bits = max(whole.items(), key=lambda kv: kv[1])
        if weights >= buffers:
            knobs.append(f"weights are {weights / 1024:.0f} of {demand.memory_bits / 1024:.0f} Kbit: "
                         f"more pruning or fewer weight bits (biggest memory: {biggest_name}, {biggest_bits / 1024:.0f} Kbit)")
        else:
            knobs.append(f"activation buffers are {buffers / 1024:.0f} of {demand.memory_bits / 1024:.0f} Kbit: "
                         f"fewer activation bits or a smaller input (biggest memory: {biggest_name}, {biggest_bits / 1024:.0f} Kbit)")
        if profile.spram_bits and any(not m.initialised and not m.single_port for m in demand.memories):
            knobs.append("single-port activation buffers could use the SPRAM")
        if profile.spram_bits and weights > profile.bram_bits:
            knobs.append(f"the {profile.spram_bits // 1024} Kbit SPRAM could hold the weights only if they were "
                         f"loaded at start-up (SPRAM has no bitstream initialisation)")
    if failed & {"multipliers", "LUTs"}:
        knobs.append("a smaller array (--array RxC, or --array auto for the fastest that fits)")
    others = [p.name for p in PROFILES.values() if p.name != profile.name and check_fit(demand, p, knobs=False).fits] \
        if profile.name in PROFILES else []
    if others:
        knobs.append(f"another board: {', '.join(others)}")
    return knobs


def candidate_arrays(max_rows: int = 16, max_cols: int = 16) -> list[tuple[int, int]]:
    """Array shapes from the most PEs down; among equals, the squarest first."""
    shapes = [(r, c) for r in range(1, max_rows + 1) for c in range(1, max_cols + 1)]
    return sorted(shapes, key=lambda rc: (-rc[0] * rc[1], abs(rc[0] - rc[1]), -rc[0]))


class FitError(BoardError, ValueError):
    """Nothing fits; the message is one line with what to change."""


def pick_array(demand_of: Callable[[int, int], Demand], profile: BoardProfile,
               shapes: Iterable[tuple[int, int]] | None = None,
               quick_of: Callable[[int, int], Demand] | None = None,
               cost_of: Callable[[int, int], float] | None = None) -> tuple[tuple[int, int], FitResult]:
    """The array (rows, cols) whose design fits `profile`; `demand_of(rows, cols)` sizes one.

    Without `cost_of`, the first that fits in `shapes` order (candidate_arrays: the most PEs);
    with it, the fitting shape of least cost (e.g. predicted cycles per image), fewer PEs and
    then `shapes` order among equals. `quick_of`, a cheap partial demand (e.g. multipliers and
    logic only), skips shapes that cannot fit before the full `demand_of` is asked; with
    `cost_of` it is asked of each shape right before that shape's cost.
    """
    shapes = list(candidate_arrays() if shapes is None else shapes)
    last = None

    def quick_fits(rows: int, cols: int) -> bool:
        nonlocal last
        if quick_of is None:
            return True
        quick = check_fit(quick_of(rows, cols), profile, knobs=False)
        last = last or (None if quick.fits else quick)
        return quick.fits

    if cost_of is None:
        order = (rc for rc in shapes if quick_fits(*rc))  # lazily: the first fit ends the walk
    else:
        costs = {rc: cost_of(*rc) for rc in shapes if quick_fits(*rc)}
        order = sorted(costs, key=lambda rc: (costs[rc], rc[0] * rc[1]))  # stable: shapes order among equals
    for rows, cols in order:
        last = check_fit(demand_of(rows, cols), profile)
        if last.fits:
            return (rows, cols), last
    if quick_of is not None:
        last = check_fit(demand_of(*shapes[-1]), profile)
    raise FitError(f"no array from {shapes[0][0]}x{shapes[0][1]} down to {shapes[-1][0]}x{shapes[-1][1]} fits: "
                   + last.message())


def auto_array(plan, profile: BoardProfile):
    """`--array auto`: (ArrayConfig, FitResult) of the array whose accelerator for `plan` fits
    `profile` with the fewest cycles per image in a stream (hw.cycles.period, exact), then the
    lowest latency, the fewest PEs among equals."""
    import functools

    from hw.config import ArrayConfig
    from hw.cycles import predict
    from hw.schedule import schedule

    sched = functools.lru_cache(maxsize=1)(lambda r, c: schedule(plan, ArrayConfig(r, c)))  # asked by quick, then cost
    quick = lambda r, c: accelerator_demand(plan, r, c, memories=False, sched=sched(r, c))
    (rows, cols), fit = pick_array(lambda r, c: accelerator_demand(plan, r, c), profile, quick_of=quick,
                                   cost_of=lambda r, c: (lambda m: (m["period_cycles"], m["total_cycles"]))(predict(sched(r, c))))
    return ArrayConfig(rows, cols), fit


def array_for(plan, array: str | None, board: str):
    """The ArrayConfig of an `--array` option (hw.config.parse_array_option), `auto` resolved by
    auto_array on `board`; with `auto`, also the fit's one-line message, else None."""
    from hw.config import parse_array_option

    config = parse_array_option(array)
    if config is not None:
        return config, None
    from boards.profiles import get_profile

    config, fit = auto_array(plan, get_profile(board))
    return config, fit.message()


def memories_of(design) -> tuple[MemoryNeed, ...]:
    """Every memory of an elaboratable, from hw's inventory (Amaranth's Memory objects)."""
    from hw.inventory import memories_of as inventory

    return tuple(MemoryNeed(m.name, m.width, m.depth, initialised=m.initialised,
                            single_port=m.read_ports + m.write_ports == 1) for m in inventory(design))


def accelerator_demand(plan, rows: int, cols: int, *, lanes: int | None = None, memories: bool = True,
                       sched=None) -> Demand:
    """What hw.top's accelerator for `plan` on a rows x cols array with `lanes` sparse lanes (None:
    hw's choice) needs (memories from hw's inventory, by elaboration); `sched`, when given, is hw's
    schedule for that array."""
    from hw.config import ArrayConfig
    from hw.top import Accelerator, resources

    config = ArrayConfig(rows, cols, lanes)
    res = resources(plan, config, sched)
    mems = memories_of(Accelerator(plan, config)) if memories else ()
    return Demand(mems, res["multipliers"], (res["act_width"] + 1, _w_width(plan)), res["logic_luts"])


def _w_width(plan) -> int:
    return max([2] + [l.w_type.bits for l in plan.layers if l.w_type is not None])


__all__ = ["BLOCK_SHAPES", "Check", "Demand", "FitError", "FitResult", "MemoryNeed", "accelerator_demand", "array_for",
           "auto_array", "blocks_for", "candidate_arrays", "check_fit", "memories_of", "pick_array"]
