"""The CNNs, described once and built either as float torch modules or as Brevitas-quantized ones.

A `ModelConfig` is a list of `LayerSpec`s. `build(config)` makes the float twin when
`config.quantized` is false and the QAT model otherwise; both have the same parameter names, so a
float checkpoint loads into the quantized model. Each weighted layer is NP (dense) or P (pruned).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn

from quant.layers import ConfigError, Kind, kind_of

WEIGHTED = ("conv", "linear")
ARCH_DIR = Path(__file__).parent / "archs"


@dataclass
class LayerSpec:
    """One layer of a model description; which fields a kind takes is said by its unit in quant/layers.py."""

    kind: str  # conv | maxpool (pool) | avgpool | globalavgpool (gap) | residual | flatten | linear
    out: int = 0  # channels / features
    kernel: int | list[int] = 2  # conv kernel, or pool window: k, or [height, width]
    w_bits: int = 8
    a_bits: int = 8  # the output activation's width (after ReLU, or the pool's requantizer)
    cls: str = "NP"  # NP: dense; P: pruned to `sparsity`
    sparsity: float = 0.0
    relu: bool = True
    dropout: float = 0.0
    stride: int | list[int] = 1  # s, or [height, width]
    padding: int | str | list[int] = 0  # conv zero padding per side: p, [height, width], or "same" (odd kernels)
    groups: int = 1  # conv: input and output channels split into this many groups (= input channels: depthwise)
    bn: bool = False  # conv: batch norm after it, trained in float and folded before QAT
    per_channel: bool = False  # one power-of-two weight scale per output channel (contract rule 10)

    @property
    def unit(self) -> Kind:
        return kind_of(self.kind, f"layer ({self.kind})")


ARRAY_TEXT = re.compile(r"\d+x\d+(/\d+)?")  # the form of ModelConfig.array; hw.config checks its bounds


@dataclass
class ModelConfig:
    arch: str
    layers: list[LayerSpec]
    num_classes: int = 5
    in_shape: tuple[int, ...] = (3, 64, 64)  # C x H x W, or (F,) for a flat feature vector
    in_signed: bool = False  # int8 inputs q seen as q / 128 (else uint8 p seen as p / 256; contract rule 2)
    quantized: bool = False
    bn_folded: bool = False  # batch norm already folded into the convs (the QAT model and its float twin)
    # the PE array (RxC, or RxC/L with L sparse lanes) `bitstream-rtl` builds for this model when no
    # --array is given: its hardware folding, as FINN keeps a folding config beside a model; None:
    # the hardware's default
    array: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "model description", strict: bool = False) -> "ModelConfig":
        """Build from a dict (a checkpoint's record, or with `strict` an architecture file, where a kind
        takes only its own fields); one-line errors name the layer and the field."""
        if not isinstance(d, dict) or not isinstance(d.get("layers"), list) or not d["layers"]:
            raise ConfigError(f"{where}: needs a non-empty list 'layers' of {{\"kind\": ..., ...}} objects")
        top = {f.name for f in fields(cls)}
        unknown = set(d) - top
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(top))}")
        d = dict(d)
        d.setdefault("arch", Path(where).stem)
        d["layers"] = [_layer_from_dict(l, i, where, strict) for i, l in enumerate(d["layers"])]
        shape = d.get("in_shape", (3, 64, 64))
        if not isinstance(shape, (list, tuple)) or len(shape) not in (1, 3) or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ConfigError(f"{where}: field 'in_shape' must be [C, H, W] (or [F], a flat feature vector) of positive integers, got {shape!r}")
        if not isinstance(d.get("in_signed", False), bool):
            raise ConfigError(f"{where}: field 'in_signed' must be true or false, got {d['in_signed']!r}")
        d["in_shape"] = tuple(shape)
        if d.get("array") is not None and not (isinstance(d["array"], str) and ARRAY_TEXT.fullmatch(d["array"].strip())):
            raise ConfigError(f"{where}: field 'array' must be a PE array RxC or RxC/L (e.g. \"16x5\"), got {d['array']!r}")
        return cls(**d)

    def validate(self) -> "ModelConfig":
        for i, l in enumerate(self.layers):
            kind_of(l.kind, f"layer {i}").validate(l, f"layer {i} ({l.kind})")
        last = self.layers[-1]
        if last.kind != "linear" or last.out != self.num_classes:
            raise ConfigError(f"the last layer must be linear with {self.num_classes} outputs (one per class)")
        shapes(self)
        return self


LAYER_FIELDS = {f.name: f for f in fields(LayerSpec)}


def _layer_from_dict(d: dict, i: int, where: str, strict: bool) -> LayerSpec:
    if not isinstance(d, dict) or not isinstance(d.get("kind"), str):
        raise ConfigError(f"{where}: layer {i}: needs an object with a 'kind' string")
    unit = kind_of(d["kind"], f"{where}: layer {i}")
    for key, val in d.items():
        if key not in LAYER_FIELDS or (strict and key != "kind" and key not in unit.fields):
            raise ConfigError(f"{where}: layer {i} ({d['kind']}): unknown field {key!r}; a {unit.name} layer takes "
                              f"{', '.join(sorted(unit.fields)) or 'no fields'}")
        default = LAYER_FIELDS[key].default
        ok = {bool: lambda v: isinstance(v, bool), float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              int: lambda v: isinstance(v, int) and not isinstance(v, bool), str: lambda v: isinstance(v, str)}
        if key == "kind":
            continue
        if key in ("kernel", "stride", "padding"):
            good = (key == "padding" and val == "same") or ok[int](val) or (
                isinstance(val, list) and len(val) == 2 and all(ok[int](v) for v in val))
        else:
            good = ok[type(default)](val)
        if not good:
            raise ConfigError(f"{where}: layer {i} ({d['kind']}): field {key!r} has the wrong type ({val!r})")
    return LayerSpec(**d)


def arch_files() -> dict[str, Path]:
    """The named architectures shipped with the package: quant/archs/<name>.json."""
    return {p.stem: p for p in sorted(ARCH_DIR.glob("*.json"))}


def load_arch(path: str | Path) -> ModelConfig:
    """A model description file (JSON, or YAML when PyYAML is installed)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the architecture file ({e.strerror or e})") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path}: YAML needs PyYAML (`pip install pyyaml`), or write the file as JSON") from None
        parse, errors = yaml.safe_load, (yaml.YAMLError,)
    else:
        parse, errors = json.loads, (ValueError,)
    try:
        doc = parse(text)
    except errors as e:  # yaml's MarkedYAMLError says what and where apart, over several lines
        mark = getattr(e, "problem_mark", None)
        why = f"{e.problem}, line {mark.line + 1}" if mark is not None else str(e).splitlines()[0]
        raise ConfigError(f"{path}: not a valid architecture file ({why})") from None
    return ModelConfig.from_dict(doc, str(path), strict=True)


