"""The experiment: the paper's Table 2 pair (Adam vs SGD, float), then QAT (and QAT+pruned).

Float Adam and SGD are trained for the chosen architecture (for the paper CNN also its variant
without the second pool, unless skipped); the better float model is fine-tuned quantized without
pruning and, where the model has P-layers, with them pruned. Each architecture has its recipe
(RECIPES). The manifest is written as each run ends, and a re-run of the same folder skips the
runs it already lists, so an interrupted experiment resumes and `quant report` never mixes runs.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import torch

from common.atomic import atomic_write_text
from quant import checkpoint
from quant.data import check_model_input, read_split
from quant.model import ConfigError, ModelConfig, named_config, quantized_twin
from quant.train import TrainConfig, train

RUNS = ("float_adam", "float_sgd", "qat_unpruned", "qat_pruned")
# per architecture: float settings shared by both optimizers, then each optimizer's own, then QAT's
RECIPES = {
    "paper": {"float": {}, "adam": {"lr": 1e-3}, "sgd": {"lr": 0.1}, "qat": {"lr": 5e-4, "epochs": 14}},
    # edge: the bundled pair's recipe (batch 64, random erasing on half the images); the Adam side and
    # QAT are exactly the bundled runs' settings, SGD shares the float settings
    "edge": {"float": {"epochs": 60, "patience": 100, "schedule": "cosine", "warmup": 2, "label_smoothing": 0.1,
                       "batch": 64, "erase": 0.5},
             "adam": {"lr": 2e-3, "weight_decay": 5e-4},  # decoupled (AdamW)
             "sgd": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},  # L2
             "qat": {"lr": 2e-4, "epochs": 8, "patience": 100, "schedule": "cosine", "label_smoothing": 0.1,
                     "batch": 64, "erase": 0.5, "ema": 0.99}},
}


def _train_job(threads: int, *args) -> None:
    """One float run in a worker process (the experiment's --jobs), on `threads` torch threads."""
    torch.set_num_threads(threads)
    train(*args, bars=False)


def run_experiment(data: str | Path, out: str | Path, quick: bool = False, seed: int = 0,
                   both_pools: bool = True, arch: str = "paper", jobs: int = 1) -> dict:
    """Run (or resume) the experiment in `out`. With jobs=2 the Adam and SGD float runs train at
    once in two processes, each on half the torch threads (the pair is independent; on 2 cores
    that beats two runs one after the other on 2 threads each). Each run is deterministic for a
    given thread count; another count changes the float rounding only."""
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: needs 1 or more")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base_cfg = named_config(arch)
    recipe = RECIPES.get(base_cfg.arch, RECIPES["paper"])
    manifest_path = out / "experiment.json"
    manifest = {"runs": {}, "arch": base_cfg.arch, "quick": quick, "data": str(data), "seed": seed}
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{manifest_path}: not a readable manifest ({e}); remove it or choose another --out") from None
        if (old.get("arch"), old.get("quick"), old.get("seed")) != (base_cfg.arch, quick, seed):
            raise ConfigError(f"{manifest_path}: this folder holds another experiment (arch {old.get('arch')}, quick "
                              f"{old.get('quick')}, seed {old.get('seed')}); choose another --out")
        manifest = old
    check_model_input(base_cfg.in_shape, f"architecture {base_cfg.arch!r}", data, "train")
    tr = read_split(data, "train", shape=base_cfg.in_shape)
    va = read_split(data, "val", tr.class_names, shape=base_cfg.in_shape)
    if quick:  # a smoke test: a few batches, a couple of epochs
        tr = replace(tr, images=tr.images[::40], labels=tr.labels[::40], files=tr.files[::40])
    short = dict(epochs=2, patience=2, prune_epochs=1) if quick else {}

    def run(name: str, cfg: ModelConfig, tc: TrainConfig, init: str | None = None, teachers: tuple[str, ...] = ()) -> None:
        """One run of the manifest; `init` and `teachers` name earlier runs."""
        done = manifest["runs"].get(name)
        if done and (out / done).is_file():
            print(f"== {name}: done ({done}), skipped")
            return
        print(f"== {name}" + (f", distilled from {' and '.join(teachers)}" if teachers else ""))
        paths = [out / manifest["runs"][t] for t in teachers]
        def record(p: Path) -> dict:  # relative: the folder may move
            return {"path": p.name, "sha256": checkpoint.file_hash(p)}

        init_path = out / manifest["runs"][init] if init else None
        train(cfg, tr, va, tc, out / f"{name}.pt", init=checkpoint.load(init_path) if init_path else None,
              init_record=record(init_path) if init_path else None,
              teachers=[checkpoint.load(p) for p in paths] or None, teacher_records=[record(p) for p in paths] or None)
        manifest["runs"][name] = f"{name}.pt"
        atomic_write_text(manifest_path, json.dumps(manifest, indent=1))

    def float_pair(cfg: ModelConfig, suffix: str = "") -> None:
        todo = {}
        for opt in ("adam", "sgd"):
            tc = TrainConfig(optimizer=opt, seed=seed, **{**recipe["float"], **recipe[opt], **short})
            name = f"float_{opt}{suffix}"
            if jobs == 1:
                run(name, cfg, tc)
            elif not (manifest["runs"].get(name) and (out / manifest["runs"][name]).is_file()):
                todo[name] = tc
        if not todo:
            return
        threads = max(1, torch.get_num_threads() // len(todo))
        print(f"== {', '.join(todo)}: in parallel, {len(todo)} processes of {threads} torch thread(s); "
              f"each prints its epochs as it ends them")
        with ProcessPoolExecutor(len(todo), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_train_job, threads, cfg, tr, va, tc, out / f"{name}.pt"): name for name, tc in todo.items()}
            for f in as_completed(futures):
                f.result()
                manifest["runs"][futures[f]] = f"{futures[f]}.pt"
                atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
                print(f"== {futures[f]}: done")

    float_pair(base_cfg)
    best = min(("float_adam", "float_sgd"), key=lambda n: checkpoint.load(out / manifest["runs"][n])["metrics"]["val_loss"])
    manifest["float_reference"] = best
    base = ModelConfig.from_dict(checkpoint.load(out / manifest["runs"][best])["config"])
    qtc = TrainConfig(**{**recipe["qat"], "seed": seed, **short})
    teachers = ("float_adam", "float_sgd") if qtc.distill else ()  # the pair's mean softmax
    run("qat_unpruned", quantized_twin(replace(base, layers=[replace(l, cls="NP", sparsity=0.0) for l in base.layers])), qtc, best,
        teachers)
    if any(l.cls == "P" for l in base.layers):
        run("qat_pruned", quantized_twin(base), qtc, best, teachers)
    if both_pools and base_cfg.arch == "paper":  # the paper is unclear about the second pool: its Table 2 pair without it
        float_pair(named_config("paper-nopool2"), "_paper-nopool2")
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    return manifest
