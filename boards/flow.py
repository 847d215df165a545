"""`python -m export bitstream-rtl`: checkpoint -> ONNX -> plan -> Verilog -> RTL check -> bitstream + report.

export/__main__.py wires the subcommand with `add_arguments(parser)` and `run(args)`; the work
is `bitstream_rtl(ChainConfig(...))`, which walks `STEPS` and returns the report it writes. Each
step prints one line when it starts and its elapsed time when it ends; the board build adds
per-tool progress.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

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


@dataclass(frozen=True)
class ChainConfig:
    """The settings of one `bitstream-rtl` run, one field per CLI option (`--pnr-timeout` is `pnr_timeout_s`)."""

    checkpoint: str | None = None
    float_checkpoint: str | None = None
    board: str = DEFAULT_BOARD
    array: str | None = None
    data: str | None = None
    split: str = "val"
    limit: int = DEFAULT_IMAGES
    out: str | Path = "out"
    force: bool = False
    clock_mhz: float | None = None
    baud: int = DEFAULT_BAUD
    bitstream: bool = True
    seed: int = 0
    random_images: bool = False
    pnr_timeout_s: float | None = PNR_TIMEOUT_S

    @property
    def profile(self) -> BoardProfile:
        return get_profile(self.board)

    @property
    def core_clock_mhz(self) -> float:
        """The clock to build and time for: `clock_mhz`, else the board's."""
        return self.profile.clock_mhz if self.clock_mhz is None else self.clock_mhz

    def validate(self) -> None:
        """Refuses bad settings before any work, each with the one line the CLI prints; the tools are checked last."""
        profile, clock_mhz = self.profile, self.core_clock_mhz
        if not 0 < clock_mhz < math.inf:
            raise BoardError(f"--clock-mhz {clock_mhz:g}: the core clock must be a positive number of MHz, "
                             f"e.g. {profile.clock_mhz:g}")
        if self.pnr_timeout_s is not None and not 0 < self.pnr_timeout_s < math.inf:
            raise BoardError(f"--pnr-timeout {self.pnr_timeout_s:g}: must be a positive number of seconds, "
                             f"e.g. {PNR_TIMEOUT_S:.0f}")
        data, split = self.data, self.split
        if data is not None and not (Path(data) / split).is_dir() and not (Path(data) / f"{split}.npz").is_file():
            raise BoardError(f"{Path(data) / split}: no such folder "
                             f"(--data DIR needs DIR/{split}/<class>/ or DIR/{split}.npz)")
        if self.limit < 1:
            raise BoardError(f"--limit must be at least 1, got {self.limit}")
        _array_option(self.array)
        bit_period(clock_mhz * 1e6, self.baud)
        if self.bitstream and profile.has_open_toolchain:
            check_tools(profile)


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
                        "per image (default: the array the model's description names, as resnet8's names 16x5, else the "
                        "hardware's default 10x9)")
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
    p.add_argument("--pnr-timeout", dest="pnr_timeout_s", type=float, default=PNR_TIMEOUT_S, metavar="SECONDS",
                   help="stop place-and-route after this long with an error (default %(default).0f)")


def run(args: argparse.Namespace) -> int:
    """The CLI body: 0 when every simulated image was bit-exact and timing was met (or not measured),
    1 when an image was not bit-exact, EXIT_TIMING_NOT_MET when only timing was not met."""
    report = bitstream_rtl(ChainConfig(**{f.name: getattr(args, f.name) for f in fields(ChainConfig)}))
    print(report["summary"])
    if report["bit_exact"] != report["images"]:
        return 1
    return EXIT_TIMING_NOT_MET if report["timing_met"] is False else 0


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


@dataclass
class ChainRun:
    """One run of the chain: its settings, then what each step hands on to the next."""

    config: ChainConfig
    profile: BoardProfile
    clock_mhz: float
    out: Path
    say: Callable[[str], None]
    cancel: threading.Event = field(default_factory=threading.Event)  # set: the background board build stops
    seconds: dict[str, float] = field(default_factory=dict)  # per step title, for the report
    onnx_path: Path | None = None
    plan: Any = None
    array_config: Any = None
    fit: Any = None
    rtl: dict | None = None  # hw's cycle model
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    source: str = ""
    expected: np.ndarray | None = None
    pending: Future | None = None
    outcome: Any = None
    accuracy: dict | None = None
    host: dict | None = None
    built: BuildResult | None = None
    report: dict | None = None


def _export_onnx(run: ChainRun) -> None:
    from export.onnx_export import export

    run.onnx_path = export(run.config.checkpoint, run.out / "model.onnx")


def _compile_plan(run: ChainRun) -> None:
    from export.compile import compile_onnx

    run.plan = compile_onnx(run.onnx_path)
    run.plan.save(run.out / "plan")


def model_array(checkpoint: str | None) -> str | None:
    """The PE array the checkpoint's model description names (quant.model.ModelConfig.array), if any."""
    from quant import checkpoint as ckpts

    return (ckpts.load(checkpoint).get("config") or {}).get("array")


def _fit_check(run: ChainRun) -> None:
    """--array as given; without it the array the model names, else the hardware's default."""
    array = run.config.array
    if array is None and (named := model_array(run.config.checkpoint)) is not None:
        array = named
        run.say(f"    the model names array {named} (its description's `array`; --array overrides it)")
    run.array_config, run.fit = choose_array(run.plan, run.profile, array)


