"""The sequencer that steps one pipeline stage of a schedule (hw.schedule).

A `Sequencer` is a generated FSM with two states per pass: load the pass's constants into
registers, then start its engine and wait for its `done`. No descriptor memory: the constants are
the FSM's outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

if TYPE_CHECKING:
    from hw.engines import Schedule


class Sequencer(wiring.Component):
    """One pipeline stage's passes, one image at a time: IDLE until its input is there (stage 0:
    `start`; the others: `in_full`, their input buffer holds an image); then per pass: constants
    into `cfg`, one-cycle `go[kind]`, wait for `finished[kind]`. A pass that writes the next
    stage's input buffer first waits until `out_full` is low (the next stage has read the image
    before). `took` pulses as the pass reading the input buffer finishes, `filled` as the pass
    writing the output buffer does; `done` as the stage's last pass does. `dst` is `none` (no
    buffer, the logits memory included) while no pass runs. With adds (Schedule.adds), `skip` and
    `skip_signed` name the pass's skip buffer (`none`: no add) and its signedness."""

    def __init__(self, sched: Schedule, layouts: dict[str, data.StructLayout], stage: int):
        self.sched, self.stage = sched, stage
        self.passes = sched.stages[stage]
        engines = sorted({p.kind for p in self.passes}, key=sched.engines.index)
        self.layouts = {k: v for k, v in layouts.items() if k in engines}
        self.engines = engines
        nlayers = len(sched.plan.layers)
        self.none = len(sched.buffer_depths)
        super().__init__({
            "start": In(1),
            "in_full": In(1),
            "out_full": In(1),
            "busy": Out(1),
            "done": Out(1),
            "took": Out(1),
            "filled": Out(1),
            "go": Out(data.StructLayout({e: 1 for e in engines})),
            "finished": In(data.StructLayout({e: 1 for e in engines})),
            "cfg": Out(data.StructLayout(self.layouts)),
            "kind": Out(data.StructLayout({e: 1 for e in engines})),  # one-hot: the running engine
            "src": Out(range(max(1, self.none))),
            "dst": Out(range(self.none + 1)),
            "in_signed": Out(1),
            "layer": Out(range(nlayers + 1)),
            **({"skip": Out(range(self.none + 1)), "skip_signed": Out(1)} if sched.adds else {}),
        })

    def elaborate(self, platform):
        m = Module()
        passes, handoffs = self.passes, self.sched.handoffs
        for e in self.engines:
            m.d.sync += self.go[e].eq(0)
        dst = Signal(range(self.none + 1), init=self.none)
        m.d.comb += self.dst.eq(dst)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start if self.stage == 0 else self.in_full):
                    m.next = "P0"
            for i, p in enumerate(passes):
                feeds = handoffs.get(p.dst, (None,))[0] == self.stage
                with m.State(f"P{i}"):
                    m.d.comb += self.busy.eq(1)
                    with m.If(~self.out_full if feeds else 1):
                        m.d.sync += [self.go[p.kind].eq(1), self.src.eq(max(p.src, 0)),
                                     dst.eq(self.none if p.dst < 0 else p.dst),
                                     self.in_signed.eq(p.in_signed), self.layer.eq(max(p.layer, 0)),
                                     *(self.kind[e].eq(e == p.kind) for e in self.engines)]
                        if p.kind in self.layouts:
                            m.d.sync += self.cfg[p.kind].eq(self.layouts[p.kind].const(p.cfg))
                        if self.sched.adds:
                            m.d.sync += [self.skip.eq(self.none if p.skip < 0 else p.skip), self.skip_signed.eq(p.skip_signed)]
                        m.next = f"R{i}"
                with m.State(f"R{i}"):
                    m.d.comb += self.busy.eq(1)
                    with m.If(self.finished[p.kind]):
                        m.d.sync += dst.eq(self.none)
                        if i == 0 and self.stage > 0:
                            m.d.comb += self.took.eq(1)
                        if feeds:
                            m.d.comb += self.filled.eq(1)
                        if i + 1 < len(passes):
                            m.next = f"P{i + 1}"
                        else:
                            m.d.comb += self.done.eq(1)
                            m.next = "IDLE"
        return m


__all__ = ["Sequencer"]
