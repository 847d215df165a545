"""Latency, stream throughput and DSP efficiency of the bundled models in RTL simulation.

For the paper model and the edge model on one board (default the ULX3S-85F), each on the array
bitstream-rtl would build (`--array`, default the hardware's default; `auto` picks per model):
latency and throughput cycles, images/s at 100 MHz and at the last measured Fmax, the board's
DSP-bound images/s and the efficiency against it, per-pass cycles and utilisation (hw's cycle
model, which the RTL run checks), and the simulator's speed. A measurement, not a test:

    python benchmarks/throughput.py [--images 8] [--data DIR] [--array RxC|auto] [--json out.json]

The last measured Fmax of a model comes from `--fmax MODEL=MHZ` (e.g. from a bitstream-rtl
report.json); without it from MEASURED_FMAX below (per model and array, each with its source),
and a model never built on the array gets none.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from boards.fit import array_for
from boards.flow import rtl_images
from boards.profiles import DEFAULT_BOARD, get_profile
from export.compile import compile_onnx
from export.onnx_export import export
from hw.cycles import predict
from hw.sequencer import schedule
from quant.checkpoint import BUNDLED_DIR, BUNDLED_QAT
from sim.golden import expected_logits
from sim.verify import verify

MODELS = {"paper": BUNDLED_QAT, "edge": BUNDLED_DIR / "edge_qat.pt"}
# Fmax of the last bitstream-rtl run of each model and array on the ULX3S-85F (README, "FPGA")
MEASURED_FMAX = {("paper", "10x9"): (110.69, "README: bitstream-rtl, array 10x9 (pipelined, 1 lane), 2026-12-03"),
                 ("edge", "10x9"): (109.37, "README: bitstream-rtl --checkpoint edge_qat.pt, array 10x9 (pipelined), 2026-12-03"),
                 ("edge", "16x8"): (78.72, "README: bitstream-rtl --array auto (16x8), 2026-12-01")}
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "animals5"


def measure(name: str, ckpt: Path, board: str, array: str | None, n: int, data: Path | None, fmax: dict,
            work: Path) -> dict:
    onnx_path = export(ckpt, work / f"{name}.onnx")
    plan = compile_onnx(onnx_path)
    config, _ = array_for(plan, array, board)
    fmax = fmax.get((name, str(config)), fmax.get((name, None)))  # None: never built on this array
    images, _, _ = rtl_images(plan, str(data) if data is not None and (data / "val").is_dir() else None, "val", n, 0)
    out = verify(plan, str(config), images, expected_logits(onnx_path, plan, images), work_dir=work / name,
                 multipliers=get_profile(board).dsps, diagnose=False)
    s = out.summary
    model = predict(schedule(plan, config))
    tput100 = s["throughput_images_per_second"]
    scale = (fmax / 100.0) if fmax else None
    return {"model": name, "array": str(config), "images": s["images"], "bit_exact": s["bit_exact"],
            "latency_cycles": s["latency_cycles"], "throughput_cycles_per_image": s["stream_cycles"] / s["stream_images"]
            if s["stream_cycles"] else None,
            "images_per_second_at_100mhz": tput100, "fmax_mhz": fmax,
            "images_per_second_at_fmax": round(tput100 * scale, 2) if tput100 and scale else None,
            "effective_macs": s["effective_macs"], "dsp_multipliers": s["dsp_multipliers"],
            "dsp_bound_images_per_second_at_100mhz": s["dsp_bound_images_per_second"], "dsp_efficiency": s["dsp_efficiency"],
            "sim_cycles_per_cpu_second": s["sim_cycles_per_cpu_second"],
            "passes": [{k: r.get(k) for k in ("pass", "name", "cycles", "utilisation", "lanes")} for r in model["layers"]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8, help="images in the stream (default %(default)s)")
    p.add_argument("--board", default=DEFAULT_BOARD)
    p.add_argument("--array", default=None, help="RxC or auto (default: the hardware's default, as bitstream-rtl)")
    p.add_argument("--data", type=Path, default=DATA if DATA.is_dir() else None, help="ImageFolder root (default: seeded random images without ../shared)")
    p.add_argument("--models", default="paper,edge")
    p.add_argument("--fmax", action="append", default=[], metavar="MODEL=MHZ", help="the last measured Fmax of a model")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    fmax = {k: v for k, (v, _) in MEASURED_FMAX.items()} if args.board == DEFAULT_BOARD else {}
    for item in args.fmax:
        k, _, v = item.partition("=")
        fmax[(k, None)] = float(v)
    rows = []
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        for name in args.models.split(","):
            r = measure(name, MODELS[name], args.board, args.array, args.images, args.data, fmax, Path(tmp))
            rows.append(r)
            print(f"{name} on {args.board}, array {r['array']}: bit-exact {r['bit_exact']}/{r['images']}; "
                  f"latency {r['latency_cycles']:,.0f} cycles, throughput {r['throughput_cycles_per_image']:,.0f} cycles/image; "
                  f"{r['images_per_second_at_100mhz']:,.1f} images/s at 100 MHz, "
                  + (f"{r['images_per_second_at_fmax']:,.1f} at the last measured Fmax {r['fmax_mhz']} MHz; " if r['fmax_mhz']
                     else "no measured Fmax on this array; ")
                  + f"DSP bound {r['dsp_bound_images_per_second_at_100mhz']:,.0f} images/s at 100 MHz "
                  f"({r['dsp_multipliers']} multipliers, {r['effective_macs']:,} effective MACs): efficiency {r['dsp_efficiency']:.1%}; "
                  f"simulator {r['sim_cycles_per_cpu_second'] / 1e6:.2f} M cycles per CPU second")
            for ps in r["passes"]:
                util = f"{ps['utilisation']:.1%}" if ps["utilisation"] is not None else "-"
                lanes = f" on {ps['lanes']} lanes" if ps["lanes"] else ""
                print(f"    {ps['pass']:7s} {ps['name'][:44]:44s} {ps['cycles']:>9,} cycles  utilisation {util}{lanes}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r["bit_exact"] == r["images"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
