"""On-chip memories: the banked ping-pong activation buffer and the write bus that feeds it.

An activation tensor is stored flat in (C, H, W) order. The buffer is split into `banks` (the
power of two >= cols) single-port-pair memories; element `a` lives in bank `a % banks` at row
`a // banks`. Any `cols` consecutive elements then sit in distinct banks, so one cycle reads or
writes a whole vector through a rotator, and all address arithmetic stays binary.
"""

from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

READ_LATENCY = 6  # raddr -> rdata: raddr and then each bank's address registered, the block RAM,
# a register on each block's output, one after the bank's piece mux, one after the rotator
ROM_LATENCY = 4  # rom(): addr -> data: the block RAM, three registers on each block's output
QUIET_LATENCY = 2  # quiet(): the pipeline's last activity -> quiet


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


def delay_line(m: Module, value, cycles: int, name: str, *, reset_less: bool = False) -> list[Signal]:
    """`value` registered 1..`cycles` times: the tags (valid, address, ...) that travel beside a
    pipeline (memory reads, the requantizer) to meet its output; entry i is i+1 cycles late.
    Pure data lines pass `reset_less=True`: thousands of datapath registers on the reset net
    crowd the routing, and their configuration-time 0 is all they need."""
    stages, prev = [], value
    for i in range(cycles):
        reg = Signal.like(value, name=f"{name}_{i + 1}", reset_less=reset_less)
        m.d.sync += reg.eq(prev)
        stages.append(reg)
        prev = reg
    return stages


def delayed(m: Module, value, cycles: int, name: str, *, reset_less: bool = False):
    """`value` registered `cycles` times (0: `value` itself); the last entry of delay_line."""
    return value if cycles == 0 else delay_line(m, value, cycles, name, reset_less=reset_less)[-1]


