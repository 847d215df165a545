"""The experiment: the paper's Table 2 pair (Adam vs SGD, float), then QAT (and QAT+pruned).

Float Adam and SGD are trained for the chosen architecture (for the paper CNN also its variant
without the second pool, unless skipped); the better float model is fine-tuned quantized without
pruning and, where the model has P-layers, with them pruned. Each architecture has its recipe
(RECIPES). The manifest is written as each run ends, and a re-run of the same folder skips the
runs it already lists, so an interrupted experiment resumes and `quant report` never mixes runs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from quant import checkpoint
from quant.atomic import atomic_write_text
from quant.data import read_split
from quant.model import ConfigError, ModelConfig, named_config, quantized_twin
from quant.train import TrainConfig, train

RUNS = ("float_adam", "float_sgd", "qat_unpruned", "qat_pruned")
# per architecture: float settings (both optimizers; lr per optimizer) and QAT settings
RECIPES = {
    "paper": {"float": {}, "lr": {"adam": 1e-3, "sgd": 0.1}, "qat": {"lr": 5e-4, "epochs": 14}},
    "edge": {"float": {"epochs": 60, "patience": 100, "schedule": "cosine", "warmup": 2, "weight_decay": 5e-4,
                       "label_smoothing": 0.1},
             "lr": {"adam": 3e-3, "sgd": 0.1}, "sgd_momentum": 0.9,
             "qat": {"lr": 2e-4, "epochs": 12, "patience": 100, "schedule": "cosine", "label_smoothing": 0.1}},
}


def run_experiment(data: str | Path, out: str | Path, quick: bool = False, seed: int = 0,
                   both_pools: bool = True, arch: str = "paper") -> dict:
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
    tr = read_split(data, "train")
    va = read_split(data, "val", tr.class_names)
    if quick:  # a smoke test: a few batches, a couple of epochs
        tr = replace(tr, images=tr.images[::40], labels=tr.labels[::40], files=tr.files[::40])
    short = dict(epochs=2, patience=2, prune_epochs=1) if quick else {}

    def run(name: str, cfg: ModelConfig, tc: TrainConfig, init: dict | None = None) -> None:
        done = manifest["runs"].get(name)
        if done and (out / done).is_file():
            print(f"== {name}: done ({done}), skipped")
            return
        print(f"== {name}")
        train(cfg, tr, va, tc, out / f"{name}.pt", init=init)
        manifest["runs"][name] = f"{name}.pt"
        atomic_write_text(manifest_path, json.dumps(manifest, indent=1))

    def float_pair(cfg: ModelConfig, suffix: str = "") -> None:
        for opt in ("adam", "sgd"):
            tc = TrainConfig(optimizer=opt, lr=recipe["lr"][opt], seed=seed,
                             momentum=recipe.get("sgd_momentum", 0.0) if opt == "sgd" else 0.0,
                             **{**recipe["float"], **short})
            run(f"float_{opt}{suffix}", cfg, tc)

    float_pair(base_cfg)
    best = min(("float_adam", "float_sgd"), key=lambda n: checkpoint.load(out / manifest["runs"][n])["metrics"]["val_loss"])
    manifest["float_reference"] = best
    init = checkpoint.load(out / manifest["runs"][best])
    base = ModelConfig.from_dict(init["config"])
    qtc = TrainConfig(**{**recipe["qat"], "seed": seed, **short})
    run("qat_unpruned", quantized_twin(replace(base, layers=[replace(l, cls="NP", sparsity=0.0) for l in base.layers])), qtc, init)
    if any(l.cls == "P" for l in base.layers):
        run("qat_pruned", quantized_twin(base), qtc, init)
    if both_pools and base_cfg.arch == "paper":  # the paper is unclear about the second pool: its Table 2 pair without it
        float_pair(named_config("paper-nopool2"), "_paper-nopool2")
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    return manifest
