"""The standalone SystemVerilog testbench: it passes on the generated RTL and fails on a wrong image."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from hw.config import ArrayConfig
from hw.top import generate
from hw_helpers import random_plan


def test_sv_testbench_passes_and_catches_a_wrong_image(tmp_path):
    from sim.runner import MAKE_VARS, _toolchain_env
    _toolchain_env()
    plan = random_plan(np.random.default_rng(1))
    info = generate(plan, ArrayConfig(2, 3), tmp_path)
    assert {"accelerator.v", "accelerator_tb.sv", "tb_image.hex"} <= set(info["files"])
    make = [a for v in MAKE_VARS if not v.startswith("OPT_FAST") for a in ("-MAKEFLAGS", v)]
    build = subprocess.run(["nice", "-n", "10", "verilator", "--binary", "--timing", "-Wno-fatal", "-Wno-WIDTHEXPAND",
                            "-Wno-WIDTHTRUNC", "--top-module", "accelerator_tb", "accelerator_tb.sv", "accelerator.v",
                            "-o", "tb", *make], cwd=tmp_path, capture_output=True, text=True, env=os.environ)
    assert build.returncode == 0, build.stderr[-2000:]
    ok = subprocess.run(["obj_dir/tb"], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0 and "PASS: 3 logits bit-exact" in ok.stdout, ok.stdout + ok.stderr
    hexes = (tmp_path / "tb_image.hex").read_text().split()
    (tmp_path / "tb_image.hex").write_text("\n".join(["ff" if h != "ff" else "00" for h in hexes]) + "\n")
    bad = subprocess.run(["obj_dir/tb"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0 and "FAIL" in bad.stdout + bad.stderr
