"""`python -m export onnx` and `check` in-process: the golden model and its Brevitas agreement; check's
exit status 0 when the reference equals ONNX Runtime on every layer, 1 (and the mismatch named) when not."""

from __future__ import annotations

import onnx
import pytest

from export.__main__ import main
from export.onnx_export import metadata
from quant import checkpoint
from quant_helpers import class_images


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """val/<class>/ of the bundled model's five classes, two seeded random 72x72 images each."""
    root = tmp_path_factory.mktemp("data")
    class_images(root / "val", per_class=2)
    return root


def test_onnx_writes_the_golden_model_and_the_brevitas_agreement(data, tmp_path, capfd):
    out = tmp_path / "m.onnx"
    assert main(["onnx", "--out", str(out), "--data", str(data), "--split", "val"]) == 0
    onnx.checker.check_model(str(out))
    meta = metadata(out)
    assert meta["checkpoint"] == checkpoint.BUNDLED_QAT.name
    assert meta["checkpoint_hash"] == checkpoint.file_hash(checkpoint.BUNDLED_QAT)
    captured = capfd.readouterr()  # file-descriptor level: onnxoptimizer writes to C++ std::cerr
    # Brevitas's onnxoptimizer passes ran on the export (weights and scales are initializers, not
    # Constant nodes) and it printed no "unable to parse input model" warning
    assert "unable to parse" not in captured.err, captured.err
    graph = onnx.load(str(out)).graph
    assert graph.initializer and not any(n.op_type == "Constant" for n in graph.node)
    lines = captured.out.splitlines()
    assert lines[0] == f"wrote {out} (passes onnx.checker)"
    assert lines[1].startswith("ONNX Runtime vs Brevitas on 10 val images: same class 10/10, max |logit difference| "), lines


def test_check_is_exit_0_when_the_reference_equals_onnx_runtime(bundled_onnx, data, capsys):
    assert main(["check", str(bundled_onnx), "--data", str(data), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "reference == ONNX Runtime on every layer: 10/10 val images" in out and "mismatch" not in out


def test_check_is_exit_1_and_names_the_mismatch(bundled_onnx, data, capsys, monkeypatch):
    """A compiler that gets one bias wrong: the reference departs from ONNX Runtime in layer 0."""
    import export.compile
    compile_onnx = export.compile.compile_onnx

    def miscompiled(path):
        plan = compile_onnx(path)
        l0 = plan.layers[0]
        l0.bias = l0.bias.copy()
        l0.bias[:] += 3 << max(0, int(l0.shift))  # 3 output LSBs up: every pixel of every channel, past ReLU
        return plan

    monkeypatch.setattr(export.compile, "compile_onnx", miscompiled)
    assert main(["check", str(bundled_onnx), "--data", str(data), "--split", "val", "--limit", "1"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "reference == ONNX Runtime on every layer: 0/5 val images" in lines
    name = compile_onnx(bundled_onnx).layers[0].name
    mism = [l for l in lines if l.startswith("  mismatch: ")]
    assert len(mism) == 5 and all(f"layer {name!r}, index (" in l for l in mism), lines
