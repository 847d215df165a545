"""`python -m quant`: errors are one line and exit status 2; evaluate writes JSON and plots."""

import argparse
import errno
import json
import os
import subprocess
import sys
import warnings

import pytest

from quant.__main__ import main
from common.cli import one_line_warnings, run_command
from quant_helpers import split_dataset, train_tiny


@pytest.mark.parametrize("args, message", [
    (["evaluate", "--data", "/nonexistent", "--checkpoint", "/nonexistent.pt"], "no such checkpoint"),
    (["report", "--results", "/nonexistent"], "no experiment.json"),
])
def test_real_entry_point_prints_one_line(args, message):
    out = subprocess.run([sys.executable, "-m", "quant", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr + out.stdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = split_dataset(root / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_tiny(data, root / "float.pt")
    return root, data


def _one_line_error(capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_errors_are_one_line_with_status_2(tiny, capsys, tmp_path):
    root, data = tiny
    ck = str(root / "float.pt")
    _one_line_error(capsys, ["evaluate", "--checkpoint", ck, "--data", "/nonexistent"], "no such data folder")
    _one_line_error(capsys, ["evaluate", "--checkpoint", ck, "--data", str(data), "--split", "test"], "no 'test' split")
    _one_line_error(capsys, ["evaluate", "--checkpoint", ck, "--data", str(data), "--classes", "cat,dog"], "dog")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    _one_line_error(capsys, ["evaluate", "--checkpoint", str(garbage), "--data", str(data)], "not a readable checkpoint")
    _one_line_error(capsys, ["train", "--data", "/nonexistent", "--out", str(tmp_path / "x.pt")], "no such data folder")
    _one_line_error(capsys, ["report", "--results", str(tmp_path)], "no experiment.json")
    (tmp_path / "afile").write_text("")
    _one_line_error(capsys, ["evaluate", "--checkpoint", ck, "--data", str(data), "--limit", "1",
                             "--json", str(tmp_path / "afile" / "m.json")], f"{tmp_path / 'afile'}: Not a directory")
    with pytest.raises(SystemExit) as e:  # argparse's own usage error
        main(["train", "--data", str(data), "--qat", "--out", str(tmp_path / "q.pt")])
    assert e.value.code == 2


def test_evaluate_writes_json_and_plots(tiny, capsys, tmp_path):
    root, data = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["evaluate", "--checkpoint", str(root / "float.pt"), "--data", str(data), "--limit", "1",
                     "--json", str(tmp_path / "m.json"), "--plots", str(tmp_path / "plots")]) == 0
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["images"] == 5 and {"accuracy", "precision_macro", "recall_macro", "f1_macro"} <= set(res)
    out = capsys.readouterr().out
    assert f"accuracy {res['accuracy']:.4f}" in out and "true\\pred" in out
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["confusion.png", "curves.png", "grid.png"]


def _raising(e: BaseException) -> argparse.Namespace:
    def func(args):
        raise e
    return argparse.Namespace(func=func)


@pytest.mark.parametrize("raised, status, line", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/m.pt"), 2, "error: out/m.pt: No space left on device (check"),
    (RuntimeError("the build failed, see build.log"), 1, "error: the build failed, see build.log"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_run_command_turns_errors_into_one_line(capsys, raised, status, line):
    assert run_command(_raising(raised), (ValueError,), failures=(RuntimeError,)) == status
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(line), err


def test_warnings_are_one_line(monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    with warnings.catch_warnings():
        one_line_warnings()
        assert warnings.formatwarning("skipped a.jpg: not a readable image", UserWarning, "data.py", 1) == \
            "warning: skipped a.jpg: not a readable image\n"
