"""The compiler's state while it walks a QCDQ graph, and the number-contract checks shared by the layer kinds.

`Walker` maps ONNX tensor names to what they hold: folded constants, integer constants behind a
DequantizeLinear (`QConst`), quantized activations (`Act`) and accumulators waiting for their
requantizer (`Pending`). Each layer kind's handler (export/kinds/) reads and extends it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from export.plan import ACC_LIMIT, INPUT, IntType, Layer

INT32 = (-(1 << 31), (1 << 31) - 1)


class CompileError(ValueError):
    """A graph the compiler refuses: the message names the node, its op and what to change."""


def where(node: onnx.NodeProto) -> str:
    return f"node {node.name or '(unnamed)'!r} ({node.op_type})"


def pow2_exp(scale: np.ndarray, node: onnx.NodeProto, per_channel: bool = False) -> int | np.ndarray:
    """The exponent of a power-of-two scale (rule 1); with `per_channel`, an int64 array for a vector of scales (rule 10)."""
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    if s.size != 1 and not per_channel:
        raise CompileError(f"{where(node)}: per-channel scales ({s.size}) are not allowed here; only weights and "
                           "biases may have one scale per output channel (contract rule 10)")
    exps = []
    for v in s:
        m, e = math.frexp(float(v))
        if v <= 0 or m != 0.5:
            raise CompileError(f"{where(node)}: scale {float(v)!r} is not a power of two (contract rule 1); "
                               "use Brevitas *FixedPoint quantizers (restrict_scaling_type=POWER_OF_TWO)")
        exps.append(e - 1)
    if s.size == 1:
        return exps[0]
    return np.asarray(exps, dtype=np.int64)


def check_zero_point(zp: np.ndarray | None, node: onnx.NodeProto) -> None:
    if zp is not None and np.any(np.asarray(zp) != 0):
        raise CompileError(f"{where(node)}: zero point {np.asarray(zp).reshape(-1)[:4].tolist()} is not 0; "
                           "use symmetric quantizers (the hardware has no zero-point arithmetic)")


def int_type_of(zp: np.ndarray | None, clip: tuple[int, int] | None, exp: int, node: onnx.NodeProto) -> IntType:
    """The integer type from the zero point's dtype, narrowed by a Clip's bounds when present."""
    dtype = np.asarray(zp).dtype if zp is not None else np.dtype(np.uint8)
    signed = np.issubdtype(dtype, np.signedinteger)
    bits = dtype.itemsize * 8
    if clip is not None:
        lo, hi = clip
        bits = max(1, int(hi).bit_length() + (1 if signed else 0))
        if signed and lo < -(1 << (bits - 1)):
            bits += 1
    if not 2 <= bits <= 8:
        raise CompileError(f"{where(node)}: a {bits}-bit tensor; the hardware takes 2..8 bits")
    return IntType(bits, bool(signed), exp)


@dataclass
class QConst:
    """A dequantized constant: integers, power-of-two exponent (an array when per channel), integer type."""

    q: np.ndarray
    exp: int | np.ndarray
    itype: IntType | None = None


@dataclass
class Act:
    """An integer activation tensor flowing between layers; `src` names the plan layer (or INPUT) that makes it."""

    itype: IntType
    shape: tuple[int, ...]
    src: str = INPUT


@dataclass
class Pending:
    """An accumulator (conv/linear, or an average pool's sum) waiting for its requantizer or the graph output."""

    layer: Layer
    node: onnx.NodeProto
    relu: bool = False
    flatten: bool = False  # the op also flattens (ReduceMean with keepdims=0): a flatten layer follows the requantizer


@dataclass
class Walker:
    graph: onnx.GraphProto
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    qconsts: dict[str, QConst] = field(default_factory=dict)
    clips: dict[str, tuple[np.ndarray, tuple[int, int] | None]] = field(default_factory=dict)
    acts: dict[str, Act] = field(default_factory=dict)
    quantized: dict[str, tuple[Act | Pending, IntType, onnx.NodeProto]] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)
    linear_cls: list[str] = field(default_factory=list)  # NP/P of the linear layers in order, from the model description
    input_name: str = ""
    input_shape: tuple[int, ...] = ()
    input_type: IntType | None = None

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def act(self, node: onnx.NodeProto, k: int = 0) -> Act:
        """The quantized activation a node reads as its input `k`, or a refusal naming the node."""
        a = self.acts.get(node.input[k])
        if a is None:
            p = self.pending.get(node.input[k])
            if p is not None and p.layer.kind in ("avgpool", "globalavgpool", "add"):
                raise CompileError(f"{where(node)}: reads the {p.layer.kind} {p.node.name!r} directly; put a requantizer "
                                   "(Brevitas QuantIdentity) after it")
            raise CompileError(f"{where(node)}: its input {node.input[k]!r} is not a quantized activation; put a quantizer before it")
        return a

    def layer_name(self, node: onnx.NodeProto, default: str) -> str:
        """The node's name (or `default` and a number), unique among the plan's layers."""
        name = node.name or f"{default}{len(self.layers)}"
        taken = {l.name for l in self.layers} | {p.layer.name for p in self.pending.values()} | {INPUT}
        base, n = name, 1
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        return name


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def check_bound(l: Layer, node: onnx.NodeProto) -> None:
    """Contract rule 5 (rule 13 for an add), per output channel in that channel's units."""
    if l.acc_bound >= ACC_LIMIT:
        rule = "13" if l.kind == "add" else "5"
        raise CompileError(f"{where(node)}: layer {l.name!r} can reach |acc| = {l.acc_bound} >= 2^24 = {ACC_LIMIT}, where float32 "
                           f"stops being exact (contract rule {rule}); use narrower weights/activations or prune more")


def pool_window(node: onnx.NodeProto, a: dict, what: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """((kh, kw), (sh, sw)) of a 2-D pooling window without padding, dilation or ceil mode."""
    ks = a.get("kernel_shape", [])
    if len(ks) != 2:
        raise CompileError(f"{where(node)}: kernel {ks}; only 2-D {what} is supported")
    strides = a.get("strides", [1, 1])
    if any(a.get("pads", [0])) or a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])):
        raise CompileError(f"{where(node)}: padding/ceil_mode/dilation are not supported in {what}")
    return (int(ks[0]), int(ks[1])), (int(strides[0]), int(strides[1]))
