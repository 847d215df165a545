"""`python -m export bitstream-rtl`: checkpoint -> ONNX -> plan -> Verilog -> RTL check -> bitstream + report.

export/__main__.py wires the subcommand with `add_arguments(parser)` and `run(args)`; the work
is `bitstream_rtl(...)`, which returns the report it writes. Each step prints one line when it
starts and its elapsed time when it ends; the board build adds per-tool progress.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from boards.build import PNR_TIMEOUT_S, BuildResult, build, check_tools, print_progress
from boards.errors import BoardError
from boards.fit import FitError, accelerator_demand, auto_array, check_fit
from boards.profiles import DEFAULT_BOARD, PROFILES, BoardProfile, get_profile
from boards.report import write_report
from boards.top import DEFAULT_BAUD, BoardTop
from boards.uart import bit_period
from common.atomic import atomic_write_text
from common.data import default_data
from common.tools import end_tools_on_sigterm

DEFAULT_IMAGES = 8
EXIT_TIMING_NOT_MET = 3  # the CLI's exit status when the RTL is bit-exact but the bitstream misses its clock


class OutputExists(BoardError, FileExistsError):
    """The output folder exists and --force was not given."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `bitstream-rtl`, and its exit statuses in the help's epilog."""
    p.epilog = ("Exit status: 0 when every simulated image is bit-exact and the bitstream meets the requested clock "
                "(or no bitstream was built); 1 when an image is not bit-exact; 2 on bad input or a failing tool "
                f"(one line on stderr); {EXIT_TIMING_NOT_MET} when every image is bit-exact but timing is not met "
                "(place-and-route's Fmax is below the requested clock).")
    p.add_argument("--checkpoint", default=None, help="quantized checkpoint (.pt); default: the bundled QAT+pruned model")
    p.add_argument("--float-checkpoint", default=None,
                   help="float checkpoint for the float accuracy (default: the bundled float model; with --checkpoint, the float "
                        "checkpoint it was fine-tuned from (recorded by quant train --qat), else NAME_float.pt beside NAME_qat*.pt)")
    p.add_argument("--board", default=DEFAULT_BOARD, help=f"target board: {', '.join(PROFILES)} (default %(default)s)")
    p.add_argument("--array", default=None,
                   help="systolic array RxC, or 'auto' for the one that fits the board with the fewest predicted cycles "
                        "per image (default: the hardware's default)")
    p.add_argument("--data", default=default_data(),
                   help="ImageFolder root (DIR/<split>/<class>/) for accuracy, plots and the RTL images "
                        "(default: the shared animals5 set when present, %(default)s)")
    p.add_argument("--random-images", action="store_true",
                   help="run the RTL on seeded random images instead of --data images")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--limit", type=int, default=DEFAULT_IMAGES, help="images to run through the RTL simulation (default %(default)s)")
    p.add_argument("--out", default="out", help="output folder (default %(default)s); refused if it exists, unless --force")
    p.add_argument("--force", action="store_true", help="write into an existing output folder")
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="core clock to build and time for (default: the board's, e.g. 100 MHz from the ULX3S PLL)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD, help="UART baud rate of the board top (default %(default)s)")
    p.add_argument("--no-bitstream", dest="bitstream", action="store_false",
                   help="stop after the fit check, RTL and simulation (no synthesis / place and route)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random images and of nextpnr")
    p.add_argument("--pnr-timeout", type=float, default=PNR_TIMEOUT_S, metavar="SECONDS",
                   help="stop place-and-route after this long with an error (default %(default).0f)")


def run(args: argparse.Namespace) -> int:
    """The CLI body: 0 when every simulated image was bit-exact and timing was met (or not measured),
    1 when an image was not bit-exact, EXIT_TIMING_NOT_MET when only timing was not met."""
    report = bitstream_rtl(checkpoint=args.checkpoint, float_checkpoint=args.float_checkpoint, board=args.board,
                           array=args.array, data=args.data, split=args.split, limit=args.limit, out=args.out,
                           force=args.force, clock_mhz=args.clock_mhz, baud=args.baud, bitstream=args.bitstream,
                           seed=args.seed, random_images=args.random_images, pnr_timeout_s=args.pnr_timeout)
    print(report["summary"])
    if report["bit_exact"] != report["images"]:
        return 1
    return EXIT_TIMING_NOT_MET if report["timing_met"] is False else 0


class _Steps:
    """One line per step: its number and name, then its elapsed time."""

    def __init__(self, total: int, say: Callable[[str], None]):
        self.total, self.n, self.say, self.t0 = total, 0, say, time.monotonic()
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable, *a, **kw):
        self.n += 1
        self.say(f"[{self.n}/{self.total}] {name} ...")
        t = time.monotonic()
        out = fn(*a, **kw)
        self.seconds[name] = round(time.monotonic() - t, 2)
        self.say(f"[{self.n}/{self.total}] {name}: done in {self.seconds[name]:.1f} s (total {time.monotonic() - self.t0:.0f} s)")
        return out


