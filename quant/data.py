"""ImageFolder-style data: folders of images per class, decoded once into uint8 tensors.

Layouts: `DIR/{train,val[,test]}/<class>/*` (splits), or `DIR/<class>/*` (one folder, each image's
split drawn from a hash of its own name and a seed). Animals-10's Italian folder names are mapped to
English. Images are read at the model's own input shape C x H x W (grey when C is 1, RGB when 3) and
reach the model as p/256 (contract rule 2). A 3x64x64 model reads 72-px images and centre-crops 64
(training crops at random); any other shape reads its H x W directly, so images already at that size
pass untouched. Tensors that are not images come from `DIR/<split>.npz` (x: N x shape int8/uint8, y, classes).
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
DEFAULT_SHAPE = (3, SIZE, SIZE)
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
    """Decoded images of one split: integers (N, C, H, W) at the source size (`source_size`), labels, class names."""

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


def to_rgb_uint8(img: Image.Image, channels: int = 3) -> np.ndarray:
    """Grey, palette, RGBA, CMYK and 16-bit images become 8-bit RGB (H, W, 3), or grey (H, W, 1) for one channel."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if channels == 1:
        return np.asarray(img.convert("L"), dtype=np.uint8)[:, :, None]
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def hw_of(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a size given as one int (a square) or a pair."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def fit_size(arr: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize so the image just covers `size` (H, W) (an int: a square), keeping its aspect ratio;
    centre-crop to it. An image already at that size passes untouched."""
    th, tw = hw_of(size)
    h, w = arr.shape[:2]
    s = max(th / h, tw / w)  # 1: the image already just covers H x W
    if s != 1:
        img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
        arr = np.asarray(img.resize((max(tw, round(w * s)), max(th, round(h * s))), Image.BILINEAR))
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        h, w = arr.shape[:2]
    t, l = (h - th) // 2, (w - tw) // 2
    return arr[t:t + th, l:l + tw]


def source_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """The (H, W) images are decoded at for a model input `shape`: 72 x 72 for the 3x64x64 models
    (evaluation centre-crops 64, training crops at random), the model's own H x W otherwise."""
    if tuple(shape) == DEFAULT_SHAPE:
        return (72, 72)
    return (int(shape[1]), int(shape[2]))


def load_image(path: Path, size: int | tuple[int, int], channels: int = 3) -> np.ndarray:
    """One file as uint8 (channels, H, W); raises DataError naming the file if it is not an image or
    is over PIL's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                arr = to_rgb_uint8(img, channels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: too large to decode ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e.__class__.__name__})") from None
    return fit_size(arr, size).transpose(2, 0, 1).copy()


def read_folder(folder: Path, classes: list[str] | None = None, size: int | tuple[int, int] = 72,
                limit: int | None = None, keep: Callable[[Path], bool] | None = None, channels: int = 3) -> Split:
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
        entries = sorted(p for p in found[name].iterdir() if not p.name.startswith("."))
        for p in entries:
            if not p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:  # a folder named *.jpg, a broken or looping link
                warnings.warn(f"skipped {p}: not a readable file ({'a folder' if p.is_dir() else 'a broken or looping link'})",
                              stacklevel=2)
                skipped += 1
        listed = [p for p in entries if p.is_file()]
        paths = [p for p in listed if keep(p)] if keep else listed
        n_before = len(labels)
        for p in paths:
            if limit is not None and len(labels) - n_before >= limit:
                break
            try:
                images.append(load_image(p, size, channels))
            except DataError as e:
                warnings.warn(f"skipped {e}", stacklevel=2)
                skipped += 1
                continue
            labels.append(i)
            files.append(str(p))
        if len(labels) == n_before and (paths or not listed):  # a drawn split may hold none of a class
            raise DataError(f"{found[name]}: no readable images for class {name!r}")
    th, tw = hw_of(size)
    stacked = np.stack(images) if images else np.zeros((0, channels, th, tw), dtype=np.uint8)
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


def read_npz(path: Path, classes: list[str] | None, shape: tuple[int, ...] | None, limit: int | None) -> Split:
    """A split of tensors that are not images: `x` (N x shape, int8 or uint8: the model's integer
    input), `y` (N labels) and optionally `classes` (names, in label order)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise DataError(f"{path}: needs arrays 'x' (N x C x H x W, int8 or uint8) and 'y' (N labels); found {', '.join(z.files) or 'none'}")
            x, y = z["x"], z["y"]
            names = [str(c) for c in z["classes"]] if "classes" in z else None
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if x.dtype not in (np.int8, np.uint8):
        raise DataError(f"{path}: 'x' holds {x.dtype}; it must hold the model's integer input as int8 or uint8")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise DataError(f"{path}: 'y' must be {len(x)} non-negative integer labels, one per row of 'x' (got shape {y.shape}, {y.dtype})")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise DataError(f"{path}: 'x' holds {'x'.join(map(str, x.shape[1:]))} tensors, but the model takes "
                        f"{'x'.join(map(str, shape))}")
    n_classes = int(y.max()) + 1 if len(y) else 0
    names = names or [str(i) for i in range(n_classes)]
    if len(names) < n_classes:
        raise DataError(f"{path}: 'classes' names {len(names)} classes, but 'y' has labels up to {n_classes - 1}")
    if classes is not None:
        missing = [c for c in classes if c not in names]
        if missing:
            raise DataError(f"{path}: no class(es) {', '.join(missing)}; the file has {', '.join(names)}")
        remap = np.full(len(names), -1, dtype=np.int64)
        remap[[names.index(c) for c in classes]] = np.arange(len(classes))
        keep = remap[y] >= 0
        x, y, names = x[keep], remap[y[keep]], list(classes)
    if limit is not None:
        keep = np.concatenate([np.flatnonzero(y == i)[:limit] for i in range(len(names))]) if len(y) else np.zeros(0, int)
        keep.sort()
        x, y = x[keep], y[keep]
    if not len(y):
        raise DataError(f"{path}: holds no tensors{' for the chosen classes' if classes else ''}")
    return Split(np.ascontiguousarray(x), np.asarray(y, dtype=np.int64), names, [f"{path}[{i}]" for i in range(len(y))])


def read_split(data: str | Path, split: str, classes: list[str] | None = None, size: int | tuple[int, int] = 72,
               limit: int | None = None, seed: int = 0, val_fraction: float = 0.1,
               shape: tuple[int, ...] | None = None) -> Split:
    """One split of a data folder. In a folder without train/val/test, about `val_fraction` of each
    class is val, as many test, the rest train, drawn per image by `drawn_split`. `DIR/<split>.npz`,
    when it exists, is read instead of images (`read_npz`).

    With `shape` (the model's C x H x W) images are decoded at `source_size(shape)` with C channels;
    without it at `size` px RGB. `limit` caps the images per class. Use `crop` for the model's input.
    """
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder (give --data a folder of class folders, of train/val/test, or of <split>.npz files)")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if (root / f"{split}.npz").is_file():
        return read_npz(root / f"{split}.npz", classes, shape, limit)
    channels = 3
    if shape is not None:
        check_image_shape(shape, root)
        size, channels = source_size(shape), int(shape[0])
    if has_splits(root):
        if not (root / split).is_dir():
            raise DataError(f"{root}: no {split!r} split folder (found {', '.join(s for s in SPLITS if (root / s).is_dir())})")
        if classes is None:  # with --classes, each split is checked for the chosen ones
            check_same_classes(root)
        return read_folder(root / split, classes, size, limit, channels=channels)
    s = read_folder(root, classes, size, limit, keep=lambda p: drawn_split(p, seed, val_fraction) == split, channels=channels)
    if not len(s):
        raise DataError(f"{root}: no image falls in the {split!r} split (seed {seed}); add images, "
                        f"or sort them into {root}/train, val and test folders")
    return s


def centre_crop(images: np.ndarray, size: int | tuple[int, int] = SIZE) -> np.ndarray:
    th, tw = hw_of(size)
    h, w = images.shape[-2:]
    t, l = (h - th) // 2, (w - tw) // 2
    return images[..., t:t + th, l:l + tw]


def crop(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The model's input from a split's images (centre crop to H x W); tensors pass as they are."""
    if len(shape) != 3 or images.shape[1:] == tuple(shape):
        return images
    return centre_crop(images, (int(shape[1]), int(shape[2])))


def check_image_shape(shape, where) -> None:
    """Images can feed a C x H x W model with C = 1 (grey) or 3 (RGB); anything else needs .npz tensors."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DataError(f"{where}: the model takes {'x'.join(map(str, shape))} inputs, which are not grey (1xHxW) or RGB "
                        f"(3xHxW) images; give --data a folder with <split>.npz files holding 'x' (N x "
                        f"{'x'.join(map(str, shape))} int8/uint8) and 'y'")


def check_model_input(shape, model, data: str | Path | None = None, split: str | None = None) -> None:
    """Refuse, before any image is read, a model input the data cannot feed: images make grey or RGB
    C x H x W inputs; other shapes (a flat feature vector, C > 3) need `DIR/<split>.npz` tensors.
    `model` names it in the message (a path, or the architecture)."""
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise DataError(f"{model} has no usable input shape ({shape})")
    if data is not None and split is not None and (Path(data) / f"{split}.npz").is_file():
        return
    check_image_shape(shape, model)


def load_split(data: str | Path, split: str, limit: int | None = None, classes: list[str] | None = None,
               shape: tuple[int, ...] = DEFAULT_SHAPE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The model's integer inputs (N, *shape) of one split (centre-cropped images, or .npz tensors),
    labels and class names."""
    s = read_split(data, split, classes, limit=limit, shape=shape)
    return np.ascontiguousarray(crop(s.images, shape)), s.labels, s.class_names


def dataset_hash(split: Split) -> str:
    """A short hash of the file names and labels, recorded in checkpoints."""
    h = hashlib.sha256()
    for f, l in zip(split.files, split.labels):
        h.update(f"{Path(f).name}:{l}\n".encode())
    return h.hexdigest()[:16]
