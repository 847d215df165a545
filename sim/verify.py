"""The whole check: plan -> accelerator Verilog -> Verilator -> logits vs ONNX Runtime.

Used by `python -m sim run` and by the tests. Per image: bit-exact (every logit equal), class
agreement (argmax), cycles. On the first mismatching image, a traced + FST re-run names the first
layer, channel and pixel where the RTL departs from export.reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from export.plan import Plan
from hw.inventory import INVENTORY_FILE, Inventory
from hw.stream_io import pixel_bytes
from sim import runner, shards
from sim.golden import first_difference, read_trace


# where generated accelerators are kept, by content: the plan, the array, the generator's sources
RTL_CACHE_ENTRIES = 32


def rtl_cache_dir() -> Path:
    return Path(os.environ.get("SIM_RTL_CACHE_DIR", Path.home() / ".cache" / "cnn-codesign" / "rtl"))


def _digest(h, value) -> None:
    """Feed `value` (a plan, its layers and fields, arrays, scalars) into hash `h`, by content."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        h.update(type(value).__name__.encode())
        for f in dataclasses.fields(value):
            h.update(f.name.encode())
            _digest(h, getattr(value, f.name))
    elif isinstance(value, np.ndarray):
        h.update(f"{value.dtype.str}{value.shape}".encode() + np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}{len(value)}".encode())
        for v in value:
            _digest(h, v)
    elif isinstance(value, dict):
        h.update(f"dict{len(value)}".encode())
        for k in sorted(value, key=str):
            _digest(h, k)
            _digest(h, value[k])
    else:
        h.update(repr(value).encode() + b"\0")


def rtl_key(plan: Plan, config) -> str:
    """The generated accelerator's cache key: the plan's content, the array, and the sources of
    the packages that generate it (hw, export) with Amaranth's version."""
    import amaranth

    import export
    import hw
    h = hashlib.sha256()
    _digest(h, plan)
    h.update(f"{config}|{amaranth.__version__}".encode())
    for pkg in (hw, export):
        root = Path(pkg.__file__).parent
        for src in sorted(root.rglob("*.py")):
            h.update(str(src.relative_to(root)).encode() + b"\0" + src.read_bytes())
    return h.hexdigest()[:20]


