"""Layer kinds, one unit each (FINN's one class per op): how the compiler recognises the kind in a
QCDQ graph, its integer semantics (the reference), and its accounting (MACs, stored bits, the
rule-5 accumulator bound).

A unit subclasses `LayerKind` and is registered with `@register`; the compiler dispatches ONNX
nodes by op type to `ops`, the reference and `Layer`'s accounting properties dispatch by the plan's
`kind`. Adding a kind is one module here plus its tests (and, for the hardware, an engine in hw/).
"""

from __future__ import annotations

import numpy as np

KINDS: dict[str, "LayerKind"] = {}
HANDLERS: dict[str, "LayerKind"] = {}


class LayerKind:
    """The defaults are those of a layer without weights (a pool, a flatten)."""

    kind = ""
    ops: tuple[str, ...] = ()

    def compile(self, w, node) -> None:
        """Recognise `node` (one of `ops`) on the walker's state and append or start a layer."""
        raise NotImplementedError

    def run(self, layer, *xs: np.ndarray) -> np.ndarray:
        """The layer on one image: its input integer tensors (`layer.inputs` order) in, an int64 tensor out."""
        raise NotImplementedError

    def close(self, layer, out, node) -> None:
        """Set the requantizer that closes the layer's accumulator into `out` (a shift; see the unit's docstring)."""
        shift = out.exp - layer.acc_exps
        layer.out, layer.shift = out, shift if isinstance(shift, np.ndarray) else int(shift)

    def acc_exps(self, layer) -> int | np.ndarray:
        """Exponent of the accumulator's LSB (per output channel where the weight scales are)."""
        return layer.inp.exp

    def macs_dense(self, layer) -> int:
        return 0

    def macs_effective(self, layer) -> int:
        return 0

    def weight_bits(self, layer) -> int:
        return 0

    def float_bits(self, layer) -> int:
        return 0

    def acc_bound(self, layer) -> int:
        return 0


def register(cls: type[LayerKind]) -> type[LayerKind]:
    unit = cls()
    KINDS[unit.kind] = unit
    for op in unit.ops:
        HANDLERS[op] = unit
    return cls


def unit(kind: str) -> LayerKind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown layer kind {kind!r}; this toolkit knows {', '.join(KINDS)}") from None


from export.kinds import add, avgpool, conv2d, flatten, linear, maxpool, requant  # noqa: E402,F401  (registers the units)
