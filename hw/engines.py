"""Engines as units: the port signature every engine shares, the unit each engine kind is, and
the passes and schedule a unit is given.

An engine runs one pass per `start`. Its unit (one per kind, in the engine's own module) owns what
the rest of hw/ needs of that kind: which plan layers it runs and their lowering to a pass's
constants, the plan-initialised memories and their bits, the cycle model, and the component it
builds from a Schedule. The component's EngineSignature says which shared buses it uses.
hw.schedule.REGISTRY lists the units in pass order; the schedule hands each layer to one and
records the units it uses in Schedule.units, which the cycle model and the top level iterate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from amaranth import signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.memories import banks_for, buffer_rows, logit_layout, write_layout
from hw.requant import requant_config, shift_layout

if TYPE_CHECKING:
    from export.plan import Layer, Plan
    from hw.config import ArrayConfig
    from hw.window import WindowFeatures

PASS_SETUP = 1  # the sequencer's state that loads a pass's constants
START = 1  # the cycle an engine takes `start` in; its first issue is the next one


class UnsupportedPlan(ValueError):
    """A plan the generator refuses; the message names the layer and what to change."""


def refuse(i: int, layer: Layer, what: str) -> UnsupportedPlan:
    return UnsupportedPlan(f"layer {i} {layer.name!r} ({layer.kind}): {what}")


class EngineSignature(wiring.Signature):
    """The ports of an engine. Every engine: `start` (a pass begins; its constants are on `cfg`
    until `done`) and `done` (one cycle: the pass is over). Where it has them: `cfg`, the pass's
    constants; the activation read bus `raddr` / `rdata` (`reads`: rdata[c], sign-extended, is
    the element at raddr + c, READ_LATENCY cycles after raddr); the skip read bus `skip_addr` /
    `skip_data` (`skips`: a second read bus, of the same timing, for the tensor a residual add
    reads; hw.residual); the write bus `wr` (`writes`, hw.memories.write_layout); the logit bus
    `logit` (Out: the engine writes raw accumulators of the last layer, In: it stores them).
    `external` members are the top level's ports of the same name (the pixel and logit streams)."""

    def __init__(self, addr_width: int, *, cols: int = 1, act_width: int = 8, acc_width: int | None = None,
                 cfg: data.StructLayout | None = None, reads: bool = False, writes: bool = False,
                 logit: wiring.Flow | None = None, skips: bool = False, **external: wiring.Member):
        if addr_width < 1 or cols < 1 or act_width < 1:
            raise ValueError(f"addr_width, cols and act_width must be positive, got {addr_width}, {cols}, {act_width}")
        if logit not in (None, In, Out) or (logit is not None) != (acc_width is not None):
            raise ValueError("a logit bus is In or Out and needs acc_width; no logit bus, no acc_width")
        self.addr_width, self.cols, self.act_width, self.acc_width = addr_width, cols, act_width, acc_width
        self.cfg, self.reads, self.writes, self.logit, self.external = cfg, reads, writes, logit, dict(external)
        self.skips = skips
        members = {"start": In(1)}
        if cfg is not None:
            members["cfg"] = In(cfg)
        if reads:
            members.update(raddr=Out(addr_width), rdata=In(data.ArrayLayout(signed(act_width + 1), cols)))
        if skips:
            members.update(skip_addr=Out(addr_width), skip_data=In(data.ArrayLayout(signed(act_width + 1), cols)))
        if logit is In:
            members["logit"] = In(logit_layout(addr_width, acc_width))
        members.update(external)
        if writes:
            members["wr"] = Out(write_layout(addr_width, cols, act_width))
        if logit is Out:
            members["logit"] = Out(logit_layout(addr_width, acc_width))
        members["done"] = Out(1)
        super().__init__(members)

    def _params(self) -> tuple:
        return (self.addr_width, self.cols, self.act_width, self.acc_width, self.cfg, self.reads, self.writes,
                self.logit, self.skips, self.external)

    def __eq__(self, other):
        return type(other) is EngineSignature and self._params() == other._params()

    def __repr__(self) -> str:
        uses = [n for n, on in (("reads", self.reads), ("skips", self.skips), ("writes", self.writes)) if on]
        uses += [f"logit={self.logit.name}"] if self.logit is not None else []
        uses += [f"cfg={self.cfg!r}"] if self.cfg is not None else []
        return (f"EngineSignature(addr_width={self.addr_width}, cols={self.cols}, act_width={self.act_width}, "
                f"acc_width={self.acc_width}, {', '.join(uses + list(self.external))})")