def _prepare_simulation(run: ChainRun) -> None:
    """After the fit check: the array it chose, the RTL images (before synthesis starts), the board build
    started in the background, ONNX Runtime's logits for the images."""
    from sim.golden import expected_logits

    c = run.config
    run.say(f"    array {run.array_config}: {run.fit.message()}")
    run.rtl = cycle_model(run.plan, run.array_config)
    run.images, run.labels, run.source = rtl_images(run.plan, None if c.random_images else c.data, c.split, c.limit, c.seed)
    if c.bitstream:
        run.pending = _start_board_build(run)
    run.expected = expected_logits(run.onnx_path, run.plan, run.images)


def _start_board_build(run: ChainRun) -> Future:
    """The board build runs tools in subprocesses: start it now, next to the simulation."""
    from hw.top import Accelerator

    plan, c = run.plan, run.config
    top = BoardTop(Accelerator(plan, run.array_config), int(np.prod(plan.input_shape)), plan.layers[-1].out_shape[0],
                   c.baud, run.clock_mhz)
    run.say(f"[board] {run.profile.toolchain} build started in the background (lines marked 'board')")
    end_tools_on_sigterm()  # the build's thread cannot install the handler itself
    pool = ThreadPoolExecutor(1)
    pending = pool.submit(build, top, run.profile, run.out / "board", seed=c.seed + 1, pnr_timeout_s=c.pnr_timeout_s,
                          progress=lambda line: run.say("    board " + line), cancel=run.cancel)
    pool.shutdown(wait=False)
    return pending


def _simulate(run: ChainRun) -> None:
    """sim.verify generates the accelerator's Verilog and its inventory into out/rtl, then runs it on the images."""
    from sim.verify import verify

    run.outcome = verify(run.plan, str(run.array_config), run.images, run.expected, labels=run.labels,
                         work_dir=run.out, clock_mhz=run.clock_mhz, multipliers=run.profile.dsps, log=run.say)


def _say_bit_exact(run: ChainRun) -> None:
    o = run.outcome
    run.say(f"    bit-exact {o.summary['bit_exact']}/{o.summary['images']}" + (f"; {o.diagnosis}" if o.diagnosis else ""))


def _accuracy(run: ChainRun) -> None:
    c = run.config
    run.accuracy = accuracies(c.checkpoint, c.float_checkpoint, c.data, c.split, run.out / "plots")


def _host_throughput(run: ChainRun) -> None:
    from export.ort import host_throughput

    run.host = host_throughput(run.onnx_path, run.images, 64, os.cpu_count())


def _wait_for_board(run: ChainRun) -> None:
    run.built = run.pending.result()


def _write_report(run: ChainRun) -> str:
    from hw.top import resources

    run.report = write_report(run.out, plan=run.plan, profile=run.profile, config=run.array_config, fit=run.fit,
                              rtl=run.rtl, outcome=run.outcome, accuracy=run.accuracy, built=run.built,
                              steps=run.seconds, source=run.source, onnx_path=run.onnx_path, clock_mhz=run.clock_mhz,
                              host=run.host, multipliers=resources(run.plan, run.array_config)["multipliers"])
    atomic_write_text(run.out / "rtl_records.json", json.dumps(run.outcome.records, indent=1))
    return f"wrote {run.out / 'report.md'} and {run.out / 'report.json'}"


@dataclass(frozen=True)
class Step:
    """A step of the chain. Its progress lines carry `title` formatted with the run's fields and the time
    `work` took; `then` runs after them (a note, the next step's inputs). An untimed step's work returns its line."""

    title: str
    work: Callable[[ChainRun], str | None]
    then: Callable[[ChainRun], None] | None = None
    timed: bool = True
    bitstream_only: bool = False  # left out with --no-bitstream


STEPS: tuple[Step, ...] = (
    Step("export ONNX", _export_onnx),
    Step("compile the layer plan", _compile_plan),
    Step("fit check on {profile.name}", _fit_check, then=_prepare_simulation),
    Step("Verilog + RTL simulation ({source})", _simulate, then=_say_bit_exact),
    Step("accuracy (quant.evaluate)", _accuracy),
    Step("ONNX Runtime on this CPU (batch 64, BASIC)", _host_throughput),
    Step("board build ({profile.toolchain}), waiting", _wait_for_board, bitstream_only=True),
    Step("report", _write_report, timed=False),
)


def bitstream_rtl(config: ChainConfig, say: Callable[[str], None] = print_progress) -> dict:
    """The whole chain into `config.out`, step by step (STEPS); returns the report (also written as report.json
    and report.md). On an error the background board build is stopped before the error goes on."""
    config.validate()
    run = ChainRun(config, config.profile, config.core_clock_mhz, prepare_out(config.out, config.force), say)
    steps = [s for s in STEPS if config.bitstream or not s.bitstream_only]
    t0 = time.monotonic()
    try:
        for k, step in enumerate(steps, 1):
            head = f"[{k}/{len(steps)}]"
            if not step.timed:
                say(f"{head} {step.work(run)}")
                continue
            title = step.title.format(**vars(run))
            say(f"{head} {title} ...")
            t = time.monotonic()
            step.work(run)
            run.seconds[title] = round(time.monotonic() - t, 2)
            say(f"{head} {title}: done in {run.seconds[title]:.1f} s (total {time.monotonic() - t0:.0f} s)")
            if step.then is not None:
                step.then(run)
    except BaseException:
        run.cancel.set()
        raise
    return run.report


__all__ = ["EXIT_TIMING_NOT_MET", "STEPS", "ChainConfig", "ChainRun", "OutputExists", "Step", "accuracies",
           "add_arguments", "bitstream_rtl", "choose_array", "cycle_model", "prepare_out", "rtl_images", "run"]
