"""The accelerator top level: engines, buffers and one sequencer per pipeline stage for one plan.

Interface (the contract sim/ and boards/ build against): `pixels` (uint8, one image, H*W*C
transfers in HWC order), `logits` (signed 32, class 0 first), `start` / `busy` / `done`,
`cycles`, and per layer stage a trace port (`trace`, `trace1`, ...).
- `start` (one cycle) begins an image; it is taken only while `busy` is low, i.e. the image
  buffer is free and the load idle. Images overlap: the next may start long before the last is
  done, and each stage works on one image at a time (hw.engines.Schedule.stages).
- `done` pulses once per image, in start order, after its last logit; `cycles` (from the cycle
  after) is that image's start-to-done count.
- A trace port is a registered copy of every activation-buffer write of a layer output by that
  stage: `layer` (plan index), `addr` (flat (C, H, W) address of element 0), `count` valid
  elements, `data` (`count` elements of `act_width` bits, element i at bits
  [i*act_width, (i+1)*act_width), two's complement for signed layers).

The engines are the schedule's units' (hw.engines), wired by what their signatures use: per stage
one read bus, one write bus and one logit bus, and their external streams to the ports of the same
name. A buffer between two stages carries one image: a full flag, set as the writer's pass ends
and cleared as the reader's first pass ends, holds back the other side.
"""

from __future__ import annotations

import time
from pathlib import Path

from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.back import verilog
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from common.atomic import atomic_write_text
from export.plan import Plan
from hw.config import ArrayConfig
from hw.engines import Schedule
from hw.memories import ActivationBuffer, logit_layout, write_layout
from hw.schedule import schedule
from hw.sequencer import Sequencer


def trace_signature(s: Schedule, nlayers: int) -> wiring.Signature:
    cols = s.config.cols
    return wiring.Signature({
        "valid": Out(1),
        "layer": Out(range(nlayers + 1)),
        "addr": Out(s.addr_width),
        "count": Out(range(cols + 1)),
        "data": Out(unsigned(cols * s.act_width)),
    })


def trace_name(stage: int) -> str:
    """The trace port of a layer stage (1, 2, ...): `trace`, `trace1`, ..."""
    return "trace" if stage == 1 else f"trace{stage - 1}"


def buffer_ports(s: Schedule, b: int) -> dict:
    """Buffer `b`'s narrow ports (hw.memories.ActivationBuffer), from the units that use it: one
    element per write when every writer writes one, aligned reads when every reader reads so."""
    writers = {p.unit.kind: p.unit for p in s.passes if p.dst == b}.values()
    aligned = {p.unit.read_aligned(s) for p in s.passes if p.src == b}
    return {"write_cols": max((u.write_elements(s) for u in writers), default=s.config.cols),
            "read_aligned": aligned.pop() if len(aligned) == 1 else None,
            "max_stride": max([1] + [read_stride(p) for p in s.passes if p.src == b])}


def read_stride(p) -> int:
    """The column stride of pass `p`'s reads (hw.memories.ActivationBuffer's strided reads)."""
    return p.cfg.get("win", {}).get("stride_m1", 0) + 1 if p.kind == "array" else 1


