"""requant: an activation requantized elementwise to another integer type (a Brevitas QuantIdentity on
an activation, e.g. a uint8 ReLU output into the signed int8 scale of a residual add).

`q = saturate(round_half_even(x * 2**-shift))` with `shift = out.exp - in.exp` (a negative shift is
an exact left shift): ONNX Runtime dequantizes exactly (rule 1) and QuantizeLinear rounds half to even.
A requantizer to the activation's own type is no layer at all.
"""

from __future__ import annotations

from export.arith import requantize
from export.kinds.base import LayerKind


class Requant(LayerKind):
    kind = "requant"

    def acc_bound(self, layer):
        return layer.inp.max_abs

    def run(self, layer, x):
        return requantize(x, layer.shift, layer.relu, layer.out)
