"""maxpool: a k x k max-pool with stride s, on the quantized integers (contract rule 6)."""

from __future__ import annotations

import numpy as np

from export.kinds import LayerKind, register
from export.plan import Layer
from export.walker import Act, CompileError, attrs, square_window, where


def maxpool(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    c, h, w = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.full((c, oh, ow), np.iinfo(np.int64).min, dtype=np.int64)
    for dy in range(k):
        for dx in range(k):
            out = np.maximum(out, x[:, dy:dy + stride * oh:stride, dx:dx + stride * ow:stride])
    return out


@register
class MaxPool(LayerKind):
    kind = "maxpool"
    ops = ("MaxPool",)

    def compile(self, w, node):
        a = w.act(node)
        k, s = square_window(node, attrs(node), "MaxPool")
        if len(a.shape) != 3 or min(a.shape[1:]) < k:
            raise CompileError(f"{where(node)}: a {k}x{k} max-pool on a map of shape {a.shape}")
        c, h, wd = a.shape
        out_shape = (c, (h - k) // s + 1, (wd - k) // s + 1)
        w.layers.append(Layer(w.layer_name(node, "pool"), self.kind, a.shape, out_shape, a.itype, a.itype, kernel=k, stride=s,
                              tensor=node.output[0]))
        w.acts[node.output[0]] = Act(a.itype, out_shape)

    def run(self, layer, x):
        return maxpool(x, layer.kernel, layer.stride)
