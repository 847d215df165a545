"""Training: float (Adam or SGD) and QAT fine-tuning with gradual pruning of P-layers.

Early stopping on validation loss with patience; the best epoch is saved as the checkpoint
(atomically) each time it improves, so Ctrl-C always leaves a usable checkpoint. A `.resume.pt`
beside it holds optimizer and RNG state for `--resume`. Seeded and deterministic on CPU.
"""

from __future__ import annotations

import copy
import io
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.atomic import atomic_write
from quant import checkpoint
from quant.data import DEFAULT_SHAPE, SIZE, Split, crop, dataset_hash
from quant.fold import fold_batchnorm, needs_folding
from quant.model import ConfigError, ModelConfig, build
from quant.prune import Pruner, p_layers


@dataclass
class TrainConfig:
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.0
    batch: int = 128
    epochs: int = 30
    patience: int = 5
    seed: int = 0
    augment: bool = True
    prune_epochs: int = 6  # QAT: epochs over which P-layers reach their sparsity
    schedule: str = "constant"  # constant | cosine (per step, after `warmup` epochs of linear warm-up)
    warmup: int = 0
    label_smoothing: float = 0.0
    weight_decay: float = 0.0  # decoupled (AdamW) for adam, L2 for sgd
    crop_scale: float = 1.0  # smallest area fraction of the random resized crop (1.0: a plain 64-px crop of the 72-px image)
    cutmix: float = 0.0  # probability that a batch is CutMix-ed (a box from a shuffled partner, labels mixed by area)
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha) blend with a shuffled partner, on the batches CutMix leaves (0: none)
    distill: float = 0.0  # weight of the teachers' term in the loss (knowledge distillation; needs teachers)
    distill_temp: float = 4.0  # softmax temperature of the teachers' and the student's logits in that term
    ema: float = 0.0  # decay per optimizer step of an exponential moving average of the weights (0: none)
    erase: float = 0.0  # probability that an image has one random box replaced by noise (random erasing; 0: none)

    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the option whose value is out of range; return self. The CLI
        calls it before it reads the data, so a bad value fails at once."""
        if not 0.0 < self.lr < math.inf:
            raise ConfigError(f"--lr {self.lr}: the learning rate must be a positive number, e.g. 1e-3 for adam, 0.1 for sgd")
        for name, value, low in (("--batch", self.batch, 1), ("--epochs", self.epochs, 1), ("--patience", self.patience, 1),
                                 ("--prune-epochs", self.prune_epochs, 0), ("--warmup", self.warmup, 0)):
            if value < low:
                raise ConfigError(f"{name} {value}: must be a whole number of at least {low}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"--momentum {self.momentum}: SGD momentum must be in [0, 1), e.g. 0.9; 0 turns it off")
        if not 0.0 <= self.weight_decay < math.inf:
            raise ConfigError(f"--weight-decay {self.weight_decay}: must be a number of at least 0, e.g. 5e-4; 0 turns it off")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing {self.label_smoothing}: must be in [0, 1), e.g. 0.1; 0 turns it off")
        if not 0.0 <= self.distill <= 1.0 or self.distill_temp <= 0:
            raise ConfigError(f"--distill {self.distill} / --distill-temp {self.distill_temp}: the weight must be in (0, 1], the temperature > 0")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"--ema {self.ema}: the decay per step must be in [0, 1), e.g. 0.99 (about 100 steps); 0 turns it off")
        if not 0.0 <= self.mixup <= 10.0:
            raise ConfigError(f"--mixup {self.mixup}: the Beta distribution's alpha must be in [0, 10], e.g. 0.2; 0 turns it off")
        if not 0.0 <= self.erase <= 1.0:
            raise ConfigError(f"--erase {self.erase}: the probability that an image gets an erased box must be in [0, 1], e.g. 0.5; 0 turns it off")
        if not 0.0 < self.crop_scale <= 1.0 or not 0.0 <= self.cutmix <= 1.0:
            raise ConfigError(f"--crop-scale {self.crop_scale} / --cutmix {self.cutmix}: the crop's smallest area fraction must be in "
                              "(0, 1], the CutMix probability in [0, 1]")
        return self


def lr_at(tc: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of one optimizer step: a function of the step alone, so a resume needs no scheduler state."""
    if tc.schedule == "constant":
        return tc.lr
    warm = tc.warmup * steps_per_epoch
    if step < warm:
        return tc.lr * (step + 1) / warm
    total = max(1, tc.epochs * steps_per_epoch - warm)
    return 0.5 * tc.lr * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / total)))


