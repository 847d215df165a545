"""Sparse engine for P-layers: `lanes` walks of the stored (value, delta) entries, one MAC per lane
per cycle.

The rows of a layer are dealt to the lanes (hw.lanes: partition, SparseLane), each with its own
memories and its own copy of the input vector: a pass starts by reading the vector from the
activation buffer, `copy_width(cols)` elements per cycle, into every lane's copy. The lanes' sums
leave through one requantizer: in cycle c after `start` the output stage takes lane
(c - 1) mod lanes's sum, if it holds one, and writes one output. SparseUnit is its engine unit
(hw.engines).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from amaranth import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Out

from hw.engines import EngineSignature, EngineUnit, LoweredLayer
from hw.lanes import MEMORIES, SparseLane, copy_layout, copy_width, lane_layout, lay_out, row_wait, sum_layout
from hw.memories import QUIET_LATENCY, READ_LATENCY, delay_line, delayed, done_when_quiet
from hw.requant import LATENCY as REQUANT_LATENCY, Requantizer, requant_layout, shift_word

# measured: yosys synth_ecp5 of the paper model's sparse engine alone, 1,097 LUT4s on one lane and
# 2,260 on four (a CCU2C counted as two), 388 per added lane
LUTS_PER_SPARSE_LANE = 390

MAX_LANES = 16
DEFAULT_LANES = 2  # the most lanes the schedule picks by itself (the paper model's sparse stage then keeps pace with a 10x14 array stage; on 10x9 one does)
LANE_ENTRIES = 2048  # entries per lane the schedule asks for before adding one (8-bit entries: one ECP5 block)


def auto_lanes(layers) -> int:
    """The most lanes the schedule picks (hw.schedule.schedule takes the fewest up to this that
    keep the sparse stage off the critical path): one per LANE_ENTRIES entries of the largest
    P-layer, at most DEFAULT_LANES and no more than its rows."""
    sparse = [l.sparse for l in layers if l.sparse is not None]
    if not sparse:
        return 1
    big = max(sparse, key=lambda sp: sp.entries)
    return max(1, min(DEFAULT_LANES, -(-big.entries // LANE_ENTRIES), big.row_ptr.size - 1))


def sparse_layout(addr_width: int, acc_width: int, act_width: int, lanes: int = 1,
                  per_channel: bool = False) -> data.StructLayout:
    return data.StructLayout({
        "words_m1": unsigned(addr_width),  # copy cycles of the input vector, less one
        "lanes": data.ArrayLayout(lane_layout(addr_width), lanes),
        "rq": requant_layout(acc_width, act_width, per_channel),
        "logits": 1,
    })


class SparseEngine(wiring.Component):
    """One P-layer per `start`; `done` one cycle after its last write. First the input vector is
    copied into every lane (`raddr` steps by copy_width(cols) from 0, words_m1 + 1 reads of
    `rdata[0:copy_width]`), then the lanes walk their rows; each lane's sums meet the output stage
    in the lane's slot (cycle c after `start`: lane (c - 1) mod lanes), then the requantizer.
    `entries`, `row_end`, `rows`, `shifts`: one list per lane (rows: bias | output index << acc_width;
    shifts, per-channel requantization: one shift_layout word per row, or none)."""

    OUT_AT = 1  # a taken sum is in the requantizer's input register this many cycles later
    # the last take -> `done`: the output register, the requantizer (the write), the first idle
    # cycle, quiet()
    LATENCY = OUT_AT + REQUANT_LATENCY + 1 + QUIET_LATENCY
    # a copy read issued in cycle t is in the lanes' copies at the end of t + COPIED: the address
    # register, the buffer, the word's register, the lanes' write registers
    COPIED = 1 + READ_LATENCY + 1 + SparseLane.COPY_WRITE

    @staticmethod
    def go_delay(lanes: int) -> int:
        """Cycles from the last copy read's issue to the lanes' `go` (at least one: `go` is a
        register): their first read of x comes wait + ENTRY_AT + 2 cycles after `go`, and must
        follow the last word's write."""
        return max(1, SparseEngine.COPIED + 1 - (row_wait(lanes) + SparseLane.ENTRY_AT + 2))

    @staticmethod
    def issue_cycles(words: int, lane_cycles: Sequence[int]) -> int:
        """The cycle after `start` of the last take into the output stage, for a pass of `words`
        copy reads whose lanes issue for `lane_cycles` cycles each (0: no rows)."""
        lanes = len(lane_cycles)
        go = words + SparseEngine.go_delay(lanes)
        last = 0
        for l, c in enumerate(lane_cycles):
            if c:
                held = go + c + SparseLane.STAGES + 1  # the lane's last sum is held from this cycle
                last = max(last, held + (l - (held - 1)) % lanes)
        return last

    def __init__(self, cols: int, addr_width: int, act_width: int, acc_width: int, value_bits: int,
                 index_bits: int, entries: list[list[int]], row_end: list[list[int]], rows: list[list[int]], *,
                 shifts: list[list[int]] | None = None, copy_words: int = 1):
        if not 1 <= value_bits <= 16 or not 1 <= index_bits <= 16:
            raise ValueError(f"sparse value and index widths must be 1..16, got {value_bits}, {index_bits}")
        if not 1 <= len(entries) <= MAX_LANES or not len(entries) == len(row_end) == len(rows):
            raise ValueError(f"sparse lanes must be 1..{MAX_LANES}, each with entries, row ends and rows; "
                             f"got {len(entries)}, {len(row_end)}, {len(rows)}")
        self.cols, self.addr_width, self.act_width, self.acc_width = cols, addr_width, act_width, acc_width
        self.value_bits, self.index_bits, self.lanes, self.copy_words = value_bits, index_bits, len(entries), copy_words
        self.entries, self.row_end, self.rows = entries, row_end, rows
        self.shifts = shifts if shifts and any(shifts) else None
        super().__init__(EngineSignature(addr_width, cols=cols, act_width=act_width, acc_width=acc_width,
                                         cfg=sparse_layout(addr_width, acc_width, act_width, self.lanes,
                                                           bool(self.shifts)),
                                         reads=True, writes=True, logit=Out))

    def elaborate(self, platform):
        m = Module()
        cfg, aw, n = self.cfg, self.addr_width, self.lanes
        width = copy_width(self.cols)
        lanes = [SparseLane(aw, self.act_width, self.acc_width, self.value_bits, self.index_bits, row_wait(n), width,
                            self.copy_words, self.entries[l], self.row_end[l], self.rows[l],
                            self.shifts[l] if self.shifts else None) for l in range(n)]
        for l, lane in enumerate(lanes):
            m.submodules[f"lane{l}"] = lane

        # the copy: read the input vector `width` elements a cycle; each word, registered, to every lane
        copying, word = Signal(), Signal(aw)
        raddr = Signal(aw)
        cp = Signal(data.StructLayout({"valid": 1, "last": 1, "addr": unsigned(aw)}))
        m.d.comb += [cp.addr.eq(word), self.raddr.eq(raddr)]
        with m.If(self.start):
            m.d.sync += [copying.eq(1), word.eq(0)]
        with m.Elif(copying):
            m.d.comb += [cp.valid.eq(1), cp.last.eq(word == cfg.words_m1)]
            m.d.sync += [raddr.eq(word << (width.bit_length() - 1)), word.eq(word + 1)]
            with m.If(word == cfg.words_m1):
                m.d.sync += copying.eq(0)
        cps = delay_line(m, cp, 1 + READ_LATENCY, "cp")  # cps[-1] meets the read data
        w = Signal(copy_layout(self.copy_words, width * (self.act_width + 1)))
        m.d.sync += [w.valid.eq(cps[-1].valid), w.addr.eq(cps[-1].addr),
                     w.data.eq(Cat(self.rdata[c] for c in range(width)))]
        go = delayed(m, cp.last, self.go_delay(n), "go")
        for l, lane in enumerate(lanes):
            m.d.comb += [lane.go.eq(go), lane.cfg.eq(cfg.lanes[l]), lane.copy.eq(w)]

        # the output stage: in each cycle one lane's slot (`slot`, and one-hot in `turn`, whose
        # bits are the lanes' `take`); its sum, if it holds one, goes on
        slot, turn = Signal(range(n)), Signal(n, init=1)
        m.d.sync += [slot.eq(Mux(slot == n - 1, 0, slot + 1)), turn.eq(turn.rotate_left(1))]
        with m.If(self.start):
            m.d.sync += [slot.eq(0), turn.eq(1)]
        picked = Signal(sum_layout(aw, self.acc_width, bool(self.shifts)))
        m.d.sync += picked.eq(Array(lane.result for lane in lanes)[slot] if n > 1 else lanes[0].result)
        for l, lane in enumerate(lanes):
            m.d.comb += lane.take.eq(turn[l])
        rq = m.submodules.rq = Requantizer(self.acc_width, self.act_width, bool(self.shifts))
        m.d.comb += [rq.acc.eq(picked.acc), rq.cfg.eq(cfg.rq)]
        if self.shifts:
            m.d.comb += rq.shift.eq(picked.shift)
        row = Signal(data.StructLayout({"valid": 1, "o": unsigned(aw)}))
        m.d.comb += [row.valid.eq(picked.valid), row.o.eq(picked.out)]
        tags = delay_line(m, row, REQUANT_LATENCY, "row")
        out = tags[-1]
        m.d.comb += [self.wr.valid.eq(out.valid & ~cfg.logits), self.wr.addr.eq(out.o), self.wr.count.eq(1),
                     self.wr.data[0].eq(rq.q),
                     self.logit.valid.eq(out.valid & cfg.logits), self.logit.addr.eq(out.o), self.logit.data.eq(rq.raw)]

        done_when_quiet(m, self.start, self.done, [copying, *(t.valid for t in cps), w.valid, go,
                                                   *(lane.active for lane in lanes),
                                                   *(lane.result.valid for lane in lanes), picked.valid,
                                                   *(t.valid for t in tags)])
        return m


