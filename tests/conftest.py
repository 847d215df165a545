"""Shared fixtures: the development data set (read from ../shared, never copied) and the bundled model.

`CNN_CODESIGN_DATA=DIR` points the data-set tests elsewhere (`CNN_CODESIGN_DATA=/nonexistent` runs the
suite as a clone without ../shared does). A test that needs the real images takes `data_dir`; when
they are absent it skips, and the run ends with one line that names every such test.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CNN_CODESIGN_DATA") or ROOT.parent / "shared" / "data" / "animals5")
CIFAR = Path(os.environ.get("CNN_CODESIGN_CIFAR") or ROOT.parent / "shared" / "data" / "cifar10")
NO_DATA = f"development data not found at {DATA}"

warnings.filterwarnings("ignore", module="brevitas")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The animals5 folder (train/ and val/), for tests whose figure needs real images."""
    if not (DATA / "val").is_dir():
        pytest.skip(f"{NO_DATA} (it lives in ../shared/data/animals5)")
    return DATA


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """The CIFAR-10 folder (train/ and val/ of 32x32 JPEGs), for the resnet8 tests (`CNN_CODESIGN_CIFAR=DIR` elsewhere)."""
    if not (CIFAR / "val").is_dir():
        pytest.skip(f"{NO_DATA} (CIFAR-10 lives in ../shared/data/cifar10)")
    return CIFAR


def pytest_terminal_summary(terminalreporter) -> None:
    """One closing line when tests did not run for want of the data set, so a green run says so."""
    missed = [r.nodeid for r in terminalreporter.stats.get("skipped", [])
              if isinstance(r.longrepr, tuple) and NO_DATA in str(r.longrepr[-1])]
    if missed:
        terminalreporter.write_line(f"{len(missed)} test{'s' if len(missed) > 1 else ''} needed {DATA} and did not run "
                                    f"(they measure the real images; set CNN_CODESIGN_DATA=DIR for another copy): "
                                    f"{', '.join(missed)}", yellow=True, bold=True)


@pytest.fixture(scope="session")
def bundled_onnx(tmp_path_factory) -> Path:
    from export.onnx_export import export
    return export(None, tmp_path_factory.mktemp("bundled") / "model.onnx")


@pytest.fixture(scope="session")
def bundled_plan(bundled_onnx):
    from export.compile import compile_onnx
    return compile_onnx(bundled_onnx)
