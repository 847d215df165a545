"""quant.train: resume continues exactly where it stopped; a short end-to-end run on a tiny image folder."""

import warnings
from dataclasses import replace

import pytest
import torch

from quant import checkpoint
from quant.data import dataset_hash, read_split
from quant.evaluate import evaluate
from quant.model import named_config, quantized_twin
from quant.train import TrainConfig, train
from quant_helpers import learnable_split, split_dataset


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("quantized", [False, True], ids=["float", "qat"])
def test_resume_continues_exactly(tmp_path, quantized):
    tr, va = learnable_split(8), learnable_split(2, seed=1)
    cfg = named_config("paper")
    cfg = quantized_twin(cfg) if quantized else cfg
    # QAT: the resume point falls inside Brevitas' activation-statistics phase (300 steps)
    tc = TrainConfig(epochs=2, batch=16, patience=5, prune_epochs=1, lr=1e-3)
    full = train(cfg, tr, va, tc, tmp_path / "full.pt", progress=False)
    first = train(cfg, tr, va, replace(tc, epochs=1), tmp_path / "part.pt", progress=False)
    assert [h["epoch"] for h in first["history"]] == [1]
    resumed = train(cfg, tr, va, tc, tmp_path / "part.pt", resume=True, progress=False)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    for a, b in zip(full["history"], resumed["history"]):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    end_full = torch.load(tmp_path / "full.resume.pt", weights_only=False)["model"]
    end_resumed = torch.load(tmp_path / "part.resume.pt", weights_only=False)["model"]
    assert end_full.keys() == end_resumed.keys()
    for k in end_full:
        assert torch.allclose(end_full[k], end_resumed[k], atol=1e-6), k
    assert resumed["best_epoch"] == full["best_epoch"]


def test_end_to_end_float_then_qat_pruned_on_an_image_folder(tmp_path):
    data_dir = split_dataset(tmp_path / "data", per_class={"train": 10, "val": 4})  # seeded random 72x72 PNGs
    tr = read_split(data_dir, "train", limit=10)
    va = read_split(data_dir, "val", tr.class_names, limit=4)
    assert len(tr) == 50 and len(va) == 20
    fl = train(named_config("paper"), tr, va, TrainConfig(epochs=2, batch=25, patience=2), tmp_path / "float.pt",
               progress=False)
    ck = checkpoint.load(tmp_path / "float.pt")
    assert ck["format"] == checkpoint.FORMAT and ck["git"]
    assert ck["class_names"] == ["cat", "cow", "elephant", "horse", "sheep"]
    assert ck["data"]["train"] == {c: 10 for c in ck["class_names"]}
    assert ck["data"]["val_hash"] == dataset_hash(va)
    assert [h["epoch"] for h in ck["history"]] == [1, 2] and ck["best_epoch"] in (1, 2)
    assert ck["metrics"]["val_loss"] == min(h["val_loss"] for h in ck["history"])
    assert ck["train"]["optimizer"] == "adam" and ck["train_time_s"] > 0

    cfg = quantized_twin(named_config("paper"))
    q = train(cfg, tr, va, TrainConfig(epochs=3, batch=25, patience=3, prune_epochs=1, lr=5e-4),
              tmp_path / "qat.pt", init=fl, progress=False)
    assert q["config"]["quantized"] and q["best_epoch"] >= 1
    assert all(h["sparsity"] == [pytest.approx(0.9, abs=1e-4)] for h in q["history"])  # prune_epochs=1: reached in epoch 1
    model = checkpoint.model_from(checkpoint.load(tmp_path / "qat.pt"))
    hidden = model.weighted[2]
    assert float((hidden.weight == 0).float().mean()) == pytest.approx(0.9, abs=1e-4)
    res = evaluate(tmp_path / "qat.pt", data_dir, "val", limit=4)
    assert res["images"] == 20 and res["quantized"]
    assert res["accuracy"] == pytest.approx(q["metrics"]["val_acc"], abs=1e-6)  # train and evaluate agree


def test_resume_refuses_another_config_a_truncated_file_and_no_file(tmp_path):
    from quant.model import ConfigError
    tr, va = learnable_split(4), learnable_split(2, seed=1)
    cfg = named_config("paper")
    tc = TrainConfig(epochs=1, batch=20, patience=5)
    with pytest.raises(ConfigError, match="no resume file"):
        train(cfg, tr, va, tc, tmp_path / "none.pt", resume=True, progress=False)
    train(cfg, tr, va, tc, tmp_path / "a.pt", progress=False)
    with pytest.raises(ConfigError, match="other training settings \\(lr\\)"):
        train(cfg, tr, va, replace(tc, epochs=2, lr=0.5), tmp_path / "a.pt", resume=True, progress=False)
    with pytest.raises(ConfigError, match="another model config"):
        train(named_config("paper-nopool2"), tr, va, replace(tc, epochs=2), tmp_path / "a.pt", resume=True, progress=False)
    resume = tmp_path / "a.resume.pt"
    resume.write_bytes(resume.read_bytes()[:1000])  # a save cut short (before the atomic write, this was possible)
    with pytest.raises(ConfigError, match="not a readable resume file"):
        train(cfg, tr, va, replace(tc, epochs=2), tmp_path / "a.pt", resume=True, progress=False)


