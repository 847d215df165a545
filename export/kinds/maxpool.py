"""maxpool: a kh x kw max-pool with stride (sh, sw), on the quantized integers (contract rule 6)."""

from __future__ import annotations

import numpy as np

from export.arith import pair
from export.kinds.base import LayerKind


def maxpool(x: np.ndarray, k: int | tuple[int, int], stride: int | tuple[int, int]) -> np.ndarray:
    (kh, kw), (sh, sw) = pair(k), pair(stride)
    c, h, w = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.full((c, oh, ow), np.iinfo(np.int64).min, dtype=np.int64)
    for dy in range(kh):
        for dx in range(kw):
            out = np.maximum(out, x[:, dy:dy + sh * oh:sh, dx:dx + sw * ow:sw])
    return out


class MaxPool(LayerKind):
    kind = "maxpool"

    def run(self, layer, x):
        return maxpool(x, layer.kernel, layer.stride)
