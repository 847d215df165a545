"""common.atomic: nothing half-written under a final name, and an OSError that names the target."""

import errno
import os

import pytest

from common.atomic import atomic_write


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def half(f):
        f.write(b"new, half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_a_full_disk_names_the_target(tmp_path):
    def full(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match="No space left") as e:
        atomic_write(tmp_path / "sub" / "out.bin", full)
    assert e.value.filename == str(tmp_path / "sub" / "out.bin") and os.listdir(tmp_path / "sub") == []


def test_a_file_where_a_folder_is_needed(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(NotADirectoryError) as e:
        atomic_write(tmp_path / "afile" / "out.bin", lambda f: f.write(b"x"))
    assert e.value.filename == str(tmp_path / "afile")
