"""`python -m hw generate`: writes the files and the per-layer table; bad input is one line, exit 2."""

import subprocess
import sys
from dataclasses import replace

import numpy as np

from hw.__main__ import main
from tests.hw_helpers import random_plan


def test_generate_from_saved_plan(tmp_path, capsys):
    plan = random_plan(np.random.default_rng(4))
    plan.save(tmp_path / "plan")
    assert main(["generate", "--plan", str(tmp_path / "plan"), "--array", "2x3", "--out", str(tmp_path / "rtl")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "rtl" / "accelerator.v").is_file() and (tmp_path / "rtl" / "accelerator.json").is_file()
    for name in ("conv1", "pool1", "conv2", "fc1", "fc2", "act_buffer0", "array_weights"):
        assert name in out
    assert "array 2x3: 7 multipliers" in out


def test_refusals_are_one_line_and_exit_2(tmp_path, capsys):
    plan = random_plan(np.random.default_rng(4))
    replace(plan, layers=[replace(plan.layers[0], stride=17)] + plan.layers[1:]).save(tmp_path / "bad")
    cases = [
        (["--plan", str(tmp_path / "bad")], "layer 0 'conv1' (conv2d): stride 17: the window generator makes strides up to 16"),
        (["--plan", str(tmp_path / "missing")], "no such plan file"),
        (["--onnx", str(tmp_path / "missing.onnx")], "missing.onnx"),
        (["--plan", str(tmp_path / "bad"), "--array", "0x3"], "array must be 1..16 x 1..16"),
        # the option is read before the model: its error comes first
        (["--onnx", str(tmp_path / "missing.onnx"), "--array", "ten"], "RxC, RxC/L (L sparse lanes) or auto"),
    ]
    for args, message in cases:
        assert main(["generate", *args, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_a_corrupt_plan_is_at_most_two_lines_without_traceback(tmp_path):
    (tmp_path / "p.json").write_text('{"version": ')
    (tmp_path / "p.npz").write_text("garbage")
    out = subprocess.run([sys.executable, "-m", "hw", "generate", "--plan", str(tmp_path / "p"), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.splitlines()) <= 2, out.stderr
    assert f"error: {tmp_path / 'p.json'}: not a plan" in out.stderr and "re-run `python -m export plan`" in out.stderr


def test_out_under_a_regular_file_is_one_line(tmp_path, capsys):
    random_plan(np.random.default_rng(4)).save(tmp_path / "plan")
    (tmp_path / "afile").write_text("")
    assert main(["generate", "--plan", str(tmp_path / "plan"), "--array", "2x3", "--out", str(tmp_path / "afile" / "rtl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {tmp_path / 'afile'}") and "Not a directory" in err, err


def test_ctrl_c_is_exit_130_with_nothing_half_written(tmp_path, capsys, monkeypatch):
    import hw.inventory

    def interrupt(component):
        raise KeyboardInterrupt

    random_plan(np.random.default_rng(4)).save(tmp_path / "plan")
    monkeypatch.setattr(hw.inventory, "inventory", interrupt)  # Ctrl-C while the inventory is made
    assert main(["generate", "--plan", str(tmp_path / "plan"), "--array", "2x3", "--out", str(tmp_path / "rtl")]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert sorted(p.name for p in (tmp_path / "rtl").iterdir()) == ["accelerator.v"]