class Accelerator(wiring.Component):
    def __init__(self, plan: Plan, config: ArrayConfig = ArrayConfig()):
        self.plan, self.config = plan, config
        self.sched = s = schedule(plan, config)
        ports = {
            "pixels": In(stream.Signature(unsigned(8))),
            "logits": Out(stream.Signature(signed(32))),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "cycles": Out(32),
        }
        for k in range(1, len(s.stages)):
            ports[trace_name(k)] = Out(trace_signature(s, len(plan.layers)))
        super().__init__(ports)
        self.buffers = [ActivationBuffer(config.cols, d, s.act_width, s.addr_width, **buffer_ports(s, b))
                        for b, d in enumerate(s.buffer_depths)]
        self.engines = {u.kind: u.build(s) for u in s.units}
        self.layouts = {k: e.signature.cfg for k, e in self.engines.items() if e.signature.cfg is not None}

    def using(self, bus: str, flow=True, stage: int | None = None) -> list[str]:
        """The engines whose signature has `bus`: "reads", "skips", "writes", or "logit" (`flow` Out: the
        engine drives it, In: it takes it); with `stage`, those of that pipeline stage."""
        kinds = None if stage is None else {p.kind for p in self.sched.stages[stage]}
        return [n for n, e in self.engines.items() if getattr(e.signature, bus) == flow and (kinds is None or n in kinds)]

    def _read_bus(self, m: Module, seq: Sequencer, bus: str, ports: tuple[str, str], bufs: list[int], select,
                  is_signed, k: int, address) -> Signal | None:
        """Stage `k`'s read bus `bus` ("reads" or "skips"; the engines' `ports`, address and data):
        the running engine's address (returned), `address(b, addr)` into each of the buffers `bufs`
        (None: b takes its address elsewhere), and the data of the one `select` names,
        sign-extended while `is_signed`, to every engine of the stage on that bus."""
        engines = self.using(bus, stage=k)
        if not engines:
            return None
        s, (addr_port, data_port) = self.sched, ports
        addr = Signal(s.addr_width, name=f"{addr_port}{k}")
        for n in engines:
            with m.If(seq.kind[n]):
                m.d.comb += addr.eq(getattr(self.engines[n], addr_port))
        rdata = Signal(data.ArrayLayout(signed(s.act_width + 1), s.config.cols), name=f"{data_port}{k}")
        for c in range(s.config.cols):
            raw = self.buffers[bufs[0]].rdata[c]
            for b in bufs[1:]:
                raw = Mux(select == b, self.buffers[b].rdata[c], raw)
            m.d.comb += rdata[c].eq(Mux(is_signed, raw.as_signed(), raw))
        for b in bufs:
            if (a := address(b, addr)) is not None:
                m.d.comb += self.buffers[b].raddr.eq(a)
        for n in engines:
            m.d.comb += getattr(self.engines[n], data_port).eq(rdata)
        return addr

    def elaborate(self, platform):
        m = Module()
        s, cols, aw = self.sched, self.config.cols, self.sched.addr_width
        seqs = [Sequencer(s, self.layouts, k) for k in range(len(s.stages))]
        stage_of = {p.kind: p.stage for p in s.passes}
        for k, seq in enumerate(seqs):
            m.submodules[f"seq{k}"] = seq
        for i, buf in enumerate(self.buffers):
            m.submodules[f"buf{i}"] = buf
        for name, e in self.engines.items():
            seq = seqs[stage_of[name]]
            m.submodules[name] = e
            m.d.comb += [e.start.eq(seq.go[name]), seq.finished[name].eq(e.done)]
            if name in self.layouts:
                m.d.comb += e.cfg.eq(seq.cfg[name])
        for e in self.engines.values():
            for port in e.signature.external:
                wiring.connect(m, wiring.flipped(getattr(self, port)), getattr(e, port))

        # the images between stages: a full flag per handoff buffer, set as the writing stage's
        # pass ends, cleared as the reading stage's first pass ends
        full = {}
        for b, (w, r) in s.handoffs.items():
            full[b] = f = Signal(name=f"full{b}")
            with m.If(seqs[w].filled):
                m.d.sync += f.eq(1)
            with m.If(seqs[r].took):
                m.d.sync += f.eq(0)
            m.d.comb += [seqs[w].out_full.eq(f), seqs[r].in_full.eq(f)]
        busy = Signal()
        m.d.comb += [busy.eq(seqs[0].busy | full.get(0, 0)), self.busy.eq(busy), seqs[0].start.eq(self.start & ~busy)]

        writer = {p.dst: p.stage for p in s.passes if p.dst >= 0}
        reader = {p.src: p.stage for p in s.passes if p.src >= 0}
        skip_reader = {p.skip: p.stage for p in s.passes if p.skip >= 0}
        for k, seq in enumerate(seqs):
            # one read bus per stage: its running engine's address to the buffers it reads, the
            # source's data back; with adds a second one, the skip bus, to the pass's skip buffer
            mine = [b for b in range(len(self.buffers)) if reader.get(b) == k]
            skipped = [b for b in range(len(self.buffers)) if skip_reader.get(b) == k]
            skip_addr = self._read_bus(m, seq, "skips", ("skip_addr", "skip_data"), skipped, seq.skip, seq.skip_signed,
                                       k, lambda b, a: None if b in mine else a) if skipped else None
            self._read_bus(m, seq, "reads", ("raddr", "rdata"), mine, seq.src, seq.in_signed, k,
                           lambda b, a: Mux(seq.skip == b, skip_addr, a) if b in skipped else a)
            # a strided conv's reads: the array's column stride to the buffers it reads (the skip
            # bus and every other engine read at stride 1)
            for b in mine:
                if self.buffers[b].max_stride > 1:
                    strided = seq.kind["array"] & (seq.skip != b) if b in skipped else seq.kind["array"]
                    m.d.comb += self.buffers[b].rstride_m1.eq(Mux(strided, self.engines["array"].cfg.win.stride_m1, 0))

            # one write bus per stage: the running engine's (registered) write to the destination
            # buffer, in a register (the engines and the buffers' banks are far apart)
            writers = self.using("writes", stage=k)
            if writers:
                wr = Signal(write_layout(aw, cols, s.act_width), name=f"wr{k}")
                m.d.sync += wr.valid.eq(0)
                for n in writers:
                    with m.If(seq.kind[n]):
                        m.d.sync += wr.eq(self.engines[n].wr)
                for b, buf in enumerate(self.buffers):
                    if writer.get(b) == k:
                        m.d.comb += [buf.wr.eq(wr), buf.wr.valid.eq(wr.valid & (seq.dst == b)), buf.writing.eq(seq.dst == b)]
                if k > 0:  # the trace: layer outputs, not the image load's writes
                    trace = getattr(self, trace_name(k))
                    m.d.sync += [trace.valid.eq(wr.valid), trace.layer.eq(seq.layer), trace.addr.eq(wr.addr),
                                 trace.count.eq(wr.count), trace.data.eq(wr.data)]
            logit = Signal(logit_layout(aw, s.acc_width), name=f"logit{k}")
            for n in self.using("logit", Out, stage=k):
                with m.If(seq.kind[n]):
                    m.d.comb += logit.eq(self.engines[n].logit)
            for n in self.using("logit", In, stage=k):
                m.d.comb += self.engines[n].logit.eq(logit)

        # done / cycles: an image's start-to-done count, its start time kept in a small queue (each
        # stage and each handoff buffer holds one image at most)
        depth = 1 << (2 * len(seqs) - 1).bit_length()
        now, head = Signal(32), Signal(32)
        starts = Array(Signal(32, name=f"start_time{i}", reset_less=True) for i in range(depth))
        wp, rp = Signal(range(depth)), Signal(range(depth))
        m.d.sync += [now.eq(now + 1), head.eq(starts[rp]), self.done.eq(seqs[-1].done)]
        with m.If(seqs[0].start):
            m.d.sync += [starts[wp].eq(now), wp.eq(wp + 1)]
        with m.If(seqs[-1].done):
            m.d.sync += [self.cycles.eq(now - head + 1), rp.eq(rp + 1)]
        return m


