"""linear: a fully connected layer (Gemm, or MatMul + Add); NP dense, or P pruned and run from its sparse encoding."""

from __future__ import annotations

import numpy as np

from export.encoding import encode_best
from export.kinds import register
from export.kinds.weighted import Weighted, attach_bias, weight_const, weight_exps
from export.plan import IntType, Layer
from export.walker import CompileError, Pending, attrs, where


@register
class Linear(Weighted):
    kind = "linear"
    ops = ("Gemm", "MatMul")

    def compile(self, w, node):
        a = w.act(node)
        wq = weight_const(w, node)
        wt = wq.q
        if node.op_type == "Gemm":
            at = attrs(node)
            if at.get("transA", 0) or at.get("alpha", 1.0) != 1.0 or at.get("beta", 1.0) != 1.0:
                raise CompileError(f"{where(node)}: Gemm with transA/alpha/beta is not supported")
            if not at.get("transB", 0):
                wt = wt.T
        else:
            wt = wt.T
        if len(a.shape) != 1 or wt.ndim != 2 or wt.shape[1] != a.shape[0]:
            raise CompileError(f"{where(node)}: input shape {a.shape} does not match weight {list(wt.shape)}; flatten before a linear layer")
        idx = sum(1 for l in w.layers if l.kind == self.kind) + sum(1 for p in w.pending.values() if p.layer.kind == self.kind)
        cls = w.linear_cls[idx] if idx < len(w.linear_cls) else "NP"
        exp, exps = weight_exps(wq, wt.shape[0], node)
        layer = Layer(w.layer_name(node, "linear"), self.kind, a.shape, (wt.shape[0],), a.itype, None,
                      weight=np.ascontiguousarray(wt).astype(np.int8), w_type=IntType(wq.itype.bits, True, exp),
                      w_exps=exps, cls=cls, inputs=(a.src,))
        if cls == "P":
            layer.sparse = encode_best(layer.weight, layer.w_type.bits)
        attach_bias(w, node, layer)
        w.pending[node.output[0]] = Pending(layer, node)

    def acc(self, layer, x):
        wt = layer.sparse.to_dense(layer.in_shape[0]) if layer.sparse is not None else layer.weight
        return wt.astype(np.int64) @ x.astype(np.int64) + layer.bias.astype(np.int64)
