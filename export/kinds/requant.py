"""requant: an activation requantized elementwise to another integer type (a Brevitas QuantIdentity on
an activation, e.g. a uint8 ReLU output into the signed int8 scale of a residual add).

`q = saturate(round_half_even(x * 2**-shift))` with `shift = out.exp - in.exp` (a negative shift is
an exact left shift): ONNX Runtime dequantizes exactly (rule 1) and QuantizeLinear rounds half to even.
A requantizer to the activation's own type is no layer at all.
"""

from __future__ import annotations

from export.kinds import LayerKind, register
from export.plan import Layer
from export.walker import Act, Pending


@register
class Requant(LayerKind):
    kind = "requant"
    ops = ()  # recognised by the compiler: QuantizeLinear of an activation

    def acc_bound(self, layer):
        return layer.inp.max_abs

    def start(self, w, node, a: Act) -> Pending:
        return Pending(Layer(w.layer_name(node, "requant"), self.kind, a.shape, a.shape, a.itype, None, inputs=(a.src,)), node)

    def run(self, layer, x):
        from export.reference import requantize
        return requantize(x, layer.shift, layer.relu, layer.out)
