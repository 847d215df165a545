"""`python -m export bitstream-rtl` (boards.flow): the whole chain on a CI-sized model, and bad input."""

import json
from pathlib import Path

import pytest

from boards.errors import BoardError
from boards.flow import ChainConfig, OutputExists, bitstream_rtl, prepare_out
from tests.boards_helpers import random_checkpoint

REPORT_KEYS = ("accuracy_float", "accuracy_quant", "compression_ratio", "bit_exact", "images", "fmax_mhz",
               "utilisation", "images_per_second", "layers", "resources", "critical_path")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def export_main(argv):
    from export.__main__ import main
    return main(argv)


def test_whole_chain_on_the_up5k(tiny_ckpt, tmp_path):
    """Checkpoint -> ONNX -> plan -> fit (auto array) -> Verilog -> Verilator vs ORT -> bitstream -> report.
    The fit check counts an iCE40's logic cells (boards.fit.CELLS_PER_LUT): with LUT4s alone it
    picked a 2x3 array for the pipelined design, 4,869 of the UP5K's 5,280 cells, which did not place."""
    out = tmp_path / "out"
    lines = []
    rep = bitstream_rtl(ChainConfig(checkpoint=str(tiny_ckpt), board="icebreaker", array="auto", limit=3, out=out),
                        say=lines.append)

    for name in ("model.onnx", "plan.json", "plan.npz", "rtl/accelerator.v", "board/top.il", "board/top.pcf",
                 "board/build_top.sh", "board/synth.log", "board/pnr.log", "board/top.bin", "report.json", "report.md"):
        assert (out / name).is_file(), name
    assert (out / "rtl" / "accelerator.json").is_file(), "the port and memory inventory"
    assert not [p for p in out.rglob("*.tmp*") if p.is_file()], "a temporary file left behind"

    on_disk = json.loads((out / "report.json").read_text())
    assert all(k in on_disk for k in REPORT_KEYS)
    assert rep["images"] == 3 and rep["bit_exact"] == 3
    nextpnr = json.loads((out / "board" / "report.json").read_text())
    assert rep["fmax_mhz"] == round(min(v["achieved"] for v in nextpnr["fmax"].values()), 2)
    assert rep["requested_mhz"] == pytest.approx(12.0, rel=1e-3)
    mean = rep["cycles"]["measured"]["mean"]
    assert rep["images_per_second"] == pytest.approx(rep["fmax_mhz"] * 1e6 / mean, rel=1e-3)
    # hw's cycle model is exact: the first image runs alone; the next ones overlap it and wait in stages
    assert rep["cycles"]["predicted"] == rep["cycles"]["measured"]["min"] <= mean
    assert 0 < rep["utilisation"] <= 1
    assert rep["resources"]["used_vs_available"]["luts"]["available"] == 5280
    assert on_disk["resources"]["fit_estimate"]["fits"] and on_disk["array"] == rep["array"]
    assert [l["name"] for l in rep["layers"]] and rep["layers"][0]["cycles"] > 0
    md = (out / "report.md").read_text()
    assert "bit-exact logits: **3/3**" in md and "critical path" in md
    assert any(l.startswith("[8/8]") for l in lines) and any("done in" in l for l in lines)
    # the stream at the achieved Fmax against the UP5K's 8 multipliers, and the host CPU beside it
    assert rep["throughput_images_per_second"] == pytest.approx(
        rep["stream_images"] * rep["fmax_mhz"] * 1e6 / rep["stream_cycles"], rel=1e-3)
    # the stages overlap images: a stream of n takes at least one image's latency, at most n of them
    assert rep["cycles"]["predicted"] < rep["stream_cycles"] <= rep["stream_images"] * rep["cycles"]["predicted"]
    assert 0 < rep["dsp_efficiency"] and rep["host_onnxruntime"]["batch"] == 64
    assert rep["host_onnxruntime"]["images_per_second"] > 0