def to_input(images: torch.Tensor, signed: bool = False) -> torch.Tensor:
    """uint8 pixels p -> p/256, or int8 values q -> q/128 (contract rule 2)."""
    return images.float() / (128.0 if signed else 256.0)


def cutmix(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al. 2019): paste one random box (area fraction ~ U(0, 1)) from a shuffled
    partner into every image. Returns the images, the partner labels and the kept-area weight."""
    n, _, h, w = x.shape
    partner = torch.randperm(n, generator=gen)
    cut = math.sqrt(float(torch.rand(1, generator=gen)))
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(torch.randint(0, h, (1,), generator=gen)), int(torch.randint(0, w, (1,), generator=gen))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    x = x.clone()
    x[:, :, y0:y1, x0:x1] = x[partner, :, y0:y1, x0:x1]
    return x, y[partner], 1.0 - (y1 - y0) * (x1 - x0) / (h * w)


def mixup(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """mixup (Zhang et al. 2018): blend every image with a shuffled partner, weight lam ~ Beta(alpha,
    alpha) on its own. Returns the images, the partner labels and lam. lam is drawn by numpy from a
    seed taken from `gen`, so a run stays a function of its generator (and --resume of its state)."""
    partner = torch.randperm(x.shape[0], generator=gen)
    lam = float(np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen))).beta(alpha, alpha))
    return lam * x + (1.0 - lam) * x[partner], y[partner], lam


def resized_crops(batch: torch.Tensor, gen: torch.Generator, min_area: float) -> torch.Tensor:
    """Random resized crops (Szegedy et al. 2015) of uint8 (N, 3, H, W) images to float 64x64 pixels:
    a box of area fraction ~ U(min_area, 1) and aspect ratio log-uniform in [3/4, 4/3], at a
    random place, bilinearly resampled; batched through one affine grid."""
    n = batch.shape[0]
    area = min_area + (1.0 - min_area) * torch.rand(n, generator=gen)
    aspect = torch.exp((torch.rand(n, generator=gen) - 0.5) * 2 * math.log(4 / 3))
    bw = torch.sqrt(area * aspect).clamp(max=1.0)  # box size as a fraction of the image side
    bh = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - bw)  # box centre in [-1, 1] grid units
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - bh)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = bw, cx, bh, cy
    grid = nn.functional.affine_grid(theta, [n, 3, SIZE, SIZE], align_corners=False)
    return nn.functional.grid_sample(batch.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_erase(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020): with probability `p` each image of the float (N, C, H, W)
    batch has one box (area fraction ~ U(0.02, 1/3), aspect ratio log-uniform in [0.3, 3.3]) at a
    random place replaced by uniform noise pixels on the p/256 grid. Labels are untouched."""
    n, c, h, w = x.shape
    hit = torch.rand(n, generator=gen) < p
    area = 0.02 + (1 / 3 - 0.02) * torch.rand(n, generator=gen)
    aspect = torch.exp((torch.rand(n, generator=gen) * 2 - 1) * math.log(3.3))
    bh = (torch.sqrt(area * aspect) * h).round().clamp(1, h).long()
    bw = (torch.sqrt(area / aspect) * w).round().clamp(1, w).long()
    y0 = (torch.rand(n, generator=gen) * (h - bh + 1)).long()
    x0 = (torch.rand(n, generator=gen) * (w - bw + 1)).long()
    rows, cols = torch.arange(h), torch.arange(w)
    inside = (((rows >= y0[:, None]) & (rows < (y0 + bh)[:, None]))[:, :, None]
              & ((cols >= x0[:, None]) & (cols < (x0 + bw)[:, None]))[:, None, :] & hit[:, None, None])
    noise = torch.randint(0, 256, x.shape, generator=gen).float() / 256.0
    return torch.where(inside[:, None], noise, x)