def quiet(m: Module, start, activity: list, group: int = 16) -> Signal:
    """1 when none of `activity` (the engine's busy flags and pipeline valids) was set
    QUIET_LATENCY cycles ago; 0 for QUIET_LATENCY cycles after `start`.

    An engine is done when its pipeline is empty, but its valid bits sit all over the chip; one
    OR of them straight into the sequencer's state was a 15 ns path (13 ns of routing). Here the
    OR is taken in registered groups of `group`, then once more into a register. Since nothing
    enters an idle pipeline without `start`, a two-cycle-old 'nothing in flight' still holds."""
    bits = Cat(*activity)
    groups = [Signal(name=f"busy_group{i}") for i in range(-(-len(bits) // group))]
    q = Signal()
    m.d.sync += [*(g.eq(bits[i * group:(i + 1) * group].any()) for i, g in enumerate(groups)), q.eq(~Cat(*groups).any())]
    with m.If(start):
        m.d.sync += [*(g.eq(1) for g in groups), q.eq(0)]
    return q


def done_when_quiet(m: Module, start, done, activity: list) -> None:
    """An engine's `done`: one cycle, the first time after `start` that `quiet` finds none of
    `activity` set."""
    running = Signal()
    idle = quiet(m, start, activity)
    with m.If(start):
        m.d.sync += running.eq(1)
    with m.Elif(running & idle):
        m.d.sync += running.eq(0)
        m.d.comb += done.eq(1)


ECP5_BLOCK_SHAPES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))  # DP16KD (width, depth)


def block_depth(width: int) -> int:
    """Words of `width` bits in one ECP5 block RAM (DP16KD, 16 Kbit: 16K x 1 ... 512 x 36); a
    wider word takes several blocks side by side. The iCE40's 4 Kbit blocks divide these depths."""
    return next((depth for bits, depth in ECP5_BLOCK_SHAPES if width <= bits), ECP5_BLOCK_SHAPES[-1][1])


def rom_depth(words: int, width: int) -> int:
    """Words per piece of a rom(): the depth of the ECP5 block shape (16K x 1 ... 512 x 36) that
    stores `words` x `width` in the fewest block RAMs, the shallower of equals. Deep, narrow blocks
    side by side give a wide ROM fewer pieces, so fewer registers converge on its output mux.
    rom() pads every piece to this depth: a shorter last piece gave yosys a cheaper arrangement
    two blocks deep, with a mux between the blocks and their output register; on a tie, the
    shallower shape leaves it no deeper arrangement at the same cost."""
    return min(ECP5_BLOCK_SHAPES, key=lambda s: (-(-width // s[0]) * -(-words // s[1]), s[1]))[1]


def pieces_of(words: int, width: int, depth: int | None = None) -> tuple[int, int, int]:
    """How rom() and the activation banks split `words` x `width` by hand: (words per block-deep
    piece, number of pieces, address bits within a piece); `depth` defaults to block_depth(width)."""
    depth = depth or block_depth(width)
    return depth, -(-words // depth), (depth - 1).bit_length()


def rom(m: Module, name: str, width: int, init: list[int], addr) -> Signal:
    """A plan-initialised read-only memory, `data` valid ROM_LATENCY cycles after `addr`.

    Split by hand into pieces of rom_depth() words (the last one padded), each with three
    registers on its output, then a mux on the registered piece number. A deep memory left to
    yosys puts its whole output mux between the block RAM's slow clock-to-out and the next
    register; with a chain of registers the first can sit beside its block and the others share
    the trip to the mux. Returns the mux output (combinational from registers); the pieces are
    submodules `name`, or `name0`, `name1`, ... (docs/boards.md says why.)"""
    init = list(init) or [0]
    depth, pieces, lb = pieces_of(len(init), width, rom_depth(len(init), width))
    outs = []
    for i in range(pieces):
        words = init[i * depth:(i + 1) * depth]
        if pieces > 1:
            words += [0] * (depth - len(words))  # every piece one block shape deep (rom_depth)
        mem = m.submodules[name if pieces == 1 else f"{name}{i}"] = Memory(shape=unsigned(width), depth=len(words), init=words)
        port = mem.read_port()
        m.d.comb += port.addr.eq(addr[:lb])
        held = delayed(m, port.data, ROM_LATENCY - 1, f"{name}{i}_q", reset_less=True)
        outs.append(held)
    if pieces == 1:
        return outs[0]
    piece = Signal(range(pieces), name=f"{name}_piece")
    m.d.sync += piece.eq(addr[lb:])
    return Array(outs)[delayed(m, piece, ROM_LATENCY - 1, f"{name}_piece_q")]


class ActivationBuffer(wiring.Component):
    """`depth` elements of `width` bits in `banks_for(cols)` banks; one vector read or one
    vector write per cycle.

    `rdata[c]` is the element at `raddr + c`, READ_LATENCY cycles after `raddr` (the block RAM's
    slow clock-to-out ends at a register; the rotator that undoes the bank interleave ends at
    another, so the engines see registered data). A write stores `wr.data[i]` at `wr.addr + i`
    for `i < wr.count`, one cycle later (the banks' write ports are fed from registers).

    A buffer is either read or written during a pass (ping-pong), so each bank has one address:
    the write bus's while `writing` (raised at least one cycle before the first write arrives on
    `wr`; reads then return nothing meaningful), the read bus's otherwise. Each bank piece is then one
    read-write port, which a block RAM takes as it is; with separate read and write addresses
    yosys put collision logic between the ECP5 block's output and its register (10.2 ns), and
    single-ported banks are also what iCE40 SPRAM can hold.

    Narrow ports, for buffers whose engines need no more: `write_cols` 1 (every write is one
    element: the image load, the sparse engine) drops the write crossbar, each bank taking
    `wr.data[0]`; `read_aligned` n (every read is at a multiple of n, a power of two <= the banks:
    the sparse engine's copy) returns rdata[0:n] through an n-way rotator instead of `cols`
    `banks`-way ones (rdata[n:] is 0). The 16-bank crossbars were a quarter of the simulator's work.

    Strided reads, for buffers a strided conv reads (`max_stride` > 1): `rstride_m1` = s - 1
    makes rdata[c] the element at raddr + c * s, for the columns c with c * s < banks (the others
    return what the banks hold); the banks' addresses are those of a stride-1 read, only each
    column's rotator select moves (hw.window.strided_cols). The stride holds for a pass.
    """

    def __init__(self, cols: int, depth: int, width: int, addr_width: int, *, write_cols: int | None = None,
                 read_aligned: int | None = None, max_stride: int = 1):
        if not 1 <= cols <= 16:
            raise ValueError(f"cols must be 1..16, got {cols}")
        self.cols, self.width, self.banks = cols, width, banks_for(cols)
        self.write_cols = cols if write_cols is None else write_cols
        if self.write_cols not in (1, cols):
            raise ValueError(f"write_cols must be 1 or cols ({cols}), got {write_cols}")
        if read_aligned is not None and not (read_aligned & (read_aligned - 1) == 0 and 1 <= read_aligned <= min(cols, self.banks)):
            raise ValueError(f"read_aligned must be a power of two <= {cols}, got {read_aligned}")
        self.read_aligned = read_aligned
        if not 1 <= max_stride <= 16 or (max_stride > 1 and read_aligned is not None):
            raise ValueError(f"max_stride must be 1..16, and 1 with aligned reads; got {max_stride}")
        self.max_stride = max_stride
        self.rows = buffer_rows(depth, cols)
        if addr_width < (self.rows * self.banks - 1).bit_length():
            raise ValueError(f"addr_width {addr_width} cannot address {self.rows * self.banks} elements")
        super().__init__({
            "raddr": In(addr_width),
            "rdata": Out(data.ArrayLayout(unsigned(width), cols)),
            "wr": In(write_layout(addr_width, cols, width)),
            "writing": In(1),
            **({"rstride_m1": In(range(max_stride))} if max_stride > 1 else {}),
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
        # beside the banks' data: each column's rotator select in its own register (one shared
        # phase register drove every rotator mux: ~400 loads, 14 ns of routing on the ECP5)
        sel = []
        if lb and self.read_aligned is None:
            rphase_3 = delayed(m, rphase, 3, "rphase")
            for c in range(self.cols):
                sel.append(Signal(lb, name=f"rsel{c}"))
                off = c
                if self.max_stride > 1:  # column c's offset c * stride, a register (the stride holds for a pass)
                    off = Signal(lb, name=f"roff{c}")
                    m.d.sync += off.eq(Array((c * s) % self.banks for s in range(1, self.max_stride + 1))[self.rstride_m1])
                m.d.sync += sel[c].eq(rphase_3 + off)
        outs = []
        wdata = Array(self.wr.data[c] for c in range(self.cols))
        # Each bank is split by hand into block-deep pieces, each piece's output registered with
        # no logic in between: left to yosys, a bank deeper than one block RAM had its piece mux
        # between the block's 5.8 ns clock-to-out and the register (10.7 ns on the ECP5).
        depth, pieces, pb = pieces_of(self.rows, self.width)
        for b in range(self.banks):
            # bank b holds the element of the vector at column (b - phase) mod banks
            ra = Signal(range(self.rows), name=f"raddr{b}", reset_less=True)
            m.d.sync += ra.eq(rrow + (b < rphase))
            col = Signal(range(self.banks), name=f"wcol{b}")
            m.d.comb += col.eq((b - wphase)[:lb] if lb else 0)
            wa, wd, we = (Signal.like(ra, name=f"waddr{b}"),
                          Signal(self.width, name=f"wdata{b}", reset_less=True), Signal(name=f"wen{b}"))
            if self.write_cols == 1:  # one element per write: bank b takes it when the address is in b
                m.d.sync += [wa.eq(wrow), wd.eq(self.wr.data[0]), we.eq(self.wr.valid & (wphase == b) & (self.wr.count != 0))]
            else:
                m.d.sync += [wa.eq(wrow + (b < wphase)), wd.eq(wdata[col]), we.eq(self.wr.valid & (col < self.wr.count))]
            writing = Signal(name=f"writing{b}")  # one copy per bank: it drives the bank's address mux
            addr = Signal.like(ra, name=f"addr{b}")
            m.d.sync += writing.eq(self.writing)
            m.d.comb += addr.eq(Mux(writing, wa, ra))
            held = []
            for i in range(pieces):
                n = min(depth, self.rows - i * depth)
                mem = m.submodules[f"bank{b}" if pieces == 1 else f"bank{b}_{i}"] = Memory(
                    shape=unsigned(self.width), depth=n, init=[])
                rd, wp = mem.read_port(), mem.write_port()
                m.d.comb += [rd.addr.eq(addr[:pb]), wp.addr.eq(addr[:pb]), wp.data.eq(wd),
                             wp.en.eq(we & (wa[pb:] == i) if pieces > 1 else we)]
                q = Signal(self.width, name=f"bank{b}_{i}_q", reset_less=True)
                m.d.sync += q.eq(rd.data)  # on an ECP5, the block's own output register (boards.netlist)
                held.append(q)
            piece = delayed(m, ra[pb:], 2, f"rpiece{b}") if pieces > 1 else 0
            out = Signal(self.width, name=f"rdata{b}", reset_less=True)
            m.d.sync += out.eq(Array(held)[piece] if pieces > 1 else held[0])
            outs.append(out)
        if self.read_aligned is not None and lb:
            # element c of an aligned read sits in bank phase + c, phase a multiple of n: an n-way choice
            n = self.read_aligned
            k = (n - 1).bit_length()
            group = delayed(m, rphase[k:], 4, "rgroup") if lb > k else 0
            for c in range(n):
                choices = [outs[g * n + c] for g in range(self.banks // n)]
                m.d.sync += self.rdata[c].eq(Array(choices)[group] if len(choices) > 1 else choices[0])
            return m
        rdata = Array(outs)
        for c in range(self.cols):
            m.d.sync += self.rdata[c].eq(rdata[sel[c]] if lb else outs[0])
        return m
