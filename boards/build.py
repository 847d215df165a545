"""The open FPGA toolchain, stage by stage: yosys, nextpnr, ecppack/icepack (YoWASP builds); on
an ECP5 the `outreg` step (boards.netlist) between yosys and nextpnr puts each block RAM's read
register into the block.

amaranth-boards turns the design into RTLIL plus the board's pin and clock constraints; this
module then runs each tool itself so that every stage gets its own log, progress with elapsed
time, a timeout, and a one-line error naming the log. Fmax, critical path and utilisation come from
nextpnr's `--report` JSON. Vendor-only boards get RTL, constraints and a Vivado script.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from amaranth.hdl import Elaboratable

from boards.errors import BoardError
from boards.profiles import BoardProfile
from boards.top import add_board_resources
from common.atomic import atomic_write, atomic_write_text
from common.tools import TOOLCHAINS, YOWASP, ToolchainError, find_tool, last_line, log_tail, pip_install, run_bounded

# amaranth's tool variables, pointed at the YoWASP builds; OPENFPGALOADER is only needed to
# satisfy the platform's programming check, which the flow never runs.
TOOL_ENV = {var: tool.command for var, tool in YOWASP.items()}
TAIL_LINES = 4
# nextpnr can fail to converge on a congested placement and then runs for hours; the paper
# model's place-and-route takes 7-9 minutes with router1 on the ECP5-85F
PNR_TIMEOUT_S = 1800.0
# the project's root: `python -m boards.netlist` runs from the build folder, installed or not
PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
# the paper model's synthesis takes about 70 s and packing seconds: these only stop a hung tool
SYNTH_TIMEOUT_S = 1800.0
PACK_TIMEOUT_S = 600.0
# what to try when a stage runs past its timeout, by stage name
TIMEOUT_HINTS = {"place+route": "the router is probably not converging on a congested placement: try another "
                                "--seed, a smaller --array, or a longer --pnr-timeout"}
# ECP5 placer weights: the paper model's worst paths are block RAM and multiplier round trips
# (a register that should sit beside its block or DSP placed across the chip); a steeper
# criticality exponent with a heavier timing weight (defaults 2 and 10) kept them closer:
# 100.5 MHz where the defaults gave 99.9 on the same netlist (router1, seed 1)
ECP5_PLACER = ["--placer-heap-critexp", "4", "--placer-heap-timingweight", "20"]
# synth_ice40 maps multipliers to SB_MAC16 only when asked; synth_ecp5 uses MULT18X18D by default
SYNTH_OVERRIDES = {"ice40": {"synth_opts": "-dsp"}}


@dataclass
class Stage:
    name: str
    argv: list[str]
    log: str
    outputs: list[str] = field(default_factory=list)  # written under a temporary name, renamed on success
    timeout_s: float | None = None  # stop the tool after this long (a hung tool, a router that does not converge)
    env: dict[str, str] = field(default_factory=dict)  # set for this stage only (a Python step's PYTHONPATH)


@dataclass
class BuildResult:
    """What a build made and measured. `fmax_mhz` is None when no place-and-route ran."""

    board: str
    toolchain: str
    build_dir: str
    requested_mhz: float
    bitstream: str | None = None
    fmax_mhz: float | None = None
    fmax_per_clock: dict = field(default_factory=dict)
    critical_path: dict | None = None
    utilisation: dict = field(default_factory=dict)  # cell type -> {used, available}
    resources: dict = field(default_factory=dict)  # luts / ffs / dsps / bram / spram -> {used, available}
    stage_seconds: dict = field(default_factory=dict)
    logs: dict = field(default_factory=dict)
    note: str = ""

    @property
    def timing_met(self) -> bool | None:
        return None if self.fmax_mhz is None else self.fmax_mhz >= self.requested_mhz

    def to_dict(self) -> dict:
        return {**asdict(self), "timing_met": self.timing_met}


def tool_environment() -> dict[str, str]:
    """os.environ with amaranth's tool variables set to the tools' absolute paths (a variable
    already set names the tool to find); a tool not found keeps its name, for check_tools."""
    env = dict(os.environ)
    for var, tool in TOOL_ENV.items():
        env[var] = find_tool(tool, var) or env.get(var) or tool
    env.setdefault("OPENFPGALOADER", "true")
    return env


def _platform(profile: BoardProfile):
    platform = profile.platform_class()()
    add_board_resources(platform)
    return platform


def prepare(top: Elaboratable, profile: BoardProfile, build_dir: str | Path, name: str = "top") -> Path:
    """Write the design (RTLIL; Verilog for vendor boards), constraints and script to `build_dir`."""
    plan = _platform(profile).prepare(top, name, **SYNTH_OVERRIDES.get(profile.toolchain, {}))
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    for filename, content in plan.files.items():
        data = content.encode() if isinstance(content, str) else content
        atomic_write(build_dir / filename, lambda f, d=data: f.write(d))
    return build_dir


def stages(profile: BoardProfile, name: str = "top", seed: int = 1,
           pnr_timeout_s: float | None = PNR_TIMEOUT_S) -> list[Stage]:
    """The tool invocations for an open-toolchain board, in order.

    ECP5 routes with router1, which converges on the systolic array where router2 does not
    (docs/boards.md); the placer runs with ECP5_PLACER's weights.
    """
    env = tool_environment()
    synth = Stage("synth", [env["YOSYS"], "-s", f"{name}.ys"], "synth.log", [], SYNTH_TIMEOUT_S)
    if profile.toolchain == "ecp5":
        size = re.fullmatch(r"LFE5U-(\d+)F", profile.part)
        if size is None:
            raise ValueError(f"{profile.name}: cannot derive nextpnr's device option from part {profile.part}")
        speed = str(profile.platform_class().speed)
        # the block RAMs' read registers into their own output registers (boards.netlist)
        outreg = Stage("outreg", [sys.executable, "-m", "boards.netlist", f"{name}.json", f"{name}_outreg.json"],
                       "outreg.log", [f"{name}_outreg.json"], PACK_TIMEOUT_S, env={"PYTHONPATH": PROJECT_ROOT})
        pnr = Stage("place+route", [
            env["NEXTPNR_ECP5"], f"--{size.group(1)}k", "--package", profile.package, "--speed", speed,
            "--json", f"{name}_outreg.json", "--lpf", f"{name}.lpf", "--textcfg", f"{name}.config",
            "--report", "report.json", "--seed", str(seed), "--timing-allow-fail", "--router", "router1", *ECP5_PLACER],
            "pnr.log", [f"{name}.config", "report.json"], pnr_timeout_s)
        pack = Stage("pack", [env["ECPPACK"], "--input", f"{name}.config", "--bit", f"{name}.bit"],
                     "pack.log", [f"{name}.bit"], PACK_TIMEOUT_S)
        return [synth, outreg, pnr, pack]
    elif profile.toolchain == "ice40":
        pnr = Stage("place+route", [
            env["NEXTPNR_ICE40"], f"--{profile.part.lower().removeprefix('ice40')}",
            "--package", profile.package.lower(), "--json", f"{name}.json", "--pcf", f"{name}.pcf",
            "--asc", f"{name}.asc", "--report", "report.json", "--seed", str(seed), "--timing-allow-fail"],
            "pnr.log", [f"{name}.asc", "report.json"], pnr_timeout_s)
        pack = Stage("pack", [env["ICEPACK"], f"{name}.asc", f"{name}.bin"], "pack.log", [f"{name}.bin"],
                     PACK_TIMEOUT_S)
    else:
        raise ValueError(f"{profile.name} has no open toolchain ({profile.toolchain})")
    return [synth, pnr, pack]


def _tmp_name(path: str) -> str:
    p = Path(path)
    return str(p.with_name(f".{p.stem}.tmp{p.suffix}"))


def _argv_with_tmp_outputs(stage: Stage) -> list[str]:
    return [_tmp_name(a) if a in stage.outputs else a for a in stage.argv]


def check_tools(profile: BoardProfile) -> None:
    """Refuse early, in one line, when a tool of the board's toolchain is not installed."""
    for var in TOOLCHAINS[profile.toolchain]:
        if find_tool(TOOL_ENV[var], var) is None:
            name = f"${var}={os.environ[var]}" if os.environ.get(var) else TOOL_ENV[var]
            raise ToolchainError(f"{name} not found on PATH nor next to {sys.executable}; install it with "
                                 f"`{pip_install(YOWASP[var].dist)}` (or point ${var} at your own build)")


