"""The `-m slow` benchmarks: the bundled model's RTL on the whole validation split, bit for bit;
the edge architecture at `--array auto`.

    python -m pytest -m slow tests/test_sim_benchmark.py -s
(the same as `python -m sim run --data ../shared/data/animals5 --split val --json sim_val.json`)
"""

from __future__ import annotations

import json

import pytest

from sim.__main__ import main


@pytest.mark.slow
def test_whole_validation_split_bit_exact(tmp_path, data_dir):
    out = tmp_path / "sim_val.json"
    rc = main(["run", "--data", str(data_dir), "--split", "val", "--json", str(out)])
    s = json.loads(out.read_text())
    print({k: v for k, v in s.items() if k != "per_image"})
    assert rc == 0 and s["bit_exact"] == s["class_agree"] == s["images"] == 700, s["diagnosis"]


@pytest.mark.slow
def test_edge_model_bit_exact_at_the_auto_array(tmp_path, data_dir):
    """The edge architecture (random weights while its checkpoint is not trained; its metadata
    then names no classes, so the logits are compared) at `--array auto` for the ULX3S-85F:
    4 validation images bit-exact, the stream of them in the cycles hw.cycles.stream predicts."""
    import onnx

    from export.compile import compile_onnx
    from export.testing import RandomModel, materialize
    from hw.config import ArrayConfig
    from hw.cycles import predict, stream
    from hw.schedule import schedule
    from quant.model import named_config

    path, _ = materialize(RandomModel(named_config("edge"), seed=1), tmp_path)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    out = tmp_path / "edge.json"
    rc = main(["run", "--onnx", str(path), "--data", str(data_dir), "--split", "val", "--limit", "4",
               "--array", "auto", "--json", str(out)])
    s = json.loads(out.read_text())
    print({k: v for k, v in s.items() if k != "per_image"})
    assert rc == 0 and s["bit_exact"] == s["images"] == 4, s["diagnosis"]
    sched = schedule(compile_onnx(path), ArrayConfig.parse(s["array"]))
    spans = stream(sched, 4)  # the images overlap in the pipeline's stages; `done` rises a cycle after the model's
    assert s["cycles"]["min"] == predict(sched)["total_cycles"] == spans[0][1] - spans[0][0] + 1  # the first, alone
    assert s["cycles"]["max"] == max(b - a + 1 for a, b in spans)
    assert s["stream_cycles"] == spans[-1][1] - spans[0][0] + 1


@pytest.mark.slow
def test_bundled_edge_model_bit_exact_on_the_whole_validation_split(tmp_path, data_dir):
    """The bundled edge QAT model at the default array on every validation image (about 376 M
    cycles: half an hour of simulator on one core), as `python -m export onnx --checkpoint
    quant/checkpoints/edge_qat.pt --out edge.onnx && python -m sim run --onnx edge.onnx --split val`."""
    from export.onnx_export import export
    from quant import checkpoint

    onnx_path = export(checkpoint.BUNDLED_QAT.parent.parent / "edge_qat.pt", tmp_path / "edge.onnx")
    out = tmp_path / "sim_edge_val.json"
    rc = main(["run", "--onnx", str(onnx_path), "--data", str(data_dir), "--split", "val", "--json", str(out)])
    s = json.loads(out.read_text())
    print({k: v for k, v in s.items() if k != "per_image"})
    assert rc == 0 and s["bit_exact"] == s["class_agree"] == s["images"] == 700, s["diagnosis"]


@pytest.mark.slow
def test_resnet8_bit_exact_on_the_whole_validation_split(tmp_path, cifar_dir):
    """The trained resnet8 (quant/checkpoints/resnet8_qat.pt) on all 5,000 CIFAR-10 validation
    images at the default array, bit for bit: about 1.2 G cycles, hours of simulator."""
    from pathlib import Path

    from export.onnx_export import export

    ckpt = Path(__file__).resolve().parents[1] / "quant" / "checkpoints" / "resnet8_qat.pt"
    if not ckpt.is_file():
        pytest.skip(f"{ckpt} is not trained yet (python -m quant train --arch resnet8 ...)")
    onnx = export(ckpt, tmp_path / "resnet8.onnx")
    out = tmp_path / "resnet8.json"
    rc = main(["run", "--onnx", str(onnx), "--data", str(cifar_dir), "--split", "val", "--json", str(out)])
    s = json.loads(out.read_text())
    print({k: v for k, v in s.items() if k != "per_image"})
    assert rc == 0 and s["bit_exact"] == s["class_agree"] == s["images"] == 5000, s["diagnosis"]
