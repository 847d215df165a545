"""ImageFolder-style data: folders of images per class, decoded once into uint8 tensors.

Layouts: `DIR/{train,val[,test]}/<class>/*` (splits), or `DIR/<class>/*` (one folder, each image's
split drawn from a hash of its own name and a seed). Animals-10's Italian folder names are mapped to
English. Images become 64x64 RGB uint8 and reach the model as p/256 (contract rule 2); evaluation
centre-crops, training crops at random.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

SIZE = 64
DEFAULT_CLASSES = ("cat", "cow", "elephant", "horse", "sheep")
ITALIAN = {
    "gatto": "cat", "mucca": "cow", "elefante": "elephant", "cavallo": "horse", "pecora": "sheep",
    "cane": "dog", "farfalla": "butterfly", "gallina": "chicken", "ragno": "spider", "scoiattolo": "squirrel",
}
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


class DataError(ValueError):
    """Bad input data: the message names the path and what to do."""


@dataclass
class Split:
    """Decoded images of one split: uint8 (N, 3, S, S) with S >= 64, labels, class names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    files: list[str]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.class_names)}


def english(name: str) -> str:
    return ITALIAN.get(name.lower(), name.lower())


def class_dirs(folder: Path) -> dict[str, Path]:
    """English class name -> its folder, for every sub-folder of `folder`."""
    out: dict[str, Path] = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        name = english(d.name)
        if name in out:
            raise DataError(f"{folder}: folders {out[name].name!r} and {d.name!r} both mean class {name!r}; keep one")
        out[name] = d
    return out


