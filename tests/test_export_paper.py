"""The bundled paper model: export, compile time, ORT vs Brevitas and reference vs ORT on seeded random images
(always run), and on the whole real validation split (`-m slow`, needs ../shared/data/animals5)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import onnx
import pytest

from export.check import compare
from export.compile import compile_onnx
from export.onnx_export import metadata
from export.testing import random_images
from quant.data import load_split
from quant_helpers import class_images


def test_export_metadata_and_checker(bundled_onnx):
    model = onnx.load(str(bundled_onnx))
    onnx.checker.check_model(model)
    meta = metadata(model)
    assert {"class_names", "input_scale", "model_config", "checkpoint_hash"} <= set(meta)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_compiles_in_under_5_s(bundled_onnx):
    t = time.perf_counter()
    plan = compile_onnx(bundled_onnx)
    assert time.perf_counter() - t < 5.0
    assert [l.kind for l in plan.layers] == ["conv2d", "maxpool", "conv2d", "maxpool", "flatten", "linear", "linear"]
    assert plan.compression_ratio >= 27.5


def test_onnxruntime_agrees_with_brevitas(bundled_onnx, tmp_path):
    from export.__main__ import brevitas_agreement
    class_images(tmp_path / "val", per_class=4)  # seeded random 72x72 images, through the real loader
    res = brevitas_agreement(None, bundled_onnx, tmp_path, "val")
    assert res["same_class"] == res["images"] == 20, res


def test_reference_equals_onnxruntime_on_random_images(bundled_onnx, bundled_plan):
    x = random_images(bundled_plan, 50, seed=1)  # with an all-0 and an all-255 image
    res = compare(bundled_onnx, bundled_plan, x)
    assert res.exact == res.images == 50, res.mismatches[:3]


@pytest.mark.slow
def test_reference_equals_onnxruntime_on_the_whole_validation_split(bundled_onnx, bundled_plan, data_dir):
    x, _, _ = load_split(data_dir, "val")
    res = compare(bundled_onnx, bundled_plan, x, progress=True)
    print(f"reference == ONNX Runtime on every layer: {res.exact}/{res.images}")
    assert res.exact == res.images == 700, res.mismatches[:3]


def test_cli_plan_table_and_error(bundled_onnx, tmp_path):
    out = subprocess.run([sys.executable, "-m", "export", "plan", str(bundled_onnx), "--out", str(tmp_path / "p")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "compression" in out.stdout and "P-layer encoding" in out.stdout
    assert (tmp_path / "p.json").is_file() and (tmp_path / "p.npz").is_file()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    out = subprocess.run([sys.executable, "-m", "export", "plan", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "bad.onnx" in out.stderr
