"""The data folder the CLIs use when none is given: `../shared/data/animals5` beside the checkout."""

from __future__ import annotations

from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "animals5"


def default_data() -> str | None:
    """The default data folder when it exists, else None (then `--data` is required)."""
    return str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else None


__all__ = ["DEFAULT_DATA", "default_data"]
