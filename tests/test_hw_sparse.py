# amaranth: UnusedElaboratable=no
"""SparseEngine under amaranth.sim against the numpy reference (linear_acc from the stored
encoding, then requantize): all-zero rows, gaps longer than the index can jump (padding
entries), negative accumulators, signed inputs, the logits (raw accumulator) mode."""

import numpy as np
import pytest

from export.encoding import encode_rows
from export.plan import IntType
from export.reference import requantize
from hw.engines import START
from hw.memories import ROM_LATENCY
from hw.requant import requant_config
from hw.sparse import SparseEngine
from tests.hw_helpers import run_engine, to_signed

ACC = 24


def _engine(weight, bias, value_bits, index_bits, cols):
    sp = encode_rows(weight, value_bits, index_bits)
    entries = [((int(v) & ((1 << value_bits) - 1)) << index_bits) | int(d) for v, d in zip(sp.values, sp.deltas)]
    row_end = [int(e) for e in sp.row_ptr[1:]]
    return sp, SparseEngine(cols, 12, 8, ACC, value_bits, index_bits, entries, row_end, [int(b) for b in bias])


@pytest.mark.parametrize("index_bits,signed_in,logits", [(2, False, False), (4, True, False), (3, False, True)])
def test_sparse_matches_reference(index_bits, signed_in, logits):
    rng = np.random.default_rng(index_bits)
    rows, n = 9, 40
    w = rng.integers(-8, 8, size=(rows, n)) * (rng.random((rows, n)) < 0.25)
    w[2] = 0  # an all-zero row
    w[5] = 0
    w[5, n - 1] = 7  # one far entry: a gap longer than 2**index_bits - 1
    w[7, 0] = -8  # an entry at index 0
    x = rng.integers(-128 if signed_in else 0, 128 if signed_in else 256, size=n)
    bias = rng.integers(-3000, 3000, size=rows)
    sp, dut = _engine(w, bias, 4, index_bits, cols=3)
    assert sp.padding > 0
    acc = sp.to_dense(n) @ x + bias
    assert (acc < 0).any()
    out = IntType(8, True, 0)
    cfg = {"rows_m1": rows - 1, "row_base": 0, "e_base": 0, "logits": int(logits),
           "rq": {} if logits else requant_config(4, True, out, ACC)}
    written, got_logits, cycles = run_engine(dut, cfg, x, width=8, signed=signed_in)
    if logits:
        assert not written and got_logits == {r: int(a) for r, a in enumerate(acc)}
    else:
        assert not got_logits
        assert to_signed(written, 8, True) == {r: int(q) for r, q in enumerate(requantize(acc, 4, True, out))}
    # one cycle per entry, ROM_LATENCY + 1 per row, then the engine's latency
    assert cycles == START + sp.entries + (ROM_LATENCY + 1) * rows + dut.LATENCY


def test_sparse_second_layer_offsets():
    """A layer placed after another in the shared memories (row_base, e_base)."""
    rng = np.random.default_rng(7)
    w1, w2 = rng.integers(-3, 4, size=(4, 10)), rng.integers(-3, 4, size=(3, 10))
    s1, s2 = encode_rows(w1, 4, 3), encode_rows(w2, 4, 3)
    pack = lambda sp: [((int(v) & 15) << 3) | int(d) for v, d in zip(sp.values, sp.deltas)]
    entries = pack(s1) + pack(s2)
    row_end = [int(e) for e in s1.row_ptr[1:]] + [s1.entries + int(e) for e in s2.row_ptr[1:]]
    bias = [0] * 4 + [5, -5, 9]
    dut = SparseEngine(2, 12, 8, ACC, 4, 3, entries, row_end, bias)
    x = rng.integers(0, 256, size=10)
    cfg = {"rows_m1": 2, "row_base": 4, "e_base": s1.entries, "logits": 1, "rq": {}}
    _, got, _ = run_engine(dut, cfg, x, width=8, signed=False)
    assert got == {r: int(a) for r, a in enumerate(w2 @ x + np.array([5, -5, 9]))}


def test_sparse_validates_widths():
    with pytest.raises(ValueError, match="sparse value and index widths"):
        SparseEngine(2, 12, 8, ACC, 4, 17, [0], [0], [0])
