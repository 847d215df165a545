"""The generator's parameters: the PE array's shape and the sparse engine's lanes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArrayConfig:
    """rows: output channels in parallel; cols: output pixels of one row in parallel; lanes: the
    sparse engine's lanes (None: the schedule picks the fewest that keep the sparse stage off the
    pipeline's critical path, at most hw.sparse.auto_lanes)."""

    rows: int = 10
    cols: int = 9
    lanes: int | None = None

    def __post_init__(self):
        if not (isinstance(self.rows, int) and isinstance(self.cols, int) and 1 <= self.rows <= 16 and 1 <= self.cols <= 16):
            raise ValueError(f"array must be 1..16 x 1..16, got {self.rows}x{self.cols}")
        if self.lanes is not None and not (isinstance(self.lanes, int) and 1 <= self.lanes <= 16):
            raise ValueError(f"sparse lanes must be 1..16, got {self.lanes}")

    @classmethod
    def parse(cls, text: str) -> ArrayConfig:
        """'10x9' -> ArrayConfig(10, 9); '10x9/2' -> ArrayConfig(10, 9, lanes=2)."""
        shape, _, lanes = text.lower().partition("/")
        try:
            r, c = (int(v) for v in shape.split("x"))
            n = int(lanes) if lanes else None
        except ValueError:
            raise ValueError(f"array must be written RxC or RxC/L (L sparse lanes), e.g. 10x9 or 10x9/4, got {text!r}") from None
        return cls(r, c, n)

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}" + (f"/{self.lanes}" if self.lanes is not None else "")


__all__ = ["ArrayConfig"]
