"""`python -m quant report`: the experiment's accuracy/compression table beside the paper's figures.

Every checkpoint of an experiment folder is evaluated on the validation split of the experiment's
data. Float checkpoints store 32 bits per parameter; a quantized checkpoint's weight bits as stored
come in as data, from the `storage` function the caller passes (the CLI passes export's accounting
of the compiled layer plan, so this module reads no layer above quant).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from common.atomic import atomic_write_text
from common.data import DEFAULT_DATA
from quant import checkpoint
from quant.data import Split, class_dirs, dataset_hash, read_split
from quant.evaluate import score
from quant.model import ModelConfig, build

REQUIRED = ("float_adam", "float_sgd", "qat_unpruned")  # and qat_pruned where the model has P-layers
ORDER = ("float_adam", "float_sgd", "float_adam_paper-nopool2", "float_sgd_paper-nopool2", "qat_unpruned", "qat_pruned")
LABELS = {"float_adam": "float, Adam", "float_sgd": "float, SGD",
          "float_adam_paper-nopool2": "float, Adam, no 2nd pool", "float_sgd_paper-nopool2": "float, SGD, no 2nd pool",
          "qat_unpruned": "QAT, unpruned", "qat_pruned": "QAT + pruned"}
PAPER = {"accuracy_adam": 0.9118, "accuracy_sgd": 0.8889, "precision": 0.9474, "recall": 0.9, "f1": 0.9231,
         "note": "as published; not reproduced here"}
TARGETS = {"max_accuracy_drop": 0.01, "min_compression_ratio": 27.5}
# a quantized checkpoint's path -> its storage: weight_bits, float_bits, compression_ratio, layers, MACs
Storage = Callable[[Path], dict]


class ReportError(checkpoint.CheckpointError):
    """An experiment folder the report cannot read."""


def float_storage(ckpt: dict) -> dict:
    """A float model stores every parameter (weights and biases) as float32."""
    params = sum(int(np.prod(v.shape)) for k, v in ckpt["state_dict"].items()
                 if isinstance(v, torch.Tensor) and k.endswith((".weight", ".bias")))
    return {"weight_bits": 32 * params, "float_bits": 32 * params, "compression_ratio": 1.0, "layers": []}


def model_size(ckpt: dict) -> dict:
    """Parameters (weights and biases of the conv/linear modules) and MACs per image of the float
    description, counted on the built model (so a residual block's convs count too)."""
    cfg = ModelConfig.from_dict(ckpt["config"])
    model = build(replace(cfg, quantized=False, bn_folded=True)).eval()
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    macs = []
    hooks = [m.register_forward_hook(lambda m, i, o: macs.append(o[0].numel() * m.weight[0].numel())) for m in layers]
    with torch.no_grad():
        model(torch.zeros(1, *cfg.in_shape))
    for h in hooks:
        h.remove()
    params = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0) for m in layers)
    return {"params": int(params), "macs": int(sum(macs))}


