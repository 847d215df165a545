"""What conv2d and linear share: integer weights and bias, an accumulator, a requantizer, the accounting."""

from __future__ import annotations

import numpy as np

from export.arith import requantize
from export.encoding import dense_weight_bits
from export.kinds.base import LayerKind


class Weighted(LayerKind):
    """`acc` is the kind's own arithmetic; the requantizer (or none, for the logits) is shared."""

    def out_pixels(self, layer) -> int:
        return 1

    def acc(self, layer, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, layer, x):
        acc = self.acc(layer, x)
        return acc if layer.out is None else requantize(acc, layer.shift, layer.relu, layer.out)

    def acc_exps(self, layer):
        w = layer.w_exps if layer.w_exps is not None else layer.w_type.exp
        return layer.inp.exp + w

    def macs_dense(self, layer):
        return int(layer.weight.size) * self.out_pixels(layer)

    def macs_effective(self, layer):
        return int(np.count_nonzero(layer.weight)) * self.out_pixels(layer)

    def weight_bits(self, layer):
        """Weights (and biases) as stored on chip: dense, or the sparse encoding's exact count."""
        bias_bits = 32 * int(layer.bias.size)
        if layer.sparse is not None:
            return layer.sparse.stored_bits + bias_bits
        return dense_weight_bits(layer.weight.size, layer.w_type.bits) + bias_bits

    def float_bits(self, layer):
        return 32 * (int(layer.weight.size) + int(layer.bias.size))

    def acc_bound(self, layer):
        """Contract rule 5 per output channel, in its own units: sum|w| * max|x| + |b|."""
        w = np.abs(layer.weight.reshape(layer.weight.shape[0], -1).astype(np.int64)).sum(axis=1)
        return int((w * layer.inp.max_abs + np.abs(layer.bias.astype(np.int64))).max())

