"""Test fixtures for sim/: a tiny stand-in design with the accelerator's port shape.

`PixelSums` is NOT the accelerator. It exists so the runner and the testbench can be checked on
a design that builds in seconds: it takes one image over the pixel stream (HWC order), writes
every pixel to a traced "activation buffer" at its (C, H, W) address as layer 0, idles for
`compute_cycles` (the stand-in for the accelerator's compute phase), then emits
`num_classes` signed logits, logit k = sum(p - 128 for the HWC stream positions i with
i % num_classes == k), pulses done and latches the start-to-done cycle count. Two stages do it:
the load (start, pixels, sums) hands its sums to the back (compute, logits, done). With
`pipelined`, `busy` covers the load only, so the next image loads while the back works on the
last, and the back traces each logit as layer 1 on a second trace port, `trace1`; without, `busy`
is high from start to done.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.back import verilog
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


class PixelSums(wiring.Component):
    def __init__(self, shape: tuple[int, int, int], num_classes: int, compute_cycles: int, pipelined: bool = False):
        if compute_cycles < 1:
            raise ValueError(f"compute_cycles must be at least 1, got {compute_cycles}")
        self.shape, self.num_classes, self.compute_cycles, self.pipelined = shape, num_classes, compute_cycles, pipelined
        c, h, w = shape
        ports = {
            "pixels": In(stream.Signature(unsigned(8))),
            "logits": Out(stream.Signature(signed(32))),
            "start": In(1), "busy": Out(1), "done": Out(1), "cycles": Out(32),
            "trace": Out(wiring.Signature({
                "valid": Out(1), "layer": Out(4), "addr": Out(range(c * h * w)), "data": Out(8)})),
        }
        if pipelined:
            ports["trace1"] = Out(wiring.Signature({
                "valid": Out(1), "layer": Out(4), "addr": Out(range(num_classes)), "count": Out(1), "data": Out(32)}))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        c, h, w = self.shape
        n, k = c * h * w, self.num_classes
        count = Signal(range(n + 1))
        ch, y, x = Signal(range(c)), Signal(range(h)), Signal(range(w))
        sums = [Signal(signed(32), name=f"sum{i}") for i in range(k)]
        held = [Signal(signed(32), name=f"held{i}") for i in range(k)]  # the back's copy
        lane = Signal(range(k))
        wait = Signal(range(self.compute_cycles))
        out_idx = Signal(range(k + 1))
        now, stamp, held_stamp = Signal(32), Signal(32), Signal(32)
        load_busy, back_idle, hand = Signal(), Signal(), Signal()

        m.d.sync += now.eq(now + 1)
        m.d.comb += self.busy.eq(load_busy if self.pipelined else load_busy | ~back_idle)
        with m.FSM(name="load"):
            with m.State("IDLE"):
                with m.If(self.start & ~self.busy):
                    m.d.sync += [count.eq(0), ch.eq(0), y.eq(0), x.eq(0), lane.eq(0), stamp.eq(now)]
                    m.d.sync += [s.eq(0) for s in sums]
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += [load_busy.eq(1), self.pixels.ready.eq(1)]
                with m.If(self.pixels.valid):
                    m.d.comb += [self.trace.valid.eq(1), self.trace.layer.eq(0),
                                 self.trace.addr.eq((ch * h + y) * w + x), self.trace.data.eq(self.pixels.payload)]
                    for i, s in enumerate(sums):
                        with m.If(lane == i):
                            m.d.sync += s.eq(s + self.pixels.payload - 128)
                    m.d.sync += [count.eq(count + 1), lane.eq(Mux(lane + 1 == k, 0, lane + 1))]
                    m.d.sync += ch.eq(Mux(ch == c - 1, 0, ch + 1))
                    with m.If(ch == c - 1):
                        m.d.sync += x.eq(Mux(x == w - 1, 0, x + 1))
                        with m.If(x == w - 1):
                            m.d.sync += y.eq(y + 1)
                    with m.If(count == n - 1):
                        m.next = "HAND"
            with m.State("HAND"):  # the sums wait here until the back is free
                m.d.comb += load_busy.eq(1)
                with m.If(back_idle):
                    m.d.comb += hand.eq(1)
                    m.d.sync += [d.eq(s) for d, s in zip(held, sums)]
                    m.d.sync += [held_stamp.eq(stamp), wait.eq(self.compute_cycles - 1), out_idx.eq(0)]
                    m.next = "IDLE"
        with m.FSM(name="back"):
            with m.State("IDLE"):
                m.d.comb += back_idle.eq(1)
                with m.If(hand):
                    m.next = "COMPUTE"
            with m.State("COMPUTE"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.next = "EMIT"
            with m.State("EMIT"):
                m.d.comb += self.logits.valid.eq(1)
                for i, s in enumerate(held):
                    with m.If(out_idx == i):
                        m.d.comb += self.logits.payload.eq(s)
                with m.If(self.logits.ready):
                    if self.pipelined:
                        m.d.comb += [self.trace1.valid.eq(1), self.trace1.layer.eq(1), self.trace1.addr.eq(out_idx),
                                     self.trace1.count.eq(1), self.trace1.data.eq(self.logits.payload)]
                    m.d.sync += out_idx.eq(out_idx + 1)
                    with m.If(out_idx == k - 1):
                        m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.d.sync += self.cycles.eq(now - held_stamp)
                m.next = "IDLE"
        return m


def pixel_sums_expected(image_chw: np.ndarray, num_classes: int) -> np.ndarray:
    """What `PixelSums` must output for one (C, H, W) uint8 image."""
    hwc = image_chw.transpose(1, 2, 0).reshape(-1).astype(np.int64) - 128
    return np.array([hwc[k::num_classes].sum() for k in range(num_classes)], dtype=np.int64)


def write_pixel_sums(out_dir: Path, shape=(3, 8, 8), num_classes: int = 5, compute_cycles: int = 1000,
                     pipelined: bool = False) -> Path:
    """Verilog of the fixture as module `accelerator` in `out_dir/accelerator.v`, its inventory
    beside it (as hw.top.generate writes them)."""
    from hw.inventory import INVENTORY_FILE, inventory
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "accelerator.v"
    path.write_text(verilog.convert(PixelSums(shape, num_classes, compute_cycles, pipelined), name="accelerator", emit_src=False))
    (out_dir / INVENTORY_FILE).write_text(inventory(PixelSums(shape, num_classes, compute_cycles, pipelined)).to_json())
    return path


def drawn(strategy, seed: int, skip: int = 6):
    """A fixed example of a hypothesis strategy: the `skip`-th one drawn under `seed` (the first
    examples Hypothesis generates are the minimal ones, too small to exercise the hardware)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as with_seed
    seen = []

    @with_seed(seed)
    @settings(max_examples=skip + 1, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(x):
        seen.append(x)

    collect()
    return seen[-1]
