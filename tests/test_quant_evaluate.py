"""quant.evaluate and quant.plots on a tiny trained checkpoint and generated images."""

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from quant import checkpoint
from quant.evaluate import evaluate
from quant.plots import curves_png, grid_indices
from quant_helpers import split_dataset, train_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = split_dataset(root / "data", per_class={"train": 4, "val": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ckpt = train_tiny(data, root / "float.pt", epochs=2)
    return data, root / "float.pt", ckpt


def test_metrics_and_plots(trained, tmp_path):
    data, path, ckpt = trained
    res = evaluate(path, data, "val", plots_dir=tmp_path / "plots")
    json.dumps(res)
    assert res["images"] == 15 and res["checkpoint"] == "float.pt"
    assert (res["arch"], res["quantized"], res["split"]) == ("paper", False, "val")
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        assert 0.0 <= res[key] <= 1.0
    # the same images through train's own validation agree with evaluate
    assert res["accuracy"] == pytest.approx(ckpt["history"][ckpt["best_epoch"] - 1]["val_acc"], abs=1e-6)
    cm = np.array(res["confusion"]["matrix"])
    assert res["confusion"]["classes"] == ckpt["class_names"]
    assert cm.shape == (5, 5) and cm.sum() == 15 and list(cm.sum(axis=1)) == [3] * 5
    assert set(res["per_class"]) == set(ckpt["class_names"])
    sizes = {}
    for name in ("confusion", "curves", "grid"):
        with Image.open(tmp_path / "plots" / f"{name}.png") as img:
            assert img.format == "PNG"
            sizes[name] = img.size
        assert res["plots"][name].endswith(f"{name}.png")
    assert sizes["grid"][0] > sizes["grid"][1]  # 8 wide, 5 high
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary files left behind


def test_class_subset_keeps_the_checkpoint_order(trained):
    data, path, ckpt = trained
    res = evaluate(path, data, "val", classes=["sheep", "gatto"], limit=2)
    assert res["images"] == 4
    assert res["confusion"]["classes"] == ckpt["class_names"]
    rows = np.array(res["confusion"]["matrix"]).sum(axis=1)
    assert rows.tolist() == [2, 0, 0, 0, 2]


def test_classes_the_checkpoint_lacks(trained):
    data, path, _ = trained
    with pytest.raises(checkpoint.CheckpointError, match="cannot be evaluated on dog"):
        evaluate(path, data, "val", classes=["cat", "dog"])


def test_missing_bundled_checkpoint_says_what_to_do(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "BUNDLED_QAT", tmp_path / "absent.pt")
    with pytest.raises(checkpoint.CheckpointError, match="pass --checkpoint"):
        evaluate(None, trained[0], "val")


def test_a_limit_below_one_says_so(tmp_path, capsys):
    from quant.__main__ import main
    assert main(["evaluate", "--data", str(tmp_path), "--limit", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --limit 0: must be at least 1 image per class"], err


def test_grid_indices_balance_the_classes():
    labels = np.repeat(np.arange(5), 12)
    idx = grid_indices(labels, 5)
    assert len(idx) == 40 and len(set(idx.tolist())) == 40
    assert np.bincount(labels[idx]).tolist() == [8] * 5
    assert labels[idx].tolist() == sorted(labels[idx].tolist())
    few = grid_indices(np.array([0, 0, 1]), 2)
    assert sorted(few.tolist()) == [0, 1, 2]


def test_curves_need_a_history(tmp_path):
    with pytest.raises(ValueError, match="no training history"):
        curves_png([], tmp_path / "c.png")
