"""flatten: (C, H, W) -> (C*H*W,) in channel-major order; a no-op on the integers."""

from __future__ import annotations

import numpy as np

from export.kinds import LayerKind, register
from export.plan import Layer
from export.walker import Act, CompileError, attrs, where


@register
class Flatten(LayerKind):
    kind = "flatten"
    ops = ("Flatten", "Reshape")

    def compile(self, w, node):
        a = w.act(node)
        if node.op_type == "Flatten" and attrs(node).get("axis", 1) != 1:
            raise CompileError(f"{where(node)}: Flatten axis {attrs(node)['axis']}; only axis 1 is supported")
        n = int(np.prod(a.shape))
        if node.op_type == "Reshape":
            shape = w.const(node.input[1])
            if shape is None or len(shape) != 2 or int(np.prod([s for s in shape[1:] if s > 0])) not in (n, 1):
                raise CompileError(f"{where(node)}: only a reshape to (batch, features) is supported")
        if len(a.shape) == 1:  # already flat (a feature-vector input): nothing to do
            w.acts[node.output[0]] = a
            return
        append_flatten(w, w.layer_name(node, "flatten"), a, node.output[0])

    def run(self, layer, x):
        return x.reshape(-1)


def append_flatten(w, name: str, a: Act, tensor: str) -> None:
    """A flatten layer of activation `a` into the plan; `tensor` (its ONNX name) becomes the flat activation."""
    n = int(np.prod(a.shape))
    w.layers.append(Layer(name, Flatten.kind, a.shape, (n,), a.itype, a.itype, tensor=tensor, inputs=(a.src,)))
    w.acts[tensor] = Act(a.itype, (n,), name)