def apply_overrides(cfg: ModelConfig, config_file: str | Path) -> ModelConfig:
    """Per-weighted-layer overrides from a JSON file ({"layers": {"2": {"w_bits": 4, ...}}}), in place."""
    try:
        doc = json.loads(Path(config_file).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{config_file}: cannot read the model config ({e})") from None
    weighted = [l for l in cfg.layers if l.kind in WEIGHTED]
    for key, val in doc.get("layers", {}).items():
        i = int(key)
        if not 0 <= i < len(weighted):
            raise ConfigError(f"{config_file}: weighted layer {i} does not exist (0..{len(weighted) - 1})")
        unknown = set(val) - {"w_bits", "a_bits", "cls", "sparsity", "per_channel"}
        if unknown:
            raise ConfigError(f"{config_file}: layer {i}: unknown keys {sorted(unknown)}")
        for k, v in val.items():
            setattr(weighted[i], k, v)
    return cfg


def named_config(arch: str, config_file: str | Path | None = None, sparsity: float | None = None) -> ModelConfig:
    """An architecture by name (or a description file), with per-layer overrides from a JSON file."""
    known = arch_files()
    if arch in known:
        cfg = load_arch(known[arch])
    elif Path(arch).suffix in (".json", ".yaml", ".yml"):
        cfg = load_arch(arch)
    else:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(known)}, or give a .json/.yaml description file")
    if sparsity is not None:
        for l in cfg.layers:
            if l.cls == "P":
                l.sparsity = sparsity
    if config_file is not None:
        apply_overrides(cfg, config_file)
    return cfg.validate()


def shapes(config: ModelConfig) -> list[tuple[int, ...]]:
    """The output shape of every layer, for the (C, H, W) input."""
    shape: tuple[int, ...] = tuple(config.in_shape)
    out = []
    for i, l in enumerate(config.layers):
        where = f"{config.arch}: layer {i} ({l.kind})"
        shape = kind_of(l.kind, where).out_shape(l, shape, where)
        if min(shape) < 1:
            raise ConfigError(f"{where}: the feature map shrinks to {shape}; use a larger input, padding or fewer layers")
        out.append(shape)
    return out


class Net(nn.Module):
    """A sequential CNN; `weighted` lists its conv/linear modules in order (for pruning masks)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        self.inp = _input_quant(config.in_signed) if config.quantized else nn.Identity()
        self.features = nn.Sequential(*_modules(config))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(self.inp(x))
        return y.value if hasattr(y, "value") else y

    @property
    def weighted(self) -> list[nn.Module]:
        return [m for m in self.features if isinstance(m, (nn.Conv2d, nn.Linear))]


def _input_quant(signed: bool) -> nn.Module:
    import brevitas.nn as qnn

    from quant.quantizers import InputQuant, SignedInputQuant
    return qnn.QuantIdentity(act_quant=SignedInputQuant if signed else InputQuant, return_quant_tensor=True)


def _modules(config: ModelConfig) -> list[nn.Module]:
    mods: list[nn.Module] = []
    shape: tuple[int, ...] = tuple(config.in_shape)
    for i, (l, out) in enumerate(zip(config.layers, shapes(config))):
        mods += kind_of(l.kind, f"layer {i}").modules(l, shape, config.quantized, i == len(config.layers) - 1, config.bn_folded)
        shape = out
    return mods


def build(config: ModelConfig) -> Net:
    return Net(config)


def quantized_twin(config: ModelConfig) -> ModelConfig:
    """The QAT model of a float config; its batch norm is folded (contract rule 12)."""
    return replace(config, quantized=True, bn_folded=any(l.bn for l in config.layers),
                   layers=[replace(l) for l in config.layers])