def padded_crops(batch: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The field's small-image augmentation: zero-pad by `pad`, take a random crop of the original
    size, flip horizontally at random; float pixels on the p/256 grid."""
    n, _, h, w = batch.shape
    padded = nn.functional.pad(batch.float(), (pad, pad, pad, pad))
    ys = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    xs = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (ys[:, None] + torch.arange(h))[:, None, :, None].expand(n, batch.shape[1], h, w)
    cols = (xs[:, None] + torch.arange(w))[:, None, None, :].expand(n, batch.shape[1], h, w)
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(batch.shape[1])[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out / 256.0


def augment(batch: torch.Tensor, gen: torch.Generator, crop_scale: float = 1.0,
            shape: tuple[int, ...] = DEFAULT_SHAPE) -> torch.Tensor:
    """A 3x64x64 model: random 64-px crop of the 72-px image (or, with crop_scale < 1, a random
    resized crop), horizontal flip, mild brightness/contrast jitter. Any other image shape: the
    padded random crop of `padded_crops`. Stays on the p/256 grid."""
    if tuple(shape) != DEFAULT_SHAPE:
        return padded_crops(batch, gen)
    n, _, h, w = batch.shape
    if crop_scale < 1.0:
        out = resized_crops(batch, gen, crop_scale)
    else:
        ys = torch.randint(0, h - SIZE + 1, (n,), generator=gen)
        xs = torch.randint(0, w - SIZE + 1, (n,), generator=gen)
        out = torch.stack([batch[i, :, ys[i]:ys[i] + SIZE, xs[i]:xs[i] + SIZE] for i in range(n)]).float()
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    bright = 1.0 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.4
    contrast = 1.0 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.4
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * contrast + mean) * bright
    return out.round().clamp(0, 255) / 256.0


def batch_input(batch: torch.Tensor, gen: torch.Generator, tc: TrainConfig, config: ModelConfig) -> torch.Tensor:
    """A training batch as the model's float input: augmented images, or (no augmentation, or
    signed tensors that are not images) the centre crop as it is."""
    if tc.augment and not config.in_signed and len(config.in_shape) == 3:
        return augment(batch, gen, tc.crop_scale, config.in_shape)
    return to_input(crop(batch, config.in_shape), config.in_signed)


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray | torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Logits for a split's uint8 images, centre-cropped to the model's input shape."""
    model.eval()
    x = torch.as_tensor(np.ascontiguousarray(crop(np.asarray(images), model.config.in_shape)))
    signed = model.config.in_signed
    return torch.cat([model(to_input(x[i:i + batch], signed)) for i in range(0, len(x), batch)]) if len(x) else torch.zeros(0)


def evaluate_loss(model: nn.Module, split: Split) -> tuple[float, float]:
    logits = predict(model, split.images)
    y = torch.as_tensor(split.labels)
    return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def stats_state(model: nn.Module) -> dict:
    """Brevitas' activation-statistics phase (counter, running buffer, raw value), which its
    state_dict does not keep: without it a resumed QAT run would skip the rest of the phase."""
    return {n: (m.counter, m.buffer.clone(), m.value.detach().clone())
            for n, m in model.named_modules() if hasattr(m, "collect_stats_steps")}


@torch.no_grad()
def restore_stats_state(model: nn.Module, state: dict) -> None:
    mods = dict(model.named_modules())
    for n, (counter, buffer, value) in state.items():
        mods[n].counter = counter
        mods[n].buffer.copy_(buffer)
        mods[n].value.copy_(value)


