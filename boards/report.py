"""report.json and report.md of `bitstream-rtl`: accuracy, compression, bit-exactness, hardware.

Every figure comes from the step that measured it: accuracy from quant.evaluate, bit-exactness
and cycles from the RTL simulation (sim.verify), Fmax / critical path / resources from nextpnr's
report, predicted cycles and utilisation from hw's cycle model. Missing steps give None.
"""

from __future__ import annotations

import json
from pathlib import Path

from common.atomic import atomic_write_text


def layer_table(plan, rtl: dict) -> list[dict]:
    """One row per plan layer: kind, NP/P, bits, sparsity, MACs, stored bits, cycles, utilisation."""
    passes: dict[int, list[dict]] = {}
    for row in rtl.get("layers", []):
        passes.setdefault(row["layer"], []).append(row)
    rows = []
    for i, l in enumerate(plan.layers):
        ps = passes.get(i, [])
        cycles = sum(p["cycles"] for p in ps) if ps else None
        util = [p["utilisation"] for p in ps if "utilisation" in p]
        rows.append({
            "index": i, "name": l.name, "kind": l.kind, "class": l.cls if l.weight is not None else None,
            "engine": ",".join(p["pass"] for p in ps) or None,
            "w_bits": l.w_type.bits if l.w_type else None, "a_bits": l.inp.bits,
            "sparsity": round(l.sparsity, 4) if l.weight is not None else None,
            "macs_dense": l.macs_dense, "macs_effective": l.macs_effective, "stored_bits": l.weight_bits,
            "cycles": cycles, "utilisation": round(util[0], 4) if util else None,
        })
    return rows


def array_utilisation(rtl: dict) -> float | None:
    """Sum of ideal cycles over the array passes / their cycles: the PE-cycles doing useful work."""
    arr = [r for r in rtl.get("layers", []) if r["pass"] == "array"]
    return round(sum(r["ideal_cycles"] for r in arr) / sum(r["cycles"] for r in arr), 4) if arr else None


# Published FPGA figures of the same model, shown beside ours in the report (None: not published
# in the figures cited). ResNet-8 is MLPerf Tiny's image classifier, 3x32x32 CIFAR-10.
PEERS = {
    "resnet8": [
        {"design": "fpgaConvNet", "board": "Zybo (Zynq-7010)", "dsps": 78, "clock_mhz": None,
         "images_per_second": 318, "latency_ms": 3.15, "accuracy": None, "toolchain": "Vivado"},
        {"design": "fpgaConvNet", "board": "ZedBoard (Zynq-7020)", "dsps": 211, "clock_mhz": None,
         "images_per_second": 2431, "latency_ms": None, "accuracy": None, "toolchain": "Vivado"},
        {"design": "fpgaConvNet", "board": "ZC706 (Zynq-7045)", "dsps": None, "clock_mhz": None,
         "images_per_second": 6790, "latency_ms": None, "accuracy": None, "toolchain": "Vivado"},
        {"design": "hls4ml RN08", "board": "Pynq-Z2 (Zynq-7020)", "dsps": None, "clock_mhz": None,
         "images_per_second": 131, "latency_ms": None, "accuracy": None, "toolchain": "Vivado HLS"},
    ],
}


def comparison(rep: dict, arch: str | None, multipliers: int | None) -> list[dict] | None:
    """Our row (first) and the published peers of `arch`, or None when none are known."""
    peers = PEERS.get(arch or "")
    if not peers:
        return None
    ours = {"design": "this toolkit", "board": f"{rep['board']} ({rep['part']})", "dsps": multipliers,
            "clock_mhz": rep["clock_mhz_for_throughput"], "images_per_second": rep["throughput_images_per_second"],
            "latency_ms": rep["latency_ms"], "accuracy": rep["accuracy_quant"], "toolchain": rep["toolchain"]}
    return [ours, *peers]


