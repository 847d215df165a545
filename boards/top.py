"""The board top: the accelerator behind a UART host link, with LEDs for busy and the class.

Protocol (8N1, 115200 baud by default): the host sends MAGIC, then the image's H*W*3 bytes in
HWC order. The board answers with `num_classes` logits, each an int32 little-endian, class 0
first, then one byte: the index of the largest logit (the first one on a tie, as numpy.argmax).
There is no timeout: after a partial image the board waits for the rest (reset it to resync).
"""

from amaranth.build import Attrs, ResourceError
from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal, signed, unsigned
from amaranth.lib import fifo, io, wiring
from amaranth.lib.wiring import In, Out
from amaranth_boards.resources import UARTResource

from boards.clock import CoreClock
from boards.uart import UARTRx, UARTTx, bit_period

MAGIC = 0xA5
DEFAULT_BAUD = 115_200
LOGIT_BYTES = 4


class HostLink(wiring.Component):
    """Feeds UART bytes to the accelerator's pixel stream and sends its logits and class back.

    `accel` is a component with `pixels` (in, 8-bit stream), `logits` (out, signed 32-bit
    stream), `start`, `busy` and `done`. The link has no flow control: a small FIFO absorbs the
    accelerator's pauses, and `error` reports a byte lost to overrun or a framing error.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    klass: Out(8)
    error: Out(1)

    def __init__(self, accel: wiring.Component, n_pixels: int, num_classes: int, period: int,
                 fifo_depth: int = 16):
        if n_pixels < 1 or not 1 <= num_classes <= 256:
            raise ValueError(f"need n_pixels >= 1 and 1 <= num_classes <= 256, got {n_pixels}, {num_classes}")
        self.accel = accel
        self.n_pixels = n_pixels
        self.num_classes = num_classes
        self.period = period
        self.fifo_depth = fifo_depth
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = accel = self.accel
        m.submodules.urx = urx = UARTRx(self.period)
        m.submodules.utx = utx = UARTTx(self.period)
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=8, depth=self.fifo_depth)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx),
                     self.error.eq(urx.overrun | urx.frame_error)]
        wiring.connect(m, buf.r_stream, accel.pixels)

        received = Signal(range(self.n_pixels + 1))
        count = Signal(range(self.num_classes + 1))
        word = Signal(signed(32))
        byte = Signal(range(LOGIT_BYTES))
        best = Signal(signed(32))
        best_idx = Signal(unsigned(8))

        with m.FSM() as fsm:
            with m.State("magic"):
                m.d.comb += urx.data.ready.eq(1)
                with m.If(urx.data.valid & (urx.data.payload == MAGIC)):
                    m.d.comb += accel.start.eq(1)
                    m.d.sync += [received.eq(0), count.eq(0)]
                    m.next = "pixels"
            with m.State("pixels"):
                m.d.comb += [buf.w_stream.payload.eq(urx.data.payload),
                             buf.w_stream.valid.eq(urx.data.valid),
                             urx.data.ready.eq(buf.w_stream.ready)]
                with m.If(urx.data.valid & buf.w_stream.ready):
                    m.d.sync += received.eq(received + 1)
                    with m.If(received == self.n_pixels - 1):
                        m.next = "logit"
            with m.State("logit"):
                m.d.comb += accel.logits.ready.eq(1)
                with m.If(accel.logits.valid):
                    m.d.sync += [word.eq(accel.logits.payload), byte.eq(0)]
                    with m.If((count == 0) | (accel.logits.payload > best)):
                        m.d.sync += [best.eq(accel.logits.payload), best_idx.eq(count)]
                    m.next = "send"
            with m.State("send"):
                m.d.comb += [utx.data.valid.eq(1), utx.data.payload.eq(word.as_unsigned().word_select(byte, 8))]
                with m.If(utx.data.ready):
                    m.d.sync += byte.eq(byte + 1)
                    with m.If(byte == LOGIT_BYTES - 1):
                        m.d.sync += count.eq(count + 1)
                        with m.If(count != self.num_classes - 1):
                            m.next = "logit"
                        with m.Else():
                            m.next = "class"
            with m.State("class"):
                m.d.comb += [utx.data.valid.eq(1), utx.data.payload.eq(best_idx)]
                with m.If(utx.data.ready):
                    m.d.sync += self.klass.eq(best_idx)
                    m.next = "magic"
        m.d.comb += self.busy.eq(accel.busy | ~fsm.ongoing("magic"))
        return m


class BoardTop(Elaboratable):
    """The HostLink on a board: its UART pins, LEDs (busy on the first, the class on the rest),
    and the core clock (an ECP5 PLL when `clock_mhz` differs from the board's oscillator)."""

    def __init__(self, accel: wiring.Component, n_pixels: int, num_classes: int,
                 baud: int = DEFAULT_BAUD, clock_mhz: float | None = None):
        self.accel = accel
        self.n_pixels = n_pixels
        self.num_classes = num_classes
        self.baud = baud
        self.clock_mhz = clock_mhz  # None: the board's oscillator

    def elaborate(self, platform):
        m = Module()
        clk_hz = platform.default_clk_frequency
        if self.clock_mhz and abs(self.clock_mhz * 1e6 - clk_hz) >= 1:
            m.domains.sync = ClockDomain("sync")
            m.submodules.clock = CoreClock(self.clock_mhz)
            clk_hz = self.clock_mhz * 1e6
        period = bit_period(clk_hz, self.baud)
        m.submodules.link = link = HostLink(self.accel, self.n_pixels, self.num_classes, period)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [link.rx.eq(rx.i), tx.o.eq(link.tx)]
        for i, (port, bit) in enumerate(zip(_request_leds(platform), [link.busy, *link.klass])):
            m.submodules[f"led{i}"] = led = io.Buffer("o", port)
            m.d.comb += led.o.eq(bit)
        return m


def _request_leds(platform) -> list:
    """Every plain LED port the board has, else the channels of its RGB LED."""
    leds = []
    while True:
        try:
            leds.append(platform.request("led", len(leds), dir="-"))
        except ResourceError:
            break
    if not leds:
        try:
            rgb = platform.request("rgb_led", 0, dir="-")
            leds = [rgb.r, rgb.g, rgb.b]
        except ResourceError:
            pass
    return leds


def add_board_resources(platform) -> None:
    """Resources the host link needs that a board's amaranth-boards platform lacks.

    OrangeCrab r0.2 has no UART on its USB port; the link uses Feather pins 0 (RX) and 1 (TX)
    through a 3.3 V USB-serial adapter.
    """
    try:
        platform.lookup("uart", 0)
    except ResourceError:
        if "orangecrab" not in type(platform).__module__:
            raise ValueError(f"{type(platform).__name__} has no UART resource for the host link")
        platform.add_resources([UARTResource(0, rx="0", tx="1", conn=("io", 0),
                                             attrs=Attrs(IO_TYPE="LVCMOS33"))])


__all__ = ["BoardTop", "DEFAULT_BAUD", "HostLink", "LOGIT_BYTES", "MAGIC", "add_board_resources"]
