"""The CNNs, described once and built either as float torch modules or as Brevitas-quantized ones.

A `ModelConfig` is a list of `LayerSpec`s. `build(config)` makes the float twin when
`config.quantized` is false and the QAT model otherwise; both have the same parameter names, so a
float checkpoint loads into the quantized model. Each weighted layer is NP (dense) or P (pruned).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

WEIGHTED = ("conv", "linear")


class ConfigError(ValueError):
    """A model description that the toolkit cannot build."""


@dataclass
class LayerSpec:
    kind: str  # conv | pool | flatten | linear
    out: int = 0  # channels / features
    kernel: int = 2  # conv kernel, or pool window
    w_bits: int = 8
    a_bits: int = 8  # the output activation's width (after ReLU)
    cls: str = "NP"  # NP: dense; P: pruned to `sparsity`
    sparsity: float = 0.0
    relu: bool = True
    dropout: float = 0.0


@dataclass
class ModelConfig:
    arch: str
    layers: list[LayerSpec]
    num_classes: int = 5
    in_shape: tuple[int, int, int] = (3, 64, 64)
    quantized: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["layers"] = [LayerSpec(**l) for l in d["layers"]]
        d["in_shape"] = tuple(d["in_shape"])
        return cls(**d)

    def validate(self) -> "ModelConfig":
        for i, l in enumerate(self.layers):
            where = f"layer {i} ({l.kind})"
            if l.kind not in ("conv", "pool", "flatten", "linear"):
                raise ConfigError(f"{where}: unknown kind {l.kind!r}; use conv, pool, flatten or linear")
            if l.kind in WEIGHTED:
                if not (2 <= l.w_bits <= 8 and 2 <= l.a_bits <= 8):
                    raise ConfigError(f"{where}: bit widths must be 2..8, got w_bits={l.w_bits} a_bits={l.a_bits}")
                if l.cls not in ("NP", "P"):
                    raise ConfigError(f"{where}: cls must be NP or P, got {l.cls!r}")
                if not 0.0 <= l.sparsity < 1.0 or (l.cls == "NP" and l.sparsity):
                    raise ConfigError(f"{where}: sparsity {l.sparsity} must be in [0, 1), and 0 for NP layers")
        last = self.layers[-1]
        if last.kind != "linear" or last.out != self.num_classes:
            raise ConfigError(f"the last layer must be linear with {self.num_classes} outputs (one per class)")
        return self


def paper_config(hidden: int = 128, second_pool: bool = True, sparsity: float = 0.9,
                 hidden_w_bits: int = 4, num_classes: int = 5) -> ModelConfig:
    """The paper's CNN: conv 10@3x3, pool, conv 20@5x5, (pool), hidden linear (P), linear 5 (NP)."""
    layers = [LayerSpec("conv", 10, 3), LayerSpec("pool", kernel=2), LayerSpec("conv", 20, 5)]
    if second_pool:
        layers.append(LayerSpec("pool", kernel=2))
    layers += [LayerSpec("flatten"),
               LayerSpec("linear", hidden, w_bits=hidden_w_bits, cls="P", sparsity=sparsity, dropout=0.1),
               LayerSpec("linear", num_classes, relu=False)]
    return ModelConfig("paper" if second_pool else "paper-nopool2", layers, num_classes)


def vgg_config(num_classes: int = 5, sparsity: float = 0.9) -> ModelConfig:
    """A larger variant: three conv blocks 16-32-64 (two 3x3 convs each), same NP/P machinery."""
    layers = []
    for ch in (16, 32, 64):
        layers += [LayerSpec("conv", ch, 3), LayerSpec("conv", ch, 3), LayerSpec("pool", kernel=2)]
    layers += [LayerSpec("flatten"),
               LayerSpec("linear", 128, w_bits=4, cls="P", sparsity=sparsity, dropout=0.1),
               LayerSpec("linear", num_classes, relu=False)]
    return ModelConfig("vgg", layers, num_classes)


ARCHS = {"paper": paper_config, "paper-nopool2": lambda **k: paper_config(second_pool=False, **k), "vgg": vgg_config}


