"""`python -m quant evaluate`: a checkpoint's metrics on one split, and its plots.

The checkpoint's class names fix the class order (its outputs); `--classes` may pick a subset of
them to evaluate on, in which case predictions can still be any of the checkpoint's classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quant import checkpoint
from quant.data import DataError, Split, check_model_input, crop, english, read_split
from quant.metrics import classification_metrics
from quant.model import ModelConfig
from quant.plots import confusion_png, curves_png, grid_indices, grid_png
from quant.train import predict

def load_checkpoint(path: str | Path | None) -> tuple[dict, str]:
    """The checkpoint and a name for it; a missing bundled model gets an error saying what to do."""
    if path is None:
        if not checkpoint.BUNDLED_QAT.is_file():
            raise checkpoint.CheckpointError(
                f"no --checkpoint given and the bundled QAT+pruned model {checkpoint.BUNDLED_QAT} is missing; "
                "pass --checkpoint CKPT.pt (e.g. from `python -m quant experiment`)")
        return checkpoint.load(None), f"bundled {checkpoint.BUNDLED_QAT.name}"
    return checkpoint.load(path), Path(path).name


def eval_classes(ckpt_classes: list[str], classes: list[str] | None) -> list[str]:
    """The classes to read: the checkpoint's, or the chosen subset of them, in checkpoint order."""
    if classes is None:
        return list(ckpt_classes)
    wanted = [english(c) for c in classes]
    unknown = [c for c in wanted if c not in ckpt_classes]
    if unknown:
        raise checkpoint.CheckpointError(
            f"the checkpoint knows classes {', '.join(ckpt_classes)}; it cannot be evaluated on {', '.join(unknown)}")
    return [c for c in ckpt_classes if c in wanted]


def predictions(ckpt: dict, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """True labels and predictions of the checkpoint's model, both as indices into its class names."""
    names = ckpt["class_names"]
    missing = [c for c in split.class_names if c not in names]
    if missing:
        raise checkpoint.CheckpointError(f"the checkpoint has no output for class(es) {', '.join(missing)}")
    to_ckpt = np.asarray([names.index(c) for c in split.class_names], dtype=np.int64)
    logits = predict(checkpoint.model_from(ckpt), split.images)
    return to_ckpt[split.labels], logits.argmax(1).numpy().astype(np.int64)


def score(ckpt: dict, split: Split) -> dict:
    """Accuracy, macro and per-class P/R/F1 and the confusion matrix over the checkpoint's classes."""
    return classification_metrics(*predictions(ckpt, split), ckpt["class_names"])


def evaluate(checkpoint_path: str | Path | None, data: str | Path, split: str = "val",
             classes: list[str] | None = None, limit: int | None = None,
             plots_dir: str | Path | None = None) -> dict:
    """Metrics of a checkpoint (None: the bundled QAT+pruned one) on `split` of `data`, JSON-able.

    With `plots_dir`, also writes confusion.png, curves.png (when the checkpoint has a history)
    and grid.png there.
    """
    if limit is not None and limit < 1:
        raise DataError(f"--limit {limit}: must be at least 1 image per class")
    ckpt, name = load_checkpoint(checkpoint_path)
    shape = ModelConfig.from_dict(ckpt["config"]).in_shape
    check_model_input(shape, name, data, split)
    s = read_split(data, split, eval_classes(ckpt["class_names"], classes), limit=limit, shape=shape)
    y_true, y_pred = predictions(ckpt, s)
    names = ckpt["class_names"]
    res = {"checkpoint": name, "arch": ckpt["config"]["arch"], "quantized": bool(ckpt["config"].get("quantized")),
           "split": split, "data": str(data), "skipped": s.skipped, "best_epoch": ckpt.get("best_epoch"),
           **classification_metrics(y_true, y_pred, names)}
    if plots_dir is not None:
        out = Path(plots_dir)
        title = f"{name} ({split})"
        plots = {"confusion": confusion_png(res["confusion"]["matrix"], names, out / "confusion.png", title)}
        if ckpt.get("history"):
            plots["curves"] = curves_png(ckpt["history"], out / "curves.png", ckpt.get("best_epoch"), name)
        idx = grid_indices(y_true, len(names))
        plots["grid"] = grid_png(crop(s.images[idx], shape), y_true[idx], y_pred[idx], names, out / "grid.png", title=title)
        res["plots"] = {k: str(v) for k, v in plots.items()}
    return res