def resolve_classes(found: dict[str, Path], classes: list[str] | None, where: Path) -> list[str]:
    if classes is None:
        default = [c for c in DEFAULT_CLASSES if c in found]
        if len(default) < len(DEFAULT_CLASSES):
            return sorted(found)
        extra = sorted(found[c].name for c in found if c not in DEFAULT_CLASSES)
        if extra:
            warnings.warn(f"{where}: ignored folder(s) {', '.join(extra)}: not among the classes "
                          f"{', '.join(DEFAULT_CLASSES)} (pass --classes to use them)", stacklevel=3)
        return default
    wanted = [english(c) for c in classes]
    missing = [c for c in wanted if c not in found]
    if missing:
        raise DataError(f"{where}: no folder for class(es) {', '.join(missing)}; found {', '.join(sorted(found)) or 'none'}")
    return wanted


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Grey, palette, RGBA, CMYK and 16-bit images become 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def fit_size(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is `size` (keeping 72-px sources as they are), centre-crop square."""
    h, w = arr.shape[:2]
    if min(h, w) != size:
        s = size / min(h, w)
        arr = np.asarray(Image.fromarray(arr).resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR))
        h, w = arr.shape[:2]
    t, l = (h - size) // 2, (w - size) // 2
    return arr[t:t + size, l:l + size]


def load_image(path: Path, size: int) -> np.ndarray:
    """One file as uint8 (3, size, size); raises DataError naming the file if it is not an image or
    is over PIL's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                arr = to_rgb_uint8(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: too large to decode ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e.__class__.__name__})") from None
    return fit_size(arr, size).transpose(2, 0, 1).copy()


def read_folder(folder: Path, classes: list[str] | None = None, size: int = 72,
                limit: int | None = None, keep: Callable[[Path], bool] | None = None) -> Split:
    """Decode every image under `folder/<class>/` (those `keep` accepts); unreadable files are skipped
    with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (give --data a folder of class folders, or of train/val/test)")
    found = class_dirs(folder)
    if not found:
        raise DataError(f"{folder}: no class folders inside (expected {folder}/<class>/<image>)")
    names = resolve_classes(found, classes, folder)
    images, labels, files, skipped = [], [], [], 0
    for i, name in enumerate(names):
        listed = sorted(p for p in found[name].iterdir() if p.is_file() and not p.name.startswith("."))
        paths = [p for p in listed if keep(p)] if keep else listed
        n_before = len(labels)
        for p in paths:
            if limit is not None and len(labels) - n_before >= limit:
                break
            try:
                images.append(load_image(p, size))
            except DataError as e:
                warnings.warn(f"skipped {e}", stacklevel=2)
                skipped += 1
                continue
            labels.append(i)
            files.append(str(p))
        if len(labels) == n_before and (paths or not listed):  # a drawn split may hold none of a class
            raise DataError(f"{found[name]}: no readable images for class {name!r}")
    stacked = np.stack(images) if images else np.zeros((0, 3, size, size), dtype=np.uint8)
    return Split(stacked, np.asarray(labels, dtype=np.int64), names, files, skipped)


def has_splits(root: Path) -> bool:
    return any((root / s).is_dir() for s in SPLITS)


def check_same_classes(root: Path) -> None:
    """Every split folder must hold the same class folders."""
    sets = {s: set(class_dirs(root / s)) for s in SPLITS if (root / s).is_dir()}
    ref_name, ref = next(iter(sets.items()))
    for s, names in sets.items():
        if names != ref:
            diff = sorted(names ^ ref)
            raise DataError(f"{root}: splits {ref_name!r} and {s!r} hold different classes ({', '.join(diff)}); make them match or pass --classes")


def drawn_split(path: Path, seed: int, val_fraction: float) -> str:
    """The split of one image of a single-folder data set, from a hash of its class folder, its name
    and `seed` alone: adding, removing or leaving out other files or classes never moves it."""
    h = hashlib.sha256(f"{seed}:{path.parent.name}/{path.name}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    return "val" if u < val_fraction else "test" if u < 2 * val_fraction else "train"


def read_split(data: str | Path, split: str, classes: list[str] | None = None, size: int = 72,
               limit: int | None = None, seed: int = 0, val_fraction: float = 0.1) -> Split:
    """One split of a data folder. In a folder without train/val/test, about `val_fraction` of each
    class is val, as many test, the rest train, drawn per image by `drawn_split`.

    `limit` caps the images per class. Returns uncropped `size` px images; use `centre_crop`.
    """
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder (download Animals-10 and give its folder with --data; see README)")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if has_splits(root):
        if not (root / split).is_dir():
            raise DataError(f"{root}: no {split!r} split folder (found {', '.join(s for s in SPLITS if (root / s).is_dir())})")
        if classes is None:  # with --classes, each split is checked for the chosen ones
            check_same_classes(root)
        return read_folder(root / split, classes, size, limit)
    s = read_folder(root, classes, size, limit, keep=lambda p: drawn_split(p, seed, val_fraction) == split)
    if not len(s):
        raise DataError(f"{root}: no image falls in the {split!r} split (seed {seed}); add images, "
                        f"or sort them into {root}/train, val and test folders")
    return s


def centre_crop(images: np.ndarray, size: int = SIZE) -> np.ndarray:
    h, w = images.shape[-2:]
    t, l = (h - size) // 2, (w - size) // 2
    return images[..., t:t + size, l:l + size]


def check_model_input(shape, model) -> None:
    """Refuse, before any image is read, a model whose input is not what this loader makes: 3 x SIZE x
    SIZE RGB centre crops. `model` names it in the message (a path, or the architecture)."""
    shape = tuple(int(s) for s in shape)
    if shape != (3, SIZE, SIZE):
        raise DataError(f"{model} takes {'x'.join(map(str, shape))} images (C x H x W), but the data loader makes "
                        f"3x{SIZE}x{SIZE} RGB centre crops, so only a model with a 3x{SIZE}x{SIZE} input runs on --data "
                        f"(in an architecture file: \"in_shape\": [3, {SIZE}, {SIZE}])")


def load_split(data: str | Path, split: str, limit: int | None = None,
               classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """uint8 (N, 3, 64, 64) centre-cropped images, labels and class names of one split."""
    s = read_split(data, split, classes, limit=limit)
    return np.ascontiguousarray(centre_crop(s.images)), s.labels, s.class_names


def dataset_hash(split: Split) -> str:
    """A short hash of the file names and labels, recorded in checkpoints."""
    h = hashlib.sha256()
    for f, l in zip(split.files, split.labels):
        h.update(f"{Path(f).name}:{l}\n".encode())
    return h.hexdigest()[:16]
