"""`python -m quant train` in-process on a tiny image folder and a tiny architecture file: QAT from a
float checkpoint, --resume (and its refusal without a resume file), --config overrides, a --classes
subset, and --force to overwrite an existing --out."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from quant import checkpoint
from quant.__main__ import main
from quant.data import DEFAULT_CLASSES
from quant_helpers import arch_file, split_dataset

TINY = [{"kind": "conv", "out": 4, "kernel": 3, "stride": 2}, {"kind": "maxpool", "kernel": 2}, {"kind": "flatten"},
        {"kind": "linear", "out": 16, "w_bits": 4, "cls": "P", "sparsity": 0.5}, {"kind": "linear", "out": 5, "relu": False}]
FAST = ["--batch", "8", "--epochs", "1"]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(data folder: 5 classes x 4 train / 2 val random 72x72 images, architecture file, float checkpoint)."""
    root = tmp_path_factory.mktemp("train_cli")
    data = split_dataset(root / "data")
    arch = arch_file(root / "tiny.json", TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert train(data, arch, root / "float.pt") == 0
    return data, arch, root / "float.pt"


def train(data, arch, out, *args: str) -> int:
    return main(["train", "--data", str(data), "--arch", str(arch), *FAST, "--out", str(out), *args])


def one_line_error(capsys, message: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_qat_from_a_float_checkpoint(tiny, tmp_path, capsys):
    data, _, float_pt = tiny
    out = tmp_path / "qat.pt"
    assert main(["train", "--data", str(data), "--qat", "--init", str(float_pt), *FAST, "--prune-epochs", "1",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"-> {out}")
    ck, fl = checkpoint.load(out), checkpoint.load(float_pt)
    assert ck["config"]["quantized"] and not fl["config"]["quantized"]
    assert ck["config"]["layers"] == fl["config"]["layers"]  # the float checkpoint's architecture
    assert ck["class_names"] == fl["class_names"] == list(DEFAULT_CLASSES)
    assert ck["train"]["lr"] == 5e-4  # the QAT default
    hidden = checkpoint.model_from(ck).weighted[1]
    assert float((hidden.weight == 0).float().mean()) == pytest.approx(0.5, abs=1 / 16)  # the P-layer, pruned


def test_resume_continues_from_the_resume_file(tiny, tmp_path):
    data, arch, _ = tiny
    out = tmp_path / "run.pt"
    assert train(data, arch, out) == 0
    first = checkpoint.load(out)["history"]
    assert out.with_suffix(".resume.pt").is_file()
    assert train(data, arch, out, "--resume", "--epochs", "2") == 0  # the later --epochs wins
    history = checkpoint.load(out)["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == first[0]  # epoch 1 comes from the resume file (its elapsed time too), not a new run


def test_resume_without_a_resume_file_is_refused(tiny, tmp_path, capsys):
    data, arch, _ = tiny
    out = tmp_path / "new.pt"
    assert train(data, arch, out, "--resume") == 2
    one_line_error(capsys, f"{out.with_suffix('.resume.pt')}: no resume file to continue from")
    assert not out.exists()


def test_config_file_overrides_layers(tiny, tmp_path):
    data, arch, _ = tiny
    cfg = tmp_path / "bits.json"
    cfg.write_text(json.dumps({"layers": {"0": {"w_bits": 6, "per_channel": True}, "1": {"w_bits": 3, "sparsity": 0.75}}}))
    assert train(data, arch, tmp_path / "f.pt", "--config", str(cfg)) == 0
    conv, _, _, hidden, logits = checkpoint.load(tmp_path / "f.pt")["config"]["layers"]
    assert (conv["w_bits"], conv["per_channel"]) == (6, True)
    assert (hidden["w_bits"], hidden["sparsity"], hidden["cls"]) == (3, 0.75, "P")
    assert logits["w_bits"] == 8  # not named: the architecture's


def test_config_file_overrides_the_qat_model_too(tiny, tmp_path):
    data, _, float_pt = tiny
    cfg = tmp_path / "bits.json"
    cfg.write_text(json.dumps({"layers": {"1": {"w_bits": 3}}}))
    assert main(["train", "--data", str(data), "--qat", "--init", str(float_pt), "--config", str(cfg), *FAST,
                 "--prune-epochs", "1", "--out", str(tmp_path / "q.pt")]) == 0
    assert checkpoint.load(tmp_path / "q.pt")["config"]["layers"][3]["w_bits"] == 3


@pytest.fixture(scope="module")
def subset(tiny, tmp_path_factory):
    data, arch, _ = tiny
    out = tmp_path_factory.mktemp("subset") / "cow_cat.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert train(data, arch, out, "--classes", "cow,cat") == 0
    return data, out


def test_classes_picks_a_subset_in_the_given_order(subset):
    _, out = subset
    ck = checkpoint.load(out)
    assert ck["class_names"] == ["cow", "cat"]
    assert ck["data"]["train"] == {"cow": 4, "cat": 4} and ck["data"]["val"] == {"cow": 2, "cat": 2}


def test_a_class_subset_gets_one_logit_per_class(subset, capsys):
    data, out = subset
    assert checkpoint.load(out)["config"]["num_classes"] == 2
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(data)]) == 0


def test_an_existing_out_needs_force(tiny, tmp_path, capsys):
    data, arch, float_pt = tiny
    out = tmp_path / "f.pt"
    shutil.copy(float_pt, out)
    before = checkpoint.file_hash(out)
    assert train(data, arch, out) == 2
    one_line_error(capsys, f"{out}: a checkpoint is already there; pass --force to overwrite it")
    assert checkpoint.file_hash(out) == before
    assert train(data, arch, out, "--force", "--seed", "1") == 0
    ck = checkpoint.load(out)
    assert checkpoint.file_hash(out) != before and ck["train"]["seed"] == 1


def test_qat_distilled_from_a_teacher_on_the_command_line(tiny, tmp_path, capsys):
    data, _, float_pt = tiny
    out = tmp_path / "kd.pt"
    qat = ["train", "--data", str(data), "--qat", "--init", str(float_pt), *FAST, "--prune-epochs", "1"]
    assert main([*qat, "--teacher", str(float_pt), "--out", str(out)]) == 0
    ck = checkpoint.load(out)
    assert ck["teachers"] == [{"path": str(float_pt), "sha256": checkpoint.file_hash(float_pt)}]
    assert ck["train"]["distill"] == 0.5 and ck["train"]["distill_temp"] == 4.0  # the defaults with --teacher
    capsys.readouterr()
    assert main([*qat, "--distill", "0.5", "--out", str(tmp_path / "no_teacher.pt")]) == 2
    one_line_error(capsys, "distillation needs both teachers and a weight")
    assert main([*qat, "--teacher", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "m.pt")]) == 2
    one_line_error(capsys, "missing.pt")
    assert not (tmp_path / "no_teacher.pt").exists() and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("option, message", [(["--ema", "1.0"], "--ema 1.0: the decay per step must be in [0, 1)"),
                                             (["--crop-scale", "0"], "--crop-scale 0.0 / --cutmix 0.0"),
                                             (["--cutmix", "1.5"], "--crop-scale 1.0 / --cutmix 1.5"),
                                             (["--lr", "-1"], "--lr -1.0: the learning rate must be a positive number"),
                                             (["--lr", "nan"], "--lr nan: the learning rate must be a positive number"),
                                             (["--batch", "0"], "--batch 0: must be a whole number of at least 1"),
                                             (["--epochs", "0"], "--epochs 0: must be a whole number of at least 1"),
                                             (["--momentum", "-1"], "--momentum -1.0: SGD momentum must be in [0, 1)"),
                                             (["--weight-decay", "-1"], "--weight-decay -1.0: must be a number of at least 0"),
                                             (["--label-smoothing", "2"], "--label-smoothing 2.0: must be in [0, 1)")])
def test_a_bad_training_option_is_refused_before_the_data_is_read(tmp_path, capsys, option, message):
    """The data folder does not exist: the option's error, not the data's, is the one line."""
    out = tmp_path / "f.pt"
    assert train(tmp_path / "no_data", arch_file(tmp_path / "tiny.json", TINY), out, *option) == 2
    one_line_error(capsys, message)
    assert not out.exists()


@pytest.mark.parametrize("out, message", [("afolder", "afolder: Is a directory"), ("afile/f.pt", "afile: Not a directory")])
def test_an_unwritable_out_is_refused_before_the_data_is_read(tmp_path, capsys, out, message):
    (tmp_path / "afolder").mkdir()
    (tmp_path / "afile").write_text("")
    assert train(tmp_path / "no_data", arch_file(tmp_path / "tiny.json", TINY), tmp_path / out) == 2
    one_line_error(capsys, message)


def test_a_second_run_on_the_same_out_is_refused_while_the_first_runs(tmp_path, capsys):
    from common.lock import exclusive
    out = tmp_path / "f.pt"
    with exclusive(out, "quant train"):  # the first run
        assert train(tmp_path / "no_data", arch_file(tmp_path / "tiny.json", TINY), out) == 2
    one_line_error(capsys, f"{out}: another quant train is writing it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json"]  # the lock file goes with its holder


def test_an_architecture_with_another_input_is_refused_before_the_data_is_read(tmp_path, capsys):
    out = tmp_path / "f.pt"
    arch = arch_file(tmp_path / "small.json", TINY, in_shape=[2, 32, 32])
    (tmp_path / "no_data").mkdir()
    assert train(tmp_path / "no_data", arch, out) == 2
    one_line_error(capsys, "architecture 'small': the model takes 2x32x32 inputs, which are not grey (1xHxW) or RGB")
    assert not out.exists()


def test_mixup_trains_and_is_recorded(tiny, tmp_path):
    data, arch, _ = tiny
    out = tmp_path / "mix.pt"
    assert train(data, arch, out, "--mixup", "0.2") == 0
    assert checkpoint.load(out)["train"]["mixup"] == 0.2


def test_a_float_warm_start_continues_from_the_checkpoints_weights(tiny, tmp_path, capsys):
    data, _, float_pt = tiny
    out = tmp_path / "again.pt"
    assert main(["train", "--data", str(data), "--init", str(float_pt), *FAST, "--lr", "1e-9", "--out", str(out)]) == 0
    ck, fl = checkpoint.load(out), checkpoint.load(float_pt)
    assert not ck["config"]["quantized"] and ck["config"] == fl["config"] and ck["init"]["path"] == str(float_pt)
    for k, v in fl["state_dict"].items():  # at a learning rate of 1e-9 one epoch leaves the weights where they were
        assert torch.allclose(ck["state_dict"][k].float(), v.float(), atol=1e-6), k
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--init", str(tmp_path / "nope.pt"), *FAST, "--out", str(tmp_path / "x.pt")]) == 2
    one_line_error(capsys, "nope.pt: no such checkpoint")


def test_a_data_set_of_one_class_is_refused(tmp_path, capsys):
    data = split_dataset(tmp_path / "data", classes=("cat",))
    assert train(data, arch_file(tmp_path / "t.json", TINY), tmp_path / "f.pt") == 2
    one_line_error(capsys, "the training data holds one class (cat); a classifier needs two or more")