# the logic every design has: sequencers, window generator, requantizers, pool, a one-lane sparse
# engine, the board's UART (boards.top)
BASE_LOGIC_LUTS = 2500
# the pipeline stages' buffers beyond the first two (each with its banks' address and write muxes
# and a rotator) and their sequencers: an allowance, not measured per buffer. Without it the
# tiny test model's auto array on the UP5K synthesised to 5,173 of 5,280 LCs and did not place.
LUTS_PER_EXTRA_BUFFER_COL = 120


def resources(plan: Plan, config: ArrayConfig = ArrayConfig(), sched: Schedule | None = None) -> dict:
    """What a board must hold: memory bits per memory, multipliers and estimated logic LUT4s (the
    engines' own estimates, EngineUnit.luts, and the shared logic's), the sparse engine's lanes
    (0 without one). `sched`, when given, is `schedule(plan, config)` already made."""
    s = sched or schedule(plan, config)
    bits = s.memory_bits
    luts = (BASE_LOGIC_LUTS + sum(u.luts(s) for u in s.units)
            + max(0, len(s.buffer_depths) - 2) * LUTS_PER_EXTRA_BUFFER_COL * config.cols)
    return {"memory_bits": bits, "memory_bits_total": sum(bits.values()), "buffers": list(s.buffer_depths),
            "multipliers": sum(u.multipliers(s) for u in s.units), "logic_luts": luts,
            "sparse_lanes": s.lanes if "sparse" in s.engines else 0,
            "array": str(config), "act_width": s.act_width, "acc_width": s.acc_width, "adds": s.adds}


def generate(plan: Plan, config: ArrayConfig, out_dir: str | Path) -> dict:
    """Write `accelerator.v` (the plan's memory contents are inline, as Amaranth emits them), its
    port and memory inventory `accelerator.json` (hw.inventory) and the SystemVerilog testbench
    into `out_dir`; return the per-layer prediction (cycles, utilisation) and the memory bits."""
    from hw.cycles import predict
    from hw.inventory import INVENTORY_FILE, inventory
    from hw.svtb import write_testbench

    t0 = time.monotonic()
    out_dir = Path(out_dir)
    top = Accelerator(plan, config)
    text = verilog.convert(top, name="accelerator")
    atomic_write_text(out_dir / "accelerator.v", text)
    atomic_write_text(out_dir / INVENTORY_FILE, inventory(top).to_json())
    files = ["accelerator.v", INVENTORY_FILE]
    model = predict(top.sched)
    files += write_testbench(plan, out_dir, timeout_cycles=2 * model["total_cycles"] + 1000)
    return {**resources(plan, config, top.sched), "files": files, "layers": model["layers"],
            "total_cycles": model["total_cycles"], "period_cycles": model["period_cycles"], "seconds": round(time.monotonic() - t0, 2)}
