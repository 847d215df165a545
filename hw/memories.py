"""On-chip memories: the banked ping-pong activation buffer and the write bus that feeds it.

An activation tensor is stored flat in (C, H, W) order. The buffer is split into `banks` (the
power of two >= cols) single-port-pair memories; element `a` lives in bank `a % banks` at row
`a // banks`. Any `cols` consecutive elements then sit in distinct banks, so one cycle reads or
writes a whole vector through a rotator, and all address arithmetic stays binary.
"""

from __future__ import annotations

from amaranth import Array, Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

READ_LATENCY = 5  # raddr -> rdata: raddr and then each bank's address registered, the block RAM,
# a register on each bank's output, one after the rotator


def banks_for(cols: int) -> int:
    """The power of two >= cols: the number of banks of an activation buffer."""
    return 1 << (cols - 1).bit_length()


def buffer_rows(depth: int, cols: int) -> int:
    """Rows per bank of a buffer holding `depth` elements."""
    return max(1, -(-depth // banks_for(cols)))


def write_layout(addr_width: int, cols: int, width: int) -> data.StructLayout:
    """One vector write: `count` (1..cols) consecutive elements from flat address `addr`."""
    return data.StructLayout({
        "valid": 1,
        "addr": unsigned(addr_width),
        "count": range(cols + 1),
        "data": data.ArrayLayout(unsigned(width), cols),
    })


def logit_layout(addr_width: int, acc_width: int) -> data.StructLayout:
    """One raw accumulator of the last layer, written to the logits memory."""
    return data.StructLayout({"valid": 1, "addr": unsigned(addr_width), "data": unsigned(acc_width)})


def delay_line(m: Module, value, cycles: int, name: str) -> list[Signal]:
    """`value` registered 1..`cycles` times: the tags (valid, address, ...) that travel beside a
    pipeline (memory reads, the requantizer) to meet its output; entry i is i+1 cycles late."""
    stages, prev = [], value
    for i in range(cycles):
        reg = Signal.like(value, name=f"{name}_{i + 1}")
        m.d.sync += reg.eq(prev)
        stages.append(reg)
        prev = reg
    return stages


class ActivationBuffer(wiring.Component):
    """`depth` elements of `width` bits in `banks_for(cols)` banks; one vector read and one
    vector write per cycle.

    `rdata[c]` is the element at `raddr + c`, READ_LATENCY cycles after `raddr` (the block RAM's
    slow clock-to-out ends at a register; the rotator that undoes the bank interleave ends at
    another, so the engines see registered data). A write stores `wr.data[i]` at `wr.addr + i`
    for `i < wr.count`, one cycle later (the banks' write ports are fed from registers).
    """

    def __init__(self, cols: int, depth: int, width: int, addr_width: int):
        if not 1 <= cols <= 16:
            raise ValueError(f"cols must be 1..16, got {cols}")
        self.cols, self.width, self.banks = cols, width, banks_for(cols)
        self.rows = buffer_rows(depth, cols)
        if addr_width < (self.rows * self.banks - 1).bit_length():
            raise ValueError(f"addr_width {addr_width} cannot address {self.rows * self.banks} elements")
        super().__init__({
            "raddr": In(addr_width),
            "rdata": Out(data.ArrayLayout(unsigned(width), cols)),
            "wr": In(write_layout(addr_width, cols, width)),
        })

    def elaborate(self, platform):
        m = Module()
        lb = self.banks.bit_length() - 1
        # reads: the bus address, then each bank's row address, in registers (the read bus and the
        # banks are far apart); writes: each bank's address, data and enable in registers
        raddr = Signal.like(self.raddr)
        m.d.sync += raddr.eq(self.raddr)
        rphase, rrow = raddr[:lb], raddr[lb:]
        wphase, wrow = self.wr.addr[:lb], self.wr.addr[lb:]
        rphase_q = delay_line(m, rphase, 3, "rphase")[-1] if lb else None  # beside the banks' data
        outs = []
        wdata = Array(self.wr.data[c] for c in range(self.cols))
        for b in range(self.banks):
            mem = m.submodules[f"bank{b}"] = Memory(shape=unsigned(self.width), depth=self.rows, init=[])
            rd, wp = mem.read_port(), mem.write_port()
            # bank b holds the element of the vector at column (b - phase) mod banks
            ra = Signal.like(rd.addr, name=f"raddr{b}")
            m.d.sync += ra.eq(rrow + (b < rphase))
            col = Signal(range(self.banks), name=f"wcol{b}")
            m.d.comb += [rd.addr.eq(ra), col.eq((b - wphase)[:lb] if lb else 0)]
            wa, wd, we = Signal.like(wp.addr, name=f"waddr{b}"), Signal.like(wp.data, name=f"wdata{b}"), Signal(name=f"wen{b}")
            m.d.sync += [wa.eq(wrow + (b < wphase)), wd.eq(wdata[col]), we.eq(self.wr.valid & (col < self.wr.count))]
            m.d.comb += [wp.addr.eq(wa), wp.data.eq(wd), wp.en.eq(we)]
            held = Signal(self.width, name=f"rdata{b}")
            m.d.sync += held.eq(rd.data)
            outs.append(held)
        rdata = Array(outs)
        for c in range(self.cols):
            m.d.sync += self.rdata[c].eq(rdata[(rphase_q + c)[:lb]] if lb else outs[0])
        return m