def sparse_encoding(layer):
    """The stored entries of a linear layer the sparse engine runs: its own (a P-layer), or, for
    a dense layer after a P-layer, its nonzero weights in the encoding that stores fewest bits."""
    if layer.sparse is not None:
        return layer.sparse
    from export.encoding import encode_best
    return encode_best(layer.weight, layer.w_type.bits + (not layer.w_type.signed))


class SparseUnit(EngineUnit):
    """P-layers (linear layers stored sparse), and the dense linear layers after one, on
    `Schedule.lanes` lanes: the input vector's copy, then per lane one stored entry per cycle and
    row_wait(lanes) + 1 cycles of overhead per row."""

    kind = "sparse"
    memories = MEMORIES

    def runs(self, layer) -> bool:
        return layer.kind == "linear" and layer.sparse is not None

    def lower(self, i, layer, ctx) -> LoweredLayer:
        """The layer's rows dealt to the lanes and appended to their memories; the pass's bases."""
        shifts, sp = None, ctx.encoded[i]
        if self.kind in ctx.per_channel:
            shifts = [shift_word(int(v), ctx.acc_width)
                      for v in np.broadcast_to(layer.shift if layer.out is not None else 0, layer.bias.shape)]
        lanes = lay_out(ctx.memory_contents, sp, layer.bias, shifts, ctx.lanes, ctx.value_bits, ctx.index_bits,
                        ctx.acc_width)
        width = copy_width(ctx.config.cols)
        words = -(-int(layer.in_shape[0]) // width)
        cfg = {"words_m1": words - 1, "lanes": lanes, "rq": self.requant(layer, ctx), "logits": int(layer.out is None)}
        return LoweredLayer(cfg, sp.entries, (words - 1) * width)

    def lane_cycles(self, p, s) -> list[int]:
        """Cycles each lane issues for in the pass (0: none of its rows)."""
        wait, out = row_wait(s.lanes), []
        for l, lane in enumerate(p.cfg["lanes"]):
            if not lane["live"]:
                out.append(0)
                continue
            rows = lane["rows_m1"] + 1
            entries = s.memory_contents["sparse_row_end"][l][lane["row_base"] + rows - 1] - lane["e_base"]
            out.append((wait + 1) * rows + entries)
        return out

    def latency(self, s) -> int:
        return SparseEngine.LATENCY

    def issue_cycles(self, p, s) -> int:
        """From the first copy read to the last sum taken into the output stage."""
        return SparseEngine.issue_cycles(p.cfg["words_m1"] + 1, self.lane_cycles(p, s))

    def work(self, p, s, cycles: int) -> dict:
        return {"entries": p.macs, "lanes": s.lanes, "utilisation": p.macs / s.lanes / cycles}

    def memory_inits(self, s) -> dict[str, tuple[list[int], int]]:
        """Each memory's lanes one after another."""
        mem = s.memory_contents
        join = lambda name: [w for lane in mem[name] for w in lane]
        return {"sparse_entries": (join("sparse_entries"), s.value_bits + s.index_bits),
                "sparse_row_end": (join("sparse_row_end"), s.addr_width),
                "sparse_rows": (join("sparse_rows"), s.acc_width + self.out_bits(s)),
                "sparse_shifts": (join("sparse_shifts"), s.shift_width)}

    def out_bits(self, s) -> int:
        """Bits of a row's output index beside its bias (as SparseLane stores it)."""
        return max([1] + [(w >> s.acc_width).bit_length() for lane in s.memory_contents["sparse_rows"] for w in lane])

    def memory_bits(self, p, s) -> int:
        has_shifts = any(s.memory_contents["sparse_shifts"])
        per_row = s.addr_width + s.acc_width + self.out_bits(s) + s.shift_width * has_shifts
        rows = sum(lane["rows_m1"] + 1 for lane in p.cfg["lanes"] if lane["live"])
        return p.macs * (s.value_bits + s.index_bits) + rows * per_row

    def addresses(self, memory_contents) -> list[int]:
        """Each lane's entry counter runs to one past its last entry."""
        return [max([0] + [len(lane) + 1 for lane in memory_contents["sparse_entries"]]),
                max([0] + [len(lane) for lane in memory_contents["sparse_row_end"]])]

    def address_constants(self, p) -> list[int]:
        return [p.cfg["words_m1"] + 1] + [v for lane in p.cfg["lanes"] for v in lane.values()]

    def write_elements(self, s) -> int:
        return 1  # one requantized row sum per write

    def read_aligned(self, s) -> int | None:
        return copy_width(s.config.cols)  # the copy into the lanes: words of copy_width, from 0

    def multipliers(self, s) -> int:
        return s.lanes

    def luts(self, s) -> int:
        """Each lane beyond the first (the first is in hw.top's BASE_LOGIC_LUTS)."""
        return max(0, s.lanes - 1) * LUTS_PER_SPARSE_LANE

    def build(self, s) -> SparseEngine:
        mem = s.memory_contents
        words = max(p.cfg["words_m1"] + 1 for p in s.passes if p.unit is self)
        return SparseEngine(s.config.cols, s.addr_width, s.act_width, s.acc_width, s.value_bits, s.index_bits,
                            mem["sparse_entries"], mem["sparse_row_end"], mem["sparse_rows"],
                            shifts=mem["sparse_shifts"], copy_words=words)
