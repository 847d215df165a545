"""conv2d: a kh x kw convolution, grouped or depthwise, with zero padding (rule 9), per-axis strides,
per-tensor or per-channel weights (rule 10)."""

from __future__ import annotations

import numpy as np

from export.kinds import register
from export.kinds.weighted import Weighted, attach_bias, weight_const, weight_exps
from export.plan import IntType, Layer, pair, square
from export.walker import CompileError, Pending, attrs, where


def conv_acc(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int | tuple[int, int] = 1,
             pad: tuple[int, int, int, int] = (0, 0, 0, 0), groups: int = 1) -> np.ndarray:
    """2-D convolution of a (C, H, W) integer tensor, zero-padded by (top, left, bottom, right), int64 accumulators.

    `w` is (Cout, Cin / groups, kh, kw); output channel group g reads input channels of group g."""
    cout, cin_g, kh, kw = w.shape
    sh, sw = pair(stride)
    x = np.pad(x.astype(np.int64), ((0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    c, h, wd = x.shape
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    # patches (C, kh, kw, oh, ow) as a strided view: no im2col copy until the contraction
    s = x.strides
    patches = np.lib.stride_tricks.as_strided(
        x, (c, kh, kw, oh, ow), (s[0], s[1], s[2], s[1] * sh, s[2] * sw), writeable=False)
    wg = w.astype(np.int64).reshape(groups, cout // groups, cin_g, kh, kw)
    pg = patches.reshape(groups, cin_g, kh, kw, oh, ow)
    acc = np.einsum("gocij,gcijyx->goyx", wg, pg).reshape(cout, oh, ow)
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
        if wt.ndim != 4:
            raise CompileError(f"{where(node)}: only 2-D kernels are supported, got weight shape {list(wt.shape)}")
        kh, kw = wt.shape[2:]
        if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise CompileError(f"{where(node)}: auto_pad {at['auto_pad']!r}; export explicit pads (Brevitas does)")
        pads = tuple(int(p) for p in at.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4 or any(not 0 <= p < k for p, k in zip(pads, (kh, kw, kh, kw))):
            raise CompileError(f"{where(node)}: pads {list(pads)}; zero padding of 0..k-1 per side (kernel {kh}x{kw}) is "
                               "supported (contract rule 9)")
        if any(d != 1 for d in at.get("dilations", [1, 1])):
            raise CompileError(f"{where(node)}: dilation {at['dilations']} is not supported; use dilation 1")
        sh, sw = (int(s) for s in at.get("strides", [1, 1]))
        groups = int(at.get("group", 1))
        if len(a.shape) != 3 or a.shape[0] != wt.shape[1] * groups or wt.shape[0] % groups:
            raise CompileError(f"{where(node)}: input shape {a.shape} does not match weight {list(wt.shape)} in {groups} group(s)")
        c, h, wd = a.shape
        ph, pw = h + pads[0] + pads[2], wd + pads[1] + pads[3]
        if ph < kh or pw < kw:
            raise CompileError(f"{where(node)}: a {kh}x{kw} kernel on a {h}x{wd} map padded to {ph}x{pw}")
        exp, exps = weight_exps(wq, wt.shape[0], node)
        layer = Layer(w.layer_name(node, "conv"), self.kind, a.shape, (wt.shape[0], (ph - kh) // sh + 1, (pw - kw) // sw + 1),
                      a.itype, None, kernel=square(kh, kw), stride=square(sh, sw), pad=pads, weight=wt.astype(np.int8),
                      w_type=IntType(wq.itype.bits, True, exp), w_exps=exps, cls="NP", inputs=(a.src,), groups=groups)
        attach_bias(w, node, layer)
        w.pending[node.output[0]] = Pending(layer, node)

    def acc(self, layer, x):
        return conv_acc(x, layer.weight, layer.bias, layer.stride, layer.pad, layer.groups)
