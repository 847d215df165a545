"""An 8N1 UART: a receiver and a transmitter with byte streams, for the board's host link."""

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from boards.errors import BoardError


class BaudError(BoardError, ValueError):
    """A baud rate the clock cannot make."""


def bit_period(clk_hz: float, baud: int) -> int:
    """Clock cycles per UART bit; refuses a baud rate the clock cannot sample."""
    if baud <= 0:
        raise BaudError(f"baud rate must be positive, got {baud}")
    period = round(clk_hz / baud)
    if period < 4:
        raise BaudError(f"a {clk_hz / 1e6:g} MHz clock cannot run a UART at {baud} baud "
                         f"(needs at least 4 clocks per bit); lower --baud")
    if abs(clk_hz / period - baud) / baud > 0.02:
        raise BaudError(f"{baud} baud from a {clk_hz / 1e6:g} MHz clock is off by more than 2%; "
                         f"pick a baud rate near {clk_hz / period:.0f}")
    return period


class UARTRx(wiring.Component):
    """Receives 8N1 frames on `rx`; each byte is offered once on `data`.

    The line has no flow control, so a byte the consumer has not taken when the next one arrives
    is overwritten and `overrun` is set (until reset); a bad stop bit sets `frame_error`.
    """

    rx: In(1, init=1)
    data: Out(stream.Signature(unsigned(8)))
    overrun: Out(1)
    frame_error: Out(1)

    def __init__(self, period: int):
        if period < 4:
            raise ValueError(f"UARTRx needs at least 4 clocks per bit, got {period}")
        self.period = period
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(self.period * 3 // 2 + 1))
        bits = Signal(range(9))
        shift = Signal(8)

        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM():
            with m.State("idle"):
                with m.If(~rx):
                    # Wait to the middle of the first data bit: 1.5 bit periods.
                    m.d.sync += [timer.eq(self.period * 3 // 2 - 1), bits.eq(0)]
                    m.next = "data"
            with m.State("data"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shift.eq(Cat(shift[1:], rx)),
                                 bits.eq(bits + 1), timer.eq(self.period - 1)]
                    with m.If(bits == 7):
                        m.next = "stop"
            with m.State("stop"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1)]
                    with m.If(self.data.valid & ~self.data.ready):
                        m.d.sync += self.overrun.eq(1)
                    m.next = "idle"
                with m.Else():
                    m.d.sync += self.frame_error.eq(1)
                    m.next = "break"
            with m.State("break"):
                with m.If(rx):
                    m.next = "idle"
        return m


class UARTTx(wiring.Component):
    """Sends each byte taken from `data` as an 8N1 frame on `tx`."""

    data: In(stream.Signature(unsigned(8)))
    tx: Out(1, init=1)

    def __init__(self, period: int):
        if period < 4:
            raise ValueError(f"UARTTx needs at least 4 clocks per bit, got {period}")
        self.period = period
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.period))
        frame = Signal(10)  # stop bit, 8 data bits LSB first, start bit: shifted out from bit 0
        left = Signal(range(11))

        m.d.comb += self.data.ready.eq((timer == 0) & (left == 0))
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(left != 0):
            m.d.sync += [self.tx.eq(frame[0]), frame.eq(frame >> 1),
                         left.eq(left - 1), timer.eq(self.period - 1)]
        with m.Elif(self.data.valid):
            m.d.sync += [frame.eq(Cat(0, self.data.payload, 1)), left.eq(10)]
        return m


__all__ = ["BaudError", "UARTRx", "UARTTx", "bit_period"]
