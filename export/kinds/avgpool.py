"""avgpool and globalavgpool: the integer sum of a window, then the requantizer.

A power-of-two count n (contract rule 11): ONNX Runtime's division is exact, so the requantizer is
`round_half_even(sum * 2**-shift)` with `shift = out.exp - (in.exp - log2(n))`. Any other count
(contract rule 14, export/average.py): `round_half_even(sum * mult * 2**-shift)` with the constants
the compiler derives and proves equal to ONNX Runtime's float32 result for every reachable sum.
The pool's sum is an accumulator like a conv's, closed by the next requantizer.
"""

from __future__ import annotations

import numpy as np

from export.arith import pair, requantize
from export.kinds.base import LayerKind


class Average(LayerKind):
    """An average over `count(layer)` values: the window's integer sum, then the requantizer."""

    def count(self, layer) -> int:
        raise NotImplementedError

    def count_log2(self, layer) -> int | None:
        """log2 of the count when it is a power of two (contract rule 11), else None (rule 14)."""
        n = self.count(layer)
        return n.bit_length() - 1 if n >= 1 and not n & (n - 1) else None

    def acc_exps(self, layer):
        e = self.count_log2(layer)
        return layer.inp.exp - (e if e is not None else 0)

    def acc_bound(self, layer):
        return self.count(layer) * layer.inp.max_abs

    def finish(self, layer, acc: np.ndarray) -> np.ndarray:
        return requantize(acc * layer.mult, layer.shift, False, layer.out)


class AvgPool(Average):
    kind = "avgpool"

    def count(self, layer) -> int:
        kh, kw = layer.kernel_hw
        return kh * kw

    def run(self, layer, x):
        kh, kw = pair(layer.kernel)
        c, h, wd = x.shape
        oh, ow = h // kh, wd // kw
        acc = x[:, :oh * kh, :ow * kw].astype(np.int64).reshape(c, oh, kh, ow, kw).sum(axis=(2, 4))
        return self.finish(layer, acc)


class GlobalAvgPool(Average):
    """The average over the whole H x W map: (C, 1, 1)."""

    kind = "globalavgpool"

    def count(self, layer) -> int:
        return int(layer.in_shape[1] * layer.in_shape[2])

    def run(self, layer, x):
        return self.finish(layer, x.astype(np.int64).sum(axis=(1, 2), keepdims=True))
