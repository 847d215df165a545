"""add: a residual join of two quantized activations (contract rule 13).

Both operands are integers at power-of-two scales; the coarser one is shifted left onto the finer
scale, the integers are added exactly in int64 (ONNX Runtime's float32 add is exact while the sum
stays below 2^24 units of the finer scale), and the requantizer that follows (with the ReLU where
the model has one) is the conv's: a round-half-to-even shift and saturation.
"""

from __future__ import annotations

import numpy as np

from export.arith import requantize
from export.kinds.base import LayerKind


class Add(LayerKind):
    kind = "add"

    def acc_exps(self, layer):
        return min(layer.inp.exp, layer.inp2.exp)

    def acc_bound(self, layer):
        e = self.acc_exps(layer)
        return (layer.inp.max_abs << (layer.inp.exp - e)) + (layer.inp2.max_abs << (layer.inp2.exp - e))

    def run(self, layer, a, b):
        e = self.acc_exps(layer)
        acc = (np.asarray(a, np.int64) << (layer.inp.exp - e)) + (np.asarray(b, np.int64) << (layer.inp2.exp - e))
        return requantize(acc, layer.shift, layer.relu, layer.out)