def stream_at(summary: dict, clock_mhz: float, fmax: float | None, plan, profile) -> dict:
    """The RTL stream's throughput and the board's DSP bound at the achieved Fmax (at the requested
    clock without a build): the simulated stream's cycles do not depend on the clock."""
    from sim.verify import stream_rates

    f = fmax or clock_mhz
    n, stream = summary.get("stream_images"), summary.get("stream_cycles")
    lat = summary.get("latency_cycles")
    return {"clock_mhz_for_throughput": f, "latency_cycles": lat,
            "latency_ms": round(lat / (f * 1e3), 4) if lat else None, "stream_images": n,
            "stream_cycles": stream, **stream_rates(n or 0, stream, f, profile.dsps, plan.macs_effective)}


def build_report(*, plan, profile, config, fit, rtl, outcome, accuracy, built, steps, source, onnx_path,
                 clock_mhz, host: dict | None = None, multipliers: int | None = None) -> dict:
    from quant.report import PAPER, TARGETS

    s = outcome.summary
    mean_cycles = s["cycles"]["mean"] if s.get("cycles") else None
    fmax = built.fmax_mhz if built else None
    ideal = sum(r.get("ideal_cycles", 0) for r in rtl.get("layers", []))
    rep = {
        "board": profile.name, "part": profile.part, "toolchain": profile.toolchain, "array": str(config),
        "accuracy_float": accuracy.get("accuracy_float"), "accuracy_quant": accuracy.get("accuracy_quant"),
        "accuracy": accuracy,
        "compression_ratio": round(plan.compression_ratio, 3), "weight_bits": plan.weight_bits, "float_bits": plan.float_bits,
        "bit_exact": s["bit_exact"], "images": s["images"], "class_agree": s["class_agree"],
        "rtl_accuracy": s.get("rtl_accuracy"), "rtl_images": source, "mismatch": outcome.diagnosis,
        "cycles": {"measured": s.get("cycles"), "predicted": rtl.get("total_cycles"), "ideal_array": round(ideal, 1)},
        "fmax_mhz": fmax, "requested_mhz": built.requested_mhz if built and built.fmax_mhz else clock_mhz,
        "timing_met": built.timing_met if built else None,
        "critical_path": built.critical_path if built else None,
        "images_per_second": round(fmax * 1e6 / mean_cycles, 2) if fmax and mean_cycles else None,
        "images_per_second_at_requested": round(clock_mhz * 1e6 / mean_cycles, 2) if mean_cycles else None,
        **stream_at(s, clock_mhz, fmax, plan, profile),
        "host_onnxruntime": host,
        "utilisation": array_utilisation(rtl),
        "utilisation_image": round(ideal / mean_cycles, 4) if mean_cycles else None,
        "layers": layer_table(plan, rtl),
        "resources": {
            "used_vs_available": built.resources if built else None,
            "nextpnr_utilisation": built.utilisation if built else None,
            "fit_estimate": fit.to_dict(),
            "profile": {"luts": profile.luts, "ffs": profile.ffs, "dsps": profile.dsps, "bram_bits": profile.bram_bits,
                        "spram_bits": profile.spram_bits},
            "memory_bits": rtl.get("memory_bits"),
        },
        "build": built.to_dict() if built else None,
        "bitstream": built.bitstream if built else None,
        "note": built.note if built and built.note else ("no bitstream requested (--no-bitstream)" if built is None else ""),
        "seconds": {**steps, "total": round(sum(steps.values()), 1)},
        "paper": PAPER, "targets": TARGETS, "onnx": str(onnx_path),
    }
    rep["comparison"] = comparison(rep, accuracy.get("arch"), multipliers)
    rep["summary"] = _summary(rep)
    return rep


def _fmt(v, spec: str = "", none: str = "n/a") -> str:
    return none if v is None else format(v, spec)


def _cycles(c: dict | None) -> str:
    return "n/a" if not c else f"{c['mean']:,.0f} (min {c['min']:,}, max {c['max']:,})"


