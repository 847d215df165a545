"""Classification metrics in numpy: confusion matrix, accuracy, per-class and macro P/R/F1.

Conventions follow scikit-learn's defaults: rows of the confusion matrix are true classes and
columns predictions; a ratio with a zero denominator is 0; macro averages are unweighted means
over the classes that occur in the labels or the predictions (macro F1 is the mean of per-class
F1, not the F1 of macro P and R).
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: [true, predicted]."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"labels {y_true.shape} and predictions {y_pred.shape} differ in shape")
    for name, y in (("label", y_true), ("prediction", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"a {name} outside 0..{num_classes - 1}")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def from_confusion(cm: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, macro and per-class precision/recall/F1 of a confusion matrix, JSON-able."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.shape != (len(class_names), len(class_names)):
        raise ValueError(f"a {cm.shape} confusion matrix for {len(class_names)} classes")
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = (support + predicted) > 0
    total = int(cm.sum())

    def macro(v: np.ndarray) -> float:
        return float(v[present].mean()) if present.any() else 0.0

    return {
        "images": total,
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "precision_macro": macro(precision),
        "recall_macro": macro(recall),
        "f1_macro": macro(f1),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(class_names)},
        "confusion": {"classes": list(class_names), "matrix": cm.tolist()},
    }


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    """Every metric of `from_confusion` for integer labels and predictions."""
    return from_confusion(confusion_matrix(y_true, y_pred, len(class_names)), class_names)


def format_confusion(cm: list[list[int]] | np.ndarray, classes: list[str]) -> str:
    """The confusion matrix as a text table, true classes down, predictions across."""
    cm = np.asarray(cm, dtype=np.int64)
    corner = "true\\pred"
    w = max([len(c) for c in classes] + [len(str(int(cm.max()))) if cm.size else 1])
    w0 = max([len(c) for c in classes] + [len(corner)])
    lines = [f"{corner:<{w0}}  " + " ".join(f"{c:>{w}}" for c in classes)]
    lines += [f"{c:<{w0}}  " + " ".join(f"{int(v):>{w}}" for v in row) for c, row in zip(classes, cm)]
    return "\n".join(lines)


def format_metrics(res: dict) -> str:
    """A readable summary: what was evaluated, headline metrics, per-class table, confusion matrix."""
    out = []
    if "checkpoint" in res:
        kind = "quantized" if res.get("quantized") else "float"
        out.append(f"checkpoint {res['checkpoint']} ({res.get('arch', '?')}, {kind})"
                   + (f" on {res['split']} split of {res['data']}" if "split" in res else ""))
    out.append(f"images {res['images']}  accuracy {res['accuracy']:.4f}  precision {res['precision_macro']:.4f}  "
               f"recall {res['recall_macro']:.4f}  F1 {res['f1_macro']:.4f}  (macro)")
    per = res["per_class"]
    w = max(len(c) for c in per) if per else 5
    out.append("")
    out.append(f"{'class':<{w}}  precision  recall      f1  support")
    out += [f"{c:<{w}}  {m['precision']:>9.4f}  {m['recall']:>6.4f}  {m['f1']:>6.4f}  {m['support']:>7d}" for c, m in per.items()]
    out.append("")
    out.append(format_confusion(res["confusion"]["matrix"], res["confusion"]["classes"]))
    if res.get("plots"):
        out.append("")
        out.append("plots: " + ", ".join(res["plots"].values()))
    return "\n".join(out)
