"""`python -m hw generate`: writes the files and the per-layer table; bad input is one line, exit 2."""

from dataclasses import replace

import numpy as np

from hw.__main__ import main
from tests.hw_helpers import random_plan


def test_generate_from_saved_plan(tmp_path, capsys):
    plan = random_plan(np.random.default_rng(4))
    plan.save(tmp_path / "plan")
    assert main(["generate", "--plan", str(tmp_path / "plan"), "--array", "2x3", "--out", str(tmp_path / "rtl")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "rtl" / "accelerator.v").is_file() and (tmp_path / "rtl" / "sparse_entries.hex").is_file()
    for name in ("conv1", "pool1", "conv2", "fc1", "fc2", "act_buffer0", "array_weights"):
        assert name in out
    assert "array 2x3: 7 multipliers" in out


def test_refusals_are_one_line_and_exit_2(tmp_path, capsys):
    plan = random_plan(np.random.default_rng(4))
    replace(plan, layers=[replace(plan.layers[0], stride=2)] + plan.layers[1:]).save(tmp_path / "bad")
    cases = [
        (["--plan", str(tmp_path / "bad")], "layer 0 'conv1' (conv2d): stride 2"),
        (["--plan", str(tmp_path / "missing")], "no such plan file"),
        (["--onnx", str(tmp_path / "missing.onnx")], "missing.onnx"),
        (["--plan", str(tmp_path / "bad"), "--array", "0x3"], "array must be 1..16 x 1..16"),
    ]
    for args, message in cases:
        assert main(["generate", *args, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