def prepare_out(out: str | Path, force: bool) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise OutputExists(f"{out}: already exists; pass --force to write into it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise OutputExists(f"{out}: exists and is not a folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _array_option(array: str | None):
    """hw.config.parse_array_option (None: auto), its refusal a BoardError for the CLI's one line."""
    from hw.config import parse_array_option

    try:
        return parse_array_option(array)
    except ValueError as e:
        raise BoardError(f"--array: {e}") from None


def choose_array(plan, profile: BoardProfile, array: str | None):
    """(ArrayConfig, FitResult): the given shape, the hardware's default, or with 'auto' the one that fits
    with the fewest predicted cycles (boards.fit.auto_array)."""
    config = _array_option(array)
    if config is None:
        return auto_array(plan, profile)
    fit = check_fit(accelerator_demand(plan, config.rows, config.cols), profile)
    if not fit.fits:
        raise FitError(f"array {config}: {fit.message()}")
    return config, fit


def rtl_images(plan, data: str | None, split: str, n: int, seed: int):
    """(images (N, *input_shape) of the plan's input integers, labels or None, source): N inputs
    spread over the classes, or seeded random ones over the input type's range."""
    if data is None:
        rng, t = np.random.default_rng(seed), plan.input_type
        return rng.integers(t.min, t.max + 1, size=(n, *plan.input_shape)), None, f"{n} random images (seed {seed})"
    from quant.data import check_model_input, load_split

    check_model_input(plan.input_shape, "the model", data, split)
    per_class = math.ceil(n / max(1, len(plan.class_names) or 1))
    images, labels, names = load_split(data, split, limit=per_class, shape=tuple(plan.input_shape))
    if plan.class_names:
        unknown = [c for c in names if c not in plan.class_names]
        if unknown:
            raise BoardError(f"{data}/{split}: classes {unknown} are not the model's {plan.class_names}")
        labels = np.array([plan.class_names.index(names[l]) for l in labels])
    # round-robin over the classes, so N images cover every class
    order = sorted(range(len(labels)), key=lambda i: (int(np.sum(labels[:i] == labels[i])), int(labels[i])))[:n]
    return images[order], labels[order], f"{len(order)} {split} images of {data}"


def cycle_model(plan, config) -> dict:
    """hw's predicted cycles and utilisation per pass, and the memory bits (no Verilog written)."""
    from hw.cycles import predict
    from hw.schedule import schedule
    from hw.top import resources

    return {**predict(schedule(plan, config)), "memory_bits": resources(plan, config)["memory_bits"]}


def accuracies(checkpoint: str | None, float_checkpoint: str | None, data: str | None, split: str,
               plots_dir: Path) -> dict:
    """Float and quantized accuracy (and macro P/R/F1) on the split, from quant.evaluate."""
    from quant import checkpoint as ckpts
    from quant.evaluate import evaluate

    if float_checkpoint is None and checkpoint is None and ckpts.BUNDLED_FLOAT.is_file():
        float_checkpoint = str(ckpts.BUNDLED_FLOAT)
    elif float_checkpoint is None and checkpoint is not None:
        twin = ckpts.float_twin(checkpoint)
        float_checkpoint = str(twin) if twin is not None else None
    ck = ckpts.load(checkpoint)
    arch = (ck.get("config") or {}).get("arch")
    if data is None:
        val = ck.get("metrics", {}).get("val_acc")
        return {"accuracy_quant": val, "accuracy_float": None, "arch": arch,
                "source": "the checkpoint's recorded validation accuracy (no --data)"}
    q = evaluate(checkpoint, data, split, plots_dir=plots_dir)
    out = {"accuracy_quant": q["accuracy"], "precision_macro_quant": q["precision_macro"],
           "recall_macro_quant": q["recall_macro"], "f1_macro_quant": q["f1_macro"], "images_evaluated": q["images"],
           "source": f"quant.evaluate on {q['images']} {split} images", "plots": q.get("plots", {}), "arch": arch}
    if float_checkpoint is not None:
        f = evaluate(float_checkpoint, data, split)
        out.update(accuracy_float=f["accuracy"], precision_macro_float=f["precision_macro"],
                   recall_macro_float=f["recall_macro"], f1_macro_float=f["f1_macro"])
    else:
        out["accuracy_float"] = None
    return out


def bitstream_rtl(*, checkpoint: str | None = None, float_checkpoint: str | None = None, board: str = DEFAULT_BOARD,
                  array: str | None = None, data: str | None = None, split: str = "val", limit: int = DEFAULT_IMAGES,
                  out: str | Path = "out", force: bool = False, clock_mhz: float | None = None,
                  baud: int = DEFAULT_BAUD, bitstream: bool = True,
                  seed: int = 0, random_images: bool = False, say: Callable[[str], None] = print_progress,
                  pnr_timeout_s: float | None = PNR_TIMEOUT_S) -> dict:
    """The whole chain into `out`; returns the report (also written as report.json and report.md)."""
    from export.compile import compile_onnx
    from export.onnx_export import export
    from export.ort import host_throughput
    from hw.top import Accelerator, resources
    from sim.golden import expected_logits
    from sim.verify import verify

    profile = get_profile(board)
    clock_mhz = profile.clock_mhz if clock_mhz is None else clock_mhz
    if not 0 < clock_mhz < math.inf:
        raise BoardError(f"--clock-mhz {clock_mhz:g}: the core clock must be a positive number of MHz, e.g. {profile.clock_mhz:g}")
    if pnr_timeout_s is not None and not 0 < pnr_timeout_s < math.inf:
        raise BoardError(f"--pnr-timeout {pnr_timeout_s:g}: must be a positive number of seconds, e.g. {PNR_TIMEOUT_S:.0f}")
    if data is not None and not (Path(data) / split).is_dir() and not (Path(data) / f"{split}.npz").is_file():
        raise BoardError(f"{Path(data) / split}: no such folder (--data DIR needs DIR/{split}/<class>/ or DIR/{split}.npz)")
    if limit < 1:
        raise BoardError(f"--limit must be at least 1, got {limit}")
    _array_option(array)
    bit_period(clock_mhz * 1e6, baud)
    if bitstream and profile.has_open_toolchain:
        check_tools(profile)
    out = prepare_out(out, force)
    step = _Steps(8 if bitstream else 7, say)

    onnx_path = step("export ONNX", export, checkpoint, out / "model.onnx")
    plan = step("compile the layer plan", compile_onnx, onnx_path)
    plan.save(out / "plan")
    config, fit = step(f"fit check on {profile.name}", choose_array, plan, profile, array)
    say(f"    array {config}: {fit.message()}")
    rtl = cycle_model(plan, config)
    images, labels, source = rtl_images(plan, None if random_images else data, split, limit, seed)  # before synthesis

    # The board build runs tools in subprocesses: start it now, next to the simulation.
    cancel = threading.Event()
    pending = None
    if bitstream:
        n_pixels = int(np.prod(plan.input_shape))
        top = BoardTop(Accelerator(plan, config), n_pixels, plan.layers[-1].out_shape[0], baud, clock_mhz)
        say(f"[board] {profile.toolchain} build started in the background (lines marked 'board')")
        end_tools_on_sigterm()  # the build's thread cannot install the handler itself
        pool = ThreadPoolExecutor(1)
        pending = pool.submit(build, top, profile, out / "board", seed=seed + 1, pnr_timeout_s=pnr_timeout_s,
                              progress=lambda line: say("    board " + line), cancel=cancel)
        pool.shutdown(wait=False)
    try:
        expected = expected_logits(onnx_path, plan, images)
        # sim.verify generates the accelerator's Verilog and its inventory into out/rtl
        outcome = step(f"Verilog + RTL simulation ({source})", verify, plan, str(config), images, expected,
                       labels=labels, work_dir=out, clock_mhz=clock_mhz, multipliers=profile.dsps, log=say)
        say(f"    bit-exact {outcome.summary['bit_exact']}/{outcome.summary['images']}"
            + (f"; {outcome.diagnosis}" if outcome.diagnosis else ""))
        acc = step("accuracy (quant.evaluate)", accuracies, checkpoint, float_checkpoint, data, split, out / "plots")
        host = step("ONNX Runtime on this CPU (batch 64, BASIC)", host_throughput, onnx_path, images, 64, os.cpu_count())
        built: BuildResult | None = step(f"board build ({profile.toolchain}), waiting", pending.result) if pending else None
    except BaseException:
        cancel.set()
        raise
    report = write_report(out, plan=plan, profile=profile, config=config, fit=fit, rtl=rtl, outcome=outcome,
                          accuracy=acc, built=built, steps=step.seconds, source=source, onnx_path=onnx_path,
                          clock_mhz=clock_mhz, host=host, multipliers=resources(plan, config)["multipliers"])
    atomic_write_text(out / "rtl_records.json", json.dumps(outcome.records, indent=1))
    step.n += 1
    say(f"[{step.n}/{step.total}] wrote {out / 'report.md'} and {out / 'report.json'}")
    return report


__all__ = ["EXIT_TIMING_NOT_MET", "OutputExists", "accuracies", "add_arguments", "bitstream_rtl", "choose_array",
           "cycle_model", "prepare_out", "rtl_images", "run"]
