"""`LayerKind`: what every layer kind's unit answers about a plan layer of its kind."""

from __future__ import annotations

import numpy as np


class LayerKind:
    """The defaults are those of a layer without weights (a pool, a flatten)."""

    kind = ""

    def run(self, layer, *xs: np.ndarray) -> np.ndarray:
        """The layer on one image: its input integer tensors (`layer.inputs` order) in, an int64 tensor out."""
        raise NotImplementedError

    def acc_exps(self, layer) -> int | np.ndarray:
        """Exponent of the accumulator's LSB (per output channel where the weight scales are)."""
        return layer.inp.exp

    def macs_dense(self, layer) -> int:
        return 0

    def macs_effective(self, layer) -> int:
        return 0

    def weight_bits(self, layer) -> int:
        return 0

    def float_bits(self, layer) -> int:
        return 0

    def acc_bound(self, layer) -> int:
        return 0
