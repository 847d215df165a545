"""PNG plots: confusion matrix, training curves, and the paper's 5x8 grid of predictions.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no display needed)
and written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from common.atomic import atomic_write

RIGHT, WRONG = "#1a7f37", "#cf222e"


def save_png(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def confusion_png(cm: np.ndarray | list, class_names: list[str], path: str | Path, title: str = "") -> Path:
    """Counts in every cell, shaded by the row's share (recall), true classes down."""
    cm = np.asarray(cm, dtype=np.int64)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    fig = Figure(figsize=(1.1 * n + 2.2, 1.0 * n + 1.6))
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), class_names, rotation=30, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title}{' — ' if title else ''}accuracy {acc:.1%} of {cm.sum()}")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    return save_png(fig, path)


def curves_png(history: list[dict], path: str | Path, best_epoch: int | None = None, title: str = "") -> Path:
    """Loss and accuracy per epoch, train vs val, with the best (saved) epoch marked."""
    if not history:
        raise ValueError("no training history to plot")
    ep = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4))
    for k, (key, label) in enumerate((("loss", "loss (cross-entropy)"), ("acc", "accuracy"))):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.plot(ep, [h[f"train_{key}"] for h in history], "o-", ms=3, label="train")
        ax.plot(ep, [h[f"val_{key}"] for h in history], "o-", ms=3, label="val")
        if best_epoch is not None:
            best = next((h for h in history if h["epoch"] == best_epoch), None)
            ax.axvline(best_epoch, color="grey", ls="--", lw=1)
            if best is not None:
                ax.plot([best_epoch], [best[f"val_{key}"]], "*", color="black", ms=12,
                        label=f"best epoch {best_epoch}: {best[f'val_{key}']:.3f}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_png(fig, path)


def grid_indices(labels: np.ndarray, num_classes: int, count: int = 40, seed: int = 0) -> np.ndarray:
    """`count` images spread evenly over the classes (a seeded draw), ordered by class."""
    rng = np.random.default_rng(seed)
    per = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    picked: list[int] = []
    for k in range(max((len(p) for p in per), default=0)):  # round-robin keeps classes balanced
        picked += [int(p[k]) for p in per if k < len(p)]
        if len(picked) >= count:
            break
    picked = picked[:count]
    return np.asarray(sorted(picked, key=lambda i: (labels[i], i)), dtype=np.int64)


def grid_png(images: np.ndarray, labels: np.ndarray, preds: np.ndarray, class_names: list[str],
             path: str | Path, rows: int = 5, cols: int = 8, title: str = "") -> Path:
    """The paper's grid: uint8 (N, 3, H, W) images with true and predicted labels; wrong in red."""
    n = min(len(images), rows * cols)
    fig = Figure(figsize=(cols * 1.5, rows * 1.75))
    wrong = 0
    for k in range(rows * cols):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        ok = labels[k] == preds[k]
        wrong += not ok
        ax.imshow(np.asarray(images[k]).transpose(1, 2, 0))
        colour = RIGHT if ok else WRONG
        ax.set_title(f"true: {class_names[labels[k]]}\npred: {class_names[preds[k]]}", fontsize=8, color=colour,
                     fontweight="normal" if ok else "bold")
        for s in ax.spines.values():
            s.set_color(colour)
            s.set_linewidth(1 if ok else 3)
    fig.suptitle(f"{title}{' — ' if title else ''}{n - wrong}/{n} right, wrong ones in red", fontsize=11)
    fig.subplots_adjust(hspace=0.45, wspace=0.1)
    return save_png(fig, path)
