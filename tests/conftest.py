"""Shared fixtures: the development data set (read from ../shared, never copied) and the bundled model."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "animals5"

warnings.filterwarnings("ignore", module="brevitas")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"development data not found at {DATA} (it lives in ../shared/data/animals5)")
    return DATA


@pytest.fixture(scope="session")
def bundled_onnx(tmp_path_factory) -> Path:
    from export.onnx_export import export
    return export(None, tmp_path_factory.mktemp("bundled") / "model.onnx")


@pytest.fixture(scope="session")
def bundled_plan(bundled_onnx):
    from export.compile import compile_onnx
    return compile_onnx(bundled_onnx)