def test_cutmix_pastes_one_box_and_weights_by_area():
    import torch
    from quant.train import cutmix
    gen = torch.Generator().manual_seed(3)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 16, 16).clone()
    y = torch.arange(4)
    for _ in range(5):
        mixed, y_b, keep = cutmix(x, y, gen)
        for i in range(4):
            pasted = (mixed[i, 0] != x[i, 0]).float().mean().item()
            same_partner = y_b[i] == y[i]
            # the kept weight is the untouched area (a partner equal to itself changes no pixel)
            assert same_partner or abs((1 - keep) - pasted) < 1e-6
            assert set(mixed[i].unique().tolist()) <= {float(y[i]), float(y_b[i])}
        assert 0.0 <= keep <= 1.0 and mixed.shape == x.shape
    assert torch.equal(x[:, 0, 0, 0], torch.arange(4, dtype=torch.float32))  # the input is not changed in place


def test_mixup_blends_each_image_with_its_partner_by_one_seeded_weight():
    import torch
    from quant.model import ConfigError
    from quant.train import TrainConfig, mixup
    x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 4, 4).clone()
    y = torch.arange(8)
    lams = []
    for _ in range(20):
        mixed, y_b, lam = mixup(x, y, torch.Generator().manual_seed(len(lams)), 0.2)
        lams.append(lam)
        assert 0.0 <= lam <= 1.0 and mixed.shape == x.shape
        # image i is lam x its own pixels + (1 - lam) x its partner's, and the partner's label is y_b[i]
        assert torch.allclose(mixed[:, 0, 0, 0], lam * y.float() + (1 - lam) * y_b.float())
    assert len(set(lams)) == 20 and sum(min(l, 1 - l) < 0.2 for l in lams) >= 10  # Beta(0.2, 0.2) sits near 0 and 1
    again = mixup(x, y, torch.Generator().manual_seed(0), 0.2)
    assert again[2] == lams[0] and torch.equal(again[1], mixup(x, y, torch.Generator().manual_seed(0), 0.2)[1])
    with pytest.raises(ConfigError, match="--mixup -1"):
        TrainConfig(mixup=-1.0).validate()


def test_distill_loss_is_the_tempered_kl_to_the_teachers_mean_softmax():
    from torch import nn
    from quant.train import distill_loss
    torch.manual_seed(0)
    x = torch.randn(6, 4)
    t1, t2 = nn.Linear(4, 5), nn.Linear(4, 5)
    student = torch.randn(6, 5)
    temp = 3.0
    target = (torch.softmax(t1(x) / temp, 1) + torch.softmax(t2(x) / temp, 1)) / 2
    manual = (target * (target.log() - torch.log_softmax(student / temp, 1))).sum(1).mean() * temp ** 2
    assert distill_loss(student, [t1, t2], x, temp).item() == pytest.approx(manual.item(), rel=1e-5)
    assert distill_loss(t1(x).detach(), [t1], x, temp).item() == pytest.approx(0.0, abs=1e-6)  # the teacher itself


def test_qat_distilled_from_float_teachers_records_them_and_refuses_bad_settings(tmp_path):
    from quant.model import ConfigError
    tr, va = learnable_split(6), learnable_split(2, seed=1)
    tc = TrainConfig(epochs=1, batch=15, patience=5, lr=1e-3)
    fl = train(named_config("paper"), tr, va, tc, tmp_path / "float.pt", progress=False)
    teacher = checkpoint.load(tmp_path / "float.pt")
    rec = [{"path": str(tmp_path / "float.pt"), "sha256": checkpoint.file_hash(tmp_path / "float.pt")}]
    qcfg = quantized_twin(named_config("paper"))
    qtc = replace(tc, prune_epochs=1, distill=0.7, distill_temp=2.0)
    q = train(qcfg, tr, va, qtc, tmp_path / "qat.pt", init=fl, progress=False, teachers=[teacher], teacher_records=rec)
    saved = checkpoint.load(tmp_path / "qat.pt")
    assert saved["teachers"] == rec and saved["train"]["distill"] == 0.7 and q["best_epoch"] == 1
    with pytest.raises(ConfigError, match="needs both teachers and a weight"):
        train(qcfg, tr, va, qtc, tmp_path / "b.pt", init=fl, progress=False)
    with pytest.raises(ConfigError, match="needs both teachers and a weight"):
        train(qcfg, tr, va, replace(qtc, distill=0.0), tmp_path / "b.pt", init=fl, progress=False, teachers=[teacher])
    with pytest.raises(ConfigError, match="the weight must be in"):
        train(qcfg, tr, va, replace(qtc, distill=1.5), tmp_path / "b.pt", init=fl, progress=False, teachers=[teacher])
    other = {**teacher, "class_names": list(reversed(teacher["class_names"]))}
    with pytest.raises(ConfigError, match="same classes in the same order"):
        train(qcfg, tr, va, qtc, tmp_path / "b.pt", init=fl, progress=False, teachers=[other])


