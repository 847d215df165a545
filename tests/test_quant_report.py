"""quant.report (with the CLI's export accounting) on a tiny (--quick) experiment over generated images."""

import json
import warnings

import numpy as np
import pytest

from quant import checkpoint
from quant.__main__ import plan_storage
from quant.evaluate import evaluate
from quant.experiment import run_experiment
from quant.report import ORDER, PAPER, ReportError, build_report, markdown, write_report
from quant_helpers import split_dataset


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    # --quick keeps every 40th training image: 5 of 200
    data = split_dataset(root / "data", per_class={"train": 40, "val": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_experiment(data, root / "exp", quick=True)
        rep = build_report(root / "exp", plan_storage)
    return root / "exp", data, rep


def test_every_run_is_reported_in_order(report):
    _, _, rep = report
    assert list(rep["runs"]) == list(ORDER)
    assert rep["quick"] and rep["split"] == "val" and rep["images"] == 10
    for r in rep["runs"].values():
        for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
            assert 0.0 <= r[key] <= 1.0
        assert 1 <= r["best_epoch"] <= r["epochs"] and r["train_time_s"] > 0
        assert r["val_hash_matches"]
    json.dumps(rep)


def test_accuracy_matches_evaluate_and_deltas_use_the_float_reference(report):
    exp, data, rep = report
    ref = rep["float_reference"]
    assert ref in ("float_adam", "float_sgd")
    assert rep["runs"][ref]["accuracy_delta"] == 0.0
    for name, r in rep["runs"].items():
        assert r["accuracy_delta"] == pytest.approx(r["accuracy"] - rep["runs"][ref]["accuracy"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = evaluate(exp / "qat_pruned.pt", data, "val")
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        assert rep["runs"]["qat_pruned"][key] == pytest.approx(ev[key])


def test_weight_bits_as_stored(report):
    exp, _, rep = report
    runs = rep["runs"]
    for name in ("float_adam", "float_sgd", "float_adam_paper-nopool2"):
        params = sum(p.numel() for p in checkpoint.model_from(checkpoint.load(exp / f"{name}.pt")).parameters())
        assert runs[name]["weight_bits"] == runs[name]["float_bits"] == 32 * params
        assert runs[name]["compression_ratio"] == 1.0
    unpruned, pruned = runs["qat_unpruned"], runs["qat_pruned"]
    assert pruned["float_bits"] == unpruned["float_bits"] == runs["float_adam"]["weight_bits"]
    # dense QAT: every weight at its bit width, biases int32 (conv 8, conv 8, hidden 4, last 8 bits)
    weights, biases, bits = [270, 5000, 432640, 640], [10, 20, 128, 5], [8, 8, 4, 8]
    assert unpruned["weight_bits"] == sum(w * b for w, b in zip(weights, bits)) + 32 * sum(biases)
    assert [l["cls"] for l in pruned["layers"]] == ["NP", "NP", "P", "NP"]
    hidden = pruned["layers"][2]
    assert hidden["index_bits"] is not None and hidden["nonzero"] == pytest.approx(0.1 * hidden["weights"], rel=0.01)
    assert hidden["nonzero"] * 4 < hidden["weight_bits"] < hidden["weights"] * 4  # values + indices, under dense
    assert pruned["weight_bits"] == sum(l["weight_bits"] for l in pruned["layers"])
    assert rep["compression_ratio"] == pruned["compression_ratio"] == pruned["float_bits"] / pruned["weight_bits"]
    assert rep["targets"]["compression_met"] == (rep["compression_ratio"] >= 27.5)
    assert pruned["weight_bits"] < unpruned["weight_bits"] < runs["float_adam"]["weight_bits"]


def test_markdown_and_json_files(report, tmp_path):
    _, _, rep = report
    write_report(rep, tmp_path / "r.json", tmp_path / "r.md")
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(rep))
    md = (tmp_path / "r.md").read_text()
    assert md == markdown(rep)
    assert "Smoke test" in md and "91.18%" in md and "88.89%" in md and f"{PAPER['precision']:.4f}" in md
    for r in rep["runs"].values():
        assert f"| {r['label']} | {r['arch']} | {100 * r['accuracy']:.2f}%" in md
    assert "| P |" in md and f"{rep['compression_ratio']:.1f}×" in md
    table = [l for l in md.splitlines() if l.startswith("| float, Adam |")]
    assert len(table) == 1 and table[0].count("|") == 12


def test_missing_or_incomplete_experiment(tmp_path, report):
    with pytest.raises(ReportError, match="no experiment.json"):
        build_report(tmp_path, plan_storage)
    exp = tmp_path / "exp"
    exp.mkdir()
    manifest = json.loads((report[0] / "experiment.json").read_text())
    del manifest["runs"]["qat_unpruned"]
    (exp / "experiment.json").write_text(json.dumps(manifest))
    with pytest.raises(ReportError, match="qat_unpruned"):
        build_report(exp, plan_storage)
    (exp / "experiment.json").write_text("{not json")
    with pytest.raises(ReportError, match="not an experiment manifest"):
        build_report(exp, plan_storage)


def test_numbers_are_finite(report):
    _, _, rep = report
    values = [r[k] for r in rep["runs"].values() for k in ("accuracy", "f1_macro", "compression_ratio")]
    assert np.all(np.isfinite(values))


def test_a_rerun_of_the_folder_skips_the_finished_runs(report, monkeypatch, capsys):
    exp, data, _ = report
    before = {p.name: checkpoint.file_hash(p) for p in exp.glob("*.pt")}
    import quant.experiment as experiment

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(experiment, "train", no_training)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = run_experiment(data, exp, quick=True)
    assert set(manifest["runs"]) == set(ORDER)
    assert {p.name: checkpoint.file_hash(p) for p in exp.glob("*.pt")} == before
    assert capsys.readouterr().out.count("skipped") == len(ORDER)


def test_a_folder_of_another_experiment_is_refused(report):
    from quant.model import ConfigError
    exp, data, _ = report
    with pytest.raises(ConfigError, match="holds another experiment"):
        run_experiment(data, exp, quick=True, seed=5)


def test_two_jobs_train_the_float_pair_at_once_with_the_same_recipe(report, tmp_path, capsys):
    """The runs match one after the other up to float rounding: one torch thread instead of two
    sums in another order (measured: 1 weight in 432,640 off by 1e-5 after the quick runs)."""
    exp, data, _ = report
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = run_experiment(data, tmp_path / "par", quick=True, both_pools=False, jobs=2)
    assert "in parallel, 2 processes" in capsys.readouterr().out
    assert set(manifest["runs"]) == set(ORDER) - {"float_adam_paper-nopool2", "float_sgd_paper-nopool2"}
    for name in ("float_adam", "float_sgd"):
        one, two = (checkpoint.load(d / f"{name}.pt") for d in (exp, tmp_path / "par"))
        assert one["train"] == two["train"] and one["best_epoch"] == two["best_epoch"]
        for k, v in one["state_dict"].items():
            np.testing.assert_allclose(two["state_dict"][k].numpy(), v.numpy(), rtol=1e-3, atol=1e-4, err_msg=k)


def test_jobs_below_one_are_refused(tmp_path):
    from quant.model import ConfigError
    with pytest.raises(ConfigError, match="--jobs 0"):
        run_experiment(tmp_path / "nodata", tmp_path / "exp", quick=True, jobs=0)


def test_a_recipe_that_distils_gives_the_qat_runs_the_float_pair_as_teachers(tmp_path, monkeypatch):
    import quant.experiment as experiment
    data = split_dataset(tmp_path / "data", per_class={"train": 40, "val": 2})
    paper = experiment.RECIPES["paper"]
    monkeypatch.setitem(experiment.RECIPES, "paper", {**paper, "qat": {**paper["qat"], "distill": 0.5}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = run_experiment(data, tmp_path / "exp", quick=True, both_pools=False)
    exp = tmp_path / "exp"
    pair = [{"path": f"{n}.pt", "sha256": checkpoint.file_hash(exp / f"{n}.pt")} for n in ("float_adam", "float_sgd")]
    for name in ("qat_unpruned", "qat_pruned"):
        ck = checkpoint.load(exp / manifest["runs"][name])
        assert ck["teachers"] == pair and ck["train"]["distill"] == 0.5
        assert ck["init"]["path"] == f"{manifest['float_reference']}.pt"
        assert checkpoint.float_twin(exp / f"{name}.pt") == exp / f"{manifest['float_reference']}.pt"


def test_a_qat_checkpoint_is_reported_with_its_float_twin_beside_an_experiment(report):
    exp, data, rep = report
    one = build_report(exp / "qat_pruned.pt", plan_storage, data)
    twin = checkpoint.float_twin(exp / "qat_pruned.pt")
    assert list(one["runs"]) == [f"float_{checkpoint.load(twin)['train']['optimizer']}", "qat_pruned"]
    assert one["runs"]["qat_pruned"]["accuracy"] == rep["runs"]["qat_pruned"]["accuracy"]
    assert one["runs"]["qat_pruned"]["weight_bits"] == rep["runs"]["qat_pruned"]["weight_bits"]
    with pytest.raises(ReportError, match="a float checkpoint; give the QAT checkpoint"):
        build_report(twin, plan_storage, data)


def test_model_size_counts_the_convs_inside_residual_blocks():
    from quant.model import named_config
    from quant.report import model_size
    size = model_size({"config": named_config("resnet8").to_dict()})
    assert size == {"params": 77_706, "macs": 12_501_632}  # 78,378 with batch norm (folded here); 12.5 M MACs
