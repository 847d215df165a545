"""The experiment: the paper's Table 2 pair (Adam vs SGD, float), then QAT and QAT+pruned.

Float Adam and SGD are trained for the paper CNN (and, unless skipped, for its variant without
the second pool); the better float paper model is fine-tuned quantized without pruning and with
its P-layers pruned. Every checkpoint, curve and metric lands in the results folder.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from quant import checkpoint
from quant.atomic import atomic_write_text
from quant.data import read_split
from quant.model import ModelConfig, named_config, quantized_twin
from quant.train import TrainConfig, train

RUNS = ("float_adam", "float_sgd", "qat_unpruned", "qat_pruned")


def run_experiment(data: str | Path, out: str | Path, quick: bool = False, seed: int = 0,
                   both_pools: bool = True) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tr, va = read_split(data, "train"), None
    va = read_split(data, "val", tr.class_names)
    if quick:  # a smoke test: a few batches, a couple of epochs
        tr = replace(tr, images=tr.images[::40], labels=tr.labels[::40], files=tr.files[::40])
    epochs = dict(epochs=2, patience=2, prune_epochs=1) if quick else {}
    results: dict[str, str] = {}

    def float_pair(arch: str) -> None:
        for opt, lr in (("adam", 1e-3), ("sgd", 0.1)):
            name = f"float_{opt}" + ("" if arch == "paper" else f"_{arch}")
            print(f"== {name}")
            train(named_config(arch), tr, va, TrainConfig(optimizer=opt, lr=lr, seed=seed, **epochs), out / f"{name}.pt")
            results[name] = f"{name}.pt"

    float_pair("paper")
    best = min(("float_adam", "float_sgd"), key=lambda n: checkpoint.load(out / results[n])["metrics"]["val_loss"])
    init = checkpoint.load(out / results[best])
    base = ModelConfig.from_dict(init["config"])
    qcfg = {"qat_unpruned": quantized_twin(replace(base, layers=[replace(l, cls="NP", sparsity=0.0) for l in base.layers])),
            "qat_pruned": quantized_twin(base)}
    for name, cfg in qcfg.items():
        print(f"== {name} (from {best})")
        train(cfg, tr, va, TrainConfig(**{"lr": 5e-4, "epochs": 14, "seed": seed, **epochs}), out / f"{name}.pt", init=init)
        results[name] = f"{name}.pt"
    if both_pools:  # the paper is unclear about the second pool: its Table 2 pair without it
        float_pair("paper-nopool2")
    manifest = {"runs": results, "float_reference": best, "quick": quick, "data": str(data)}
    atomic_write_text(out / "experiment.json", json.dumps(manifest, indent=1))
    return manifest
