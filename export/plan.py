"""The layer plan: the integer IR between the ONNX golden model and the hardware.

A plan holds everything the accelerator needs and nothing it does not (DESIGN.md, "The layer
plan"). Tensors are numpy integer arrays in channel-major (C, H, W) order; every scale is a power
of two, stored as its exponent. `plan.json` holds the descriptors (versioned), `plan.npz` the
arrays, with the json recording the npz's sha256 so the two are read as one; `load(save(p)) == p`.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from common.atomic import atomic_write
from export import kinds
from export.arith import IntType, pair, square
from export.encoding import SparseRows

PLAN_VERSION = 3  # 3: a graph (each layer's inputs), add / requant, groups, non-square kernels and strides, average multipliers
INPUT = "input"  # the name a layer's `inputs` gives the plan's input tensor
ACC_LIMIT = 1 << 24  # contract rule 5: float32 sums of integers are exact below this
ARRAY_FIELDS = ("weight", "bias", "shift", "w_exps")  # stored in the .npz
TYPE_FIELDS = ("inp", "out", "w_type", "inp2")


@dataclass(eq=False)
class Layer:
    """One layer descriptor.

    conv2d / linear: `acc = sum(w * x) + bias` in int64 (conv2d over the map zero-padded by `pad`,
    top/left/bottom/right), then (unless `out` is None, the logits layer)
    `q = saturate(relu?(round_half_even(acc * 2**-shift)))` to `out`; a negative `shift` is a left
    shift. With per-channel weight scales `w_exps` holds each output channel's exponent
    (`w_type.exp` is their maximum) and `shift` is an int64 array, one per channel.
    conv2d with `groups` > 1 convolves each group of Cin/groups input channels into its Cout/groups outputs.
    avgpool / globalavgpool: the window's int64 sum S, then `round_half_even(S * mult * 2**-shift)`
    (`mult` is 1 for a power-of-two count; contract rule 14 otherwise), saturated.
    add: `(a << (inp.exp - e)) + (b << (inp2.exp - e))` with e the finer exponent (contract rule 13),
    then the requantizer (ReLU where the model has one). requant: one activation requantized
    elementwise to another type (the requantizer on `acc = x`).
    maxpool works on the integers. flatten is a no-op on a (C, H, W) buffer. Each kind's
    semantics and accounting live in its unit, export/kinds/<kind>.py.
    `inputs` names the layers (or INPUT) whose outputs this layer reads, in operand order; empty
    means the previous layer's output (a chain). `kernel` and `stride` are ints when square, else (h, w).
    """

    name: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    inp: IntType
    out: IntType | None
    kernel: int | tuple[int, int] = 1
    stride: int | tuple[int, int] = 1
    weight: np.ndarray | None = None  # conv (Cout, Cin, k, k), linear (out, in); int
    bias: np.ndarray | None = None  # (Cout,), int64, in the accumulator's scale
    w_type: IntType | None = None
    shift: int | np.ndarray = 0
    relu: bool = False
    cls: str = "NP"  # "NP": dense on the systolic array; "P": pruned, sparse engine
    sparse: SparseRows | None = None  # the P-layer's stored encoding
    tensor: str = ""  # the ONNX tensor holding this layer's output, dequantized (for layer-wise checks)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # conv2d zero padding: top, left, bottom, right
    w_exps: np.ndarray | None = None  # per-channel weight exponents (Cout,), int64; None when per tensor
    inputs: tuple[str, ...] = ()
    groups: int = 1
    mult: int = 1  # an average's multiplier (contract rule 14)
    inp2: IntType | None = None  # add: the second operand's type

    @property
    def kernel_hw(self) -> tuple[int, int]:
        return pair(self.kernel)

    @property
    def stride_hw(self) -> tuple[int, int]:
        return pair(self.stride)

    @property
    def unit(self) -> kinds.LayerKind:
        """The layer kind's unit: its semantics and accounting, looked up by `kind`."""
        return kinds.unit(self.kind)

    @property
    def per_channel(self) -> bool:
        return self.w_exps is not None

    @property
    def acc_exps(self) -> int | np.ndarray:
        """Exponent of the accumulator's LSB: s_in * s_w, per output channel where the weight scales are."""
        return self.unit.acc_exps(self)

    @property
    def acc_exp(self) -> int:
        """The accumulator's exponent when it is one for the whole layer (refused for a per-channel logits layer)."""
        e = np.unique(np.asarray(self.acc_exps))
        if e.size != 1:
            raise PlanError(f"layer {self.name!r}: per-channel accumulator exponents {e.tolist()} have no single scale")
        return int(e[0])

    @property
    def macs_dense(self) -> int:
        return self.unit.macs_dense(self)

    @property
    def macs_effective(self) -> int:
        return self.unit.macs_effective(self)

    @property
    def sparsity(self) -> float:
        return 1.0 - np.count_nonzero(self.weight) / self.weight.size if self.weight is not None else 0.0

    @property
    def weight_bits(self) -> int:
        """Weight (and bias) bits as stored on chip: dense, or the sparse encoding's exact count."""
        return self.unit.weight_bits(self)

    @property
    def float_bits(self) -> int:
        """The same parameters in float32."""
        return self.unit.float_bits(self)

    @property
    def acc_bound(self) -> int:
        """Worst-case |partial sum| per contract rule 5, per output channel in its own units."""
        return self.unit.acc_bound(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layer):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or a.dtype != b.dtype or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True