@dataclass
class LoweringContext:
    """What lowering a layer to a pass needs beside the layer: the array and the datapath widths,
    the window generator's features, the engines whose shifts come per channel, the sparse
    engine's lanes, the plan-initialised memories' contents (by memory name), filled layer by
    layer, the stored entries of each layer the sparse engine runs (by layer index;
    hw.sparse.sparse_encoding), the activation width, and where the plan has residual adds, the
    add constants of each conv whose store adds (by layer index; hw.residual), else None."""

    config: ArrayConfig
    acc_width: int
    w_width: int
    value_bits: int
    index_bits: int
    window: WindowFeatures
    per_channel: set[str]
    memory_contents: dict[str, list] = field(default_factory=dict)
    lanes: int = 1
    encoded: dict = field(default_factory=dict)
    act_width: int = 8
    adds: dict[int, dict] | None = None


@dataclass
class LoweredLayer:
    """One layer's pass: its constants, its useful work (dense MACs, stored entries), and the
    highest flat address it reads (as the start of a vector)."""

    cfg: dict
    macs: int
    top: int


@dataclass
class Pass:
    """One run of `unit`'s engine, reading buffer `src` (and `skip`, a residual add's other
    operand, hw.residual), writing buffer `dst`."""

    unit: EngineUnit
    layer: int  # index in plan.layers of the layer whose output it writes (-1: the image load, len(layers): the logits out)
    name: str
    src: int = 0
    dst: int = 0
    in_signed: bool = False
    skip: int = -1
    skip_signed: bool = False
    cfg: dict = field(default_factory=dict)
    macs: int = 0  # dense MACs (array) or stored entries (sparse)
    stage: int = 0  # the pipeline stage that runs it (Schedule.stages)

    @property
    def kind(self) -> str:
        return self.unit.kind


@dataclass
class Schedule:
    """Everything static about one plan on one array (hw.schedule.schedule computes it)."""

    plan: Plan
    config: ArrayConfig
    passes: list[Pass]
    units: list[EngineUnit]  # the engine units the passes use, in pass order (hw.schedule.REGISTRY's)
    act_width: int
    w_width: int
    acc_width: int
    addr_width: int
    buffer_depths: tuple[int, ...]
    value_bits: int
    index_bits: int
    window: WindowFeatures
    memory_contents: dict[str, list]  # the plan-initialised memories' contents, by memory name (the sparse ones per lane)
    lanes: int  # the sparse engine's
    adds: bool = False  # whether a pass stores a residual add (the array's skip bus, hw.residual)

    @property
    def stages(self) -> list[list[Pass]]:
        """The passes of each pipeline stage, in order. Stage 0 is the image load; a stage hands
        its output to the next through a buffer of its own (Schedule.handoffs)."""
        return [[p for p in self.passes if p.stage == k] for k in range(self.passes[-1].stage + 1)]

    @property
    def handoffs(self) -> dict[int, tuple[int, int]]:
        """Each buffer that carries an image from one stage to the next: buffer -> (writer stage,
        reader stage). One image at a time: the writer's pass waits until the reader's pass has
        read it (a full flag each)."""
        out = {}
        for p in self.passes:
            if p.dst >= 0:
                readers = {q.stage for q in self.passes if q.src == p.dst and q.unit.kind != "load"}
                for r in readers - {p.stage}:
                    out[p.dst] = (p.stage, r)
        return out

    @property
    def engines(self) -> list[str]:
        return [u.kind for u in self.units]

    @property
    def num_classes(self) -> int:
        return int(self.plan.layers[-1].out_shape[0])

    @property
    def memory_inits(self) -> dict[str, tuple[list[int], int]]:
        """Each plan-initialised memory: (words, word width)."""
        return {k: v for u in self.units for k, v in u.memory_inits(self).items() if v[0]}

    @property
    def shift_width(self) -> int:
        """Bits of one per-channel shift entry (hw.requant.shift_layout)."""
        return shift_layout(self.acc_width).size

    @property
    def memory_bits(self) -> dict[str, int]:
        """Bits of every on-chip memory: the two activation buffers, the plan's, the logits."""
        bits = {f"act_buffer{i}": banks_for(self.config.cols) * buffer_rows(d, self.config.cols) * self.act_width
                for i, d in enumerate(self.buffer_depths)}
        bits.update({k: len(words) * width for k, (words, width) in self.memory_inits.items()})
        bits["logits"] = self.num_classes * self.acc_width
        return bits


