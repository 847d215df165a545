"""The integer arithmetic that the plan, the reference and every layer kind share: integer tensor
types at power-of-two scales (contract rule 1), kernel/stride pairs, and the requantizer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def pair(v: int | tuple[int, int]) -> tuple[int, int]:
    """(h, w) of a kernel or stride stored as an int when square."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def square(h: int, w: int) -> int | tuple[int, int]:
    """The stored form of (h, w): an int when h == w."""
    return int(h) if h == w else (int(h), int(w))


@dataclass(frozen=True)
class IntType:
    """An integer tensor type: `bits` wide, signed or not, real value = q * 2**exp."""

    bits: int
    signed: bool
    exp: int

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def max_abs(self) -> int:
        return max(-self.min, self.max)


def round_shift(acc: np.ndarray, shift: int | np.ndarray) -> np.ndarray:
    """acc * 2**-shift rounded half to even (ONNX QuantizeLinear); a negative shift is exact.

    A `shift` array applies along axis 0 (one shift per output channel)."""
    acc = np.asarray(acc, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    s = s.reshape(s.shape + (1,) * (acc.ndim - s.ndim)) if s.ndim else s
    right, left = np.maximum(s, 0), np.maximum(-s, 0)
    half = np.where(right > 0, (np.int64(1) << np.maximum(right - 1, 0)) - 1, 0)
    odd = (acc >> right) & 1
    rounded = np.where(right > 0, (acc + half + odd) >> right, acc)
    return rounded << left


def requantize(acc: np.ndarray, shift: int | np.ndarray, relu: bool, out: IntType) -> np.ndarray:
    """The requantizer: `acc` shifted (`round_shift`), ReLU when `relu`, saturated to `out`."""
    q = round_shift(acc, shift)
    if relu:
        q = np.maximum(q, 0)
    return np.clip(q, out.min, out.max)