Progress = Callable[[str], None]


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Cancelled(BoardError):
    """The build was stopped from outside (another step of the flow failed)."""


def run_stage(stage: Stage, cwd: Path, progress: Progress = print_progress, heartbeat_s: float = 15.0,
              cancel: threading.Event | None = None) -> float:
    """Run one tool with its output in `cwd/stage.log`; returns the elapsed seconds.
    Setting `cancel` (from another thread) kills the tool, as does its `timeout_s`."""
    log = cwd / stage.log
    progress(f"[{stage.name}] {shlex.join(stage.argv)}  (log: {log})")
    start = time.monotonic()
    next_beat = heartbeat_s

    def tick(elapsed: float) -> None:
        nonlocal next_beat
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"{stage.name} stopped")
        if elapsed >= next_beat:
            progress(f"[{stage.name}] {elapsed:.0f} s  {last_line(log)}")
            next_beat += heartbeat_s

    with open(log, "wb") as f:
        returncode = run_bounded(_argv_with_tmp_outputs(stage), f, log, what=stage.name, timeout_s=stage.timeout_s,
                                 hint=TIMEOUT_HINTS.get(stage.name, ""), tick=tick, cwd=cwd,
                                 env={**tool_environment(), **stage.env})
    elapsed = time.monotonic() - start
    if returncode != 0:
        over = _overfull(log)
        if over:
            raise ToolchainError(f"{stage.name} failed: the design does not fit the part: {over}; "
                                 f"try a smaller --array or another --board  [full log: {log}]")
        tail = " | ".join(log_tail(log, TAIL_LINES))
        raise ToolchainError(f"{stage.name} failed ({Path(stage.argv[0]).name} exit {returncode}) "
                             f"after {elapsed:.0f} s: {tail}  [full log: {log}]")
    for out in stage.outputs:
        os.replace(cwd / _tmp_name(out), cwd / out)
    progress(f"[{stage.name}] done in {elapsed:.1f} s")
    return elapsed


