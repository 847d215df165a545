"""`python -m hw generate --onnx MODEL.onnx`: a random model of today's hardware vocabulary, from ONNX to Verilog."""

from export.testing import materialize, model_specs
from hw.__main__ import main
from sim_helpers import drawn


def test_generate_from_an_onnx_model(tmp_path, capsys):
    spec = drawn(model_specs(vocabulary="basic", pruned=True), seed=3)
    onnx_path, plan = materialize(spec, tmp_path)
    assert main(["generate", "--onnx", str(onnx_path), "--array", "2x2", "--out", str(tmp_path / "rtl")]) == 0
    verilog = tmp_path / "rtl" / "accelerator.v"
    assert verilog.is_file() and "module accelerator" in verilog.read_text()
    assert (tmp_path / "rtl" / "accelerator.json").is_file()  # the port and memory inventory
    out = capsys.readouterr().out
    assert out.startswith("array 2x2: ") and f"to {tmp_path / 'rtl'} in " in out
    passes = [l.split()[0] for l in out.splitlines()[2:] if l.split()[0] in ("load", "array", "pool", "sparse", "emit")]
    weighted = [l for l in plan.layers if l.weight is not None]
    assert passes[0] == "load" and passes[-1] == "emit" and "sparse" in passes
    assert passes.count("array") + passes.count("sparse") == len(weighted), out