def test_random_erase_replaces_one_box_per_hit_image_with_noise_on_the_grid():
    from quant.model import ConfigError
    from quant.train import random_erase
    x = torch.full((400, 3, 64, 64), -1.0)  # off the noise's [0, 255/256] range: every erased pixel shows
    out = random_erase(x, torch.Generator().manual_seed(7), 0.5)
    erased = (out != x).any(1)  # (N, H, W): all three channels of a pixel go together
    assert torch.equal((out != x).all(1), erased)
    hit = erased.flatten(1).any(1)
    assert 140 < int(hit.sum()) < 260  # about half of the images
    for i in torch.nonzero(hit).flatten().tolist():
        rows, cols = torch.nonzero(erased[i].any(1)).flatten(), torch.nonzero(erased[i].any(0)).flatten()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert int(erased[i].sum()) == int(box)  # one solid rectangle
        assert 0.01 <= float(box) / 4096 <= 0.36  # 2-33% of the area, up to rounding of its sides
    noise = out[erased[:, None].expand_as(out)]
    assert torch.equal(noise * 256, (noise * 256).round()) and noise.min() >= 0 and noise.max() < 1
    assert torch.equal(out, random_erase(x, torch.Generator().manual_seed(7), 0.5))  # seeded
    assert torch.equal(random_erase(x, torch.Generator().manual_seed(7), 0.0), x)
    with pytest.raises(ConfigError, match="--erase 1.5"):
        TrainConfig(erase=1.5).validate()


def test_resized_crops_cover_a_box_of_at_least_the_smallest_area_and_keep_the_grid():
    from quant.model import ConfigError
    from quant.train import augment, resized_crops
    gen = torch.Generator().manual_seed(5)
    # a horizontal ramp: every output row must be a monotone, resampled piece of it
    ramp = (torch.arange(72) * 3).to(torch.uint8).view(1, 1, 1, 72).expand(32, 3, 72, 72).contiguous()
    crops = resized_crops(ramp, gen, 0.35)
    assert crops.shape == (32, 3, 64, 64)
    assert torch.allclose(crops, crops[:, :, :1].expand_as(crops), atol=1e-3)  # constant down the columns
    assert (crops[..., 1:] >= crops[..., :-1] - 1e-4).all()  # no flip, no wrap
    span = (crops[..., -1] - crops[..., 0]).amax(dim=(1, 2)) / (71 * 3)
    # box side >= sqrt(0.35 x 3/4) of the image; the outer samples sit half a pixel inside it
    assert (span >= 0.35 ** 0.5 * (3 / 4) ** 0.5 * 62 / 64 - 0.02).all() and (span <= 1.0).all()
    assert span.std() > 0.02  # the boxes differ from image to image
    out = augment(ramp, torch.Generator().manual_seed(1), crop_scale=0.5)
    assert out.shape == (32, 3, 64, 64) and torch.equal(out * 256, (out * 256).round())  # on the p/256 grid
    assert torch.equal(out, augment(ramp, torch.Generator().manual_seed(1), crop_scale=0.5))  # seeded
    tr, va = learnable_split(2), learnable_split(1, seed=1)
    for bad in (dict(crop_scale=0.0), dict(crop_scale=1.5), dict(cutmix=2.0)):
        with pytest.raises(ConfigError, match="crop-scale"):
            train(named_config("paper"), tr, va, TrainConfig(epochs=1, **bad), "unused.pt", progress=False)


