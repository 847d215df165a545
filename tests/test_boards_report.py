"""report.json / report.md: figures come from the steps that measured them; a timing failure is loud."""

from types import SimpleNamespace

import numpy as np

from boards.build import BuildResult
from boards.fit import Check, FitResult
from boards.profiles import get_profile
from boards.report import array_utilisation, build_report, layer_table, to_markdown
from tests.hw_helpers import random_plan


def fake_parts(fmax):
    plan = random_plan(np.random.default_rng(0))
    rtl = {"layers": [{"pass": "load", "layer": -1, "name": "image", "cycles": 100},
                      {"pass": "array", "layer": 0, "name": "conv1", "cycles": 400, "macs": 2916, "ideal_cycles": 300.0,
                       "utilisation": 0.75},
                      {"pass": "array", "layer": 2, "name": "conv2", "cycles": 100, "macs": 192, "ideal_cycles": 50.0,
                       "utilisation": 0.5}],
           "total_cycles": 1000, "memory_bits": {"w": 10}}
    outcome = SimpleNamespace(summary={"bit_exact": 7, "images": 8, "class_agree": 8, "rtl_accuracy": 0.5,
                                       "cycles": {"min": 1000, "mean": 1000.0, "max": 1000}, "latency_cycles": 1000.0,
                                       "stream_images": 8, "stream_cycles": 8040, "throughput_images_per_second": 8 * 100e6 / 8040},
                              diagnosis="image 3: ...")
    built = BuildResult("ulx3s-85f", "ecp5", "b", 100.0, bitstream="b/top.bit", fmax_mhz=fmax,
                        critical_path={"delay_ns": 27.7, "logic_ns": 9.4, "routing_ns": 18.3, "steps": 43, "start": "a.Q",
                                       "end": "b.D", "start_net": "sparse.entries", "end_net": "buf0.addr",
                                       "sources": ["hw/sparse.py:86"]},
                        resources={"luts": {"used": 16872, "available": 83640}})
    fit = FitResult("ulx3s-85f", "LFE5U-85F", [Check("multipliers", 91, 156, "DSPs")])
    return dict(plan=plan, profile=get_profile("ulx3s-85f"), config="10x9", fit=fit, rtl=rtl, outcome=outcome,
                accuracy={"accuracy_quant": 0.7, "accuracy_float": 0.68, "source": "test"}, built=built,
                steps={"a": 1.0}, source="8 images", onnx_path="m.onnx", clock_mhz=100.0)


def test_report_figures_and_a_failed_timing():
    r = build_report(**fake_parts(fmax=36.16))
    assert (r["bit_exact"], r["images"], r["fmax_mhz"], r["requested_mhz"]) == (7, 8, 36.16, 100.0)
    assert r["images_per_second"] == round(36.16e6 / 1000, 2) and r["images_per_second_at_requested"] == 100_000
    assert r["utilisation"] == round(350 / 500, 4) and r["utilisation_image"] == 0.35
    assert r["timing_met"] is False and "TIMING NOT MET" in r["summary"] and "--clock-mhz 36" in r["summary"]
    md = to_markdown(r)
    assert "rebuild with --clock-mhz 36" in md and "hw/sparse.py:86" in md and "first mismatch: image 3" in md
    assert "| luts | 16,872 | 83,640 | 20.2% |" in md
    # the stream's throughput scaled to the achieved Fmax, and the ULX3S-85F's 156 multipliers as the bound
    macs = sum(l.macs_effective for l in fake_parts(fmax=1)["plan"].layers)
    assert r["throughput_images_per_second"] == round(8 * 36.16e6 / 8040, 2) and r["latency_cycles"] == 1000.0
    assert r["dsp_bound_images_per_second"] == round(156 * 36.16e6 / macs, 2)
    assert r["dsp_efficiency"] == round(r["throughput_images_per_second"] / r["dsp_bound_images_per_second"], 4)
    assert r["host_onnxruntime"] is None and "of the board's DSP bound" in md


def test_host_throughput_is_measured(tmp_path):
    from export.ort import host_throughput
    import onnx
    from tests.onnx_builders import qcdq_conv
    path = tmp_path / "m.onnx"
    onnx.save(qcdq_conv(np.ones((2, 1, 2, 2)), [0, 0]), path)  # (1, 3, 3) input, two logits
    h = host_throughput(path, np.zeros((3, 1, 3, 3), np.uint8), batch=16, threads=1, min_seconds=0.05)
    assert h["batch"] == 16 and h["images"] % 16 == 0 and h["images"] >= 16 and h["threads"] == 1
    assert abs(h["images_per_second"] - h["images"] / h["seconds"]) <= 0.05 * h["images_per_second"]
    assert h["level"] == "ORT_ENABLE_BASIC"


def test_report_without_timing_failure_and_the_layer_table():
    parts = fake_parts(fmax=120.0)
    r = build_report(**parts)
    assert r["timing_met"] is True and "TIMING" not in r["summary"]
    rows = layer_table(parts["plan"], parts["rtl"])
    assert [row["cycles"] for row in rows[:2]] == [400, None] and rows[0]["utilisation"] == 0.75
    assert rows[0]["macs_dense"] == parts["plan"].layers[0].macs_dense
    assert array_utilisation({"layers": []}) is None


def test_resnet8_report_sets_our_figures_beside_the_published_peers():
    """A resnet8 checkpoint's report has one comparison table: our row from this run (multipliers,
    achieved clock, stream, latency in ms, accuracy), then each published peer; the host's ONNX
    Runtime is in the same table. Other models have no peer table."""
    parts = fake_parts(fmax=104.5)
    parts["accuracy"] = {**parts["accuracy"], "arch": "resnet8"}
    host = {"level": "ORT_ENABLE_BASIC", "batch": 64, "threads": 2, "images_per_second": 4321.0, "images": 640, "seconds": 0.15}
    r = build_report(**parts, host=host, multipliers=88)
    assert r["latency_ms"] == round(1000 / 104.5e3, 4)
    ours, *peers = r["comparison"]
    assert ours["dsps"] == 88 and ours["clock_mhz"] == 104.5 and ours["accuracy"] == 0.7
    assert ours["images_per_second"] == r["throughput_images_per_second"] and ours["latency_ms"] == r["latency_ms"]
    assert [p["images_per_second"] for p in peers] == [318, 2431, 6790, 131]
    md = to_markdown(r)
    assert "| fpgaConvNet | Zybo (Zynq-7010) | 78 | n/a | 318 | 3.15 | n/a | Vivado |" in md
    assert f"| this toolkit | ulx3s-85f (LFE5U-85F) | 88 | 104.5 | {ours['images_per_second']:,.0f} |" in md
    assert "| ONNX Runtime (host CPU, 2 threads, batch 64) | this machine | - | - | 4,321 |" in md
    assert f"({r['latency_ms']:.3f} ms at 104.5 MHz)" in md
    other = build_report(**fake_parts(fmax=104.5))
    assert other["comparison"] is None and "published FPGA figures" not in to_markdown(other)