class EngineUnit:
    """One engine kind. The defaults are those of an engine without plan memories or layers."""

    kind = ""
    memories: tuple[str, ...] = ()  # its plan-initialised memories, as named in Schedule.memory_contents

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def runs(self, layer: Layer) -> bool:
        """Whether this engine runs `layer`."""
        return False

    def lower(self, i: int, layer: Layer, ctx: LoweringContext) -> LoweredLayer:
        """Layer `i`'s pass constants; refuses (UnsupportedPlan) what the engine cannot run."""
        raise NotImplementedError

    def requant(self, layer: Layer, ctx: LoweringContext) -> dict:
        """The requantizer's layer constants (none for raw accumulators; no shift when per channel)."""
        shift = None if self.kind in ctx.per_channel else layer.shift
        return {} if layer.out is None else requant_config(shift, layer.relu, layer.out, ctx.acc_width)

    def latency(self, s: Schedule) -> int:
        """Cycles from the engine's last issue to its `done`."""
        raise NotImplementedError

    def issue_cycles(self, p: Pass, s: Schedule) -> int:
        """Cycles from the pass's first issue to its last, inclusive."""
        raise NotImplementedError

    def cycles(self, p: Pass, s: Schedule) -> int:
        """The cycle model: from the sequencer entering this pass to entering the next one."""
        return PASS_SETUP + START + self.issue_cycles(p, s) + self.latency(s)

    def work(self, p: Pass, s: Schedule, cycles: int) -> dict:
        """The pass's useful work for the cycle model's report (utilisation and what it counts)."""
        return {}

    def memory_inits(self, s: Schedule) -> dict[str, tuple[list[int], int]]:
        """Each of its plan-initialised memories: (words, word width)."""
        return {}

    def memory_bits(self, p: Pass, s: Schedule) -> int:
        """Bits the pass's layer occupies in the plan-initialised memories."""
        return 0

    def addresses(self, memory_contents: dict[str, list[int]]) -> list[int]:
        """The largest values its memory address counters hold."""
        return [len(memory_contents[n]) for n in self.memories]

    def address_constants(self, p: Pass) -> list[int]:
        """The pass's constants that are addresses or counts (they size the address width)."""
        return [v for v in p.cfg.values() if isinstance(v, int)]

    def multipliers(self, s: Schedule) -> int:
        return 0

    def luts(self, s: Schedule) -> int:
        """LUT4s its logic takes beyond its multipliers and memories: an estimate, as FINN's per-op
        lut_estimation; the fit check (boards.fit) sets it against a board's budget."""
        return 0

    def write_elements(self, s: Schedule) -> int:
        """The most elements one of its buffer writes carries: a vector of `cols`, or 1."""
        return s.config.cols

    def read_aligned(self, s: Schedule) -> int | None:
        """None: its buffer reads take `cols` elements from any address; n: only rdata[0:n], from
        multiples of n (hw.memories.ActivationBuffer's narrow ports)."""
        return None

    def build(self, s: Schedule) -> wiring.Component:
        """The engine for schedule `s`, its signature an EngineSignature."""
        raise NotImplementedError
