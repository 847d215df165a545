"""Checkpoints: weights plus everything needed to rebuild, evaluate and trace the model.

A checkpoint is a dict saved with torch.save: format tag, model config, class names, state dict,
training history, best epoch, metrics, data set counts and hash, git revision. The bundled ones
live in quant/checkpoints/ so every command runs out of the box: the default model's pair (the
paper CNN) in checkpoints/default/, the edge model's beside it.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path

import torch

from common.atomic import atomic_write
from quant.model import ConfigError, ModelConfig, Net, build

FORMAT = "cnn-codesign-checkpoint/1"
BUNDLED_DIR = Path(__file__).parent / "checkpoints"
BUNDLED_FLOAT = BUNDLED_DIR / "default" / "paper_float.pt"
BUNDLED_QAT = BUNDLED_DIR / "default" / "paper_qat_pruned.pt"


class CheckpointError(ValueError):
    """A file that is not a checkpoint of this toolkit."""


# the fields every checkpoint has, and the types of the optional ones the commands read
REQUIRED = {"config": dict, "class_names": list, "state_dict": dict}
OPTIONAL = {"history": list, "best_epoch": int, "metrics": dict, "train": dict, "data": dict, "init": dict,
            "teachers": list, "train_time_s": (int, float)}


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save(path: str | Path, ckpt: dict) -> Path:
    ckpt = {"format": FORMAT, "git": git_revision(), **ckpt}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def load(path: str | Path | None = None) -> dict:
    """Read a checkpoint (the bundled QAT+pruned one when `path` is None)."""
    path = Path(path) if path is not None else BUNDLED_QAT
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint (train one with `python -m quant train`)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({e.__class__.__name__}); re-train or re-download it") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of this toolkit (no '{FORMAT}' tag); train one with `python -m quant train`")
    return check_schema(ckpt, str(path))


def check_schema(ckpt: dict, where: str) -> dict:
    """Return `ckpt` when its fields have their types, its config is a valid model with one output
    per class name and its state dict maps names to tensors; else a CheckpointError naming the field."""
    fix = "; re-train it with `python -m quant train`"
    for name, kind in (*REQUIRED.items(), *OPTIONAL.items()):
        if (name in REQUIRED or name in ckpt) and (not isinstance(ckpt.get(name), kind) or isinstance(ckpt[name], bool)):
            what = "missing" if name not in ckpt else f"a {type(ckpt[name]).__name__}"
            raise CheckpointError(f"{where}: the checkpoint's field {name!r} is {what}{fix}")
    try:
        cfg = ModelConfig.from_dict(ckpt["config"], f"{where}: the checkpoint's config").validate()
    except (ConfigError, TypeError) as e:
        raise CheckpointError(str(e) if isinstance(e, ConfigError) else f"{where}: the checkpoint's config: {e}") from None
    names = ckpt["class_names"]
    if len(names) != cfg.num_classes or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{where}: the checkpoint's 'class_names' must be {cfg.num_classes} names, one per output{fix}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["state_dict"].items()):
        raise CheckpointError(f"{where}: the checkpoint's 'state_dict' must map parameter names to tensors{fix}")
    return ckpt


def model_from(ckpt: dict) -> Net:
    """The model a checkpoint describes, with its weights loaded, in eval mode."""
    model = build(ModelConfig.from_dict(ckpt["config"]))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit its own config: {str(e).splitlines()[0]}") from None
    return model.eval()


def file_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def float_twin(path: str | Path) -> Path | None:
    """The float checkpoint a QAT checkpoint was fine-tuned from, when it is on disk: the `init`
    path the checkpoint records (quant train --qat --init; a relative one also beside the QAT
    checkpoint, as `quant experiment` records it) when its hash still matches, else the sibling
    named by the bundled convention (`NAME_qat*.pt` beside `NAME_float.pt`); None when neither exists."""
    path = Path(path)
    try:
        init = load(path).get("init", {})
    except Exception:  # the caller reports an unreadable checkpoint itself
        init = {}
    candidates = []
    if init.get("path"):
        rec = Path(init["path"])
        for c in ([rec] if rec.is_absolute() else [rec, path.parent / rec]):
            if c.is_file() and (not init.get("sha256") or file_hash(c) == init["sha256"]):
                candidates.append(c)
    if "_qat" in path.stem:
        candidates.append(path.with_name(path.stem.split("_qat")[0] + "_float.pt"))
    return next((c for c in candidates if c.is_file() and c.resolve() != path.resolve()), None)

