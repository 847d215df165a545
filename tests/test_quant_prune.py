"""quant.prune: the cubic schedule, reaching the target sparsity, masks holding through fine-tuning."""

import warnings

import pytest
import torch
from torch import nn

from quant.model import build, named_config, quantized_twin
from quant.prune import Pruner, p_layers, schedule


def test_schedule_is_cubic_and_ends_at_the_target():
    assert schedule(0, 10, 0.9) == 0.0
    assert schedule(5, 10, 0.9) == pytest.approx(0.9 * (1 - 0.5 ** 3))
    assert schedule(10, 10, 0.9) == schedule(25, 10, 0.9) == 0.9
    assert schedule(0, 0, 0.9) == 0.9
    values = [schedule(t, 40, 0.8) for t in range(41)]
    assert values == sorted(values)


def _fine_tune(layer: nn.Module, pruner: Pruner, steps: int, gen: torch.Generator) -> list[float]:
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    target = torch.randn(layer.out_features, layer.in_features, generator=gen)
    seen = []
    for _ in range(steps):
        x = torch.randn(16, layer.in_features, generator=gen)
        loss = ((layer(x) - x @ target.T) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step()
        seen.append(pruner.sparsity()[0])
    return seen


def test_reaches_sparsity_and_masks_hold_through_fine_tuning():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    layer = nn.Linear(120, 40)
    pruner = Pruner([(layer, 0.9)], total_steps=30, every=5)
    ramp = _fine_tune(layer, pruner, 30, gen)
    assert pruner.done
    assert ramp == sorted(ramp) and ramp[0] < 0.2
    n = layer.weight.numel()
    assert pruner.sparsity()[0] == pytest.approx(round(0.9 * n) / n)
    zeros = layer.weight.detach() == 0
    assert torch.equal(zeros, ~pruner.masks[0])

    # Adam keeps moving pruned weights; the pruner puts them back to zero after every step
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x = torch.randn(16, 120, generator=gen)
    layer(x).pow(2).mean().backward()
    opt.step()
    assert (layer.weight.detach()[zeros] != 0).any()
    pruner.apply()
    after = _fine_tune(layer, pruner, 20, gen)
    assert torch.equal(layer.weight.detach() == 0, zeros)
    assert after == pytest.approx([round(0.9 * n) / n] * 20)


def test_p_layers_of_the_paper_model_and_quantized_zeros():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build(quantized_twin(named_config("paper", sparsity=0.75)))
        layers = p_layers(model)
        assert [(m.out_features, s) for m, s in layers] == [(128, 0.75)]
        pruner = Pruner(layers, total_steps=1)
        pruner.step()
        hidden = layers[0][0]
        assert pruner.sparsity() == [pytest.approx(0.75, abs=1 / hidden.weight.numel())]
        q = hidden.quant_weight()
    ints = (q.value / q.scale).round()
    assert bool((ints[hidden.weight.detach() == 0] == 0).all())  # pruned weights are stored as 0
    assert float((ints == 0).float().mean()) >= 0.75 - 1e-6


def test_zero_target_prunes_nothing():
    model = build(named_config("paper", sparsity=0.0))
    before = [m.weight.detach().clone() for m in model.weighted]
    pruner = Pruner(p_layers(model), total_steps=3)
    assert pruner.done  # so training keeps checkpoints from the first epoch
    for _ in range(3):
        pruner.step()
    assert pruner.layers == []
    assert all(torch.equal(m.weight, b) for m, b in zip(model.weighted, before))