def named_config(arch: str, config_file: str | Path | None = None, **overrides) -> ModelConfig:
    """An architecture by name, optionally with per-layer overrides from a JSON file."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    cfg = ARCHS[arch](**{k: v for k, v in overrides.items() if v is not None})
    if config_file is not None:
        try:
            doc = json.loads(Path(config_file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{config_file}: cannot read the model config ({e})") from None
        weighted = [l for l in cfg.layers if l.kind in WEIGHTED]
        for key, val in doc.get("layers", {}).items():
            i = int(key)
            if not 0 <= i < len(weighted):
                raise ConfigError(f"{config_file}: weighted layer {i} does not exist (0..{len(weighted) - 1})")
            unknown = set(val) - {"w_bits", "a_bits", "cls", "sparsity"}
            if unknown:
                raise ConfigError(f"{config_file}: layer {i}: unknown keys {sorted(unknown)}")
            for k, v in val.items():
                setattr(weighted[i], k, v)
    return cfg.validate()


def shapes(config: ModelConfig) -> list[tuple[int, ...]]:
    """The output shape of every layer, for the (C, H, W) input."""
    c, h, w = config.in_shape
    out, flat = [], None
    for l in config.layers:
        if l.kind == "conv":
            c, h, w = l.out, h - l.kernel + 1, w - l.kernel + 1
        elif l.kind == "pool":
            h, w = h // l.kernel, w // l.kernel
        elif l.kind == "flatten":
            flat = c * h * w
        else:
            flat = l.out
        if min(h, w) < 1:
            raise ConfigError(f"{config.arch}: the feature map shrinks to {h}x{w} at a {l.kind} layer; use a larger input or fewer layers")
        out.append((c, h, w) if flat is None else (flat,))
    return out


class Net(nn.Module):
    """A sequential CNN; `weighted` lists its conv/linear modules in order (for pruning masks)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        self.inp = _input_quant() if config.quantized else nn.Identity()
        self.features = nn.Sequential(*_modules(config))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(self.inp(x))
        return y.value if hasattr(y, "value") else y

    @property
    def weighted(self) -> list[nn.Module]:
        return [m for m in self.features if isinstance(m, (nn.Conv2d, nn.Linear))]


def _input_quant() -> nn.Module:
    import brevitas.nn as qnn

    from quant.quantizers import InputQuant
    return qnn.QuantIdentity(act_quant=InputQuant, return_quant_tensor=True)


def _modules(config: ModelConfig) -> list[nn.Module]:
    q = config.quantized
    if q:
        import brevitas.nn as qnn

        from quant.quantizers import BIAS_QUANT, ActQuant, WeightQuant
    mods: list[nn.Module] = []
    c = config.in_shape[0]
    sh = shapes(config)
    for i, l in enumerate(config.layers):
        last = i == len(config.layers) - 1
        if l.kind == "pool":
            mods.append(nn.MaxPool2d(l.kernel))
        elif l.kind == "flatten":
            mods.append(nn.Flatten())
        else:
            n_in = c if l.kind == "conv" else sh[i - 1][0]
            if q:
                kw = dict(weight_quant=WeightQuant, weight_bit_width=l.w_bits, bias_quant=BIAS_QUANT,
                          return_quant_tensor=not last)
                mods.append(qnn.QuantConv2d(n_in, l.out, l.kernel, **kw) if l.kind == "conv"
                            else qnn.QuantLinear(n_in, l.out, bias=True, **kw))
            else:
                mods.append(nn.Conv2d(n_in, l.out, l.kernel) if l.kind == "conv" else nn.Linear(n_in, l.out))
            if l.relu and not last:
                mods.append(qnn.QuantReLU(act_quant=ActQuant, bit_width=l.a_bits, return_quant_tensor=True)
                            if q else nn.ReLU())
            if l.dropout:
                mods.append(nn.Dropout(l.dropout))
            c = l.out
    return mods


def build(config: ModelConfig) -> Net:
    return Net(config)


def quantized_twin(config: ModelConfig) -> ModelConfig:
    return replace(config, quantized=True, layers=[replace(l) for l in config.layers])