def generate_rtl(plan: Plan, array: str, out_dir: str | Path) -> Path:
    """The accelerator's Verilog, its port and memory inventory and testbench for `plan` on a `RxC`
    array in `out_dir`: copied from the RTL cache (rtl_cache_dir(), keyed by rtl_key) when the
    same plan, array and generator made them before, else generated (hw.top.generate) and kept."""
    from hw.config import ArrayConfig
    from hw.top import generate
    out_dir = Path(out_dir)
    config = ArrayConfig.parse(array)
    cache = rtl_cache_dir()
    entry = cache / rtl_key(plan, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (entry / "ok").is_file():
        os.utime(entry / "ok")  # used now: the last to be pruned
        for f in entry.iterdir():
            if f.name != "ok":
                shutil.copyfile(f, out_dir / f.name)
        return out_dir
    files = generate(plan, config, out_dir)["files"]
    tmp = entry.with_name(entry.name + f".tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copyfile(out_dir / name, tmp / name)
        (tmp / "ok").write_text("")
        os.replace(tmp, entry)
        runner.prune_cache(cache, RTL_CACHE_ENTRIES)
    except OSError:  # a read-only or full cache, or another process kept it first: the run goes on
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def timeout_cycles(plan: Plan) -> int:
    """A generous bound on one image's cycles (only a hung design reaches it): a 1x1 array
    spends about one cycle per dense MAC, plus the pixel stream and per-layer overheads."""
    macs = sum(l.macs_dense for l in plan.layers)
    return 8 * macs + 64 * int(np.prod(plan.input_shape)) + 200_000


@dataclass
class Outcome:
    records: list[dict]  # per image: index, expected, got, cycles, bit_exact, class_agree, [label, correct], error
    summary: dict
    diagnosis: str | None = None
    waveform: Path | None = None
    run_dir: Path | None = None
    mismatches: list[int] = field(default_factory=list)


def stream_figures(records: list[dict], clock_mhz: float, multipliers: int | None = None,
                   effective_macs: int | None = None, stream_cycles: int | None | tuple = ()) -> dict:
    """Latency and throughput of the run as one stream of images, and the board's DSP bound (stream_rates).

    latency_cycles: the accelerator's own start-to-done count of an image that finds it idle (the
    least of the images' counts: the stream's first; later images of a stream also wait for the
    stages ahead of them, and the counts do not depend on the pixels). throughput: images / simulator cycles from the first image's `start` to
    the last image's `done`; the testbench starts each image as soon as `busy` allows, so images
    overlap as far as the hardware lets them; None unless every image ran without error.
    dsp_bound_images_per_second: `multipliers` x the clock / `effective_macs` (dense MACs of the
    array layers, stored entries of the sparse ones), the rate a board whose every multiplier did
    one useful MAC per cycle would reach; dsp_efficiency: throughput over it. `stream_cycles`,
    when given, is the stream's span measured otherwise (sim.shards.merged_stream_cycles)."""
    cycles = [r["cycles"] for r in records if r["cycles"] is not None]
    spans = [(r.get("start_cycle"), r.get("done_cycle")) for r in records]
    ok = bool(records) and all(r["error"] is None for r in records) and all(a is not None and b is not None for a, b in spans)
    stream = (spans[-1][1] - spans[0][0] if ok else None) if stream_cycles == () else stream_cycles
    return {"latency_cycles": min(cycles) if cycles else None, "stream_images": len(records),
            "stream_cycles": stream, "dsp_multipliers": multipliers, "effective_macs": effective_macs,
            **stream_rates(len(records), stream, clock_mhz, multipliers, effective_macs)}


def stream_rates(images: int, stream_cycles: int | None, clock_mhz: float, multipliers: int | None,
                 effective_macs: int | None) -> dict:
    """Throughput of `images` in `stream_cycles` at `clock_mhz`, the DSP bound at that clock, and
    their ratio (None where a figure is missing)."""
    tput = images * clock_mhz * 1e6 / stream_cycles if stream_cycles else None
    bound = multipliers * clock_mhz * 1e6 / effective_macs if multipliers and effective_macs else None
    return {"throughput_images_per_second": round(tput, 2) if tput else None,
            "dsp_bound_images_per_second": round(bound, 2) if bound else None,
            "dsp_efficiency": round(tput / bound, 4) if tput and bound else None}


def summarize(records: list[dict], sim: dict, clock_mhz: float, multipliers: int | None = None,
              effective_macs: int | None = None, stream_cycles: int | None | tuple = ()) -> dict:
    cycles = [r["cycles"] for r in records if r["cycles"] is not None]
    mean = float(np.mean(cycles)) if cycles else None
    labelled = [r for r in records if "label" in r]
    return {
        "images": len(records),
        "bit_exact": sum(r["bit_exact"] for r in records),
        "class_agree": sum(r["class_agree"] for r in records),
        "rtl_accuracy": (sum(r["correct"] for r in labelled) / len(labelled)) if labelled else None,
        "onnx_accuracy": (sum(r["onnx_correct"] for r in labelled) / len(labelled)) if labelled else None,
        "errors": sum(r["error"] is not None for r in records),
        "cycles": {"min": min(cycles), "mean": mean, "max": max(cycles)} if cycles else None,
        "clock_mhz": clock_mhz,
        "images_per_second": clock_mhz * 1e6 / mean if mean else None,
        "sim_cycles": sim["sim_cycles"],
        "sim_wall_s": round(sim["wall_s"], 3),
        "sim_cycles_per_second": round(sim["sim_cycles_per_second"]),
        "sim_cycles_per_cpu_second": round(sim["sim_cycles_per_cpu_second"]),
        **stream_figures(records, clock_mhz, multipliers, effective_macs, stream_cycles),
    }


def verify(plan: Plan, array: str, images: np.ndarray, expected: np.ndarray, *,
           labels: np.ndarray | None = None, work_dir: str | Path | None = None, clock_mhz: float = 100.0,
           gaps: bool = False, backpressure: bool = False, diagnose: bool = True, multipliers: int | None = None,
           on_image: Callable[[dict], None] | None = None, log: Callable[[str], None] | None = None,
           jobs: int = 1, ray: str | None = None) -> Outcome:
    """Generate the accelerator for `plan` on an `array` ("RxC"), simulate `images` (integers of the
    plan's input type, (N, *input_shape)) and compare with `expected` integer logits (N, classes),
    e.g. from sim.golden.expected_logits. `multipliers`: the board's, for the DSP-bound figures.

    `jobs` > 1 splits the images into that many contiguous shards, each on its own simulator
    process; `ray` (an address, or sim.shards.LOCAL_RAY) runs the shards as tasks of a Ray
    cluster instead. The records come back in image order, and the figures are those of one
    stream (sim.shards.merged_stream_cycles); `summary["shards"]` says where each shard ran."""
    images = np.asarray(images)
    expected = np.asarray(expected, dtype=np.int64)
    if images.shape[1:] != tuple(plan.input_shape):
        raise ValueError(f"images are {images.shape[1:]}, the plan's input is {tuple(plan.input_shape)}")
    stream = pixel_bytes(images, plan.input_type)
    if expected.shape != (len(images), plan.layers[-1].out_shape[0]):
        raise ValueError(f"expected logits are {expected.shape}, need ({len(images)}, {plan.layers[-1].out_shape[0]})")
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="sim-"))
    parts = shards.shard_ranges(len(images), jobs)
    rtl_dir = generate_rtl(plan, array, work_dir / "rtl")
    pixels = int(np.prod(plan.input_shape))
    build = runner.build(rtl_dir, pixels, log=log) if ray is None else None
    records: list[dict] = []

    def judge(rec: dict) -> None:
        i = rec["index"]
        exp = expected[i].tolist()
        got = rec["logits"]
        r = {"index": i, "expected": exp, "got": got, "cycles": rec["cycles"], "error": rec["error"],
             "start_cycle": rec.get("start_cycle"), "done_cycle": rec.get("done_cycle"),
             "bit_exact": rec["error"] is None and got == exp,
             "class_agree": rec["error"] is None and got is not None and int(np.argmax(got)) == int(np.argmax(exp))}
        if labels is not None:
            r["label"] = int(labels[i])
            r["correct"] = r["class_agree"] and int(np.argmax(got)) == int(labels[i])
            r["onnx_correct"] = int(np.argmax(exp)) == int(labels[i])
        records.append(r)
        if on_image:
            on_image(r)

    limit = timeout_cycles(plan)
    t0 = time.perf_counter()
    if ray is None:
        done = shards.run_local(build, stream, expected.shape[1], work_dir, parts, timeout_cycles=limit, gaps=gaps,
                                backpressure=backpressure, on_image=judge)
    else:
        done = shards.run_ray(rtl_dir, pixels, stream, expected.shape[1], parts, ray, timeout_cycles=limit, gaps=gaps,
                              backpressure=backpressure, on_image=judge)
    wall = time.perf_counter() - t0
    records.sort(key=lambda r: r["index"])
    span, why = shards.merged_stream_cycles(done)
    sim = done[0].summary if len(done) == 1 else shards.merged_sim_summary(done, wall)
    summary = summarize(records, sim, clock_mhz, multipliers, plan.macs_effective, span)
    summary["shards"] = [{"first": s.first, "images": len(s.records), "host": s.host,
                          "wall_s": round(s.summary["wall_s"], 3)} for s in done]
    summary["jobs"], summary["backend"] = len(done), "ray" if ray is not None else "local"
    if why and len(done) > 1:
        summary["stream_note"] = why
    out = Outcome(records, summary, run_dir=work_dir, mismatches=[r["index"] for r in records if not r["bit_exact"]])
    if out.mismatches and diagnose:
        first = out.mismatches[0]
        out.diagnosis, out.waveform = locate(plan, array, rtl_dir, images, first, work_dir, got=records[first], log=log)
    return out


