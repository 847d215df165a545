"""Contract rule 14: an average over n values that is not a power of two, as an integer multiply and shift.

ONNX Runtime computes the window's float32 sum (exact, rule 5), divides it by n in float32 (measured:
a correctly rounded division, not a multiplication by 1/n) and QuantizeLinear rounds the quotient
over the output scale half to even. The hardware computes `round_half_even(S * mult * 2**-shift)`
on the integer sum S. `multiply_shift` derives (mult, shift) and proves them equal to that float32
computation, saturated to the output type, for every sum S the window can reach.
"""

from __future__ import annotations

import numpy as np

from export.arith import IntType, requantize

MAX_PRODUCT = 1 << 62  # S * mult stays inside int64


def ort_average(sums: np.ndarray, n: int, inp: IntType, out: IntType) -> np.ndarray:
    """ONNX Runtime's quantized average of integer window sums, emulated in numpy float32."""
    x = (sums.astype(np.float64) * 2.0 ** inp.exp).astype(np.float32)
    q = np.round((x / np.float32(n)).astype(np.float32) / np.float32(2.0 ** out.exp))
    return np.clip(q, out.min, out.max).astype(np.int64)


def multiply_shift(n: int, inp: IntType, out: IntType) -> tuple[int, int] | None:
    """The smallest shift k >= 0 and a multiplier m with round_half_even(S*m / 2**k) == ort_average(S)
    for every reachable S in [n*inp.min, n*inp.max]; None when none exists (contract rule 14)."""
    sums = np.arange(n * inp.min, n * inp.max + 1, dtype=np.int64)
    want = ort_average(sums, n, inp, out)
    d = inp.exp - out.exp  # the quotient S/n in output units is S * 2**d / n
    top = int(np.abs(sums).max()) or 1
    for k in range(0, 63):
        if k + d < 0:
            continue
        exact = (1 << (k + d))
        for m in sorted({exact // n, -(-exact // n), (exact + n // 2) // n} - {0}):
            if m * top >= MAX_PRODUCT:
                return None
            if np.array_equal(requantize(sums * m, k, False, out), want):
                return m, k
    return None
