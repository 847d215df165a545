"""What conv2d and linear share: integer weights and bias, an accumulator, a requantizer, the accounting."""

from __future__ import annotations

import numpy as np

from export.encoding import dense_weight_bits
from export.kinds import LayerKind
from export.walker import INT32, CompileError, QConst, where


class Weighted(LayerKind):
    """`acc` is the kind's own arithmetic; the requantizer (or none, for the logits) is shared."""

    def out_pixels(self, layer) -> int:
        return 1

    def acc(self, layer, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, layer, x):
        from export.reference import requantize
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


def weight_const(w, node) -> QConst:
    wq = w.qconsts.get(node.input[1])
    if wq is None or wq.itype is None:
        raise CompileError(f"{where(node)}: the weight is not an integer constant behind DequantizeLinear (QCDQ export of a quantized layer)")
    if not wq.itype.signed:
        raise CompileError(f"{where(node)}: unsigned weights; use signed (narrow-range) weight quantizers")
    return wq


def weight_exps(wq: QConst, cout: int, node) -> tuple[int, np.ndarray | None]:
    """(per-tensor exponent, per-channel exponents or None); a vector of equal scales is per tensor."""
    e = np.asarray(wq.exp).reshape(-1)
    if e.size == 1:
        return int(e[0]), None
    if e.size != cout:
        raise CompileError(f"{where(node)}: {e.size} weight scales for {cout} output channels; per-channel scales go along axis 0")
    if np.all(e == e[0]):
        return int(e[0]), None
    return int(e.max()), e.astype(np.int64)


def bias_ints(b: QConst, layer, node) -> np.ndarray:
    """The integer bias, checked to be in the accumulator's scale (rule 3, per channel under rule 10)."""
    want = np.broadcast_to(np.asarray(layer.acc_exps), (layer.out_shape[0],))
    got = np.broadcast_to(np.asarray(b.exp), (layer.out_shape[0],))
    if not np.array_equal(want, got):
        raise CompileError(f"{where(node)}: bias scale 2^{np.unique(got).tolist()} differs from s_in*s_w = "
                           f"2^{np.unique(want).tolist()} (contract rule 3); use Int32Bias")
    q = b.q.reshape(-1)
    if q.min() < INT32[0] or q.max() > INT32[1]:
        raise CompileError(f"{where(node)}: bias outside int32")
    return q.astype(np.int64)


def attach_bias(w, node, layer) -> None:
    ins = list(node.input)
    if len(ins) > 2 and ins[2]:
        b = w.qconsts.get(ins[2])
        if b is None:
            raise CompileError(f"{where(node)}: the bias is not an integer constant behind DequantizeLinear; use Int32Bias")
        layer.bias = bias_ints(b, layer, node)
    else:
        layer.bias = np.zeros(layer.out_shape[0], dtype=np.int64)