class WeightAverage:
    """An exponential moving average of a model's state (weights, batch-norm statistics, Brevitas'
    learned scales), updated after each optimizer step: avg <- decay x avg + (1 - decay) x current.
    Non-float entries (counters) are copied. Pruned weights stay zero: each P-layer's mask is
    applied to its average too, so an averaged checkpoint is as sparse as the trained one."""

    def __init__(self, model: nn.Module, decay: float, state: dict | None = None):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()} if state is None else state

    @torch.no_grad()
    def update(self, model: nn.Module, pruner: Pruner | None = None) -> None:
        current = model.state_dict()
        for k, v in current.items():
            avg = self.state.get(k)
            if avg is None or avg.shape != v.shape or not v.dtype.is_floating_point:
                self.state[k] = v.detach().clone()
            else:
                avg.mul_(self.decay).add_(v, alpha=1.0 - self.decay)
        if pruner is not None and pruner.layers:
            names = {id(m): n for n, m in model.named_modules()}
            for (m, _), mask in zip(pruner.layers, pruner.masks):
                self.state[f"{names[id(m)]}.weight"].mul_(mask)

    @torch.no_grad()
    def model(self, model: nn.Module, bn_batches: list[torch.Tensor] = ()) -> nn.Module:
        """A copy of `model` (with its Brevitas statistics phase) holding the averaged state. Batch
        norm's running statistics are recomputed on `bn_batches` (network inputs): the average of
        the statistics does not describe the averaged weights (measured on the edge model after 7
        epochs at decay 0.995: 21% on val with the averaged statistics, 71% recomputed, 44% raw)."""
        shadow = copy.deepcopy(model)
        shadow.load_state_dict({k: v for k, v in self.state.items() if k in shadow.state_dict()})
        norms = batch_norms(shadow)
        if norms and bn_batches:
            shadow.eval()
            for m in norms:  # only the norms in train mode: dropout and Brevitas' statistics stay put
                m.reset_running_stats()
                m.momentum = None  # a plain mean over the batches
                m.train()
            for x in bn_batches:
                shadow(x)
            for m, orig in zip(norms, batch_norms(model)):
                m.momentum = orig.momentum
        return shadow.eval()


def batch_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


BN_REFRESH_IMAGES = 2048  # training images (augmented, seeded) that re-estimate batch norm for an averaged model


def bn_batches(images: torch.Tensor, tc: TrainConfig, config: ModelConfig) -> list[torch.Tensor]:
    """The same BN_REFRESH_IMAGES training images each epoch, augmented from their own seeded
    generator (the training's random stream is untouched), in batches of `tc.batch`."""
    gen = torch.Generator().manual_seed(tc.seed + 1)
    idx = torch.randperm(len(images), generator=gen)[:BN_REFRESH_IMAGES]
    prep = lambda b: batch_input(b, gen, tc, config)
    return [prep(images[idx[i:i + tc.batch]]) for i in range(0, len(idx), tc.batch)]


