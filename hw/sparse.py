"""Sparse engine for P-layers: streams the stored (value, delta) entries, one MAC per cycle.

Walks each output row exactly as export.encoding describes: `idx += delta; acc += value * x[idx]`
(padding entries have value 0 and only move idx), then adds the bias, requantizes and writes one
output. Zero weights cost nothing; an all-zero row costs its three cycles of row overhead only.
Entries of every P-layer sit in one memory, `row_end[r]` (absolute entry index) ends row r.
SparseUnit is its engine unit (hw.engines).
"""

from __future__ import annotations

import numpy as np
from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Out

from hw.engines import EngineSignature, EngineUnit, Lowered
from hw.memories import QUIET_LATENCY, READ_LATENCY, ROM_LATENCY, delay_line, done_when_quiet, rom
from hw.requant import LATENCY as REQUANT_LATENCY, Requantizer, requant_layout, shift_layout, shift_word


def sparse_layout(addr_width: int, acc_width: int, act_width: int, per_channel: bool = False) -> data.StructLayout:
    return data.StructLayout({
        "rows_m1": unsigned(addr_width),
        "row_base": unsigned(addr_width),  # this layer's first row in the row_end / bias memories
        "e_base": unsigned(addr_width),  # this layer's first entry
        "rq": requant_layout(acc_width, act_width, per_channel),
        "logits": 1,
    })


class SparseEngine(wiring.Component):
    """One P-layer per `start`; `done` one cycle after its last write. `raddr`/`rdata[0]` read
    the input vector (one element per cycle). With `shifts` (per-channel requantization, one
    shift_layout word per row beside its bias) the requantizer takes each row's own shift."""

    ENTRY_AT = ROM_LATENCY + 1  # the entry register holds the entry in this stage
    X_AT = ENTRY_AT + 1 + READ_LATENCY  # x arrives in this stage (the index register, the buffer)
    STAGES = X_AT + 2  # the product, then the sum
    # the last issue (a row's END token) -> `done`: its stages, the requantizer (the write), the
    # first idle cycle, quiet()
    LATENCY = STAGES + REQUANT_LATENCY + 1 + QUIET_LATENCY

    def __init__(self, cols: int, addr_width: int, act_width: int, acc_width: int, value_bits: int,
                 index_bits: int, entries: list[int], row_end: list[int], biases: list[int], *,
                 shifts: list[int] | None = None):
        if not 1 <= value_bits <= 16 or not 1 <= index_bits <= 16:
            raise ValueError(f"sparse value and index widths must be 1..16, got {value_bits}, {index_bits}")
        self.cols, self.addr_width, self.act_width, self.acc_width = cols, addr_width, act_width, acc_width
        self.value_bits, self.index_bits = value_bits, index_bits
        mask = (1 << acc_width) - 1
        self.entries, self.row_end = entries or [0], row_end or [0]
        self.biases = [b & mask for b in biases] or [0]  # two's complement words
        self.shifts = shifts
        super().__init__(EngineSignature(addr_width, cols=cols, act_width=act_width, acc_width=acc_width,
                                         cfg=sparse_layout(addr_width, acc_width, act_width, bool(shifts)),
                                         reads=True, writes=True, logit=Out))

    def elaborate(self, platform):
        m = Module()
        cfg, aw, vb, ib = self.cfg, self.addr_width, self.value_bits, self.index_bits
        row_o, entry_e, bias_o = Signal(aw), Signal(aw), Signal(aw)
        entry_data = rom(m, "entries", vb + ib, self.entries, entry_e)
        row_end = rom(m, "row_end", aw, self.row_end, row_o)
        bias_data = rom(m, "biases", self.acc_width, self.biases, bias_o)

        # issue: per row ROM_LATENCY wait cycles (row_end answers), the row's entries, one END token
        busy, wait, first = Signal(), Signal(range(ROM_LATENCY + 1)), Signal()
        o, e = Signal(aw), Signal(aw)
        m.d.comb += [row_o.eq(cfg.row_base + o), entry_e.eq(e)]
        tok = data.StructLayout({"entry": 1, "end": 1, "first": 1, "o": unsigned(aw)})
        s0 = Signal(tok)
        m.d.comb += s0.o.eq(o)
        with m.If(self.start):
            m.d.sync += [busy.eq(1), wait.eq(ROM_LATENCY), first.eq(1), o.eq(0), e.eq(cfg.e_base)]
        with m.Elif(busy & (wait != 0)):
            m.d.sync += wait.eq(wait - 1)
        with m.Elif(busy & (e != row_end)):
            m.d.comb += [s0.entry.eq(1), s0.first.eq(first)]
            m.d.sync += [e.eq(e + 1), first.eq(0)]
        with m.Elif(busy):
            m.d.comb += s0.end.eq(1)
            m.d.sync += [o.eq(o + 1), wait.eq(ROM_LATENCY), first.eq(1)]
            with m.If(o == cfg.rows_m1):
                m.d.sync += busy.eq(0)

        # s[ROM_LATENCY]: the entry memory answers into a register; next: step the index into a
        # register that reads x[idx] (READ_LATENCY); x arrives, is registered, multiplied; then
        # accumulate, and at END add the row's bias.
        stages = delay_line(m, s0, self.STAGES, "s")
        s_idx, s_acc = stages[self.ENTRY_AT - 1], stages[-1]
        entry = Signal(vb + ib)
        m.d.sync += entry.eq(entry_data)
        value, delta = entry[ib:].as_signed(), entry[:ib]
        idx, idx_next, raddr = Signal(aw), Signal(aw), Signal(aw)
        values = delay_line(m, value, self.X_AT + 1 - self.ENTRY_AT, "value", reset_less=True)  # values[-1]: beside x's register
        x = Signal(signed(self.act_width + 1), reset_less=True)
        prod = Signal(signed(vb + self.act_width + 1), reset_less=True)
        # the bias answers (from a register) in the END token's accumulate stage
        m.d.comb += [idx_next.eq(Mux(s_idx.first, 0, idx) + delta), self.raddr.eq(raddr),
                     bias_o.eq(cfg.row_base + stages[-1 - ROM_LATENCY].o)]
        with m.If(s_idx.entry):
            m.d.sync += [idx.eq(idx_next), raddr.eq(idx_next)]
        m.d.sync += [x.eq(self.rdata[0]), prod.eq(values[-1] * x)]

        acc = Signal(signed(self.acc_width))
        rq = m.submodules.rq = Requantizer(self.acc_width, self.act_width, bool(self.shifts))
        m.d.comb += [rq.acc.eq(acc + bias_data.as_signed()), rq.cfg.eq(cfg.rq)]
        if self.shifts:  # the row's shift answers with its bias
            m.d.comb += rq.shift.eq(rom(m, "shifts", shift_layout(self.acc_width).size, self.shifts, bias_o))
        with m.If(s_acc.entry):
            m.d.sync += acc.eq(acc + prod)
        with m.If(s_acc.end | self.start):
            m.d.sync += acc.eq(0)
        row = Signal(data.StructLayout({"valid": 1, "o": unsigned(aw)}))
        m.d.comb += [row.valid.eq(s_acc.end), row.o.eq(s_acc.o)]
        tags = delay_line(m, row, REQUANT_LATENCY, "row")
        out = tags[-1]
        m.d.comb += [self.wr.valid.eq(out.valid & ~cfg.logits), self.wr.addr.eq(out.o), self.wr.count.eq(1),
                     self.wr.data[0].eq(rq.q),
                     self.logit.valid.eq(out.valid & cfg.logits), self.logit.addr.eq(out.o), self.logit.data.eq(rq.raw)]

        done_when_quiet(m, self.start, self.done, [busy, *(t.entry | t.end for t in stages), *(t.valid for t in tags)])
        return m