_UTIL_LINE = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%")


def _overfull(log: Path) -> str:
    """nextpnr's device utilisation lines over 100%, e.g. 'ICESTORM_LC 6012/5280 (113%)'."""
    seen = {}
    for line in open(log, errors="replace"):
        m = _UTIL_LINE.search(line)
        if m and int(m.group(2)) > int(m.group(3)):
            seen[m.group(1)] = f"{m.group(1)} {m.group(2)}/{m.group(3)} ({m.group(4)}%)"
    return ", ".join(seen.values())


def build(top: Elaboratable, profile: BoardProfile, build_dir: str | Path, *, name: str = "top",
          seed: int = 1, progress: Progress = print_progress, cancel: threading.Event | None = None,
          pnr_timeout_s: float | None = PNR_TIMEOUT_S) -> BuildResult:
    """Prepare and, for open-toolchain boards, synthesise, place, route and pack `top`."""
    build_dir = Path(build_dir)
    result = BuildResult(board=profile.name, toolchain=profile.toolchain, build_dir=str(build_dir),
                         requested_mhz=profile.clock_mhz)
    if not profile.has_open_toolchain:
        prepare(top, profile, build_dir, name)
        result.note = (f"no bitstream built: {profile.part} needs Xilinx Vivado; run "
                       f"`sh build_{name}.sh` (or `vivado -mode batch -source {name}.tcl`) in {build_dir}")
        progress(f"[prepare] {result.note}")
        return result

    check_tools(profile)
    t0 = time.monotonic()
    prepare(top, profile, build_dir, name)
    result.stage_seconds["prepare"] = round(time.monotonic() - t0, 2)
    todo = stages(profile, name, seed, pnr_timeout_s)
    _write_build_script(build_dir, name, todo)
    for st in todo:
        result.logs[st.name] = str(build_dir / st.log)
        result.stage_seconds[st.name] = round(run_stage(st, build_dir, progress, cancel=cancel), 2)
    result.bitstream = str(build_dir / todo[-1].outputs[0])
    parse_report(json.loads((build_dir / "report.json").read_text()), profile, result)
    return result


