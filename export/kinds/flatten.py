"""flatten: (C, H, W) -> (C*H*W,) in channel-major order; a no-op on the integers."""

from __future__ import annotations

import numpy as np

from export.kinds.base import LayerKind


class Flatten(LayerKind):
    kind = "flatten"

    def run(self, layer, x):
        return x.reshape(-1)

