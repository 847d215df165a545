"""Shared helpers of the quant tests: tiny generated image folders and tiny trained checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from quant.data import DEFAULT_CLASSES, Split, read_split

def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (72, 72), seed: int = 0) -> Path:
    """A random image in `mode` (RGB, L, RGBA, CMYK, P, I;16), as PNG or JPEG by the suffix."""
    rng = np.random.default_rng(seed)
    w, h = size
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode == "RGBA":
        img = Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (h, w, 1), dtype=np.uint8)]))
    else:
        img = Image.fromarray(rgb).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def class_images(root: Path, classes=DEFAULT_CLASSES, per_class: int = 3, seed: int = 0,
                 size: tuple[int, int] = (72, 72)) -> Path:
    """`root/<class>/<class>-<i>.png` random RGB images; returns root."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{name}-{i}.png", size=size, seed=seed * 100_000 + c * 1000 + i)
    return root


def arch_file(path: Path, layers: list[dict], **top) -> Path:
    """An architecture description file for `--arch FILE.json`: {"layers": [...], **top}."""
    path.write_text(json.dumps({"layers": layers, **top}))
    return path


def split_dataset(root: Path, classes=DEFAULT_CLASSES, per_class: dict | None = None) -> Path:
    """`root/{train,val}/<class>/*.png` with a few images per class and split."""
    per_class = per_class or {"train": 4, "val": 2}
    for s, (split, n) in enumerate(per_class.items()):
        class_images(root / split, classes, n, seed=s + 1)
    return root


def learnable_split(n_per_class: int = 8, classes=DEFAULT_CLASSES, seed: int = 0) -> Split:
    """Images whose class is its mean colour (class i is bright in channel i % 3, with a level by i // 3)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(len(classes)):
        base = np.full((3, 72, 72), 40 + 60 * (c // 3), dtype=np.int64)
        base[c % 3] = 200
        for _ in range(n_per_class):
            images.append(np.clip(base + rng.integers(-30, 31, base.shape), 0, 255).astype(np.uint8))
            labels.append(c)
    files = [f"gen/{classes[l]}/{i}.png" for i, l in enumerate(labels)]
    return Split(np.stack(images), np.asarray(labels, dtype=np.int64), list(classes), files)


def train_tiny(data: Path, out: Path, epochs: int = 1, quantized: bool = False, init: dict | None = None,
               **train_kw) -> dict:
    """A paper-model checkpoint trained for `epochs` on the train split of a (tiny) data folder."""
    from quant.model import named_config, quantized_twin
    from quant.train import TrainConfig, train
    tr = read_split(data, "train")
    va = read_split(data, "val", tr.class_names)
    cfg = named_config("paper")
    tc = TrainConfig(epochs=epochs, batch=16, patience=epochs, prune_epochs=1, **train_kw)
    return train(quantized_twin(cfg) if quantized else cfg, tr, va, tc, out, init=init, progress=False)
