"""maxpool: a kh x kw max-pool with stride (sh, sw), on the quantized integers (contract rule 6)."""

from __future__ import annotations

import numpy as np

from export.kinds import LayerKind, register
from export.plan import Layer, pair, square
from export.walker import Act, CompileError, attrs, pool_window, where


def maxpool(x: np.ndarray, k: int | tuple[int, int], stride: int | tuple[int, int]) -> np.ndarray:
    (kh, kw), (sh, sw) = pair(k), pair(stride)
    c, h, w = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.full((c, oh, ow), np.iinfo(np.int64).min, dtype=np.int64)
    for dy in range(kh):
        for dx in range(kw):
            out = np.maximum(out, x[:, dy:dy + sh * oh:sh, dx:dx + sw * ow:sw])
    return out


@register
class MaxPool(LayerKind):
    kind = "maxpool"
    ops = ("MaxPool",)

    def compile(self, w, node):
        a = w.act(node)
        (kh, kw), (sh, sw) = pool_window(node, attrs(node), "MaxPool")
        if len(a.shape) != 3 or a.shape[1] < kh or a.shape[2] < kw:
            raise CompileError(f"{where(node)}: a {kh}x{kw} max-pool on a map of shape {a.shape}")
        c, h, wd = a.shape
        out_shape = (c, (h - kh) // sh + 1, (wd - kw) // sw + 1)
        name = w.layer_name(node, "pool")
        w.layers.append(Layer(name, self.kind, a.shape, out_shape, a.itype, a.itype, kernel=square(kh, kw),
                              stride=square(sh, sw), tensor=node.output[0], inputs=(a.src,)))
        w.acts[node.output[0]] = Act(a.itype, out_shape, name)

    def run(self, layer, x):
        return maxpool(x, layer.kernel, layer.stride)