def sparse_encoding(layer):
    """The stored entries of a linear layer the sparse engine runs: its own (a P-layer), or, for
    a dense layer after a P-layer, its nonzero weights in the encoding that stores fewest bits."""
    if layer.sparse is not None:
        return layer.sparse
    from export.encoding import encode_best
    return encode_best(layer.weight, layer.w_type.bits + (not layer.w_type.signed))


class SparseUnit(EngineUnit):
    """P-layers (linear layers stored sparse), and the dense linear layers after one: one stored
    entry per cycle, ROM_LATENCY + 1 cycles of overhead per row."""

    kind = "sparse"
    memories = ("sparse_entries", "sparse_row_end", "sparse_biases", "sparse_shifts")

    def runs(self, layer) -> bool:
        return layer.kind == "linear" and layer.sparse is not None

    def lower(self, i, layer, ctx) -> Lowered:
        """The layer's entries, row ends and biases appended to the shared memories; its bases."""
        sp, img, vb, ib = ctx.encoded[i], ctx.images, ctx.value_bits, ctx.index_bits
        base_e, base_r = len(img["sparse_entries"]), len(img["sparse_row_end"])
        img["sparse_entries"] += [((int(v) & ((1 << vb) - 1)) << ib) | int(d) for v, d in zip(sp.values, sp.deltas)]
        img["sparse_row_end"] += [base_e + int(e) for e in sp.row_ptr[1:]]
        img["sparse_biases"] += [int(b) for b in layer.bias]
        if self.kind in ctx.per_channel:
            shifts = np.broadcast_to(layer.shift if layer.out is not None else 0, layer.bias.shape)
            img["sparse_shifts"] += [shift_word(int(v), ctx.acc_width) for v in shifts]
        cfg = {"rows_m1": sp.row_ptr.size - 2, "row_base": base_r, "e_base": base_e,
               "rq": self.requant(layer, ctx), "logits": int(layer.out is None)}
        return Lowered(cfg, sp.entries, layer.in_shape[0] - 1)

    def latency(self, s) -> int:
        return SparseEngine.LATENCY

    def issue_cycles(self, p, s) -> int:
        return (ROM_LATENCY + 1) * (p.cfg["rows_m1"] + 1) + p.macs

    def work(self, p, s, cycles: int) -> dict:
        return {"entries": p.macs, "utilisation": p.macs / cycles}

    def memory_inits(self, s) -> dict[str, tuple[list[int], int]]:
        img = s.images
        return {"sparse_entries": (img["sparse_entries"], s.value_bits + s.index_bits),
                "sparse_row_end": (img["sparse_row_end"], s.addr_width),
                "sparse_biases": (img["sparse_biases"], s.acc_width),
                "sparse_shifts": (img["sparse_shifts"], s.shift_width)}

    def memory_bits(self, p, s) -> int:
        per_row = s.addr_width + s.acc_width + s.shift_width * bool(s.images["sparse_shifts"])
        return p.macs * (s.value_bits + s.index_bits) + (p.cfg["rows_m1"] + 1) * per_row

    def addresses(self, images) -> list[int]:
        """The entry counter runs to one past the last entry."""
        return [len(images["sparse_entries"]) + 1, len(images["sparse_row_end"])]

    def multipliers(self, s) -> int:
        return 1

    def build(self, s) -> SparseEngine:
        img = s.images
        return SparseEngine(s.config.cols, s.addr_width, s.act_width, s.acc_width, s.value_bits, s.index_bits,
                            img["sparse_entries"], img["sparse_row_end"], img["sparse_biases"],
                            shifts=img["sparse_shifts"])