def read_manifest(results: Path) -> dict:
    path = results / "experiment.json"
    if not path.is_file():
        raise ReportError(f"{results}: no experiment.json (run `python -m quant experiment --out {results}` first)")
    try:
        manifest = json.loads(path.read_text())
        runs = manifest["runs"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ReportError(f"{path}: not an experiment manifest ({e.__class__.__name__}); re-run the experiment") from None
    missing = [r for r in REQUIRED if r not in runs]
    if not missing and "qat_pruned" not in runs:  # a model with P-layers has its pruned QAT run too
        fl = checkpoint.load(results / runs["float_adam"])
        if any(l.get("cls") == "P" for l in fl["config"]["layers"]):
            missing = ["qat_pruned"]
    if missing:
        raise ReportError(f"{path}: no run(s) {', '.join(missing)}; re-run the experiment")
    return manifest


def run_row(name: str, path: Path, ckpt: dict, val: Split, storage: Storage) -> dict:
    m = score(ckpt, val)
    quantized = bool(ckpt["config"].get("quantized"))
    history = ckpt.get("history") or []
    return {"label": LABELS.get(name, name), "checkpoint": path.name, "arch": ckpt["config"]["arch"],
            "quantized": quantized, "optimizer": ckpt["train"]["optimizer"],
            **{k: m[k] for k in ("images", "accuracy", "precision_macro", "recall_macro", "f1_macro")},
            "best_epoch": ckpt["best_epoch"], "epochs": len(history),
            "train_time_s": history[-1]["elapsed"] if history else ckpt["train_time_s"],
            "time_to_best_s": ckpt["train_time_s"],
            "val_hash_matches": dataset_hash(val) == ckpt["data"]["val_hash"],
            **model_size(ckpt), **(storage(path) if quantized else float_storage(ckpt)),
            "per_class": m["per_class"], "confusion": m["confusion"]}


def checkpoint_runs(path: Path, data: str | Path | None) -> dict:
    """A QAT checkpoint and the float checkpoint it was fine-tuned from, as an experiment manifest
    (`data`: the folder to evaluate on; default: a data folder beside the default one whose classes
    are the checkpoint's)."""
    ckpt = checkpoint.load(path)
    if not ckpt["config"].get("quantized"):
        raise ReportError(f"{path}: a float checkpoint; give the QAT checkpoint (its float twin is found from it)")
    twin = checkpoint.float_twin(path)
    if twin is None:
        raise ReportError(f"{path}: its float checkpoint is not on disk (neither the recorded init nor a sibling *_float.pt)")
    data = data or data_for_classes(ckpt["class_names"])
    if data is None:
        raise ReportError(f"{path}: no data folder holds its classes ({', '.join(ckpt['class_names'])}); pass --data DIR")
    fl = checkpoint.load(twin)
    final = "qat_pruned" if any(l.get("cls") == "P" for l in ckpt["config"]["layers"]) else "qat_unpruned"
    return {"data": str(data), "runs": {f"float_{fl['train']['optimizer']}": twin.resolve(), final: path.resolve()},
            "arch": ckpt["config"]["arch"]}


def data_for_classes(classes: list[str]) -> Path | None:
    """The data folder beside the default one (../shared/data/*) whose val classes are `classes`."""
    base = DEFAULT_DATA.parent
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        if (d / "val").is_dir() and sorted(class_dirs(d / "val")) == sorted(classes):
            return d
    return None


def build_report(results_dir: str | Path, storage: Storage, data: str | Path | None = None) -> dict:
    """Evaluate every run of an experiment folder (or a QAT checkpoint and its float twin) on its val
    split; the report as a JSON-able dict. `storage(path)` gives a quantized checkpoint's weight bits as stored."""
    results = Path(results_dir)
    manifest = checkpoint_runs(results, data) if results.suffix == ".pt" else read_manifest(results)
    data, runs = manifest["data"], manifest["runs"]
    splits: dict[tuple[str, ...], Split] = {}
    rows: dict[str, dict] = {}
    for name in [r for r in ORDER if r in runs] + sorted(set(runs) - set(ORDER)):
        path = results / runs[name]
        ckpt = checkpoint.load(path)
        key = tuple(ckpt["class_names"])
        if key not in splits:
            splits[key] = read_split(data, "val", list(key), shape=tuple(ckpt["config"].get("in_shape", (3, 64, 64))))
        rows[name] = run_row(name, path, ckpt, splits[key], storage)
    ref = manifest.get("float_reference") or max((r for r in ("float_adam", "float_sgd") if r in rows),
                                                  key=lambda r: rows[r]["accuracy"])
    for row in rows.values():
        row["accuracy_delta"] = row["accuracy"] - rows[ref]["accuracy"]
    final = "qat_pruned" if "qat_pruned" in rows else "qat_unpruned"
    pruned = rows[final]
    return {
        "results": str(results), "data": data, "split": "val", "images": rows[ref]["images"],
        "quick": bool(manifest.get("quick")), "float_reference": ref,
        "compression_ratio": pruned["compression_ratio"],
        "targets": {**TARGETS, "qat_pruned_accuracy_drop": -pruned["accuracy_delta"],
                    "accuracy_met": -pruned["accuracy_delta"] <= TARGETS["max_accuracy_drop"],
                    "compression_met": pruned["compression_ratio"] >= TARGETS["min_compression_ratio"]},
        "runs": rows, "paper": PAPER, "final": final, "arch": manifest.get("arch", rows[ref]["arch"]),
    }


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _bits(b: int) -> str:
    return f"{b:,} ({b / 8192:.1f} KiB)"


def markdown(rep: dict) -> str:
    """The report as Markdown: our runs, the paper's figures, the targets, P-layer storage."""
    ref = rep["float_reference"]
    out = ["# Accuracy and compression report", ""]
    if rep["quick"]:
        out += ["> **Smoke test** (`--quick`: a few batches): these numbers are not a result.", ""]
    out += [f"Results `{rep['results']}`, evaluated on the **{rep['split']}** split of `{rep['data']}` "
            f"({rep['images']} images). Float reference: **{rep['runs'][ref]['label']}** (`{ref}`), the model the "
            "QAT runs were fine-tuned from. Precision, recall and F1 are macro averages over the classes.", "",
            "| model | arch | accuracy | Δ vs float | precision | recall | F1 | best epoch / epochs | training time | weight bits as stored | × vs float32 |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def _delta(name: str, r: dict) -> str:
        return "reference" if name == ref else f"{100 * r['accuracy_delta']:+.2f} pt"

    for name, r in rep["runs"].items():
        out.append(f"| {r['label']} | {r['arch']} | {_pct(r['accuracy'])} | {_delta(name, r)} | "
                   f"{r['precision_macro']:.4f} | {r['recall_macro']:.4f} | {r['f1_macro']:.4f} | "
                   f"{r['best_epoch']} / {r['epochs']} | {_duration(r['train_time_s'])} | {_bits(r['weight_bits'])} | "
                   f"{r['compression_ratio']:.1f}× |")
    p = rep["paper"]
    out += ["", "The paper's figures (as published, for comparison; not reproduced here):", "",
            "| paper | accuracy | precision | recall | F1 |", "|---|---:|---:|---:|---:|",
            f"| paper, float, Adam | {_pct(p['accuracy_adam'])} | | | |",
            f"| paper, float, SGD | {_pct(p['accuracy_sgd'])} | | | |",
            f"| paper, reported P/R/F1 | | {p['precision']:.4f} | {p['recall']:.4f} | {p['f1']:.4f} |", ""]
    t = rep["targets"]
    out += ["Targets:", "",
            f"- final quantized vs float: {-100 * t['qat_pruned_accuracy_drop']:+.2f} pt "
            f"(target: at most {100 * t['max_accuracy_drop']:.0f} pt below) — {'met' if t['accuracy_met'] else '**not met**'}",
            f"- weight compression vs float32: {rep['compression_ratio']:.1f}× "
            f"(target ≥ {t['min_compression_ratio']}×) — {'met' if t['compression_met'] else '**not met**'}", ""]
    layers = rep["runs"][rep.get("final", "qat_pruned")]["layers"]
    out += [f"Weight storage of {rep['runs'][rep.get('final', 'qat_pruned')]['label']}, per layer (export's accounting: dense layers at their bit width, "
            "P-layers as value + index entries and row pointers; 32-bit biases included):", "",
            "| layer | class | weights | non-zero | w bits | index bits | bits as stored | float32 bits | × |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {l['name']} | {l['cls']} | {l['weights']:,} | {l['nonzero']:,} | {l['w_bits']} | "
            f"{l['index_bits'] if l['index_bits'] is not None else '–'} | {l['weight_bits']:,} | {l['float_bits']:,} | "
            f"{l['float_bits'] / l['weight_bits']:.1f}× |" for l in layers]
    stale = [r["label"] for r in rep["runs"].values() if not r["val_hash_matches"]]
    if stale:
        out += ["", f"Note: the val split differs from the one these were trained with: {', '.join(stale)}."]
    out += ["", "Training time is the run's own wall time (QAT runs exclude the float model they start from)."]
    return "\n".join(out) + "\n"


def side_by_side(reports: list[dict]) -> str:
    """Several experiments (e.g. paper and edge), one row each for the float reference and the final quantized model."""
    out = ["# Side by side", "",
           "| arch | model | accuracy | precision | recall | F1 | params | MACs / image | weight bits as stored | × vs float32 | training time |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rep in reports:
        for name in (rep["float_reference"], rep.get("final", "qat_pruned")):
            r = rep["runs"][name]
            out.append(f"| {rep.get('arch', r['arch'])} | {r['label']} | {_pct(r['accuracy'])} | {r['precision_macro']:.4f} | "
                       f"{r['recall_macro']:.4f} | {r['f1_macro']:.4f} | {r['params']:,} | {r['macs']:,} | "
                       f"{_bits(r['weight_bits'])} | {r['compression_ratio']:.1f}× | {_duration(r['train_time_s'])} |")
    return "\n".join(out) + "\n"


def write_report(rep: dict, json_path: str | Path | None = None, md_path: str | Path | None = None) -> None:
    if json_path:
        atomic_write_text(json_path, json.dumps(rep, indent=1))
    if md_path:
        atomic_write_text(md_path, markdown(rep))