def _summary(r: dict) -> str:
    return (f"{r['board']} array {r['array']}: bit-exact {r['bit_exact']}/{r['images']}, "
            f"accuracy quant {_fmt(r['accuracy_quant'], '.4f')} / float {_fmt(r['accuracy_float'], '.4f')}, "
            f"compression {r['compression_ratio']:.1f}x, Fmax {_fmt(r['fmax_mhz'], '.1f')} MHz "
            f"(requested {r['requested_mhz']:g}), {_fmt(r['images_per_second'], '.1f')} images/s, "
            f"array utilisation {_fmt(r['utilisation'], '.1%')}"
            + (f"; bitstream {r['bitstream']}" if r["bitstream"] else f"; {r['note']}")
            + (f". TIMING NOT MET: {_rebuild_advice(r)}" if r["timing_met"] is False else ""))


def _rebuild_advice(r: dict) -> str:
    safe = int(r["fmax_mhz"])
    return (f"the bitstream is clocked at {r['requested_mhz']:g} MHz but closes only at {r['fmax_mhz']:.1f} MHz; "
            f"rebuild with --clock-mhz {safe} (or shorten the critical path) before loading it")


def to_markdown(r: dict) -> str:
    a = r["accuracy"]
    out = [f"# bitstream-rtl report: {r['board']} ({r['part']}), array {r['array']}", "", r["summary"], "",
           "## Accuracy and compression", "",
           "| | ours | paper |", "|---|---:|---:|",
           f"| float accuracy | {_fmt(r['accuracy_float'], '.4f')} | {r['paper']['accuracy_adam']:.4f} (Adam) |",
           f"| quantized + pruned accuracy | {_fmt(r['accuracy_quant'], '.4f')} | |",
           f"| macro precision / recall / F1 (quantized) | {_fmt(a.get('precision_macro_quant'), '.4f')} / "
           f"{_fmt(a.get('recall_macro_quant'), '.4f')} / {_fmt(a.get('f1_macro_quant'), '.4f')} | "
           f"{r['paper']['precision']:.4f} / {r['paper']['recall']:.4f} / {r['paper']['f1']:.4f} |",
           f"| compression ratio (float32 bits / stored bits) | {r['compression_ratio']:.2f}x | target >= {r['targets']['min_compression_ratio']}x |",
           "", f"Accuracy: {a.get('source')}. Paper figures: {r['paper']['note']}.", "",
           "## RTL simulation (Verilator) vs ONNX Runtime", "",
           f"- images: {r['rtl_images']}", f"- bit-exact logits: **{r['bit_exact']}/{r['images']}**, same class {r['class_agree']}/{r['images']}",
           f"- cycles per image: measured {_cycles(r['cycles']['measured'])}, predicted by hw's cycle model {_fmt(r['cycles']['predicted'], ',')}"]
    if r["mismatch"]:
        out.append(f"- first mismatch: {r['mismatch']}")
    out += ["", "## Per layer", "",
            "| # | layer | kind | NP/P | engine | w/a bits | sparsity | MACs dense | MACs effective | stored bits | cycles | utilisation |",
            "|---:|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for l in r["layers"]:
        out.append(f"| {l['index']} | {l['name']} | {l['kind']} | {l['class'] or ''} | {l['engine'] or ''} | "
                   f"{_fmt(l['w_bits'], none='-')}/{l['a_bits']} | {_fmt(l['sparsity'], '.1%', '')} | {l['macs_dense']:,} | "
                   f"{l['macs_effective']:,} | {l['stored_bits']:,} | {_fmt(l['cycles'], ',', '')} | {_fmt(l['utilisation'], '.1%', '')} |")
    out += ["", f"Array utilisation (ideal / cycles over the array passes): {_fmt(r['utilisation'], '.1%')}; "
                f"whole image: {_fmt(r['utilisation_image'], '.1%')}.", "",
            "## Hardware", "",
            f"- Fmax achieved: **{_fmt(r['fmax_mhz'], '.2f')} MHz**, requested {r['requested_mhz']:g} MHz "
            f"(timing {'met' if r['timing_met'] else 'not met' if r['timing_met'] is False else 'not measured'})"
            + (f"; **{_rebuild_advice(r)}**" if r["timing_met"] is False else ""),
            f"- images/s at Fmax: {_fmt(r['images_per_second'], ',.1f')}; at the requested clock: {_fmt(r['images_per_second_at_requested'], ',.1f')}",
            f"- latency of one image {_fmt(r['latency_cycles'], ',.0f')} cycles ({_fmt(r['latency_ms'], '.3f')} ms at "
            f"{r['clock_mhz_for_throughput']:g} MHz); throughput over a stream of {_fmt(r['stream_images'])} images "
            f"({_fmt(r['stream_cycles'], ',')} cycles): **{_fmt(r['throughput_images_per_second'], ',.1f')} images/s** at "
            f"{r['clock_mhz_for_throughput']:g} MHz, {_fmt(r['dsp_efficiency'], '.1%')} of the board's DSP bound "
            f"({_fmt(r['dsp_bound_images_per_second'], ',.0f')} images/s: {r['resources']['profile']['dsps']} multipliers x the clock / the effective MACs)"]
    h = r.get("host_onnxruntime")
    if h:
        out.append(f"- for comparison, ONNX Runtime on the host CPU (the same model, {h['level']}, batch {h['batch']}, "
                   f"{h['threads']} threads): {h['images_per_second']:,.1f} images/s")
    if r.get("comparison"):
        out += ["", "### Beside published FPGA figures of the same model", "",
                "| design | board | DSPs | clock (MHz) | images/s | latency (ms) | accuracy | toolchain |",
                "|---|---|---:|---:|---:|---:|---:|---|"]
        out += [f"| {c['design']} | {c['board']} | {_fmt(c['dsps'])} | {_fmt(c['clock_mhz'], '.1f')} | "
                f"{_fmt(c['images_per_second'], ',.0f')} | {_fmt(c['latency_ms'], '.2f')} | {_fmt(c['accuracy'], '.4f')} | "
                f"{c['toolchain']} |" for c in r["comparison"]]
        if h:
            out.append(f"| ONNX Runtime (host CPU, {h['threads']} threads, batch {h['batch']}) | this machine | - | - | "
                       f"{h['images_per_second']:,.0f} | - | {_fmt(r['accuracy_quant'], '.4f')} | onnxruntime |")
        out += ["", "Our row is measured in this run (images/s from the simulated stream at the achieved clock); the "
                    "others are as their authors published them, n/a where a figure is not given."]
    cp = r["critical_path"]
    if cp:
        out.append(f"- critical path: {cp['delay_ns']} ns ({cp['logic_ns']} logic + {cp['routing_ns']} routing, {cp['steps']} steps) "
                   f"from `{cp['start_net'] or cp['start']}` to `{cp['end_net'] or cp['end']}`"
                   + (f"; source: {', '.join(cp['sources'][:3])}" if cp.get("sources") else ""))
    used = r["resources"]["used_vs_available"]
    if used:
        out += ["", "| resource (nextpnr) | used | available | share |", "|---|---:|---:|---:|"]
        out += [f"| {k} | {v['used']:,} | {v['available']:,} | {v['used'] / v['available']:.1%} |" for k, v in used.items() if v["available"]]
    out += ["", f"Fit check before synthesis: {r['resources']['fit_estimate']['message']}"]
    if r["build"]:
        b = r["build"]
        out += ["", "Build stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in b["stage_seconds"].items())
                + f"; logs: {', '.join(b['logs'].values()) or 'n/a'}"]
    out += ["", f"Bitstream: {r['bitstream'] or r['note']}", "",
            "## Time", "", ", ".join(f"{k} {v:.0f} s" for k, v in r["seconds"].items()), ""]
    return "\n".join(out)


def write_report(out: Path, **parts) -> dict:
    rep = build_report(**parts)
    atomic_write_text(Path(out) / "report.json", json.dumps(rep, indent=1, default=str))
    atomic_write_text(Path(out) / "report.md", to_markdown(rep))
    return rep


__all__ = ["PEERS", "array_utilisation", "build_report", "comparison", "layer_table", "to_markdown", "write_report"]
