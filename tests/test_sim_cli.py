"""`python -m sim run`: one-line errors with exit status 2, and the JSON summary of a run on a tiny image folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from quant_helpers import class_images
from sim.__main__ import main


@pytest.mark.parametrize("args,message", [
    (["--data", "/nonexistent", "--split", "val"], "/nonexistent/val: no such folder"),
    (["--split", "val", "--limit", "0"], "--limit must be at least 1"),
    (["--split", "val", "--array", "3by3"], "array must be written RxC"),
    (["--split", "val", "--array", "0x4"], "array must be 1..16 x 1..16"),
    (["--split", "val", "--onnx", "/nonexistent.onnx"], "/nonexistent.onnx: no such ONNX model"),
    (["--split", "val", "--clock-mhz", "-5"], "--clock-mhz must be positive"),
    (["--split", "val", "--board", "nope"], "unknown board 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    if "--data" not in args:
        (tmp_path / "val" / "cat").mkdir(parents=True)
        args = ["--data", str(tmp_path), *args]
    assert main(["run", *args, "--json", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("in_shape, stride, message", [
    # stride 17: export compiles it, the window generator makes strides up to 16
    ((3, 64, 64), 17, "error: layer 0 'conv' (conv2d): stride 17: the window generator makes strides up to 16"),
    # two channels: neither grey nor RGB images, and the folder has no val.npz
    ((2, 16, 16), 2, "error: {model}: the model takes 2x16x16 inputs, which are not grey (1xHxW) or RGB (3xHxW) images"),
])
def test_a_model_the_chain_refuses_is_one_line_before_the_images_are_read(tmp_path, capsys, in_shape, stride, message):
    import numpy as np
    import onnx
    from onnx_builders import vocab_graph

    model = tmp_path / "m.onnx"
    onnx.save(vocab_graph(np.ones((2, in_shape[0], 3, 3)), [0, 0], in_shape=in_shape, stride=stride), str(model))
    (tmp_path / "val" / "cat").mkdir(parents=True)  # no images: reading them would fail with another message
    assert main(["run", "--data", str(tmp_path), "--split", "val", "--onnx", str(model), "--json", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message.format(model=model)), err
    assert not (tmp_path / "s.json").exists()


def test_ctrl_c_is_exit_130_and_no_json(tmp_path, capsys, monkeypatch):
    import export.compile

    def interrupt(path):
        raise KeyboardInterrupt

    (tmp_path / "val" / "cat").mkdir(parents=True)
    (tmp_path / "m.onnx").write_bytes(b"")
    monkeypatch.setattr(export.compile, "compile_onnx", interrupt)
    assert main(["run", "--data", str(tmp_path), "--split", "val", "--onnx", str(tmp_path / "m.onnx"),
                 "--json", str(tmp_path / "s.json")]) == 130
    assert capsys.readouterr().err == "interrupted\n" and not (tmp_path / "s.json").exists()


def test_an_unwritable_json_is_refused_before_the_model_is_compiled(tmp_path, capsys, monkeypatch):
    import export.compile

    (tmp_path / "val" / "cat").mkdir(parents=True)
    (tmp_path / "afile").write_text("")
    monkeypatch.setattr(export.compile, "compile_onnx", lambda path: pytest.fail("compiled before the check"))
    assert main(["run", "--data", str(tmp_path), "--split", "val", "--json", str(tmp_path / "afile" / "s.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'afile'}: Not a directory"), err


def test_an_interrupted_run_leaves_no_work_folder_and_ends_on_the_error_line(tmp_path, capsys, monkeypatch):
    import tempfile

    import sim.verify

    def interrupt(*a, on_image, **k):
        on_image({"index": 0, "got": None, "label": 0, "bit_exact": False, "error": "x", "cycles": 0})
        raise KeyboardInterrupt

    class_images(tmp_path / "data" / "val", per_class=1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(sim.verify, "verify", interrupt)
    assert main(["run", "--data", str(tmp_path / "data"), "--split", "val", "--limit", "1", "--json",
                 str(tmp_path / "s.json")]) == 130
    assert list((tmp_path / "tmp").iterdir()) == [] and not (tmp_path / "s.json").exists()
    assert capsys.readouterr().err.endswith("\ninterrupted\n")


def test_skipped_files_are_one_warning_line_each(bundled_onnx, tmp_path):
    class_images(tmp_path / "val", ("zebra",), 1)
    (tmp_path / "val" / "zebra" / "broken.jpg").write_bytes(b"not a jpeg")
    out = subprocess.run([sys.executable, "-m", "sim", "run", "--data", str(tmp_path), "--split", "val", "--onnx",
                          str(bundled_onnx), "--json", str(tmp_path / "s.json")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.splitlines() == [
        f"warning: skipped {tmp_path / 'val' / 'zebra' / 'broken.jpg'}: not a readable image (UnidentifiedImageError)",
        "error: classes ['zebra'] of " + f"{tmp_path / 'val'} are not the model's ['cat', 'cow', 'elephant', 'horse', 'sheep']",
    ], out.stderr


def test_run_writes_the_summary(tmp_path, capsys):
    data = tmp_path / "data"
    class_images(data / "val", per_class=2)  # seeded random images of the bundled model's five classes
    out = tmp_path / "s.json"
    assert main(["run", "--data", str(data), "--split", "val", "--limit", "3", "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["images"] == 3 and s["bit_exact"] == 3 and s["class_agree"] == 3
    assert [r["label"] for r in s["per_image"]] == [0, 1, 2]  # classes taken in turn
    assert 0 <= s["rtl_accuracy"] <= 1 and s["rtl_accuracy"] == s["onnx_accuracy"]
    c = s["cycles"]
    assert 0 < c["min"] <= c["mean"] <= c["max"]
    assert s["images_per_second"] == pytest.approx(100e6 / c["mean"])
    # the stream: each image starts as soon as the accelerator takes it, so the stream lasts at least
    # one image's latency, and at most three (one after another) and the harness's gaps
    assert s["latency_cycles"] == c["min"] == s["per_image"][0]["cycles"] and s["stream_images"] == 3
    assert c["max"] <= s["stream_cycles"] <= 3 * c["max"] + 3 * 16
    assert s["sim_cycles_per_second"] > 0 and s["sim_cycles"] >= s["stream_cycles"]
    assert s["throughput_images_per_second"] == pytest.approx(3 * 100e6 / s["stream_cycles"], rel=1e-3)
    assert s["dsp_multipliers"] == 156 and s["effective_macs"] == 4_652_942  # ULX3S-85F; the bundled plan
    assert s["dsp_bound_images_per_second"] == pytest.approx(156 * 100e6 / 4_652_942, rel=1e-3)
    assert s["dsp_efficiency"] == pytest.approx(s["throughput_images_per_second"] / s["dsp_bound_images_per_second"], rel=1e-3)
    captured = capsys.readouterr()
    assert captured.out.startswith("bit-exact 3/3")
    assert captured.err.count("bit-exact") == 3  # one line per image


def test_model_naming_no_classes_runs_on_any_folders(tmp_path, capsys):
    """A plain Brevitas export has no class names in its metadata: any ImageFolder data runs, the
    logits are compared and the summary says there is no accuracy to give."""
    pytest.importorskip("brevitas")
    import onnx

    from export.testing import RandomModel, materialize
    from quant.model import LayerSpec, ModelConfig
    layers = [LayerSpec("conv", 2, 3, stride=2, padding=1, per_channel=True), LayerSpec("avgpool", kernel=2),
              LayerSpec("gap"), LayerSpec("flatten"), LayerSpec("linear", 3, relu=False)]
    path, _ = materialize(RandomModel(ModelConfig("random", layers, 3, (3, 64, 64)).validate(), 3), tmp_path)
    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key != "class_names"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.save(model, str(path))
    data = class_images(tmp_path / "data" / "val", ("zebra", "yak"), 1).parent
    out = tmp_path / "s.json"
    assert main(["run", "--onnx", str(path), "--data", str(data), "--split", "val", "--array", "2x2",
                 "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["images"] == s["bit_exact"] == 2 and s["rtl_accuracy"] is None
    assert s["model_classes"] is None and "names no classes" in s["classes_note"]
    captured = capsys.readouterr()
    assert "no accuracy (the model names no classes)" in captured.out
    assert "label      zebra" in captured.err


@pytest.mark.parametrize("kind", ["int8_1x28x28", "int8_1x49x10"])
def test_a_signed_one_channel_model_runs_on_npz_tensors(tmp_path, capsys, kind):
    """A model whose input is int8 at 2^-7 (not an image), on DIR/val.npz tensors with the extremes
    -128 and 127: fed to ONNX Runtime as x / 128, streamed as two's-complement bytes. The 1x49x10
    one starts with DS-CNN's first layer: a 10x4 kernel, stride 2, pads 5/1."""
    pytest.importorskip("brevitas")
    from plain_models import SHAPES, chain_onnx, write_npz

    path = chain_onnx(kind, tmp_path / "m.onnx")
    write_npz(tmp_path / "data", SHAPES[kind], 3)
    out = tmp_path / "s.json"
    assert main(["run", "--onnx", str(path), "--data", str(tmp_path / "data"), "--split", "val", "--limit", "2",
                 "--array", "4x4", "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["images"] == s["bit_exact"] == 2, s["diagnosis"]
    assert capsys.readouterr().out.startswith("bit-exact 2/2")


def test_stream_figures_need_every_image():
    from sim.verify import stream_figures
    # the first image finds the accelerator idle (100 cycles); the later ones also wait 30 for the stages ahead
    recs = [{"cycles": 100 + 30 * (i > 0), "error": None, "start_cycle": 10 + 105 * i - 30 * (i > 0),
             "done_cycle": 110 + 105 * i} for i in range(4)]
    f = stream_figures(recs, 100.0, multipliers=10, effective_macs=1000)
    assert f["stream_cycles"] == 415 and f["latency_cycles"] == 100
    assert f["throughput_images_per_second"] == pytest.approx(4 * 100e6 / 415, rel=1e-4)
    assert f["dsp_bound_images_per_second"] == pytest.approx(1e6)
    assert f["dsp_efficiency"] == pytest.approx(f["throughput_images_per_second"] / 1e6, rel=1e-3)
    recs[2]["error"] = "timeout"
    broken = stream_figures(recs, 100.0, multipliers=10, effective_macs=1000)
    assert broken["throughput_images_per_second"] is None and broken["dsp_efficiency"] is None
