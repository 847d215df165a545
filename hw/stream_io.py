"""The accelerator's two streams: pixels in (HWC, as images travel) and logits out.

The pixel stream carries bytes: each input integer (the plan's input type, at most 8 bits, signed
or not) as its 8-bit two's complement (`pixel_bytes`). PixelLoader writes each into the first
activation buffer at its (C, H, W) address, sign-extended for a signed input, so the layers see
channel-major tensors. LogitEmitter owns the small logits memory the last layer
writes its raw accumulators into, and sends them as signed 32-bit transfers, class 0 first.
LoadUnit and EmitUnit are their engine units (hw.engines): the first pass and the last.
"""

from __future__ import annotations

import numpy as np
from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from export.plan import IntType
from hw.engines import EngineSignature, EngineUnit

PIXEL_BITS = 8  # one pixel-stream transfer


def pixel_bytes(images: np.ndarray, input_type: IntType) -> np.ndarray:
    """uint8 transfers of integer inputs (any leading dims): each value's 8-bit two's complement.
    Values outside `input_type`'s range are refused (ValueError naming the range)."""
    x = np.asarray(images)
    if x.size and (x.min() < input_type.min or x.max() > input_type.max):
        raise ValueError(f"input values span {int(x.min())}..{int(x.max())}, the model's {input_type.bits}-bit "
                         f"{'signed' if input_type.signed else 'unsigned'} input takes {input_type.min}..{input_type.max}")
    return (x.astype(np.int64) & 0xFF).astype(np.uint8)


class PixelLoader(wiring.Component):
    """After `start`, accepts exactly C*H*W pixels (order H, W, C) and writes them in (C, H, W)
    order, each byte sign-extended when `signed`; `done` one cycle after the last write."""

    LATENCY = 2  # the last pixel accepted -> `done`: the write register, then `done`

    def __init__(self, shape: tuple[int, int, int], cols: int, addr_width: int, act_width: int, signed: bool = False):
        if act_width < PIXEL_BITS:
            raise ValueError(f"act_width {act_width}: the buffer must hold a {PIXEL_BITS}-bit pixel")
        self.shape, self.addr_width, self.signed = tuple(shape), addr_width, signed
        super().__init__(EngineSignature(addr_width, cols=cols, act_width=act_width, writes=True,
                                         pixels=In(stream.Signature(unsigned(PIXEL_BITS)))))

    def elaborate(self, platform):
        m = Module()
        c, h, w = self.shape
        active, ch = Signal(), Signal(range(c))
        pix, addr = Signal(self.addr_width), Signal(self.addr_width)
        m.d.comb += self.pixels.ready.eq(active)
        m.d.sync += self.wr.valid.eq(0)
        with m.If(self.start):
            m.d.sync += [active.eq(1), ch.eq(0), pix.eq(0), addr.eq(0)]
        with m.Elif(self.pixels.valid & active):
            m.d.sync += [self.wr.valid.eq(1), self.wr.addr.eq(addr), self.wr.count.eq(1),
                         self.wr.data[0].eq(self.pixels.payload.as_signed() if self.signed else self.pixels.payload)]
            with m.If(ch != c - 1):
                m.d.sync += [ch.eq(ch + 1), addr.eq(addr + h * w)]
            with m.Else():
                m.d.sync += [ch.eq(0), pix.eq(pix + 1), addr.eq(pix + 1)]
                with m.If(pix == h * w - 1):
                    m.d.sync += active.eq(0)
        running = Signal()
        with m.If(self.start):
            m.d.sync += running.eq(1)
        with m.Elif(running & ~active & ~self.wr.valid):
            m.d.sync += running.eq(0)
            m.d.comb += self.done.eq(1)
        return m


class LogitEmitter(wiring.Component):
    """Stores `count` raw accumulators written through `logit`; after `start` sends them on
    `logits` (two cycles per transfer, waiting on ready); `done` as the last one is accepted."""

    LATENCY = 0  # the last transfer accepted -> `done`: the same cycle

    def __init__(self, count: int, acc_width: int, addr_width: int):
        if not 1 <= acc_width <= 32:
            raise ValueError(f"logits must fit 32 bits, the accumulator needs {acc_width}")
        self.count, self.acc_width = count, acc_width
        super().__init__(EngineSignature(addr_width, acc_width=acc_width, logit=In,
                                         logits=Out(stream.Signature(signed(32)))))

    def elaborate(self, platform):
        m = Module()
        mem = m.submodules.mem = Memory(shape=unsigned(self.acc_width), depth=self.count, init=[])
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [wp.en.eq(self.logit.valid), wp.addr.eq(self.logit.addr), wp.data.eq(self.logit.data)]
        i = Signal(range(self.count))
        m.d.comb += [rp.addr.eq(i), self.logits.payload.eq(rp.data.as_signed())]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += i.eq(0)
                    m.next = "READ"
            with m.State("READ"):
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += self.logits.valid.eq(1)
                with m.If(self.logits.ready):
                    with m.If(i == self.count - 1):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += i.eq(i + 1)
                        m.next = "READ"
        return m


class LoadUnit(EngineUnit):
    """The image load: one pixel per cycle, the stream without gaps."""

    kind = "load"

    def latency(self, s) -> int:
        return PixelLoader.LATENCY

    def issue_cycles(self, p, s) -> int:
        c, h, w = s.plan.input_shape
        return c * h * w

    def write_elements(self, s) -> int:
        return 1  # a pixel per write

    def build(self, s) -> PixelLoader:
        return PixelLoader(s.plan.input_shape, s.config.cols, s.addr_width, s.act_width, s.plan.input_type.signed)


class EmitUnit(EngineUnit):
    """The logits out: two cycles per transfer, the stream always ready."""

    kind = "emit"

    def latency(self, s) -> int:
        return LogitEmitter.LATENCY

    def issue_cycles(self, p, s) -> int:
        return 2 * s.num_classes

    def build(self, s) -> LogitEmitter:
        return LogitEmitter(s.num_classes, s.acc_width, s.addr_width)
