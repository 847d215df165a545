"""`python -m sim run`: the accelerator RTL under Verilator against ONNX Runtime on real images.

    python -m sim run [--onnx model.onnx] --data DIR --split val|test [--limit N] [--array RxC[/L]|auto [--board B]]
                      --json FILE [--clock-mhz 100] [--jobs N] [--ray [ADDRESS]]

Prints one line per image and a summary; writes the summary (and per-image results) to --json.
A model whose metadata names no classes (a plain Brevitas export) runs on any ImageFolder data:
its logits are compared, and the class-based figures (accuracy) say that the model names no classes.
--jobs N shards the images over N simulator processes on this machine, --ray over a Ray cluster;
the JSON is the same either way, in image order (sim.shards).
Exit status: 0 all bit-exact, 1 a mismatch (its location and waveform are printed) or a failed
build/simulation, 2 bad input, 130 Ctrl-C (the JSON is written atomically, at the end).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from sim.shards import LOCAL_RAY, check_reachable, import_ray, ray_cpus, shutdown_local_ray


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from boards.profiles import DEFAULT_BOARD
    ap = argparse.ArgumentParser(prog="python -m sim", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="simulate the accelerator on a data split and compare with ONNX Runtime")
    r.add_argument("--onnx", type=Path, help="the golden model (default: the bundled QAT+pruned model)")
    r.add_argument("--data", type=Path, required=True, help="ImageFolder root with <split>/<class>/ folders, or a folder "
                                                           "with <split>.npz (x: the model's integer inputs, y: labels)")
    r.add_argument("--split", required=True, choices=("train", "val", "test"))
    r.add_argument("--limit", type=int, help="at most N images, classes taken in turn")
    r.add_argument("--array", default=None, help="systolic array RxC (RxC/L: with L sparse lanes), or auto: the one "
                                                 "that fits --board with the fewest predicted cycles per image "
                                                 "(default: the hardware's default)")
    r.add_argument("--board", default=DEFAULT_BOARD, help="the board --array auto fits, and whose multipliers give "
                   "dsp_bound_images_per_second (default %(default)s)")
    r.add_argument("--json", type=Path, required=True, help="where to write the summary JSON")
    r.add_argument("--clock-mhz", type=float, default=100.0, help="board clock for images/s (default 100)")
    r.add_argument("--work", type=Path, help="keep Verilog, runs and waveforms here (default: a temp folder, removed when all is bit-exact)")
    r.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="split the images into N contiguous shards, each simulated by its own Verilator process at "
                        "once (default 1; with --ray, the cluster's CPUs); results merge in image order, with the "
                        "figures of one stream")
    r.add_argument("--ray", nargs="?", const=LOCAL_RAY, default=None, metavar="ADDRESS",
                   help="run the shards as tasks of the Ray cluster at ADDRESS (its head, e.g. 10.0.0.1:6379), or of a "
                        "local Ray started for this run when no address is given; needs the optional extra: "
                        'pip install -e ".[cluster]"')
    r.add_argument("--gaps", action="store_true", help="random bubbles in the pixel stream")
    r.add_argument("--backpressure", action="store_true", help="random ready on the logits stream")
    r.set_defaults(func=run)
    return ap.parse_args(argv)


class UsageError(ValueError):
    pass


def balanced(images: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` images taking classes in turn (each class's own order kept)."""
    rank = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(idx.size)
    pick = np.lexsort((labels, rank))[:n]
    return images[pick], labels[pick]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from boards.fit import array_for
    from boards.profiles import get_profile
    from export.compile import compile_onnx, default_onnx
    from hw.schedule import schedule
    from common.atomic import atomic_write_text, check_writable
    from common.tools import end_tools_on_sigterm
    from quant.data import check_model_input, load_split
    from sim.golden import expected_logits, names_classes
    from sim.verify import verify

    end_tools_on_sigterm()  # SIGTERM unwinds: the simulator and the temporary work folder go with this process
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    if not 0 < args.clock_mhz < math.inf:
        raise UsageError(f"--clock-mhz must be positive, got {args.clock_mhz}")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.ray is not None:  # a missing Ray or an unreachable cluster is said now
        import_ray()
        if args.ray != LOCAL_RAY:
            check_reachable(args.ray)
    multipliers = get_profile(args.board).dsps  # an unknown board is refused now, not after ONNX Runtime
    check_writable(args.json)
    if not (args.data / args.split).is_dir() and not (args.data / f"{args.split}.npz").is_file():
        raise UsageError(f"{args.data / args.split}: no such folder (--data DIR needs DIR/{args.split}/<class>/ "
                         f"or DIR/{args.split}.npz)")
    onnx_path = args.onnx or default_onnx()
    if not Path(onnx_path).is_file():
        raise UsageError(f"{onnx_path}: no such ONNX model")
    plan = compile_onnx(onnx_path)
    config, fit = array_for(plan, args.array, args.board)
    array = str(config)
    if fit:
        print(f"--array auto: {array} ({fit})", file=sys.stderr)
    schedule(plan, config)  # a layer the hardware refuses is named now, before the images and ONNX Runtime
    check_model_input(plan.input_shape, onnx_path, args.data, args.split)
    # limit is per class there
    images, labels, names = load_split(args.data, args.split, limit=args.limit, shape=tuple(plan.input_shape))
    if args.limit is not None:
        images, labels = balanced(images, labels, args.limit)
    if len(images) == 0:
        raise UsageError(f"{args.data / args.split}: no images")
    named = names_classes(onnx_path)
    if named and list(names) != list(plan.class_names):
        missing = [n for n in names if n not in plan.class_names]
        if missing:
            raise UsageError(f"classes {missing} of {args.data / args.split} are not the model's {plan.class_names}")
        labels = np.array([plan.class_names.index(names[l]) for l in labels])
    work = args.work or Path(tempfile.mkdtemp(prefix="sim-run-"))
    bar = None
    try:
        print(f"model {onnx_path}, {len(images)} {args.split} images, array {array}, work {work}", file=sys.stderr)
        if not named:
            print("the model names no classes: its logits are compared, no accuracy is computed", file=sys.stderr)
        expected = expected_logits(onnx_path, plan, images)
        bar = tqdm(total=len(images), unit="img", desc="RTL vs ONNX Runtime", file=sys.stderr)

        def line(r: dict) -> None:
            got = plan.class_names[int(np.argmax(r["got"]))] if r["got"] else "-"
            label = f"label {names[labels[r['index']]] if not named else plan.class_names[r['label']]:>10}"
            status = "bit-exact" if r["bit_exact"] else ("ERROR " + r["error"] if r["error"] else "MISMATCH")
            bar.write(f"image {r['index']:4d}  {label}  rtl {got:>10}  cycles {r['cycles']}  {status}", file=sys.stderr)
            bar.update(1)

        jobs = args.jobs or (ray_cpus(args.ray) if args.ray is not None else 1)
        if jobs > 1 or args.ray is not None:
            bar.write(f"{min(jobs, len(images))} shards on " + (f"Ray ({args.ray})" if args.ray else "this machine"),
                      file=sys.stderr)
        out = verify(plan, array, images, expected, labels=labels if named else None, work_dir=work, clock_mhz=args.clock_mhz,
                     gaps=args.gaps, backpressure=args.backpressure, on_image=line, multipliers=multipliers,
                     log=lambda m: bar.write(m, file=sys.stderr), jobs=jobs, ray=args.ray)
        bar.close()
        classes = ({"model_classes": plan.class_names} if named else
                   {"model_classes": None, "classes_note": "the model names no classes: logits compared, no accuracy"})
        summary = {**out.summary, **classes, "split": args.split, "data": str(args.data), "onnx": str(onnx_path), "array": array,
                   "diagnosis": out.diagnosis, "waveform": str(out.waveform) if out.waveform else None,
                   "per_image": out.records}
        atomic_write_text(args.json, json.dumps(summary, indent=1))
        s = out.summary
        print(f"bit-exact {s['bit_exact']}/{s['images']}, class agree {s['class_agree']}/{s['images']}, "
              + (f"RTL accuracy {s['rtl_accuracy']:.4f}, " if named else "no accuracy (the model names no classes), ")
              + f"cycles/image {s['cycles']['mean'] if s['cycles'] else '-'}, "
              f"{s['images_per_second'] or 0:.1f} images/s at {args.clock_mhz:g} MHz (stream of {s['stream_images']}: "
              f"{s['throughput_images_per_second'] or 0:.1f} images/s, {s['dsp_efficiency'] or 0:.1%} of the "
              f"{args.board} DSP bound {s['dsp_bound_images_per_second'] or 0:.0f}), "
              f"simulator {s['sim_cycles_per_second'] / 1e6:.2f} M cycles/s "
              f"({s['sim_cycles_per_cpu_second'] / 1e6:.2f} M per CPU second) -> {args.json}")
        if s.get("stream_note"):
            print(f"no stream figures: {s['stream_note']}")
        if out.diagnosis:
            print(out.diagnosis)
        if s["bit_exact"] != s["images"]:
            return 1
        if args.work is None:  # nothing to look at: keep only the JSON
            shutil.rmtree(work, ignore_errors=True)
        return 0
    except BaseException as e:
        if bar is not None:  # before the error line, which must be the last
            bar.close()
        if args.work is None and not isinstance(e, RuntimeError):  # a failed build or simulation names its log there
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        shutdown_local_ray(args.ray)


def main(argv: list[str] | None = None) -> int:
    from common.cli import run_command
    # a RuntimeError: the build or the simulator failed, and the message says where its log is
    return run_command(parse_args(argv), (ValueError,), failures=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
