"""The generator's parameters: the PE array's shape and the sparse engine's lanes, and the one
parser of the `--array` option that names them."""

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
        """An array written RxC or RxC/L, as parse_array_option reads it; `auto` names no array here."""
        config = parse_array_option(text)
        if config is None:
            raise ValueError("array 'auto' is picked per board (boards.fit.array_for); write RxC or RxC/L here")
        return config

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}" + (f"/{self.lanes}" if self.lanes is not None else "")


def parse_array_option(text: str | None) -> ArrayConfig | None:
    """The `--array` option: `RxC` ('10x9' -> ArrayConfig(10, 9)) or `RxC/L` with L sparse lanes
    ('10x9/2' -> ArrayConfig(10, 9, lanes=2)); None for `auto` (the caller picks the array,
    boards.fit.array_for); the default ArrayConfig() when the option is not given (None).
    Raises ValueError naming the text and the accepted forms, or the allowed sizes."""
    if text is None:
        return ArrayConfig()
    if text.strip().lower() == "auto":
        return None
    shape, _, lanes = text.lower().partition("/")
    try:
        r, c = (int(v) for v in shape.split("x"))
        n = int(lanes) if lanes else None
    except ValueError:
        raise ValueError(f"array must be written RxC, RxC/L (L sparse lanes) or auto, e.g. 10x9 or 10x9/4, "
                         f"got {text!r}") from None
    return ArrayConfig(r, c, n)


__all__ = ["ArrayConfig", "parse_array_option"]
