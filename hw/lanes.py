"""The sparse engine's lanes (hw.sparse): how a P-layer's rows are dealt to them, and one lane.

A lane walks each of its output rows exactly as export.encoding describes: `idx += delta;
acc += value * x[idx]` (padding entries have value 0 and only move idx), then adds the row's bias.
It has its own entries, row ends, rows (bias and output index) and, per channel, shifts, holding
every P-layer's part for that lane one after another (a pass's lane_layout says where), and its
own copy of the input vector, written through `copy` at the start of each pass. Zero weights
cost nothing; a row costs row_wait + 1 cycles beside its entries.
"""

from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np
from amaranth import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.memories import ROM_LATENCY, delay_line, delayed, pieces_of, rom
from hw.pe import ecp5_dsp, mult18x18d
from hw.requant import shift_layout

COPY_SLICE = 18  # bits per memory of a lane's input-vector copy (one ECP5 DP16KD port)
MEMORIES = ("sparse_entries", "sparse_row_end", "sparse_rows", "sparse_shifts")  # each one list per lane


def copy_width(cols: int) -> int:
    """Elements of the input vector copied per cycle: the power of two <= cols."""
    return 1 << (cols.bit_length() - 1)


def row_wait(lanes: int) -> int:
    """Cycles a lane waits at the start of each row: the row end's ROM_LATENCY, and at least
    lanes - 1, so that a lane's sums are `lanes` cycles apart and each meets its output slot
    before the next."""
    return max(ROM_LATENCY, lanes - 1)


def partition(costs: Sequence[int], lanes: int) -> list[list[int]]:
    """Rows (indices into `costs`) per lane, each lane's in ascending order: the longest row
    first onto the least loaded lane (lowest lane on a tie). A lane may get none."""
    heap = [(0, l) for l in range(lanes)]
    parts: list[list[int]] = [[] for _ in range(lanes)]
    for r in sorted(range(len(costs)), key=lambda r: (-costs[r], r)):
        load, l = heapq.heappop(heap)
        parts[l].append(r)
        heapq.heappush(heap, (load + int(costs[r]), l))
    return [sorted(p) for p in parts]


def lane_layout(addr_width: int) -> data.StructLayout:
    """One lane's part of a pass: `live` (it has rows), its rows less one, its first row and first entry."""
    return data.StructLayout({"live": 1, "rows_m1": unsigned(addr_width), "row_base": unsigned(addr_width),
                              "e_base": unsigned(addr_width)})


def sum_layout(addr_width: int, acc_width: int, per_channel: bool) -> data.StructLayout:
    """A row's sum with its bias, its output index and (per channel) its shift constants."""
    return data.StructLayout({"valid": 1, "out": unsigned(addr_width), "acc": signed(acc_width),
                              **({"shift": shift_layout(acc_width)} if per_channel else {})})


def copy_layout(words: int, width: int) -> data.StructLayout:
    """One word of the input vector on its way into the lanes' copies."""
    return data.StructLayout({"valid": 1, "addr": range(max(2, words)), "data": unsigned(width)})


