"""avgpool and globalavgpool: the integer sum of a window, then the requantizer.

A power-of-two count n (contract rule 11): ONNX Runtime's division is exact, so the requantizer is
`round_half_even(sum * 2**-shift)` with `shift = out.exp - (in.exp - log2(n))`. Any other count
(contract rule 14, export/average.py): `round_half_even(sum * mult * 2**-shift)` with the constants
the compiler derives and proves equal to ONNX Runtime's float32 result for every reachable sum.
The pool's sum is an accumulator like a conv's, closed by the next requantizer.
"""

from __future__ import annotations

import numpy as np

from export.average import multiply_shift
from export.kinds import LayerKind, register
from export.plan import IntType, Layer, pair, square
from export.walker import CompileError, Pending, attrs, pool_window, where


def _log2(n: int) -> int | None:
    return n.bit_length() - 1 if n >= 1 and not n & (n - 1) else None


class _Average(LayerKind):
    def acc_exps(self, layer):
        e = _log2(self.count(layer))
        return layer.inp.exp - (e if e is not None else 0)

    def acc_bound(self, layer):
        return self.count(layer) * layer.inp.max_abs

    def close(self, layer, out: IntType, node) -> None:
        n = self.count(layer)
        if _log2(n) is not None:
            return super().close(layer, out, node)
        found = multiply_shift(n, layer.inp, out)
        if found is None:
            finest = layer.inp.exp - ((n & -n).bit_length() - 1)  # s_in / (the largest power of two dividing n)
            raise CompileError(f"{where(node)}: averages {n} values from 2^{layer.inp.exp} into 2^{out.exp}, where the exact "
                               "quotient can sit on a rounding tie that no integer multiply and shift rounds as ONNX Runtime "
                               f"does (contract rule 14); quantize the average at 2^{finest} or finer")
        layer.out, layer.mult, layer.shift = out, *found

    def start(self, w, node, layer, flatten: bool = False) -> None:
        w.pending[node.output[0]] = Pending(layer, node, flatten=flatten)

    def finish(self, layer, acc):
        from export.reference import requantize
        return requantize(acc * layer.mult, layer.shift, False, layer.out)


@register
class AvgPool(_Average):
    kind = "avgpool"
    ops = ("AveragePool",)

    def count(self, layer) -> int:
        kh, kw = layer.kernel_hw
        return kh * kw

    def compile(self, w, node):
        a = w.act(node)
        at = attrs(node)
        (kh, kw), s = pool_window(node, at, "AveragePool")
        if s != (kh, kw):
            raise CompileError(f"{where(node)}: an average pool with stride {list(s)} over {kh}x{kw}; only stride = kernel is supported")
        if len(a.shape) != 3 or a.shape[1] < kh or a.shape[2] < kw:
            raise CompileError(f"{where(node)}: a {kh}x{kw} average pool on a map of shape {a.shape}")
        c, h, wd = a.shape
        layer = Layer(w.layer_name(node, "avgpool"), self.kind, a.shape, (c, h // kh, wd // kw), a.itype, None,
                      kernel=square(kh, kw), stride=square(kh, kw), inputs=(a.src,))
        self.start(w, node, layer)

    def run(self, layer, x):
        kh, kw = pair(layer.kernel)
        c, h, wd = x.shape
        oh, ow = h // kh, wd // kw
        acc = x[:, :oh * kh, :ow * kw].astype(np.int64).reshape(c, oh, kh, ow, kw).sum(axis=(2, 4))
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
        layer = Layer(w.layer_name(node, "gap"), self.kind, a.shape, (c, 1, 1), a.itype, None, kernel=square(h, wd),
                      inputs=(a.src,))
        self.start(w, node, layer, flatten)

    def run(self, layer, x):
        return self.finish(layer, x.astype(np.int64).sum(axis=(1, 2), keepdims=True))