def make_optimizer(model: nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    if tc.schedule not in ("constant", "cosine"):
        raise ConfigError(f"unknown schedule {tc.schedule!r}; use constant or cosine")
    if tc.optimizer == "adam":
        if tc.weight_decay:
            return torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        return torch.optim.Adam(model.parameters(), lr=tc.lr)
    if tc.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    raise ConfigError(f"unknown optimizer {tc.optimizer!r}; use adam or sgd")


def folded_init(init: dict, val_split: Split) -> tuple[dict, dict | None]:
    """The float checkpoint's weights for QAT, with batch norm folded (rule 12); the record holds
    the float accuracy before and after folding (they agree up to float rounding)."""
    cfg = ModelConfig.from_dict(init["config"])
    if not needs_folding(cfg):
        return init["state_dict"], None
    before = evaluate_loss(checkpoint_model(cfg, init["state_dict"]), val_split)[1]
    folded_cfg, state = fold_batchnorm(cfg, init["state_dict"])
    after = evaluate_loss(checkpoint_model(folded_cfg, state), val_split)[1]
    tqdm.write(f"batch norm folded into the convolutions: float val acc {before:.4f} before, {after:.4f} after")
    return state, {"val_acc_before": before, "val_acc_after": after}


def model_keys(cfg: ModelConfig, quantized: bool) -> set[str]:
    """The state-dict keys of the float (or quantized) model of a config."""
    return set(build(replace(cfg, quantized=quantized)).state_dict())


def checkpoint_model(cfg: ModelConfig, state: dict) -> nn.Module:
    model = build(cfg)
    model.load_state_dict(state)
    return model.eval()


RESUMABLE = {"epochs", "patience"}  # what a resumed run may change


def save_resume(path: Path, state: dict) -> None:
    """The resume state, written atomically (a Ctrl-C or a full disk leaves the previous one)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def distill_loss(student: torch.Tensor, teachers: list[nn.Module], x: torch.Tensor, temp: float) -> torch.Tensor:
    """Hinton et al. (2015): KL(teachers' mean softmax || student softmax) at temperature `temp`,
    times temp^2 so its gradient keeps the scale of the cross-entropy term's."""
    with torch.no_grad():
        target = torch.stack([nn.functional.softmax(t(x) / temp, dim=1) for t in teachers]).mean(0)
    return nn.functional.kl_div(nn.functional.log_softmax(student / temp, dim=1), target, reduction="batchmean") * temp ** 2


def load_teachers(ckpts: list[dict], names: list[str], class_names: list[str]) -> list[nn.Module]:
    """Teacher models (eval mode, frozen) from checkpoints trained on the same classes in the same order."""
    models = []
    for ck, name in zip(ckpts, names):
        if ck.get("class_names") != class_names:
            raise ConfigError(f"teacher {name} was trained on classes {', '.join(ck.get('class_names') or ['?'])}, this run "
                              f"on {', '.join(class_names)}: a teacher needs the same classes in the same order")
        m = checkpoint.model_from(ck).eval()
        for q in m.parameters():
            q.requires_grad_(False)
        models.append(m)
    return models


def load_resume(path: Path, config: ModelConfig, tc: TrainConfig) -> dict:
    """The resume state beside a checkpoint, checked against this run's model and training config."""
    if not path.is_file():
        raise ConfigError(f"{path}: no resume file to continue from (it is written after each epoch); drop --resume to start over")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises many types
        raise ConfigError(f"{path}: not a readable resume file ({e.__class__.__name__}); delete it and drop --resume to start over") from None
    if state.get("config") != config.to_dict():
        raise ConfigError(f"{path}: the resume file was written for another model config; resume with the same "
                          "--arch/--config/--init, or drop --resume")
    diff = sorted(k for k, v in asdict(tc).items() if k not in RESUMABLE and state.get("train", {}).get(k) != v)
    if diff:
        raise ConfigError(f"{path}: the resume file was written with other training settings ({', '.join(diff)}); "
                          "resume with the same ones (only --epochs and --patience may change), or drop --resume")
    return state


def train(config: ModelConfig, train_split: Split, val_split: Split, tc: TrainConfig, out: str | Path,
          init: dict | None = None, resume: bool = False, progress: bool = True, init_record: dict | None = None,
          bars: bool = True, teachers: list[dict] | None = None, teacher_records: list[dict] | None = None) -> dict:
    """Train and return the best checkpoint dict (also saved at `out`); `init_record` (the float
    checkpoint's path and hash) is kept in a QAT checkpoint as "init". `progress` prints a line per
    epoch and, with `bars`, a progress bar per batch; without bars the lines name the run (`out`'s
    stem), for runs that share a terminal. `teachers` (checkpoint dicts) are distilled from with
    weight `tc.distill`; their `teacher_records` (path, hash) are kept as "teachers"."""
    out = Path(out)
    if bool(teachers) != (tc.distill > 0):
        raise ConfigError("distillation needs both teachers and a weight: give --teacher CKPT with --distill ALPHA (0 < ALPHA <= 1), or neither")
    tc.validate()
    if (train_split.images.dtype == np.int8) != config.in_signed:
        raise ConfigError(f"the data holds {train_split.images.dtype} inputs, but the model takes "
                          f"{'signed int8' if config.in_signed else 'unsigned uint8'} ones; set \"in_signed\": "
                          f"{str(train_split.images.dtype == np.int8).lower()} in the architecture, or give matching data")
    teacher_models = load_teachers(teachers, [r.get("path", "?") for r in (teacher_records or [{}] * len(teachers))],
                                   train_split.class_names) if teachers else []
    resume_path = out.with_suffix(".resume.pt")
    torch.manual_seed(tc.seed)
    torch.use_deterministic_algorithms(True)
    model = build(config)
    fold_record = None
    if init is not None and not config.quantized:  # a float warm start: the same model, its weights
        if ModelConfig.from_dict(init["config"]).to_dict() != config.to_dict():
            raise ConfigError("the float checkpoint to start from describes another model; warm-start the same architecture")
        model.load_state_dict(init["state_dict"])
    elif init is not None:  # QAT from a float checkpoint: same parameter names, quantizer params extra
        init_state, fold_record = folded_init(init, val_split)
        missing, unexpected = model.load_state_dict(init_state, strict=False)
        if unexpected or any(k in model_keys(config, quantized=False) for k in missing):
            raise ConfigError(f"the float checkpoint's weights do not fit this model (unexpected {unexpected[:3]}, missing "
                              f"{[k for k in missing if k in model_keys(config, quantized=False)][:3]}); train the float model with this toolkit's version")
    opt = make_optimizer(model, tc)
    gen = torch.Generator().manual_seed(tc.seed)
    steps = (len(train_split) + tc.batch - 1) // tc.batch
    pruner = Pruner(p_layers(model), tc.prune_epochs * steps) if config.quantized else None
    history, best, start_epoch, bad = [], None, 0, 0
    average = WeightAverage(model, tc.ema) if tc.ema else None
    if resume:
        state = load_resume(resume_path, config, tc)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        if "torch_rng" in state:  # dropout draws from torch's global generator
            torch.set_rng_state(state["torch_rng"])
        restore_stats_state(model, state.get("quant_stats", {}))
        history, best, start_epoch, bad = state["history"], state["best"], state["epoch"], state["bad"]
        if pruner is not None:
            pruner.t, pruner.masks = state["pruner_t"], state["pruner_masks"]
        if average is not None:
            average = WeightAverage(model, tc.ema, state["ema"])
    meta = {"config": config.to_dict(), "class_names": train_split.class_names, "train": asdict(tc),
            **({"bn_fold": fold_record} if fold_record else {}), **({"init": init_record} if init_record else {}),
            **({"teachers": teacher_records} if teacher_records else {}),
            "data": {"train": train_split.counts(), "val": val_split.counts(),
                     "train_hash": dataset_hash(train_split), "val_hash": dataset_hash(val_split),
                     "skipped": train_split.skipped + val_split.skipped}}
    images = torch.as_tensor(train_split.images)
    labels = torch.as_tensor(train_split.labels)
    t_start = time.time() - (history[-1]["elapsed"] if history else 0.0)
    try:
        for epoch in range(start_epoch, tc.epochs):
            model.train()
            perm = torch.randperm(len(labels), generator=gen)
            loss_sum = correct = seen = 0.0
            # a `with` bar is closed (and erased) before any error line is printed
            with tqdm(range(steps), desc=f"epoch {epoch + 1}/{tc.epochs}", disable=not (progress and bars), leave=False) as bar:
                for s in bar:
                    idx = perm[s * tc.batch:(s + 1) * tc.batch]
                    x = batch_input(images[idx], gen, tc, config)
                    if tc.erase:
                        x = random_erase(x, gen, tc.erase)
                    y = labels[idx]
                    mixed = None
                    if tc.cutmix and float(torch.rand(1, generator=gen)) < tc.cutmix:
                        mixed = cutmix(x, y, gen)
                    elif tc.mixup:
                        mixed = mixup(x, y, gen, tc.mixup)
                    if mixed is not None:
                        x, y_b, keep = mixed
                        logits = model(x)
                        loss = (keep * nn.functional.cross_entropy(logits, y, label_smoothing=tc.label_smoothing)
                                + (1 - keep) * nn.functional.cross_entropy(logits, y_b, label_smoothing=tc.label_smoothing))
                    else:
                        logits = model(x)
                        loss = nn.functional.cross_entropy(logits, y, label_smoothing=tc.label_smoothing)
                    if teacher_models:
                        loss = (1 - tc.distill) * loss + tc.distill * distill_loss(logits, teacher_models, x, tc.distill_temp)
                    for group in opt.param_groups:
                        group["lr"] = lr_at(tc, epoch * steps + s, steps)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if pruner is not None:
                        pruner.step()
                    if average is not None:
                        average.update(model, pruner)
                    loss_sum += loss.item() * len(idx)
                    correct += float((logits.argmax(1) == labels[idx]).sum())
                    seen += len(idx)
                    bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            kept = model if average is None else average.model(model, bn_batches(images, tc, config) if batch_norms(model) else [])  # what a checkpoint of this epoch holds
            val_loss, val_acc = evaluate_loss(kept, val_split)
            rec = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                   "val_loss": val_loss, "val_acc": val_acc, "elapsed": time.time() - t_start}
            if average is not None:  # the raw weights' figures beside the average's
                rec["val_loss_raw"], rec["val_acc_raw"] = evaluate_loss(model, val_split)
            if pruner is not None:
                rec["sparsity"] = pruner.sparsity()
            history.append(rec)
            ready = pruner is None or pruner.done  # never keep a model that is not yet fully pruned
            improved = ready and (best is None or val_loss < best["val_loss"])
            if improved:
                best, bad = rec, 0
                checkpoint.save(out, {**meta, "state_dict": kept.state_dict(), "history": history,
                                      "best_epoch": rec["epoch"], "metrics": {"val_loss": val_loss, "val_acc": val_acc},
                                      "train_time_s": rec["elapsed"]})
            elif ready:
                bad += 1
            if progress:
                tqdm.write(f"{'' if bars else out.stem + ' '}epoch {epoch + 1}: train loss {rec['train_loss']:.3f} acc {rec['train_acc']:.3f} | "
                           f"val loss {val_loss:.3f} acc {val_acc:.3f}{' *' if improved else ''}"
                           + (f" (raw weights: acc {rec['val_acc_raw']:.3f})" if average is not None else ""))
            save_resume(resume_path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(), "quant_stats": stats_state(model),
                "history": history, "best": best, "epoch": epoch + 1, "bad": bad,
                "pruner_t": pruner.t if pruner else 0, "pruner_masks": pruner.masks if pruner else None,
                **({"ema": average.state} if average is not None else {}),
                "config": config.to_dict(), "train": asdict(tc)})
            if bad >= tc.patience:
                break
    except KeyboardInterrupt:
        if best is None:
            raise
        tqdm.write(f"interrupted: the best checkpoint so far (epoch {best['epoch']}) is at {out}; --resume continues")
        raise
    if best is None:
        raise ConfigError("training ended before any epoch completed with the P-layers fully pruned; raise --epochs above --prune-epochs")
    ckpt = checkpoint.load(out)
    ckpt["history"] = history  # the full curve, past the best epoch too
    checkpoint.save(out, ckpt)
    return ckpt
