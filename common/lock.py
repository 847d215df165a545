"""An exclusive lock beside an output file, so two runs never write the same file at once."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from common.errors import UserError


@contextmanager
def exclusive(path: str | Path, what: str) -> Iterator[None]:
    """Hold the lock file `.NAME.lock` beside `path` for the block, removed on leaving; while it is
    held, another `exclusive` on the same path is refused with a one-line UserError naming `what`."""
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"{path}: another {what} is writing it (lock {lock}); wait for it to finish, "
                            "or choose another output") from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed the file as it was opened here: lock the next one
    try:
        yield
    finally:
        os.unlink(lock)
        os.close(fd)


__all__ = ["exclusive"]
