"""quant.checkpoint: the schema every loaded checkpoint meets, and float_twin (the float checkpoint
behind a QAT checkpoint, for the reports)."""

from pathlib import Path

import pytest
import torch

from boards_helpers import tiny_config
from quant import checkpoint
from quant.__main__ import main

CONFIG = tiny_config().to_dict()
VALID = {"config": CONFIG, "class_names": ["a", "b", "c"], "state_dict": {"w": torch.zeros(1)}}


def _save(path: Path, **extra) -> Path:
    checkpoint.save(path, {**VALID, **extra})
    return path


@pytest.mark.parametrize("fields, message", [
    ({}, "field 'config' is missing"),
    ({"config": CONFIG}, "field 'class_names' is missing"),
    ({**VALID, "state_dict": [1]}, "field 'state_dict' is a list"),
    ({**VALID, "config": {"layers": []}}, "config: needs a non-empty list 'layers'"),
    ({**VALID, "config": {**CONFIG, "num_classes": 4}}, "the last layer must be linear with 4 outputs"),
    ({**VALID, "class_names": ["a", "b"]}, "'class_names' must be 3 names, one per output"),
    ({**VALID, "state_dict": {"w": 1.0}}, "'state_dict' must map parameter names to tensors"),
    ({**VALID, "history": {}}, "field 'history' is a dict"),
    ({**VALID, "best_epoch": "3"}, "field 'best_epoch' is a str"),
])
def test_a_checkpoint_with_missing_or_mistyped_fields_is_refused_in_one_line(tmp_path, capsys, fields, message):
    path = tmp_path / "hollow.pt"
    torch.save({"format": checkpoint.FORMAT, **fields}, path)
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load(path)
    assert main(["evaluate", "--checkpoint", str(path), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_twin_is_the_recorded_init(tmp_path):
    init = _save(tmp_path / "somewhere" / "mine.pt")
    qat = _save(tmp_path / "model_qat.pt", init={"path": str(init), "sha256": checkpoint.file_hash(init)})
    _save(tmp_path / "model_float.pt")  # the sibling loses to the recorded init
    assert checkpoint.float_twin(qat) == init


def test_twin_falls_back_to_the_sibling_name(tmp_path):
    qat = _save(tmp_path / "edge_qat_pruned.pt", init={"path": str(tmp_path / "gone.pt")})
    assert checkpoint.float_twin(qat) is None
    twin = _save(tmp_path / "edge_float.pt")
    assert checkpoint.float_twin(qat) == twin


def test_no_twin_for_a_plain_name_or_itself(tmp_path):
    assert checkpoint.float_twin(_save(tmp_path / "model.pt")) is None
    me = tmp_path / "x_qat.pt"
    _save(me, init={"path": str(me)})
    assert checkpoint.float_twin(me) is None


def test_bundled_edge_pair_is_found():
    assert checkpoint.float_twin(checkpoint.BUNDLED_DIR / "edge_qat.pt") == checkpoint.BUNDLED_DIR / "edge_float.pt"


def test_a_relative_init_is_found_beside_the_qat_checkpoint_and_a_changed_one_is_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not where the experiment folder is
    exp = tmp_path / "exp"
    init = _save(exp / "float_adam.pt", best_epoch=3)
    qat = _save(exp / "qat_unpruned.pt", init={"path": "float_adam.pt", "sha256": checkpoint.file_hash(init)})
    assert checkpoint.float_twin(qat) == exp / "float_adam.pt"
    _save(init, best_epoch=4)  # retrained since: another model
    assert checkpoint.float_twin(qat) is None
