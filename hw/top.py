"""The accelerator top level: engines, ping-pong buffers and sequencer for one plan.

Interface (the contract sim/ and boards/ build against): `pixels` (uint8, one image, H*W*C
transfers in HWC order), `logits` (signed 32, class 0 first), `start` / `busy` / `done`,
`cycles` (start to done, latched at done), and `trace`, a registered copy of every activation
buffer write of a layer output: `layer` (plan index), `addr` (flat (C, H, W) address of element
0), `count` valid elements, `data` (`count` elements of `act_width` bits, element i at bits
[i*act_width, (i+1)*act_width), two's complement for signed layers).

The engines are the schedule's units' (hw.engines), wired by what their signatures use: one read
bus, one write bus, one logit bus, and their external streams to the ports of the same name.
"""

from __future__ import annotations

import time
from pathlib import Path

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.back import verilog
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from export.plan import Plan
from hw.array import ArrayConfig
from hw.memories import ActivationBuffer, logit_layout, write_layout
from hw.sequencer import Schedule, Sequencer, schedule
from quant.atomic import atomic_write_text


class Accelerator(wiring.Component):
    def __init__(self, plan: Plan, config: ArrayConfig = ArrayConfig()):
        self.plan, self.config = plan, config
        self.sched = s = schedule(plan, config)
        cols = config.cols
        super().__init__({
            "pixels": In(stream.Signature(unsigned(8))),
            "logits": Out(stream.Signature(signed(32))),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "cycles": Out(32),
            "trace": Out(wiring.Signature({
                "valid": Out(1),
                "layer": Out(range(len(plan.layers) + 1)),
                "addr": Out(s.addr_width),
                "count": Out(range(cols + 1)),
                "data": Out(unsigned(cols * s.act_width)),
            })),
        })
        self.buffers = [ActivationBuffer(cols, d, s.act_width, s.addr_width) for d in s.buffer_depths]
        self.engines = {u.kind: u.build(s) for u in s.units}
        self.layouts = {k: e.signature.cfg for k, e in self.engines.items() if e.signature.cfg is not None}

    def using(self, bus: str, flow=True) -> list[str]:
        """The engines whose signature has `bus`: "reads", "writes", or "logit" (`flow` Out: the
        engine drives it, In: it takes it)."""
        return [n for n, e in self.engines.items() if getattr(e.signature, bus) == flow]

    def elaborate(self, platform):
        m = Module()
        s, cols, aw = self.sched, self.config.cols, self.sched.addr_width
        seq = m.submodules.seq = Sequencer(s, self.layouts)
        for i, buf in enumerate(self.buffers):
            m.submodules[f"buf{i}"] = buf
        for name, e in self.engines.items():
            m.submodules[name] = e
            m.d.comb += [e.start.eq(seq.go[name]), seq.finished[name].eq(e.done)]
            if name in self.layouts:
                m.d.comb += e.cfg.eq(seq.cfg[name])
        for e in self.engines.values():
            for port in e.signature.external:
                wiring.connect(m, wiring.flipped(getattr(self, port)), getattr(e, port))

        # one read bus: the running engine's address to both buffers, the source's data back
        readers = self.using("reads")
        raddr = Signal(aw)
        for n in readers:
            with m.If(seq.kind[n]):
                m.d.comb += raddr.eq(self.engines[n].raddr)
        rdata = Signal(data.ArrayLayout(signed(s.act_width + 1), cols))
        for c in range(cols):
            raw = Mux(seq.src, self.buffers[1].rdata[c], self.buffers[0].rdata[c])
            m.d.comb += rdata[c].eq(Mux(seq.in_signed, raw.as_signed(), raw))
        for buf in self.buffers:
            m.d.comb += buf.raddr.eq(raddr)
        for n in readers:
            m.d.comb += self.engines[n].rdata.eq(rdata)

        # one write bus: the running engine's (registered) write to the destination buffer, in a
        # register (the engines and the buffers' banks are far apart)
        wr = Signal(write_layout(aw, cols, s.act_width))
        m.d.sync += wr.valid.eq(0)
        for n in self.using("writes"):
            with m.If(seq.kind[n]):
                m.d.sync += wr.eq(self.engines[n].wr)
        for i, buf in enumerate(self.buffers):
            m.d.comb += [buf.wr.eq(wr), buf.wr.valid.eq(wr.valid & (seq.dst == i)), buf.writing.eq(seq.dst == i)]
        logit = Signal(logit_layout(aw, s.acc_width))
        for n in self.using("logit", Out):
            with m.If(seq.kind[n]):
                m.d.comb += logit.eq(self.engines[n].logit)
        for n in self.using("logit", In):
            m.d.comb += self.engines[n].logit.eq(logit)

        # the trace: layer outputs, not the writes of an engine that reads no layer (the image load)
        traced = wr.valid
        for n in self.using("writes"):
            if n not in readers:
                traced = traced & ~seq.kind[n]
        m.d.sync += [self.trace.valid.eq(traced), self.trace.layer.eq(seq.layer),
                     self.trace.addr.eq(wr.addr), self.trace.count.eq(wr.count), self.trace.data.eq(wr.data)]

        # start / busy / done / cycles
        m.d.comb += [seq.start.eq(self.start), self.busy.eq(seq.busy)]
        count = Signal(32)
        m.d.sync += [self.done.eq(seq.done), count.eq(count + 1)]
        with m.If(self.start & ~seq.busy):
            m.d.sync += count.eq(1)
        with m.If(seq.done):
            m.d.sync += self.cycles.eq(count + 1)
        return m


def resources(plan: Plan, config: ArrayConfig = ArrayConfig(), sched: Schedule | None = None) -> dict:
    """What a board must hold: memory bits per memory, multipliers (the engines').
    `sched`, when given, is `schedule(plan, config)` already made."""
    s = sched or schedule(plan, config)
    bits = s.memory_bits
    return {"memory_bits": bits, "memory_bits_total": sum(bits.values()),
            "multipliers": sum(u.multipliers(s) for u in s.units),
            "array": str(config), "act_width": s.act_width, "acc_width": s.acc_width}


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
            "total_cycles": model["total_cycles"], "seconds": round(time.monotonic() - t0, 2)}