class SparseLane(wiring.Component):
    """One lane: from `go`, walks the rows `cfg` names in its own memories; its copy of the input
    vector is written through `copy` (a word COPY_WRITE cycles after it is on `copy`). `result`
    holds a row's sum (with its bias) from STAGES + 1 cycles after the row's END issue until
    `take`. `active` are its busy and pipeline valid bits."""

    ENTRY_AT = ROM_LATENCY + 1  # the entry register holds the entry in this stage
    COPY_WRITE = 1  # `copy` -> the lane's write registers; the word is readable the cycle after them
    COPY_READ = 3  # the x address register -> the word: the block RAM, a register beside it, the piece mux
    X_AT = ENTRY_AT + 1 + COPY_READ  # the word of x arrives in this stage (the index register, the copy)
    STAGES = X_AT + 2  # x selected from its word, the product, then the sum

    def __init__(self, addr_width: int, act_width: int, acc_width: int, value_bits: int, index_bits: int,
                 wait: int, copy_width: int, copy_words: int, entries: list[int], row_end: list[int],
                 rows: list[int], shifts: list[int] | None = None):
        self.addr_width, self.act_width, self.acc_width = addr_width, act_width, acc_width
        self.value_bits, self.index_bits, self.wait = value_bits, index_bits, wait
        self.copy_width, self.copy_words = copy_width, copy_words
        self.entries, self.row_end, self.rows, self.shifts = entries or [0], row_end or [0], rows or [0], shifts
        self.out_bits = max(1, max(w >> acc_width for w in self.rows).bit_length())
        super().__init__({
            "go": In(1),
            "cfg": In(lane_layout(addr_width)),
            "copy": In(copy_layout(copy_words, copy_width * (act_width + 1))),
            "take": In(1),
            "result": Out(sum_layout(addr_width, acc_width, bool(shifts))),
            "active": Out(self.STAGES + 1),
        })

    def _copy(self, m: Module, xaddr: Signal) -> Signal:
        """This lane's copy of the input vector: the word holding element `xaddr`, COPY_READ
        cycles later. One address per piece: the write's while a word is written, else the read's."""
        k = self.copy_width.bit_length() - 1
        width = self.copy_width * (self.act_width + 1)
        ew = self.act_width + 1
        per = max(1, COPY_SLICE // ew)  # elements per slice
        depth, pieces, pb = pieces_of(self.copy_words, min(width, per * ew))
        wa, wd, we = (Signal.like(self.copy.addr, name="copy_waddr"), Signal(width, name="copy_wdata", reset_less=True),
                      Signal(name="copy_wen"))
        m.d.sync += [wa.eq(self.copy.addr), wd.eq(self.copy.data), we.eq(self.copy.valid)]
        ra = xaddr[k:]
        addr = Signal(max(len(wa), len(ra)), name="copy_addr")
        m.d.comb += addr.eq(Mux(we, wa, ra))
        # each piece in slices of at most COPY_SLICE bits: a wider single-address memory became an
        # ECP5 PDPW16KD (separate 36-bit write and read ports), and yosys put collision logic
        # between the block and its register (the worst path on 10x9/2: 98.6 MHz); an 18-bit
        # slice is one DP16KD port, its register the block's own (boards.netlist)
        held = []
        for i in range(pieces):
            en = we & (wa[pb:] == i) if pieces > 1 else we
            q = Signal(width, name=f"copy{i}_q", reset_less=True)
            name = f"copy{i}" if pieces > 1 else "copy"
            for j, lo in enumerate(range(0, width, per * ew)):
                hi = min(width, lo + per * ew)
                mem = m.submodules[f"{name}_{j}"] = Memory(
                    shape=unsigned(hi - lo), depth=min(depth, self.copy_words - i * depth), init=[])
                rd, wp = mem.read_port(), mem.write_port()
                m.d.comb += [rd.addr.eq(addr[:pb]), wp.addr.eq(addr[:pb]), wp.data.eq(wd[lo:hi]), wp.en.eq(en)]
                m.d.sync += q[lo:hi].eq(rd.data)
            held.append(q)
        word = Signal(data.ArrayLayout(signed(self.act_width + 1), self.copy_width), name="copy_word", reset_less=True)
        m.d.sync += word.eq(Array(held)[delayed(m, ra[pb:], 2, "copy_piece")] if pieces > 1 else held[0])
        return word

    def elaborate(self, platform):
        m = Module()
        cfg, aw, vb, ib, accw = self.cfg, self.addr_width, self.value_bits, self.index_bits, self.acc_width
        row_o, entry_e, bias_o = Signal(aw), Signal(aw), Signal(aw)
        entry_data = rom(m, "entries", vb + ib, self.entries, entry_e)
        row_end = rom(m, "row_end", aw, self.row_end, row_o)
        row_data = rom(m, "rows", accw + self.out_bits, self.rows, bias_o)

        # issue: per row `wait` cycles (row_end answers), the row's entries, one END token
        busy, wait, first = Signal(), Signal(range(self.wait + 1)), Signal()
        o, e = Signal(aw), Signal(aw)
        m.d.comb += [row_o.eq(cfg.row_base + o), entry_e.eq(e)]
        tok = data.StructLayout({"entry": 1, "end": 1, "first": 1, "o": unsigned(aw)})
        s0 = Signal(tok)
        m.d.comb += s0.o.eq(o)
        with m.If(self.go):
            m.d.sync += [busy.eq(cfg.live), wait.eq(self.wait), first.eq(1), o.eq(0), e.eq(cfg.e_base)]
        with m.Elif(busy & (wait != 0)):
            m.d.sync += wait.eq(wait - 1)
        with m.Elif(busy & (e != row_end)):
            m.d.comb += [s0.entry.eq(1), s0.first.eq(first)]
            m.d.sync += [e.eq(e + 1), first.eq(0)]
        with m.Elif(busy):
            m.d.comb += s0.end.eq(1)
            m.d.sync += [o.eq(o + 1), wait.eq(self.wait), first.eq(1)]
            with m.If(o == cfg.rows_m1):
                m.d.sync += busy.eq(0)

        # s[ROM_LATENCY]: the entry memory answers into a register; next: step the index into a
        # register that reads the word of x from the copy (COPY_READ); x is selected from its word
        # into a register, multiplied; then accumulate, and at END add the row's bias.
        stages = delay_line(m, s0, self.STAGES, "s")
        s_idx, s_acc = stages[self.ENTRY_AT - 1], stages[-1]
        entry = Signal(vb + ib)
        m.d.sync += entry.eq(entry_data)
        value, delta = entry[ib:].as_signed(), entry[:ib]
        idx, idx_next, xaddr = Signal(aw), Signal(aw), Signal(aw)
        values = delay_line(m, value, self.X_AT + 1 - self.ENTRY_AT, "value", reset_less=True)  # values[-1]: beside x
        x = Signal(signed(self.act_width + 1), reset_less=True)
        prod = Signal(signed(vb + self.act_width + 1), reset_less=True)
        # the row's bias and output index answer (from registers) in the END token's accumulate stage
        m.d.comb += [idx_next.eq(Mux(s_idx.first, 0, idx) + delta),
                     bias_o.eq(cfg.row_base + stages[-1 - ROM_LATENCY].o)]
        with m.If(s_idx.entry):
            m.d.sync += [idx.eq(idx_next), xaddr.eq(idx_next)]
        word = self._copy(m, xaddr)
        k = self.copy_width.bit_length() - 1
        sel = delayed(m, xaddr[:k], self.COPY_READ, "x_sel") if k else 0
        if ecp5_dsp(platform):  # x's and the value's registers, and prod, are the MULT18X18D's own (as in hw.pe)
            x_in = Signal.like(x, name="x_in")
            m.d.comb += x_in.eq(word[sel])
            mult18x18d(m, x_in, values[-2], prod)
        else:
            m.d.sync += [x.eq(word[sel]), prod.eq(values[-1] * x)]

        acc = Signal(signed(accw))
        with m.If(s_acc.entry):
            m.d.sync += acc.eq(acc + prod)
        with m.If(s_acc.end | self.go):
            m.d.sync += acc.eq(0)
        res = self.result
        if self.shifts:  # the row's shift answers with its bias
            shift = rom(m, "shifts", shift_layout(accw).size, self.shifts, bias_o)
        with m.If(self.take):
            m.d.sync += res.valid.eq(0)
        with m.If(s_acc.end):  # after take: a sum arriving as the previous one is taken replaces it
            m.d.sync += [res.valid.eq(1), res.acc.eq(acc + row_data[:accw].as_signed()), res.out.eq(row_data[accw:])]
            if self.shifts:
                m.d.sync += res.shift.eq(shift)
        m.d.comb += self.active.eq(Cat(busy, *(t.entry | t.end for t in stages)))
        return m


def lay_out(memory_contents: dict[str, list[list[int]]], sp, bias, shift_words: list[int] | None, lanes: int,
            value_bits: int, index_bits: int, acc_width: int) -> list[dict]:
    """Deal one P-layer's rows to the lanes (`partition`) and append them to each lane's memory
    contents (`sparse_entries`, `sparse_row_end`, `sparse_rows`, and with `shift_words`
    `sparse_shifts`: one list per lane); returns each lane's part of the pass (lane_layout)."""
    names = MEMORIES[:3] + (MEMORIES[3:] if shift_words is not None else ())
    for name in names:
        memory_contents[name] = memory_contents[name] or [[] for _ in range(lanes)]
    counts = np.diff(sp.row_ptr)
    parts = partition(counts + row_wait(lanes) + 1, lanes)
    vmask, amask = (1 << value_bits) - 1, (1 << acc_width) - 1
    words = [((int(v) & vmask) << index_bits) | int(d) for v, d in zip(sp.values, sp.deltas)]
    out = []
    for l, part in enumerate(parts):
        ent, ends, rows = (memory_contents[k][l] for k in names[:3])
        out.append({"live": int(bool(part)), "rows_m1": max(len(part) - 1, 0), "row_base": len(ends), "e_base": len(ent)})
        for r in part:
            ent += words[sp.row_ptr[r]:sp.row_ptr[r + 1]]
            ends.append(len(ent))
            rows.append((int(bias[r]) & amask) | (r << acc_width))
            if shift_words is not None:
                memory_contents["sparse_shifts"][l].append(shift_words[r])
    return out
