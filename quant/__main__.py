"""`python -m quant`: train, evaluate, experiment, report."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from common.data import default_data


def add_train_args(p: argparse.ArgumentParser) -> None:
    from quant.train import TrainConfig
    d = TrainConfig()
    p.add_argument("--optimizer", choices=["adam", "sgd"], default=d.optimizer)
    p.add_argument("--lr", type=float, default=None, help="default: 1e-3 for adam, 0.1 for sgd, 5e-4 for QAT")
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum (default %(default)s)")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 30 float, 14 QAT)")
    p.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience on validation loss")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no random crop/flip/jitter")
    p.add_argument("--prune-epochs", type=int, default=d.prune_epochs, help="QAT: epochs to reach the target sparsity")
    p.add_argument("--schedule", choices=["constant", "cosine"], default=d.schedule, help="learning-rate schedule (default %(default)s)")
    p.add_argument("--warmup", type=int, default=d.warmup, help="epochs of linear warm-up before the cosine decay")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="cross-entropy label smoothing (e.g. 0.1)")
    p.add_argument("--crop-scale", type=float, default=d.crop_scale, metavar="A",
                   help="random resized crops: the smallest area fraction of the image a training crop covers, resampled "
                        "to 64 px (e.g. 0.35; default 1.0, a plain 64-px crop of the 72-px image)")
    p.add_argument("--cutmix", type=float, default=d.cutmix, metavar="P",
                   help="probability that a batch is CutMix-ed: a random box pasted from another image, labels mixed by area (e.g. 0.5)")
    p.add_argument("--mixup", type=float, default=d.mixup, metavar="ALPHA",
                   help="mixup: every batch (that --cutmix leaves) is blended with a shuffled copy of itself, weight ~ Beta(ALPHA, "
                        "ALPHA), the loss mixed the same way (e.g. 0.2; default 0, none)")
    p.add_argument("--distill", type=float, default=None, metavar="ALPHA",
                   help="with --teacher: weight of the distillation term (default 0.5); the loss is (1-ALPHA) x "
                        "cross-entropy + ALPHA x KL to the teachers' mean softmax at --distill-temp")
    p.add_argument("--distill-temp", type=float, default=d.distill_temp, metavar="T", help="distillation temperature (default %(default)s)")
    p.add_argument("--erase", type=float, default=d.erase, metavar="P",
                   help="random erasing: probability that a training image has one random box (2-33%% of its area) "
                        "replaced by noise pixels (e.g. 0.5; default 0, none)")
    p.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                   help="evaluate and save an exponential moving average of the weights, updated each step with this "
                        "decay (e.g. 0.99: about the last 100 steps; default 0, the raw weights)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW / SGD weight decay")


def add_model_args(p: argparse.ArgumentParser) -> None:
    from quant.model import arch_files
    p.add_argument("--arch", default="paper", metavar="NAME|FILE",
                   help=f"a named architecture ({', '.join(arch_files())}; paper: the seed CNN, paper-nopool2: without the second "
                        "pool, vgg: 16-32-64, edge: same-padded convs with batch norm and global average pooling, "
                        "edge-wide: edge at 12-32-48-64-96-128) or a "
                        ".json/.yaml description file: {\"layers\": [{\"kind\": \"conv\", \"out\": 16, \"kernel\": 3, "
                        "\"padding\": \"same\", \"bn\": true, \"per_channel\": true}, {\"kind\": \"maxpool\", \"kernel\": 2}, ...]}; "
                        "kinds: conv, maxpool, avgpool, globalavgpool, residual, flatten, linear")
    p.add_argument("--sparsity", type=float, default=None, help="target sparsity of P-layers (default 0.9)")
    p.add_argument("--config", default=None, help="JSON file of per-layer overrides: {\"layers\": {\"2\": {\"w_bits\": 4, \"cls\": \"P\", \"sparsity\": 0.8}}} (weighted layers counted from 0)")


def add_data_args(p: argparse.ArgumentParser, split: bool = False) -> None:
    p.add_argument("--data", default=default_data(), required=default_data() is None,
                   help="ImageFolder-style folder: train/, val/ [, test/] of <class>/ folders, or one folder of <class>/ folders (default: ../shared/data/animals5)")
    p.add_argument("--classes", default=None, help="comma list of classes in order (English or Animals-10 Italian names)")
    if split:
        p.add_argument("--split", default="val", choices=["train", "val", "test"])
        p.add_argument("--limit", type=int, default=None, help="at most N images per class")


def _classes(args) -> list[str] | None:
    return [c.strip() for c in args.classes.split(",")] if args.classes else None


def train_config(args, qat: bool):
    from quant.train import TrainConfig
    kw = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    kw.setdefault("lr", 5e-4 if qat else (0.1 if args.optimizer == "sgd" else 1e-3))
    kw.setdefault("epochs", 14 if qat else 30)
    return TrainConfig(**kw)


def cmd_train(args) -> int:
    """`quant train` with its --out checked writable and locked, so two runs cannot write one checkpoint."""
    from common.atomic import check_writable
    from common.lock import exclusive
    check_writable(args.out)
    with exclusive(args.out, "quant train"):
        return train_to_out(args)


def train_to_out(args) -> int:
    from quant import checkpoint
    from quant.data import DataError, check_model_input, read_split
    from dataclasses import replace

    from quant.model import ConfigError, ModelConfig, apply_overrides, named_config, quantized_twin
    from quant.train import train
    if Path(args.out).exists() and not (args.resume or args.force):
        raise ConfigError(f"{args.out}: a checkpoint is already there; pass --force to overwrite it, --resume to continue its run, "
                          "or choose another --out")
    if args.distill is not None and not args.teacher:
        raise ConfigError(f"--distill {args.distill}: distillation needs both teachers and a weight; give --teacher CKPT too, or drop --distill")
    init = checkpoint.load(args.init) if args.init else None
    if init is not None and init["config"].get("quantized"):
        raise ConfigError(f"{args.init}: a quantized checkpoint; --init takes a float one (QAT starts from float weights)")
    teachers = [checkpoint.load(t) for t in args.teacher or []]  # before the data: a bad path fails at once
    if init is not None:
        cfg = ModelConfig.from_dict(init["config"])
        if args.sparsity is not None:
            for l in cfg.layers:
                if l.cls == "P":
                    l.sparsity = args.sparsity
        if args.config is not None:
            apply_overrides(cfg, args.config)
        cfg = quantized_twin(cfg).validate() if args.qat else cfg.validate()
    else:
        cfg = named_config(args.arch, args.config, sparsity=args.sparsity)
    if args.teacher and args.distill is None:
        args.distill = 0.5
    tc = train_config(args, args.qat).validate()  # before the data: a bad value fails at once
    classes = _classes(args) or (init["class_names"] if init else None)
    check_model_input(cfg.in_shape, f"architecture {cfg.arch!r}", args.data, "train")
    tr = read_split(args.data, "train", classes, shape=cfg.in_shape)
    va = read_split(args.data, "val", tr.class_names, shape=cfg.in_shape)
    if init is not None and tr.class_names != init["class_names"]:
        raise ConfigError(f"{args.init} was trained on classes {', '.join(init['class_names'])}; training from it needs the same ones in "
                          f"the same order, not {', '.join(tr.class_names)} (drop --classes or train a float model on them)")
    n = len(tr.class_names)
    if n < 2:
        raise DataError(f"{args.data}: the training data holds one class ({tr.class_names[0]}); a classifier needs two or more")
    if cfg.num_classes != n:  # a --classes subset: one logit per class
        cfg = replace(cfg, num_classes=n, layers=[*cfg.layers[:-1], replace(cfg.layers[-1], out=n)]).validate()
    print(f"data: {len(tr)} train / {len(va)} val images, classes {', '.join(tr.class_names)}"
          + (f" ({tr.skipped + va.skipped} unreadable files skipped)" if tr.skipped + va.skipped else ""))
    ckpt = train(cfg, tr, va, tc, args.out, init=init, resume=args.resume,
                 init_record={"path": str(args.init), "sha256": checkpoint.file_hash(args.init)} if init is not None else None,
                 teachers=teachers or None,
                 teacher_records=[{"path": str(t), "sha256": checkpoint.file_hash(t)} for t in args.teacher or []] or None)
    print(f"best epoch {ckpt['best_epoch']}: val acc {ckpt['metrics']['val_acc']:.4f}, val loss {ckpt['metrics']['val_loss']:.4f} -> {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    from quant.evaluate import evaluate
    res = evaluate(args.checkpoint, args.data, args.split, _classes(args), args.limit, args.plots)
    if args.json:
        from common.atomic import atomic_write_text
        atomic_write_text(args.json, json.dumps(res, indent=1))
    from quant.metrics import format_metrics
    print(format_metrics(res))
    return 0


def cmd_experiment(args) -> int:
    from quant.experiment import run_experiment
    run_experiment(args.data, args.out, quick=args.quick, seed=args.seed, both_pools=not args.skip_nopool2, arch=args.arch,
                   jobs=args.jobs)
    return 0


def plan_storage(path: Path) -> dict:
    """A quantized checkpoint's storage from export's accounting: exported to ONNX, compiled, and
    read from the layer plan (dense layers at their bit width, P-layers as values + indices)."""
    import tempfile

    import numpy as np

    from export.compile import CompileError, compile_onnx
    from export.onnx_export import export
    from quant.report import ReportError
    with tempfile.TemporaryDirectory() as tmp:
        try:
            plan = compile_onnx(export(path, Path(tmp) / "model.onnx"))
        except CompileError as e:
            raise ReportError(f"{path}: cannot compile the exported model: {e}") from None
    layers = [{"name": l.name, "kind": l.kind, "cls": l.cls, "weights": int(l.weight.size),
               "nonzero": int(np.count_nonzero(l.weight)), "w_bits": l.w_type.bits,
               "index_bits": l.sparse.index_bits if l.sparse is not None else None,
               "weight_bits": l.weight_bits, "float_bits": l.float_bits} for l in plan.compute_layers]
    return {"weight_bits": plan.weight_bits, "float_bits": plan.float_bits,
            "compression_ratio": plan.compression_ratio, "layers": layers,
            "macs_dense": plan.macs_dense, "macs_effective": plan.macs_effective}


def cmd_report(args) -> int:
    from quant.report import build_report, markdown, side_by_side, write_report
    reps = [build_report(r, plan_storage, args.data) for r in args.results]
    if len(reps) == 1:
        write_report(reps[0], args.json, args.markdown)
        print(Path(args.markdown).read_text() if args.markdown else json.dumps(reps[0], indent=1))
        return 0
    from common.atomic import atomic_write_text
    text = side_by_side(reps) + "".join("\n" + markdown(r) for r in reps)
    if args.json:
        atomic_write_text(args.json, json.dumps({"experiments": reps}, indent=1))
    if args.markdown:
        atomic_write_text(args.markdown, text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quant", description="Quantization-aware training of the paper CNN (Brevitas): float and QAT+pruned models, metrics, plots, the Adam-vs-SGD experiment and the accuracy/compression report.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("train", help="train a float model, or fine-tune a quantized (QAT+pruned) one from a float checkpoint",
                       description="Float training (Adam lr 1e-3 or SGD lr 0.1), or with --qat --init FLOAT.pt quantization-aware fine-tuning with gradual magnitude pruning of the P-layers. Early stopping on validation loss; the best epoch is saved to --out; Ctrl-C keeps it; --resume continues.")
    add_data_args(p)
    add_model_args(p)
    add_train_args(p)
    p.add_argument("--qat", action="store_true", help="quantization-aware fine-tuning (needs --init)")
    p.add_argument("--init", default=None, help="float checkpoint to start from: with --qat, QAT of its quantized twin (batch "
                                                "norm folded); without, float training warm-started from its weights (a "
                                                "second schedule, e.g. a restart of the cosine at a lower learning rate)")
    p.add_argument("--teacher", nargs="+", default=None, metavar="CKPT",
                   help="knowledge distillation from these checkpoints (e.g. the float Adam and SGD runs): the student "
                        "also learns their mean softmax on each augmented batch (see --distill); recorded in the checkpoint")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.resume.pt (same config; --epochs and --patience may change)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy, macro P/R/F1, confusion matrix, curves and the 5x8 prediction grid",
                       description="Evaluate a checkpoint on one split (centre-cropped 64x64). Default checkpoint: the bundled QAT+pruned paper model.")
    p.add_argument("--checkpoint", default=None, help="checkpoint (.pt); default: the bundled QAT+pruned paper model")
    add_data_args(p, split=True)
    p.add_argument("--json", default=None, help="write the metrics as JSON here")
    p.add_argument("--plots", default=None, help="write confusion.png, curves.png, grid.png into this folder")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("experiment", help="the paper's Table 2 (Adam vs SGD, float, with and without the second pool), then QAT and QAT+pruned",
                       description="Trains float Adam and SGD (paper and paper-nopool2), then QAT-unpruned and QAT+pruned fine-tuned from the better float paper model; writes every checkpoint, curve and metric into --out.")
    add_data_args(p)
    p.add_argument("--out", required=True, help="results folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a few batches per run (a smoke test, not a result)")
    p.add_argument("--skip-nopool2", action="store_true", help="train only the default (two-pool) architecture")
    p.add_argument("--arch", default="paper", metavar="NAME|FILE",
                   help="the architecture of the Adam-vs-SGD pair and its QAT (default paper; edge uses its own recipe: "
                        "cosine schedule, label smoothing, weight decay, 60 float epochs); a re-run skips the runs already "
                        "in the folder's experiment.json")
    p.add_argument("--jobs", type=int, default=1, choices=[1, 2],
                   help="2: train the Adam and SGD float runs at once, in two processes on half the torch threads each "
                        "(the same recipe as one after the other; one thread instead of two changes only float rounding)")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("report", help="accuracy/compression table of an experiment's results, beside the paper's figures")
    p.add_argument("--results", required=True, nargs="+", metavar="DIR|QAT.pt",
                   help="an experiment's --out folder, or a QAT checkpoint (shown with the float checkpoint it was fine-tuned "
                        "from, e.g. quant/checkpoints/resnet8_qat.pt); several (e.g. paper, edge and resnet8) are shown side "
                        "by side: accuracy, P/R/F1, params, MACs, weight bits stored, compression, training time")
    p.add_argument("--data", default=None, help="for a checkpoint in --results: the data folder to evaluate it on (default: "
                                                "the folder beside the default data whose classes are the checkpoint's)")
    p.add_argument("--json", default=None, help="write the report as JSON")
    p.add_argument("--markdown", default=None, help="write the report as Markdown")
    p.set_defaults(func=cmd_report)

    args = ap.parse_args(argv)
    if args.cmd == "train" and args.qat and not args.init:
        ap.error("--qat needs --init FLOAT_CHECKPOINT")
    from quant.checkpoint import CheckpointError
    from quant.data import DataError
    from quant.model import ConfigError
    from common.cli import run_command
    return run_command(args, (DataError, CheckpointError, ConfigError))


if __name__ == "__main__":
    sys.exit(main())
