"""Batch-norm folding (contract rule 12): BN is trained in float, then folded into its conv.

`w' = w * g / sqrt(var + eps)` per output channel, `b' = (b - mean) * g / sqrt(var + eps) + beta`.
The folded model keeps an Identity in each BN slot, so its parameter names are the float model's
minus the BN entries, and it loads into the quantized twin for QAT.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from quant.model import ModelConfig, build


def needs_folding(config: ModelConfig) -> bool:
    return any(l.bn for l in config.layers) and not config.bn_folded


@torch.no_grad()
def fold_batchnorm(config: ModelConfig, state_dict: dict) -> tuple[ModelConfig, dict]:
    """The folded float config and state dict of a float model with batch norm: every BatchNorm2d
    in a Sequential (the model's features, or a residual block's branch and shortcut) folds into
    the conv just before it."""
    model = build(config)
    model.load_state_dict(state_dict)
    folded_cfg = replace(config, bn_folded=True, layers=[replace(l) for l in config.layers])
    folded = build(folded_cfg)
    out = {k: state_dict[k].clone() for k in folded.state_dict()}  # every entry but the BN ones
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        mods = list(seq)
        for i, m in enumerate(mods):
            if isinstance(m, nn.BatchNorm2d):
                conv, name = mods[i - 1], f"{prefix}.{i - 1}"
                g = m.weight / torch.sqrt(m.running_var + m.eps)
                out[f"{name}.weight"] = conv.weight * g[:, None, None, None]
                out[f"{name}.bias"] = (conv.bias - m.running_mean) * g + m.bias
    folded.load_state_dict(out)
    return folded_cfg, folded.state_dict()
