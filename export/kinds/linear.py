"""linear: a fully connected layer (Gemm, or MatMul + Add); NP dense, or P pruned and run from its sparse encoding."""

from __future__ import annotations

import numpy as np

from export.kinds.weighted import Weighted


class Linear(Weighted):
    kind = "linear"

    def acc(self, layer, x):
        wt = layer.sparse.to_dense(layer.in_shape[0]) if layer.sparse is not None else layer.weight
        return wt.astype(np.int64) @ x.astype(np.int64) + layer.bias.astype(np.int64)
