"""Training throughput (images/s) of the paper model, float and QAT, on random data.

One line per model. A measurement, not a test: `python benchmarks/train_throughput.py [--batches N]`.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch import nn

from quant.data import SIZE
from quant.model import build, named_config, quantized_twin
from quant.prune import Pruner, p_layers
from quant.train import TrainConfig, augment, make_optimizer


def throughput(quantized: bool, arch: str, batch: int, batches: int, warmup: int = 2) -> float:
    """Images per second through augment + forward + backward + optimizer (+ pruner) steps."""
    torch.manual_seed(0)
    cfg = named_config(arch)
    model = build(quantized_twin(cfg) if quantized else cfg).train()
    opt = make_optimizer(model, TrainConfig(lr=1e-4))
    pruner = Pruner(p_layers(model), total_steps=warmup + batches) if quantized else None
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, SIZE + 8, SIZE + 8), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, cfg.num_classes, (batch,), generator=gen)
    for i in range(warmup + batches):
        if i == warmup:
            t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(augment(images, gen)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if pruner is not None:
            pruner.step()
    return batch * batches / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="paper", help="paper, paper-nopool2 or vgg")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=10, help="timed batches per model (after 2 warm-up ones)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.batches} batches")
    for quantized in (False, True):
        ips = throughput(quantized, args.arch, args.batch, args.batches)
        print(f"{args.arch} {'QAT  ' if quantized else 'float'}: {ips:8.1f} img/s training")


if __name__ == "__main__":
    main()
