"""Gradual magnitude pruning of P-layers (Zhu & Gupta's cubic schedule), masks fixed once reached.

Pruned weights are held at exactly zero, so they quantize to zero and the mask can always be
recovered from the weights: checkpoints store no masks.
"""

from __future__ import annotations

import torch
from torch import nn


def schedule(step: int, total: int, target: float) -> float:
    """Sparsity at `step` of `total` pruning steps: target * (1 - (1 - t)^3)."""
    if total <= 0 or step >= total:
        return target
    return target * (1.0 - (1.0 - step / total) ** 3)


class Pruner:
    """Holds one mask per P-layer; `step()` after every optimizer step."""

    def __init__(self, layers: list[tuple[nn.Module, float]], total_steps: int, every: int = 10):
        self.layers = [(m, s) for m, s in layers if s > 0]
        self.total, self.every, self.t = total_steps, max(1, every), 0
        self.masks = [m.weight.detach() != 0 for m, _ in self.layers]

    @property
    def done(self) -> bool:
        return not self.layers or self.t >= self.total

    def _remask(self) -> None:
        for i, (m, target) in enumerate(self.layers):
            w = m.weight.detach().abs()
            k = int(round(schedule(self.t, self.total, target) * w.numel()))
            # ties at the threshold are pruned too (only exact float ties, in practice zeros)
            self.masks[i] = w > w.flatten().kthvalue(k).values if k > 0 else torch.ones_like(w, dtype=torch.bool)

    @torch.no_grad()
    def apply(self) -> None:
        for m, mask in zip((m for m, _ in self.layers), self.masks):
            m.weight.mul_(mask)

    def step(self) -> None:
        if not self.done and self.t % self.every == 0:
            self._remask()
        self.t += 1
        if self.t == self.total:
            self._remask()
        self.apply()

    def sparsity(self) -> list[float]:
        return [float((m.weight == 0).float().mean()) for m, _ in self.layers]


def p_layers(model: nn.Module) -> list[tuple[nn.Module, float]]:
    """The model's P-layers with their target sparsity."""
    specs = [l for l in model.config.layers if l.kind in ("conv", "linear")]
    return [(m, spec.sparsity) for m, spec in zip(model.weighted, specs) if spec.cls == "P"]
