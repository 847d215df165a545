"""avgpool and globalavgpool: a sum over a power-of-two count of values, then the requantizer (contract rule 11).

ONNX Runtime divides the float32 sum by the count, which is exact for a power of two, and the
following QuantizeLinear rounds half to even; so the integer semantics are: sum the window in
int64, then `round_half_even(sum * 2**-shift)` with `shift = out.exp - (in.exp - log2(count))`,
and saturate. The pool's sum is an accumulator like a conv's, closed by the next requantizer.
"""

from __future__ import annotations

import numpy as np

from export.kinds import LayerKind, register
from export.plan import Layer
from export.walker import CompileError, Pending, attrs, square_window, where


def _log2_count(n: int, node, what: str) -> int:
    if n < 1 or n & (n - 1):
        raise CompileError(f"{where(node) if node is not None else 'a plan layer'}: {what} averages {n} values, not a power-of-two count (contract rule 11); "
                           "use a 2x2/4x4 window, or a map of 1, 4, 16, 64 ... pixels for a global pool")
    return n.bit_length() - 1


class _Average(LayerKind):
    def acc_exps(self, layer):
        return layer.inp.exp - _log2_count(self.count(layer), None, self.kind)

    def acc_bound(self, layer):
        return self.count(layer) * layer.inp.max_abs

    def start(self, w, node, layer, flatten: bool = False) -> None:
        w.pending[node.output[0]] = Pending(layer, node, flatten=flatten)

    def finish(self, layer, acc):
        from export.reference import requantize
        return requantize(acc, layer.shift, False, layer.out)


@register
class AvgPool(_Average):
    kind = "avgpool"
    ops = ("AveragePool",)

    def count(self, layer) -> int:
        return layer.kernel * layer.kernel

    def compile(self, w, node):
        a = w.act(node)
        at = attrs(node)
        k, s = square_window(node, at, "AveragePool")
        if s != k:
            raise CompileError(f"{where(node)}: an average pool with stride {s} over {k}x{k}; only stride = kernel is supported")
        if len(a.shape) != 3 or min(a.shape[1:]) < k:
            raise CompileError(f"{where(node)}: a {k}x{k} average pool on a map of shape {a.shape}")
        _log2_count(k * k, node, f"a {k}x{k} window")
        c, h, wd = a.shape
        layer = Layer(w.layer_name(node, "avgpool"), self.kind, a.shape, (c, h // k, wd // k), a.itype, None, kernel=k, stride=k)
        self.start(w, node, layer)

    def run(self, layer, x):
        k = layer.kernel
        c, h, wd = x.shape
        oh, ow = h // k, wd // k
        acc = x[:, :oh * k, :ow * k].astype(np.int64).reshape(c, oh, k, ow, k).sum(axis=(2, 4))
        return self.finish(layer, acc)


@register
class GlobalAvgPool(_Average):
    """GlobalAveragePool, and ReduceMean over H and W (`x.mean((2, 3))`), which with keepdims=0 also
    flattens: a flatten layer then follows its requantizer."""

    kind = "globalavgpool"
    ops = ("GlobalAveragePool", "ReduceMean")

    def count(self, layer) -> int:
        return int(layer.in_shape[1] * layer.in_shape[2])

    def compile(self, w, node):
        a = w.act(node)
        if len(a.shape) != 3:
            raise CompileError(f"{where(node)}: a global pool on a map of shape {a.shape}")
        flatten = False
        if node.op_type == "ReduceMean":
            at = attrs(node)
            axes = at.get("axes") if len(node.input) < 2 or not node.input[1] else w.const(node.input[1])
            if axes is None or sorted(int(x) % 4 for x in np.asarray(axes).reshape(-1)) != [2, 3]:
                raise CompileError(f"{where(node)}: a mean over axes {None if axes is None else np.asarray(axes).tolist()}; "
                                   "only the mean over height and width (axes 2, 3: a global average pool) is supported")
            flatten = not at.get("keepdims", 1)
        c, h, wd = a.shape
        _log2_count(h * wd, node, f"a global pool over {h}x{wd}")
        layer = Layer(w.layer_name(node, "gap"), self.kind, a.shape, (c, 1, 1), a.itype, None, kernel=h)
        self.start(w, node, layer, flatten)

    def run(self, layer, x):
        return self.finish(layer, x.astype(np.int64).sum(axis=(1, 2), keepdims=True))
