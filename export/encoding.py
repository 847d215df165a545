"""The compressed weight encoding of P-layers, and the one bit accounting of stored weights.

Per output row, the non-zero weights are stored in order as entries `(value, delta)`: a signed
`value_bits` value and an unsigned `index_bits` delta. The sparse engine walks a row with a
pointer that starts at 0: `idx += delta; acc += value * x[idx]`. A gap longer than the largest
delta is bridged with padding entries `(0, 2**index_bits - 1)`. `row_ptr[r]:row_ptr[r + 1]` are
row r's entries (an all-zero row has none). Stored bits = entries * (value_bits + index_bits)
+ (rows + 1) row pointers of `ptr_bits` each. quant's report and the compiler both count here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class SparseRows:
    value_bits: int
    index_bits: int
    values: np.ndarray  # (entries,) int8/int16
    deltas: np.ndarray  # (entries,) uint16
    row_ptr: np.ndarray  # (rows + 1,) int64

    ARRAYS = ("values", "deltas", "row_ptr")

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.ARRAYS}

    @property
    def entries(self) -> int:
        return int(self.values.size)

    @property
    def padding(self) -> int:
        """Entries that carry no weight, only a jump."""
        return int(np.count_nonzero(self.values == 0))

    @property
    def ptr_bits(self) -> int:
        return max(1, int(self.entries).bit_length())

    @property
    def stored_bits(self) -> int:
        return self.entries * (self.value_bits + self.index_bits) + (self.row_ptr.size) * self.ptr_bits

    def to_dense(self, in_features: int) -> np.ndarray:
        """Decode back to a (rows, in_features) matrix, walking rows as the sparse engine does."""
        rows = self.row_ptr.size - 1
        w = np.zeros((rows, in_features), dtype=np.int64)
        for r in range(rows):
            idx = 0
            for e in range(self.row_ptr[r], self.row_ptr[r + 1]):
                idx += int(self.deltas[e])
                w[r, idx] += int(self.values[e])
        return w

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseRows):
            return NotImplemented
        return (self.value_bits, self.index_bits) == (other.value_bits, other.index_bits) and all(
            a.dtype == b.dtype and np.array_equal(a, b)
            for a, b in zip(self.arrays().values(), other.arrays().values()))


def encode_rows(weight: np.ndarray, value_bits: int, index_bits: int) -> SparseRows:
    """Encode a (rows, in_features) integer matrix with deltas of `index_bits`."""
    if not 1 <= index_bits <= 16:
        raise ValueError(f"index_bits must be 1..16, got {index_bits}")
    jump = (1 << index_bits) - 1
    values, deltas, row_ptr = [], [], [0]
    for row in weight.reshape(weight.shape[0], -1):
        idx = 0
        for nz in np.flatnonzero(row):
            gap = int(nz) - idx
            while gap > jump:
                values.append(0)
                deltas.append(jump)
                gap -= jump
            values.append(int(row[nz]))
            deltas.append(gap)
            idx = int(nz)
        row_ptr.append(len(values))
    vdtype = np.int8 if value_bits <= 8 else np.int16
    return SparseRows(value_bits, index_bits, np.asarray(values, dtype=vdtype),
                      np.asarray(deltas, dtype=np.uint16), np.asarray(row_ptr, dtype=np.int64))


def _gaps(weight: np.ndarray) -> np.ndarray:
    """Every non-zero's distance from the previous one in its row (from 0 for the first)."""
    rows, cols = np.nonzero(weight.reshape(weight.shape[0], -1))
    prev = np.concatenate([[0], cols[:-1]])
    first = np.concatenate([[True], rows[1:] != rows[:-1]])
    return np.where(first, cols, cols - prev)


def encode_best(weight: np.ndarray, value_bits: int) -> SparseRows:
    """The encoding with the fewest stored bits over index widths 1..16."""
    gaps, rows = _gaps(weight), weight.shape[0]

    def bits(b: int) -> int:
        jump = (1 << b) - 1
        entries = gaps.size + int(np.maximum(0, -(-gaps // jump) - 1).sum())
        return entries * (value_bits + b) + (rows + 1) * max(1, entries.bit_length())

    return encode_rows(weight, value_bits, min(range(1, 17), key=bits))


def dense_weight_bits(count: int, bits: int) -> int:
    """Dense weights are stored packed at their bit width."""
    return int(count) * int(bits)
