"""conv2d: a k x k convolution with zero padding (rule 9), any stride, per-tensor or per-channel weights (rule 10)."""

from __future__ import annotations

import numpy as np

from export.kinds import register
from export.kinds.weighted import Weighted, attach_bias, weight_const, weight_exps
from export.plan import IntType, Layer
from export.walker import CompileError, Pending, attrs, where


def conv_acc(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0)) -> np.ndarray:
    """2-D convolution of a (C, H, W) integer tensor, zero-padded by (top, left, bottom, right), int64 accumulators."""
    cout, cin, k, _ = w.shape
    x = np.pad(x.astype(np.int64), ((0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    _, h, wd = x.shape
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    # patches (Cin, k, k, oh, ow) as a strided view: no im2col copy until the contraction
    s = x.strides
    patches = np.lib.stride_tricks.as_strided(
        x, (cin, k, k, oh, ow), (s[0], s[1], s[2], s[1] * stride, s[2] * stride), writeable=False)
    acc = np.tensordot(w.astype(np.int64), patches, axes=([1, 2, 3], [0, 1, 2]))
    return acc + b.astype(np.int64)[:, None, None]


@register
class Conv2d(Weighted):
    kind = "conv2d"
    ops = ("Conv",)

    def out_pixels(self, layer):
        return int(np.prod(layer.out_shape[1:]))

    def compile(self, w, node):
        a = w.act(node)
        wq = weight_const(w, node)
        at = attrs(node)
        wt = wq.q
        if wt.ndim != 4 or wt.shape[2] != wt.shape[3]:
            raise CompileError(f"{where(node)}: only square 2-D kernels are supported, got weight shape {list(wt.shape)}")
        k = wt.shape[-1]
        if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise CompileError(f"{where(node)}: auto_pad {at['auto_pad']!r}; export explicit pads (Brevitas does)")
        pads = tuple(int(p) for p in at.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4 or any(not 0 <= p < k for p in pads):
            raise CompileError(f"{where(node)}: pads {list(pads)}; zero padding of 0..{k - 1} per side is supported (contract rule 9)")
        if at.get("group", 1) != 1:
            raise CompileError(f"{where(node)}: group={at['group']} is not supported; use ordinary (groups=1) convolutions")
        if any(d != 1 for d in at.get("dilations", [1, 1])):
            raise CompileError(f"{where(node)}: dilation {at['dilations']} is not supported; use dilation 1")
        strides = at.get("strides", [1, 1])
        if len(set(strides)) != 1:
            raise CompileError(f"{where(node)}: unequal strides {strides}; use the same stride in both directions")
        s = strides[0]
        if len(a.shape) != 3 or a.shape[0] != wt.shape[1]:
            raise CompileError(f"{where(node)}: input shape {a.shape} does not match weight {list(wt.shape)}")
        c, h, wd = a.shape
        ph, pw = h + pads[0] + pads[2], wd + pads[1] + pads[3]
        if ph < k or pw < k:
            raise CompileError(f"{where(node)}: a {k}x{k} kernel on a {h}x{wd} map padded to {ph}x{pw}")
        idx = sum(1 for l in w.layers if l.weight is not None)
        if idx < len(w.weighted_specs) and w.weighted_specs[idx]["cls"] == "P":
            raise CompileError(f"{where(node)}: a P (pruned) conv layer; the sparse engine runs linear layers only, mark it NP")
        exp, exps = weight_exps(wq, wt.shape[0], node)
        layer = Layer(w.layer_name(node, "conv"), self.kind, a.shape, (wt.shape[0], (ph - k) // s + 1, (pw - k) // s + 1),
                      a.itype, None, kernel=k, stride=s, pad=pads, weight=wt.astype(np.int8),
                      w_type=IntType(wq.itype.bits, True, exp), w_exps=exps, cls="NP")
        attach_bias(w, node, layer)
        w.pending[node.output[0]] = Pending(layer, node)

    def acc(self, layer, x):
        return conv_acc(x, layer.weight, layer.bias, layer.stride, layer.pad)