def _write_build_script(build_dir: Path, name: str, todo: list[Stage]) -> None:
    """The exact commands the flow runs, to redo the build by hand."""
    lines = ["#!/bin/sh", "# Rebuild the bitstream with the same commands the flow ran.", "set -e"]
    lines += ["".join(f"{k}={shlex.quote(v)} " for k, v in st.env.items()) + f"{shlex.join(st.argv)} > {st.log} 2>&1"
              for st in todo]
    atomic_write_text(build_dir / f"build_{name}.sh", "\n".join(lines) + "\n")


# nextpnr cell types -> the profile's resource names
_CELLS = {
    "ecp5": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "dsps": "MULT18X18D", "bram": "DP16KD"},
    "ice40": {"luts": "ICESTORM_LC", "dsps": "ICESTORM_DSP", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM"},
}


def parse_report(report: dict, profile: BoardProfile, result: BuildResult) -> BuildResult:
    """Fill Fmax (the slowest constrained clock), critical path and utilisation from nextpnr's report."""
    result.utilisation = {k: {"used": v["used"], "available": v["available"]}
                          for k, v in report.get("utilization", {}).items()}
    result.resources = {name: result.utilisation[cell] for name, cell in _CELLS[profile.toolchain].items()
                        if cell in result.utilisation}
    fmax = report.get("fmax", {})
    result.fmax_per_clock = {clk: {"achieved_mhz": round(v["achieved"], 2), "requested_mhz": round(v["constraint"], 2)}
                             for clk, v in fmax.items()}
    if fmax:
        clk, worst = min(fmax.items(), key=lambda kv: kv[1]["achieved"] / kv[1]["constraint"])
        result.fmax_mhz = round(worst["achieved"], 2)
        result.requested_mhz = round(worst["constraint"], 2)
    paths = report.get("critical_paths", [])
    if paths:
        result.critical_path = _summarise_path(max(paths, key=_path_delay))
    return result


def _path_delay(path: dict) -> float:
    return sum(step.get("delay", 0.0) for step in path.get("path", []))


def _summarise_path(path: dict) -> dict:
    steps = path.get("path", [])
    logic = sum(s["delay"] for s in steps if s.get("type") != "routing")
    routing = sum(s["delay"] for s in steps if s.get("type") == "routing")

    def cell(end: dict | None) -> str:
        return f"{end['cell']}.{end['port']}" if end else "?"

    nets = [s["net"] for s in steps if s.get("type") == "routing" and "net" in s]
    sources = list(dict.fromkeys(src for s in steps for src in s.get("sources", [])
                                 if "site-packages" not in src and not src.startswith("/share")))
    return {
        "from_clock": path.get("from"), "to_clock": path.get("to"),
        "delay_ns": round(logic + routing, 3), "logic_ns": round(logic, 3), "routing_ns": round(routing, 3),
        "start": cell(steps[0].get("from")) if steps else "?",
        "end": cell(steps[-1].get("to")) if steps else "?",
        "start_net": nets[0] if nets else None, "end_net": nets[-1] if nets else None,
        "steps": len(steps), "sources": sources[:8],
    }


__all__ = ["BuildResult", "Cancelled", "Stage", "TOOL_ENV", "ToolchainError", "build", "check_tools", "parse_report",
           "prepare", "run_stage", "stages", "tool_environment"]