def test_weight_average_is_the_decayed_mean_keeps_pruned_zeros_and_is_what_the_checkpoint_holds(tmp_path):
    from quant.model import ConfigError
    from quant.train import WeightAverage
    lin = torch.nn.Linear(3, 2)
    avg = WeightAverage(lin, 0.75)
    w0 = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    avg.update(lin)
    assert torch.allclose(avg.state["weight"], w0 + 0.25)  # 0.75 x w0 + 0.25 x (w0 + 1)
    assert torch.equal(avg.model(lin).weight, avg.state["weight"]) and not torch.equal(lin.weight, avg.state["weight"])
    # batch norm: the averaged model's statistics are those of the given batches, not the average's
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    avg = WeightAverage(net, 0.5)
    xs = [torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(i)) * (i + 1) for i in range(3)]
    refreshed = avg.model(net, xs)
    feats = torch.cat([net[0](x) for x in xs]).detach()
    assert torch.allclose(refreshed[1].running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert not refreshed.training and refreshed[1].momentum == net[1].momentum
    assert torch.equal(net[1].running_mean, torch.zeros(4))  # the trained model is untouched

    tr, va = learnable_split(8), learnable_split(2, seed=1)
    fl = train(named_config("paper"), tr, va, TrainConfig(epochs=1, batch=16), tmp_path / "f.pt", progress=False)
    qcfg = quantized_twin(named_config("paper"))
    tc = TrainConfig(epochs=1, batch=16, prune_epochs=1, patience=5, ema=0.9)
    q = train(qcfg, tr, va, tc, tmp_path / "q.pt", init=fl, progress=False)
    assert q["best_epoch"] == 1 and "val_acc_raw" in q["history"][0]
    state = torch.load(tmp_path / "q.resume.pt", weights_only=False)
    for k, v in q["state_dict"].items():  # the saved weights are the average, not the raw weights
        assert torch.equal(v, state["ema"][k]), k
    assert any(not torch.equal(q["state_dict"][k], state["model"][k]) for k in state["model"])
    from quant.model import build
    from quant.prune import p_layers
    saved = build(qcfg)
    saved.load_state_dict(q["state_dict"])
    pruned = p_layers(saved)
    assert pruned  # the average of a pruned layer is as sparse as its target
    for m, target in pruned:
        assert float((m.weight == 0).float().mean()) >= target - 0.01
    resumed = train(qcfg, tr, va, replace(tc, epochs=2), tmp_path / "q.pt", init=fl, resume=True, progress=False)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    with pytest.raises(ConfigError, match="--ema 1.0"):
        train(named_config("paper"), tr, va, TrainConfig(epochs=1, ema=1.0), tmp_path / "bad.pt", progress=False)


def test_padded_crops_shift_each_image_within_its_zero_border_and_flip_some():
    from quant.train import augment, padded_crops
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(1, 256, (64, 3, 8, 6), dtype=torch.uint8, generator=gen)
    out = padded_crops(batch, torch.Generator().manual_seed(1))
    assert out.shape == (64, 3, 8, 6)
    flips = 0
    for img, src in zip(out * 256, batch.float()):
        padded = torch.nn.functional.pad(src, (4, 4, 4, 4))
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                if torch.equal(img, (padded[:, dy:dy + 8, dx:dx + 6].flip(-1) if f else padded[:, dy:dy + 8, dx:dx + 6]))]
        assert hits, "each crop is a shifted (and maybe flipped) window of the zero-padded image"
        flips += all(f for _, _, f in hits)
    assert 16 < flips < 48
    assert torch.equal(augment(batch, torch.Generator().manual_seed(1), shape=(3, 8, 6)), out)  # any shape but 3x64x64


def test_a_short_qat_run_of_resnet8_on_a_few_cifar_images(tmp_path, cifar_dir):
    """The bundled resnet8 recipe's path (float with batch norm, folded, QAT) on 2 images per class."""
    cfg = named_config("resnet8")
    tr = read_split(cifar_dir, "train", limit=2, shape=cfg.in_shape)
    va = read_split(cifar_dir, "val", tr.class_names, limit=1, shape=cfg.in_shape)
    assert tr.images.shape == (20, 3, 32, 32) and len(tr.class_names) == 10
    fl = train(cfg, tr, va, TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, epochs=1, batch=10), tmp_path / "f.pt",
               progress=False)
    q = train(quantized_twin(cfg), tr, va, TrainConfig(epochs=1, batch=10, lr=2e-4, prune_epochs=0), tmp_path / "q.pt",
              init=fl, progress=False)
    assert q["config"]["quantized"] and q["bn_fold"]["val_acc_after"] == pytest.approx(q["bn_fold"]["val_acc_before"])
    res = evaluate(tmp_path / "q.pt", cifar_dir, "val", limit=1)
    assert res["images"] == 10 and res["accuracy"] == pytest.approx(q["metrics"]["val_acc"], abs=1e-6)
