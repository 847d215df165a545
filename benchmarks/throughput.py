"""Latency, stream throughput and DSP efficiency of the bundled models in RTL simulation.

For the paper, edge and resnet8 models on one board (default the ULX3S-85F), each on the array
bitstream-rtl would build (`--array`, default the hardware's default; `auto` picks per model):
latency and throughput cycles, images/s at 100 MHz and at the last measured Fmax, the board's
DSP-bound images/s and the efficiency against it, per-pass cycles and utilisation (hw's cycle
model, which the RTL run checks), and the simulator's speed. A measurement, not a test:

    python benchmarks/throughput.py [--images 8] [--data DIR] [--cifar DIR] [--models paper,edge,resnet8]
                                    [--array RxC|auto] [--json FILE]

It writes its rows to benchmarks/results/throughput.json (or --json). The Fmax of a model comes
from `--fmax MODEL=MHZ` (e.g. from a bitstream-rtl report.json), else from the previous results
file's row of the same model, array and board; a model never built on the array gets none.
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
from common.atomic import atomic_write_text
from common.data import DEFAULT_DATA, default_data
from export.compile import compile_onnx
from export.onnx_export import export
from hw.cycles import predict
from hw.schedule import schedule
from quant.checkpoint import BUNDLED_DIR, BUNDLED_QAT
from sim.golden import expected_logits
from sim.verify import verify

MODELS = {"paper": BUNDLED_QAT, "edge": BUNDLED_DIR / "edge_qat.pt", "resnet8": BUNDLED_DIR / "resnet8_qat.pt"}
CIFAR = "resnet8"  # the model that reads --cifar, the others --data
RESULTS = Path(__file__).resolve().parent / "results" / "throughput.json"
Fmax = dict[tuple[str, str | None], tuple[float, str]]  # (model, array or None for any) -> (MHz, its source)


def previous_fmax(path: Path, board: str) -> Fmax:
    """The Fmax each model and array was last built at on `board`, from a previous results file."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {(r["model"], r["array"]): (r["fmax_mhz"], r["fmax_source"]) for r in data["rows"]
            if data["board"] == board and r.get("fmax_mhz")}


def measure(name: str, ckpt: Path, board: str, array: str | None, n: int, data: Path | None, fmax: Fmax,
            work: Path) -> dict:
    onnx_path = export(ckpt, work / f"{name}.onnx")
    plan = compile_onnx(onnx_path)
    config, _ = array_for(plan, array, board)
    fmax, fmax_source = fmax.get((name, None), fmax.get((name, str(config)), (None, None)))  # None: never built on it
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
            "images_per_second_at_100mhz": tput100, "fmax_mhz": fmax, "fmax_source": fmax_source,
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
    p.add_argument("--data", type=Path, default=default_data(), help="ImageFolder root (default: seeded random images without ../shared)")
    p.add_argument("--cifar", type=Path, default=Path(DEFAULT_DATA).parent / "cifar10",
                   help="CIFAR-10 ImageFolder root for resnet8 (default: ../shared/data/cifar10; seeded random images "
                        "where it is missing)")
    p.add_argument("--models", default="paper,edge,resnet8")
    p.add_argument("--fmax", action="append", default=[], metavar="MODEL=MHZ", help="the last measured Fmax of a model")
    p.add_argument("--json", type=Path, default=RESULTS, help="results file to write (default %(default)s)")
    args = p.parse_args(argv)
    fmax = previous_fmax(args.json, args.board)
    for item in args.fmax:
        k, _, v = item.partition("=")
        fmax[(k, None)] = (float(v), "--fmax")
    rows = []
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        for name in args.models.split(","):
            data = args.cifar if name == CIFAR else args.data
            r = measure(name, MODELS[name], args.board, args.array, args.images, data, fmax, Path(tmp))
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
    atomic_write_text(args.json, json.dumps({"board": args.board, "rows": rows}, indent=1) + "\n")
    return 0 if all(r["bit_exact"] == r["images"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