def locate(plan: Plan, array: str, rtl_dir: Path, images: np.ndarray, i: int, work_dir: Path, *,
           got: dict, log=None) -> tuple[str, Path]:
    """Re-run image `i` with the trace writer and a waveform; name where the RTL departs from
    export.reference. `got` is the image's record from `verify`."""
    build = runner.build(rtl_dir, int(np.prod(plan.input_shape)), waves=True, log=log)
    run_dir = work_dir / f"mismatch-image{i}"
    trace = run_dir / "trace.txt"
    res = runner.simulate(build, pixel_bytes(images[i:i + 1], plan.input_type), plan.layers[-1].out_shape[0], run_dir,
                          timeout_cycles=timeout_cycles(plan), trace_file=trace)
    rerun = res.images[0]
    cols = int(array.lower().split("x")[1])
    elem_bits = Inventory.load(rtl_dir / INVENTORY_FILE).ports["trace__data"].width // cols
    writes = read_trace(trace, elem_bits) if trace.is_file() else []
    what = got["error"] or f"RTL logits {got['got']}, ONNX Runtime {got['expected']}"
    where = first_difference(plan, images[i], writes, rerun["logits"])
    wave = build.waveform(run_dir)
    return f"image {i}: {what}; {where}; waveform: {wave}", wave
