# amaranth: UnusedElaboratable=no
"""SparseEngine (hw.sparse, hw.lanes) under amaranth.sim against the numpy reference (linear_acc from the stored
encoding, then requantize), on one and several lanes: all-zero rows (runs of them in one lane),
uneven rows, more lanes than rows, gaps longer than the index can jump (padding entries),
negative accumulators, signed inputs, per-channel shifts, the logits (raw accumulator) mode; the
lane partition and its accounting; the accelerator with several lanes against its cycle model."""

import numpy as np
import pytest

from export import reference
from export.arith import IntType, requantize
from export.encoding import encode_rows
from hw.config import ArrayConfig
from hw.cycles import predict
from hw.engines import START
from hw.lanes import SparseLane, copy_width, lay_out, partition, row_wait
from hw.requant import requant_config, shift_word
from hw.schedule import schedule
from hw.sparse import DEFAULT_LANES, LANE_ENTRIES, SparseEngine, SparseUnit, auto_lanes
from hw.top import Accelerator
from tests.hw_helpers import random_image, random_plan, run_accelerator, run_engine, to_signed

ACC = 24


def _engine(weight, bias, value_bits, index_bits, cols, lanes, shifts=None):
    """The engine holding one layer, and the pass's constants without the requantizer's."""
    sp = encode_rows(weight, value_bits, index_bits)
    mem = {k: [] for k in SparseUnit.memories}
    words = None if shifts is None else [shift_word(int(s), ACC) for s in shifts]
    lane_cfg = lay_out(mem, sp, bias, words, lanes, value_bits, index_bits, ACC)
    copies = -(-weight.shape[1] // copy_width(cols))
    dut = SparseEngine(cols, 12, 8, ACC, value_bits, index_bits, mem["sparse_entries"], mem["sparse_row_end"],
                       mem["sparse_rows"], shifts=mem["sparse_shifts"], copy_words=copies)
    return sp, dut, {"words_m1": copies - 1, "lanes": lane_cfg}


def _lane_cycles(sp, lanes):
    """Each lane's issue cycles, counted from the partition: per row the wait, its entries, END."""
    counts = np.diff(sp.row_ptr)
    parts = partition(counts + row_wait(lanes) + 1, lanes)
    return [sum(row_wait(lanes) + 1 + int(counts[r]) for r in part) for part in parts]


def _weights(rng, rows, n, density=0.25):
    w = rng.integers(-8, 8, size=(rows, n)) * (rng.random((rows, n)) < density)
    w[2] = 0  # an all-zero row
    w[5] = 0
    w[5, n - 1] = 7  # one far entry: a gap longer than 2**index_bits - 1
    w[7, 0] = -8  # an entry at index 0
    w[8, :] = rng.integers(1, 8, size=n)  # a full row: rows of very different lengths
    return w


@pytest.mark.parametrize("index_bits,signed_in,logits,lanes,cols", [
    (2, False, False, 1, 3), (4, True, False, 1, 1), (3, False, True, 1, 2),
    (2, False, False, 3, 3), (4, True, False, 4, 9), (3, False, True, 2, 16), (4, True, True, 4, 5)])
def test_sparse_matches_reference(index_bits, signed_in, logits, lanes, cols):
    rng = np.random.default_rng(index_bits + 10 * lanes)
    rows, n = 11, 40
    w = _weights(rng, rows, n)
    x = rng.integers(-128 if signed_in else 0, 128 if signed_in else 256, size=n)
    bias = rng.integers(-3000, 3000, size=rows)
    sp, dut, cfg = _engine(w, bias, 4, index_bits, cols, lanes)
    assert sp.padding > 0
    acc = sp.to_dense(n) @ x + bias
    assert (acc < 0).any()
    out = IntType(8, True, 0)
    cfg.update(logits=int(logits), rq={} if logits else requant_config(4, True, out, ACC))
    written, got_logits, cycles = run_engine(dut, cfg, x, width=8, signed=signed_in)
    if logits:
        assert not written and got_logits == {r: int(a) for r, a in enumerate(acc)}
    else:
        assert not got_logits
        assert to_signed(written, 8, True) == {r: int(q) for r, q in enumerate(requantize(acc, 4, True, out))}
    words = cfg["words_m1"] + 1
    assert cycles == START + SparseEngine.issue_cycles(words, _lane_cycles(sp, lanes)) + dut.LATENCY
    if lanes == 1:  # the copy, per row row_wait + 1 cycles and one per entry, the lane's pipeline, its sum held
        assert SparseEngine.issue_cycles(words, _lane_cycles(sp, 1)) == (
            words + SparseEngine.go_delay(1) + (row_wait(1) + 1) * rows + sp.entries + SparseLane.STAGES + 1)


def test_more_lanes_than_rows_and_runs_of_empty_rows():
    """7 lanes on 3 rows (four lanes idle), then 6 lanes on 20 rows most of them all-zero: a
    lane's sums come row_wait + 1 >= lanes cycles apart and each meets its slot in time."""
    rng = np.random.default_rng(3)
    for rows, lanes in ((3, 7), (20, 6)):
        w = rng.integers(-8, 8, size=(rows, 30)) * (rng.random((rows, 30)) < 0.3)
        if rows > 3:
            w[3:] = 0
            w[10, 4] = 5
        x = rng.integers(0, 256, size=30)
        bias = rng.integers(-500, 500, size=rows)
        sp, dut, cfg = _engine(w, bias, 4, 3, 4, lanes)
        cfg.update(logits=1, rq={})
        _, got, cycles = run_engine(dut, cfg, x, width=8, signed=False)
        assert got == {r: int(a) for r, a in enumerate(w @ x + bias)}
        assert sum(not lane["live"] for lane in cfg["lanes"]) == max(0, lanes - rows)
        assert cycles == START + SparseEngine.issue_cycles(cfg["words_m1"] + 1, _lane_cycles(sp, lanes)) + dut.LATENCY


def test_per_channel_shifts_on_lanes():
    rng = np.random.default_rng(11)
    rows, n = 9, 25
    w = _weights(rng, rows, n, density=0.4)
    x = rng.integers(0, 256, size=n)
    bias = rng.integers(-2000, 2000, size=rows)
    shifts = rng.integers(-2, 7, size=rows)
    sp, dut, cfg = _engine(w, bias, 4, 4, 3, 3, shifts=shifts)
    out = IntType(8, False, 0)
    cfg.update(logits=0, rq=requant_config(None, True, out, ACC))
    written, _, _ = run_engine(dut, cfg, x, width=8, signed=False)
    acc = w @ x + bias
    want = {r: int(requantize(acc[r:r + 1], int(shifts[r]), True, out)[0]) for r in range(rows)}
    assert to_signed(written, 8, False) == want


def test_sparse_second_layer_offsets():
    """A layer placed after another in the lanes' memories (each lane's row_base, e_base)."""
    rng = np.random.default_rng(7)
    w1, w2 = rng.integers(-3, 4, size=(4, 10)), rng.integers(-3, 4, size=(3, 10))
    mem = {k: [] for k in SparseUnit.memories}
    lay_out(mem, encode_rows(w1, 4, 3), [0] * 4, None, 2, 4, 3, ACC)
    lanes = lay_out(mem, encode_rows(w2, 4, 3), [5, -5, 9], None, 2, 4, 3, ACC)
    assert all(lane["e_base"] > 0 and lane["row_base"] > 0 for lane in lanes)
    dut = SparseEngine(2, 12, 8, ACC, 4, 3, mem["sparse_entries"], mem["sparse_row_end"], mem["sparse_rows"],
                       copy_words=5)
    x = rng.integers(0, 256, size=10)
    cfg = {"words_m1": 4, "lanes": lanes, "logits": 1, "rq": {}}
    _, got, _ = run_engine(dut, cfg, x, width=8, signed=False)
    assert got == {r: int(a) for r, a in enumerate(w2 @ x + np.array([5, -5, 9]))}


def test_partition_deals_every_row_once_balanced():
    rng = np.random.default_rng(0)
    costs = list(rng.integers(5, 400, size=50)) + [5] * 10
    for lanes in (1, 2, 4, 7):
        parts = partition(costs, lanes)
        assert len(parts) == lanes and sorted(r for p in parts for r in p) == list(range(len(costs)))
        assert all(p == sorted(p) for p in parts)
        loads = [sum(costs[r] for r in p) for p in parts]
        assert max(loads) <= sum(costs) / lanes + max(costs)  # the longest-first bound
    assert partition([3, 1], 4) == [[0], [1], [], []]  # more lanes than rows: some idle
    assert partition([2, 2, 2, 2], 2) == [[0, 2], [1, 3]]  # ties: the lower row, the lower lane


def test_lane_accounting_adds_up_to_the_layer():
    """Every entry and row of a layer lands in exactly one lane's memories; each lane's row word
    names its output row; the schedule's pass constants and counters cover every lane. The dense
    logits layer after the P-layer runs on the lanes too, its nonzero weights as entries."""
    plan = random_plan(np.random.default_rng(5), density=0.5)
    fc1 = next(l for l in plan.layers if l.sparse is not None)
    fc2 = plan.layers[-1]
    s = schedule(plan, ArrayConfig(2, 3, lanes=3))
    p, p2 = [p for p in s.passes if p.kind == "sparse"]
    mem, unit = s.memory_contents, p.unit
    assert s.lanes == 3 and len(mem["sparse_entries"]) == 3 and not mem["sparse_shifts"]
    assert p.macs == fc1.sparse.entries and p2.macs == np.count_nonzero(fc2.weight)
    assert sum(len(e) for e in mem["sparse_entries"]) == p.macs + p2.macs
    outs = sorted((w >> s.acc_width) for lane in mem["sparse_rows"] for w in lane)
    assert outs == sorted([*range(fc1.out_shape[0]), *range(fc2.out_shape[0])])
    assert sum(lane["rows_m1"] + 1 for lane in p.cfg["lanes"] if lane["live"]) == fc1.out_shape[0]
    assert unit.multipliers(s) == 3
    entries, width = s.memory_inits["sparse_entries"]
    assert len(entries) == p.macs + p2.macs and width == s.value_bits + s.index_bits
    assert sum(unit.lane_cycles(p, s)) == fc1.sparse.entries + (row_wait(3) + 1) * fc1.out_shape[0]
    assert max(len(e) for e in mem["sparse_entries"]) < 1 << s.addr_width
    assert p.cfg["words_m1"] + 1 == -(-fc1.in_shape[0] // copy_width(3))


def test_auto_lanes_follow_the_entries():
    rng = np.random.default_rng(0)
    small = random_plan(rng)
    assert auto_lanes(small.layers) == 1 and schedule(small, ArrayConfig(2, 2)).lanes == 1
    big = random_plan(rng, shape=(3, 20, 20), c2=8, hidden=64, density=0.9)
    entries = next(l.sparse.entries for l in big.layers if l.sparse is not None)
    assert auto_lanes(big.layers) == min(DEFAULT_LANES, -(-entries // LANE_ENTRIES)) > 1
    assert schedule(big, ArrayConfig(2, 2, lanes=2)).lanes == 2


@pytest.mark.parametrize("lanes", [3, 5])
def test_accelerator_with_lanes_matches_reference_and_cycle_model(lanes):
    """The whole accelerator on several lanes: logits equal the reference, and every pass takes
    the cycles the model predicts."""
    rng = np.random.default_rng(lanes)
    plan = random_plan(rng, density=0.6)
    dut = Accelerator(plan, ArrayConfig(2, 3, lanes=lanes))
    image = random_image(rng, plan)
    passes = []
    logits, cycles, _ = run_accelerator(dut, image, passes=passes)
    np.testing.assert_array_equal(logits, reference.logits(plan, image))
    model = predict(dut.sched)
    assert cycles == model["total_cycles"]
    assert [c for _, c in passes] == [r["cycles"] for r in model["layers"]]


def test_sparse_validates_widths_and_lanes():
    with pytest.raises(ValueError, match="sparse value and index widths"):
        SparseEngine(2, 12, 8, ACC, 4, 17, [[0]], [[0]], [[0]])
    with pytest.raises(ValueError, match="sparse lanes must be"):
        SparseEngine(2, 12, 8, ACC, 4, 4, [[0]] * 17, [[0]] * 17, [[0]] * 17)


def test_on_an_ecp5_each_lane_multiplies_in_a_mult18x18d_with_its_registers():
    """For an ECP5 platform each lane's x and value registers and its product register are the
    MULT18X18D's input and output registers (as in hw.pe: the placer may put the DSP across the
    chip, and each route then gets a clock period): x's next word element and the value's
    next-to-last stage go straight to the primitive. Off an ECP5 no lane holds a primitive."""
    from amaranth.hdl import Fragment, Instance

    class Ecp5:
        family = "ecp5"

    def mults(platform):
        found, todo = [], [Fragment.get(_engine(_weights(np.random.default_rng(0), 12, 20), np.zeros(12, np.int64),
                                                         5, 3, 4, 3)[1], platform)]
        while todo:
            for sub, *_ in todo.pop().subfragments:
                (found if isinstance(sub, Instance) else todo).append(sub)
        return [i for i in found if i.type == "MULT18X18D"]

    lanes = mults(Ecp5())
    assert len(lanes) == 3 and mults(None) == []
    for mult in lanes:
        assert {mult.parameters[k] for k in ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_OUTPUT_CLK")} == {"CLK0"}
        ports = {k: v for k, (v, _d) in mult.ports.items()}
        a, b = ports["A0"].value, ports["B0"].value
        assert (a.name, len(a)) == ("x_in", 9)  # the input element, one bit wider than the activation
        assert b.name == "value_4" and len(b) == 5  # the value line's stage before the last (value_5)
        assert [ports[f"B{i}"].start for i in range(18)] == [min(i, 4) for i in range(18)]  # sign-extended