def test_an_existing_output_folder_is_refused_without_force(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("x")
    with pytest.raises(OutputExists, match=r"out: already exists; pass --force"):
        prepare_out(tmp_path / "out", force=False)
    assert prepare_out(tmp_path / "out", force=True) == tmp_path / "out"
    assert prepare_out(tmp_path / "new", force=False).is_dir()


@pytest.mark.parametrize("argv, message", [
    (["--board", "de10-nano"], "unknown board 'de10-nano'; known boards: ulx3s-12f"),
    (["--array", "ten-by-nine"], "array must be written RxC"),
    (["--array", "16x16", "--board", "icebreaker"], "does not fit icebreaker"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--data", "/no/such/folder"], "no such folder"),
    (["--baud", "2500000", "--board", "icebreaker"], "off by more than 2%"),
    (["--clock-mhz", "0"], "--clock-mhz 0: the core clock must be a positive number of MHz"),
    (["--clock-mhz", "-5"], "--clock-mhz -5: the core clock must be a positive number of MHz"),
    (["--pnr-timeout", "nan"], "--pnr-timeout nan: must be a positive number of seconds"),
    (["--pnr-timeout", "inf"], "--pnr-timeout inf: must be a positive number of seconds"),
])
def test_bad_input_is_one_line_and_exit_status_2(argv, message, tiny_ckpt, tmp_path, capsys):
    rc = export_main(["bitstream-rtl", "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "out"),
                      "--no-bitstream", *argv])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # progress lines come first
    assert rc == 2
    assert last.startswith("error: ") and message in last, last


def test_a_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    assert export_main(["bitstream-rtl", "--checkpoint", str(bad), "--out", str(tmp_path / "out")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "not a readable checkpoint" in last


def test_a_missing_toolchain_is_refused_before_any_work(tiny_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("YOSYS", "no-such-yosys")
    assert export_main(["bitstream-rtl", "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "out")]) == 2
    assert "no-such-yosys not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_data_of_other_classes_is_refused_before_synthesis_starts(tiny_ckpt, tmp_path, monkeypatch):
    import boards.flow
    from quant_helpers import class_images

    class_images(tmp_path / "data" / "val", classes=["zebra"], per_class=1)
    started = []
    monkeypatch.setattr(boards.flow, "check_tools", lambda profile: None)
    monkeypatch.setattr(boards.flow, "build", lambda *a, **k: started.append(a))
    with pytest.raises(BoardError, match=r"classes \['zebra'\] are not the model's"):
        bitstream_rtl(ChainConfig(checkpoint=str(tiny_ckpt), board="icebreaker", array="2x1", data=str(tmp_path / "data"),
                                  limit=1, out=tmp_path / "out"), say=lambda line: None)
    assert started == []


@pytest.mark.slow
def test_paper_model_on_the_ulx3s_85f(tmp_path):
    """The full design through yosys / nextpnr-ecp5 / ecppack (minutes): the README's figures.

    Uses the bundled QAT+pruned checkpoint (with --data when the data set is there), else a
    paper-shaped checkpoint with random weights (same sizes, meaningless accuracy)."""
    from quant import checkpoint
    from common.data import default_data
    from tests.boards_helpers import paper_checkpoint

    bundled = checkpoint.BUNDLED_QAT.is_file()
    ckpt = None if bundled else str(paper_checkpoint(tmp_path / "paper.pt"))
    rep = bitstream_rtl(ChainConfig(checkpoint=ckpt, board="ulx3s-85f", data=default_data() if bundled else None,
                                    limit=8, out=tmp_path / "out"))
    print(rep["summary"])
    print(json.dumps({k: rep[k] for k in ("fmax_mhz", "requested_mhz", "critical_path", "images_per_second",
                                          "utilisation", "seconds")}, indent=1))
    print(json.dumps(rep["resources"]["used_vs_available"], indent=1))
    assert rep["bit_exact"] == rep["images"] == 8
    assert Path(rep["bitstream"]).stat().st_size > 100_000
    assert rep["fmax_mhz"] > 0 and rep["requested_mhz"] == pytest.approx(100, rel=1e-3)


def test_a_failing_simulation_stops_the_background_build(tiny_ckpt, tmp_path, monkeypatch):
    import subprocess
    import time

    import sim.verify

    def broken(*a, **k):
        time.sleep(3)  # let the build reach yosys
        raise RuntimeError("simulator exploded")

    monkeypatch.setattr(sim.verify, "verify", broken)
    with pytest.raises(RuntimeError, match="simulator exploded"):
        bitstream_rtl(ChainConfig(checkpoint=str(tiny_ckpt), board="icebreaker", array="2x1", limit=1,
                                  out=tmp_path / "out"), say=lambda line: None)
    time.sleep(2)
    children = subprocess.run(["pgrep", "-P", str(__import__("os").getpid())], capture_output=True, text=True).stdout
    assert not children.strip(), f"tool processes left running: {children}"
    assert not (tmp_path / "out" / "board" / "top.bin").exists()


def test_the_array_a_model_names_is_built_unless_array_is_given(tmp_path):
    """A description's `array` (quant.model.ModelConfig.array) is the chain's default; --array wins."""
    from dataclasses import replace

    from tests.boards_helpers import tiny_config
    ckpt = random_checkpoint(tmp_path / "named.pt", replace(tiny_config(), array="3x2"))
    lines = []
    rep = bitstream_rtl(ChainConfig(checkpoint=str(ckpt), bitstream=False, random_images=True, limit=1,
                                    out=tmp_path / "named"), say=lines.append)
    assert rep["array"] == "3x2" and rep["bit_exact"] == 1
    assert any("the model names array 3x2" in l for l in lines)
    given = bitstream_rtl(ChainConfig(checkpoint=str(ckpt), bitstream=False, random_images=True, limit=1, array="2x2",
                                      out=tmp_path / "given"), say=lambda line: None)
    assert given["array"] == "2x2"
