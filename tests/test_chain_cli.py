"""The CLI chain beyond the bundled model, in-process: the vgg architecture (random weights) through
`export onnx`, `export plan` and `hw generate`; an architecture file of the whole vocabulary trained
float then QAT, exported and checked (`export check` exit 0)."""

from __future__ import annotations

import warnings

import pytest

from export.__main__ import main as export_main
from hw.__main__ import main as hw_main
from quant import checkpoint
from quant.__main__ import main as quant_main
from quant.model import named_config, quantized_twin
from quant_helpers import arch_file, split_dataset
from tests.boards_helpers import random_checkpoint


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_vgg_through_export_and_hw(tmp_path, capsys):
    ckpt = random_checkpoint(tmp_path / "vgg.pt", quantized_twin(named_config("vgg")))
    onnx = tmp_path / "vgg.onnx"
    assert export_main(["onnx", "--checkpoint", str(ckpt), "--out", str(onnx)]) == 0
    assert export_main(["plan", str(onnx), "--out", str(tmp_path / "plan")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "plan.json").is_file() and (tmp_path / "plan.npz").is_file()
    kinds = [l.split()[1] for l in out.splitlines() if l.split() and l.split()[0].isdigit()]  # the per-layer table
    assert kinds == ["conv2d", "conv2d", "maxpool"] * 3 + ["flatten", "linear", "linear"], out
    assert "P-layer encoding" in out  # vgg's hidden layer is pruned
    # hw takes vgg (valid stride-1 convs, 2x2 max-pools): 6 conv passes, 3 pools, the sparse and the
    # logits layer (dense, after a P-layer: on the sparse engine, in the same stage)
    assert hw_main(["generate", "--onnx", str(onnx), "--out", str(tmp_path / "rtl")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "rtl" / "accelerator.v").is_file()
    passes = [l.split()[0] for l in out.splitlines()[2:] if l.split()[0] in ("array", "pool", "sparse")]
    assert passes == ["array", "array", "pool"] * 3 + ["sparse", "sparse"], out


VOCABULARY = [{"kind": "conv", "out": 4, "kernel": 3, "padding": "same", "bn": True, "per_channel": True, "stride": 2},
              {"kind": "avgpool", "kernel": 2}, {"kind": "gap"}, {"kind": "flatten"},
              {"kind": "linear", "out": 5, "relu": False}]


def test_an_architecture_file_trains_quantizes_exports_and_checks(tmp_path, capsys):
    data = split_dataset(tmp_path / "data", per_class={"train": 4, "val": 2})  # 5 classes, random 72x72 PNGs
    arch = arch_file(tmp_path / "net.json", VOCABULARY)
    fast = ["--data", str(data), "--epochs", "1", "--batch", "5"]
    assert quant_main(["train", "--arch", str(arch), *fast, "--out", str(tmp_path / "float.pt")]) == 0
    assert quant_main(["train", "--qat", "--init", str(tmp_path / "float.pt"), *fast, "--out", str(tmp_path / "qat.pt")]) == 0
    ck = checkpoint.load(tmp_path / "qat.pt")
    assert ck["config"]["quantized"] and ck["config"]["bn_folded"] and ck["bn_fold"]  # batch norm folded before QAT
    onnx = tmp_path / "m.onnx"
    assert export_main(["onnx", "--checkpoint", str(tmp_path / "qat.pt"), "--out", str(onnx)]) == 0
    capsys.readouterr()
    assert export_main(["check", str(onnx), "--data", str(data), "--split", "val"]) == 0
    assert "reference == ONNX Runtime on every layer: 10/10 val images" in capsys.readouterr().out
    from export.compile import compile_onnx
    plan = compile_onnx(onnx)
    assert [l.kind for l in plan.layers] == ["conv2d", "avgpool", "globalavgpool", "flatten", "linear"]
    assert plan.layers[0].stride == 2 and plan.layers[0].pad == (1, 1, 1, 1)
