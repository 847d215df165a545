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


def test_sigterm_during_a_write_leaves_the_old_file_and_no_temporary(tmp_path):
    import signal
    import subprocess
    import sys
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    child = ("import sys, time\nfrom common.atomic import atomic_write\n"
             "def slow(f):\n    f.write(b'new, half')\n    print('writing', flush=True)\n    time.sleep(60)\n"
             f"atomic_write({str(target)!r}, slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 128 + signal.SIGTERM
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_the_data_is_flushed_to_the_disk_before_the_rename(tmp_path, monkeypatch):
    import common.atomic
    events = []
    monkeypatch.setattr(common.atomic.os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))))
    real_replace = os.replace
    monkeypatch.setattr(common.atomic.os, "replace", lambda a, b: (events.append(("replace", str(a))), real_replace(a, b)))
    atomic_write(tmp_path / "out.bin", lambda f: f.write(b"x"))
    assert [e[0] for e in events] == ["fsync", "replace"] and events[0][1] == events[1][1]


@pytest.mark.parametrize("where, error", [("afolder", IsADirectoryError), ("afile/out.bin", NotADirectoryError)])
def test_check_writable_raises_what_the_write_would_meet(tmp_path, where, error):
    from common.atomic import check_writable
    (tmp_path / "afolder").mkdir()
    (tmp_path / "afile").write_text("")
    with pytest.raises(error):
        check_writable(tmp_path / where)
    check_writable(tmp_path / "new" / "deeper" / "out.bin")