@dataclass(eq=True)
class Plan:
    """A whole network: the input type and shape, the layers in order, the class names."""

    input_shape: tuple[int, ...]
    input_type: IntType
    layers: list[Layer]
    class_names: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def is_chain(self) -> bool:
        """Whether every layer reads only the previous layer's output (the first: the input)."""
        prev = INPUT
        for l in self.layers:
            if l.inputs not in ((), (prev,)):
                return False
            prev = l.name
        return True

    def input_float(self, x: np.ndarray) -> np.ndarray:
        """The float32 ONNX input of integer inputs `x`: x * 2**input_type.exp (exact)."""
        return (np.asarray(x, dtype=np.float64) * 2.0 ** self.input_type.exp).astype(np.float32)

    @property
    def logit_exp(self) -> int:
        """Exponent of the logits' LSB (contract rule 7: round(ort / 2**logit_exp) == RTL)."""
        return self.layers[-1].acc_exp

    @property
    def compute_layers(self) -> list[Layer]:
        return [l for l in self.layers if l.weight is not None]

    @property
    def weight_bits(self) -> int:
        return sum(l.weight_bits for l in self.layers)

    @property
    def macs_dense(self) -> int:
        return sum(l.macs_dense for l in self.layers)

    @property
    def macs_effective(self) -> int:
        """MACs with a nonzero weight: what an engine that skips zeros must do (the DSP bound's MACs)."""
        return sum(l.macs_effective for l in self.layers)

    @property
    def float_bits(self) -> int:
        return sum(l.float_bits for l in self.layers)

    @property
    def compression_ratio(self) -> float:
        return self.float_bits / self.weight_bits

    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write `<stem>.npz`, then `<stem>.json` with the npz's sha256, each atomically; returns both paths."""
        json_path, npz_path = _plan_files(stem)
        arrays: dict[str, np.ndarray] = {}
        layers = []
        for i, l in enumerate(self.layers):
            d = {f.name: getattr(l, f.name) for f in fields(l)}
            for key in ARRAY_FIELDS:
                if isinstance(d[key], np.ndarray):
                    arrays[f"{i}.{key}"] = d[key]
                    d[key] = f"{i}.{key}"
            d["shift"] = d["shift"] if isinstance(d["shift"], str) else int(d["shift"])
            d["pad"], d["inputs"] = list(d["pad"]), list(d["inputs"])
            for key in ("kernel", "stride"):
                d[key] = d[key] if isinstance(d[key], int) else list(d[key])
            if l.sparse is not None:
                for key, arr in l.sparse.arrays().items():
                    arrays[f"{i}.sparse.{key}"] = arr
                d["sparse"] = {"index_bits": l.sparse.index_bits, "value_bits": l.sparse.value_bits}
            for key in TYPE_FIELDS:
                d[key] = None if d[key] is None else vars(d[key])
            d["in_shape"], d["out_shape"] = list(l.in_shape), list(l.out_shape)
            layers.append(d)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        blob = buf.getvalue()
        doc = {
            "version": PLAN_VERSION,
            "npz_sha256": hashlib.sha256(blob).hexdigest(),  # the two files are one plan
            "input_shape": list(self.input_shape),
            "input_type": vars(self.input_type),
            "class_names": self.class_names,
            "meta": self.meta,
            "layers": layers,
        }
        atomic_write(npz_path, lambda f: f.write(blob))
        atomic_write(json_path, lambda f: f.write(json.dumps(doc, indent=1).encode()))
        return json_path, npz_path

    @classmethod
    def load(cls, stem: str | Path) -> "Plan":
        """Read what `save` wrote; a missing, corrupt or mismatched file is a one-line PlanError naming it."""
        json_path, npz_path = _plan_files(stem)
        redo = "re-run `python -m export plan`"
        for p in (json_path, npz_path):
            if not p.is_file():
                raise PlanError(f"{p}: no such plan file (write one with `python -m export plan MODEL.onnx --out {json_path.with_suffix('')}`)")
        try:
            doc = json.loads(json_path.read_text())
        except ValueError as e:
            raise PlanError(f"{json_path}: not a plan ({e.__class__.__name__}: {e}); {redo}") from None
        version = doc.get("version") if isinstance(doc, dict) else None
        if version != PLAN_VERSION:
            raise PlanError(f"{json_path}: plan version {version}, this toolkit reads {PLAN_VERSION}; {redo}")
        blob = npz_path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != doc.get("npz_sha256"):
            raise PlanError(f"{npz_path}: not the sha256 that {json_path.name} records (the files of two saves?); {redo}")
        try:
            with np.load(io.BytesIO(blob)) as npz:
                arrays = {k: npz[k] for k in npz.files}
            layers = []
            for i, d in enumerate(doc["layers"]):
                for key in ARRAY_FIELDS:
                    if isinstance(d.get(key), str):
                        d[key] = arrays[d[key]]
                d["pad"], d["inputs"] = tuple(d["pad"]), tuple(d["inputs"])
                for key in ("kernel", "stride"):
                    d[key] = d[key] if isinstance(d[key], int) else tuple(d[key])
                for key in TYPE_FIELDS:
                    d[key] = IntType(**d[key]) if d[key] is not None else None
                if d["sparse"] is not None:
                    d["sparse"] = SparseRows(
                        **d["sparse"], **{k: arrays[f"{i}.sparse.{k}"] for k in SparseRows.ARRAYS})
                d["in_shape"], d["out_shape"] = tuple(d["in_shape"]), tuple(d["out_shape"])
                layers.append(Layer(**d))
            return cls(tuple(doc["input_shape"]), IntType(**doc["input_type"]), layers,
                       doc["class_names"], doc["meta"])
        except (KeyError, TypeError, ValueError, AttributeError, zipfile.BadZipFile) as e:
            raise PlanError(f"{json_path}: a corrupt plan ({e.__class__.__name__}: {e}); {redo}") from None


def _plan_files(stem: str | Path) -> tuple[Path, Path]:
    """`<stem>.json` and `<stem>.npz`; `stem` may name either file."""
    stem = Path(stem)
    stem = stem.with_suffix("") if stem.suffix in (".json", ".npz") else stem
    return stem.with_suffix(".json"), stem.with_suffix(".npz")


class PlanError(ValueError):
    """A plan that cannot be read, or that breaks the number contract."""


__all__ = ["ACC_LIMIT", "INPUT", "IntType", "Layer", "Plan", "PlanError", "PLAN_VERSION", "fields", "pair", "replace", "square"]
