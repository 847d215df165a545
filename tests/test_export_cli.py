"""`python -m export`: an unwritable --out is one line and exit 2; the data loader's warnings reach stderr."""

from __future__ import annotations

import subprocess
import sys

from quant_helpers import split_dataset


def _export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export", *args], capture_output=True, text=True, timeout=300)


def test_onnx_out_under_a_regular_file_is_one_line_exit_2(tmp_path):
    (tmp_path / "afile").write_text("")
    out = _export("onnx", "--out", str(tmp_path / "afile" / "model.onnx"))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"error: {tmp_path / 'afile'}: Not a directory" in out.stderr


def test_check_of_a_model_the_images_cannot_feed_is_one_line_exit_2(tmp_path):
    import numpy as np
    import onnx
    from onnx_builders import GraphBuilder

    b = GraphBuilder((16,), in_exp=-4, in_signed=True)
    b.gemm(b.input(), np.ones((2, 16)), [0, 0], in_exp=-4)
    onnx.save(b.model(2), str(tmp_path / "flat.onnx"))
    data = split_dataset(tmp_path / "data")
    out = _export("check", str(tmp_path / "flat.onnx"), "--data", str(data), "--split", "val")
    lines = out.stderr.splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and ".npz" in lines[0], out.stderr


def test_check_prints_each_skipped_file_as_one_warning_line(bundled_onnx, tmp_path):
    data = split_dataset(tmp_path / "data")
    (data / "val" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    out = _export("check", str(bundled_onnx), "--data", str(data), "--split", "val")
    assert out.returncode == 0, out.stderr
    line = f"warning: skipped {data / 'val' / 'cat' / 'broken.jpg'}: not a readable image (UnidentifiedImageError)"
    assert line in out.stderr.splitlines(), out.stderr
