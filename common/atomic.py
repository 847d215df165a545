"""Atomic file writes: a temporary file in the target's folder, renamed over it when complete.

Every file the toolkit writes (checkpoints, ONNX, plans, Verilog, reports) goes through here, so
an interrupted run (Ctrl-C, SIGTERM, a crash of the machine) never leaves a half-written file under
its final name, nor a temporary file.
"""

from __future__ import annotations

import errno
import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM (where it has its default action, in the main thread) exits with
    status 143 through the usual unwinding, so the temporary file is removed."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def check_writable(path: str | Path) -> None:
    """Raise the OSError that writing `path` would meet (a folder there, a file where a folder is
    needed, a folder this user may not write), so a command can refuse before its work."""
    path = Path(path).absolute()
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    parent = next(p for p in path.parents if p.exists())
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(parent))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(f)` on a temporary binary file, flush it to the disk, then rename it to `path`.

    An OSError of the write (a full disk, a read-only folder) names `path`, not the temporary file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:  # a regular file stands where a folder is needed
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), e.filename) from None
    tmp = None
    try:
        with _sigterm_unwinds():
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())  # the data is on the disk before the name points at it
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual mode
            os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and (tmp is None or e.filename in (None, tmp)):  # mkstemp, the write, the rename
            e.filename = str(path)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode()))


__all__ = ["atomic_write", "atomic_write_text", "check_writable"]
