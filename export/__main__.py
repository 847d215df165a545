"""`python -m export`: onnx, plan, check, bitstream-rtl."""

from __future__ import annotations

import argparse
import sys

from export.plan import Plan


def plan_table(plan: Plan) -> str:
    """The per-layer table of `python -m export plan`."""
    head = ("layer", "kind", "in", "out", "class", "w/a bits", "sparsity", "MACs dense", "MACs eff.", "stored bits", "acc bound / 2^24")
    rows = []
    for i, l in enumerate(plan.layers):
        shape = lambda s: "x".join(map(str, s))
        bits = f"{l.w_type.bits}/{l.inp.bits}" if l.w_type else f"-/{l.inp.bits}"
        rows.append((str(i), l.kind, shape(l.in_shape), shape(l.out_shape), l.cls if l.weight is not None else "-", bits,
                     f"{l.sparsity:.1%}" if l.weight is not None else "-",
                     f"{l.macs_dense:,}", f"{l.macs_effective:,}", f"{l.weight_bits:,}",
                     f"{l.acc_bound / (1 << 24):.3f}" if l.weight is not None else "-"))
    widths = [max(len(r[c]) for r in rows + [head]) for c in range(len(head))]
    fmt = lambda r: "  ".join(v.rjust(w) for v, w in zip(r, widths))
    out = [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]
    out.append(f"total: {plan.macs_dense:,} MACs dense, {plan.macs_effective:,} effective; weights stored {plan.weight_bits:,} bits "
               f"vs {plan.float_bits:,} in float32 = {plan.compression_ratio:.1f}x compression; logits LSB 2^{plan.logit_exp}")
    for l in plan.layers:
        if l.sparse is not None:
            s = l.sparse
            out.append(f"{l.name}: P-layer encoding {s.entries:,} entries ({s.padding:,} padding) x ({s.value_bits}-bit value + "
                       f"{s.index_bits}-bit delta) + {s.row_ptr.size} row pointers x {s.ptr_bits} bits")
    return "\n".join(out)


def cmd_onnx(args) -> int:
    from export.onnx_export import export
    path = export(args.checkpoint, args.out)
    print(f"wrote {path} (passes onnx.checker)")
    if args.data:
        agree = brevitas_agreement(args.checkpoint, path, args.data, args.split, args.limit)
        print(f"ONNX Runtime vs Brevitas on {agree['images']} {args.split} images: same class {agree['same_class']}/{agree['images']}, "
              f"max |logit difference| {agree['max_logit_diff']:.3g}")
    return 0


def brevitas_agreement(ckpt_path, onnx_path, data, split, limit=None) -> dict:
    """Same class from ONNX Runtime and the Brevitas model on every image of a split?"""
    import numpy as np
    import torch

    from export.ort import golden_session, run_logits
    from quant import checkpoint
    from quant.data import check_model_input, load_split
    from quant.train import predict
    model = checkpoint.model_from(checkpoint.load(ckpt_path))
    check_model_input(model.config.in_shape, ckpt_path)
    x, _, _ = load_split(data, split, limit)
    ort_logits = run_logits(golden_session(onnx_path), x)
    with torch.no_grad():
        bl = predict(model, x).numpy()
    return {"images": len(x), "same_class": int((bl.argmax(1) == ort_logits.argmax(1)).sum()),
            "max_logit_diff": float(np.abs(bl - ort_logits).max())}


def notes(model_path, plan: Plan) -> list[str]:
    """One line each for what the compiler did to the model besides compiling it (QONNX converted, a softmax cut off)."""
    import onnx

    from export.qonnx_import import is_qonnx
    out = []
    if is_qonnx(onnx.load(str(model_path), load_external_data=False)):
        out.append("a QONNX model: converted to the QCDQ golden model (qonnx QuantToQCDQ; constant Quant nodes to integers)")
    if "cut_off" in plan.meta:
        out.append(plan.meta["cut_off"])
    return out


def cmd_plan(args) -> int:
    import time

    from export.compile import compile_onnx
    t = time.time()
    plan = compile_onnx(args.model)
    dt = time.time() - t
    print(plan_table(plan))
    for line in notes(args.model, plan):
        print(f"note: {line}")
    print(f"compiled in {dt:.2f} s")
    if args.out:
        j, n = plan.save(args.out)
        print(f"wrote {j} and {n}")
    return 0


def cmd_check(args) -> int:
    from export.check import compare
    from export.compile import compile_onnx
    from quant.data import DataError, check_model_input, load_split
    plan = compile_onnx(args.model)
    lines = notes(args.model, plan)
    for line in lines:
        print(f"note: {line}")
    check_model_input(plan.input_shape, args.model, args.data, args.split)
    x, _, _ = load_split(args.data, args.split, args.limit, shape=tuple(plan.input_shape))
    t = plan.input_type
    if len(x) and (x.min() < t.min or x.max() > t.max):
        raise DataError(f"{args.data}: the {args.split} data holds {int(x.min())}..{int(x.max())}, but {args.model}'s input "
                        f"is {'signed' if t.signed else 'unsigned'} {t.bits}-bit ({t.min}..{t.max})")
    res = compare(args.model, plan, x, progress=True)
    print(f"reference == ONNX Runtime on every layer: {res.exact}/{res.images} {args.split} images")
    for m in res.mismatches[:10]:
        print(f"  mismatch: {m}")
    ok = res.exact == res.images
    if any(line.startswith("a QONNX model") for line in lines):
        from export.check import qonnx_agreement
        equal, worst = qonnx_agreement(args.model, plan.input_float(x))
        print(f"QCDQ golden model == qonnx execution of the QONNX original: {equal}/{len(x)} {args.split} images "
              f"(max |difference| {worst:.3g})")
        ok = ok and equal == len(x)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    from common.data import default_data as _data_default
    ap = argparse.ArgumentParser(prog="python -m export", description="Export the quantized CNN to ONNX (the golden model), compile it to the integer layer plan, check the plan's reference against ONNX Runtime, and run the whole chain to a bitstream.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("onnx", help="Brevitas QCDQ export of a checkpoint to ONNX", description="Export a quantized checkpoint (default: the bundled QAT+pruned paper model) to ONNX with class names, input scale, model config and checkpoint hash in its metadata. With --data, also report ONNX Runtime vs Brevitas agreement on a split.")
    p.add_argument("--checkpoint", default=None, help="quantized checkpoint (.pt); default: the bundled QAT+pruned model")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--data", default=None, help="compare ONNX Runtime with Brevitas on this data folder")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=None, help="at most N images per class")
    p.set_defaults(func=cmd_onnx)

    p = sub.add_parser("plan", help="compile ONNX to the integer layer plan and print its per-layer table", description="Compile a QCDQ ONNX model to the layer plan (checks every rule of the number contract) and print kind, shapes, NP/P, bits, sparsity, MACs, stored bits and the accumulator bound per layer.")
    p.add_argument("model", help="ONNX file from `python -m export onnx`")
    p.add_argument("--out", default=None, help="write STEM.json and STEM.npz")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("check", help="the plan's integer reference vs ONNX Runtime on every layer of every image of a split")
    p.add_argument("model", help="ONNX file")
    p.add_argument("--data", default=_data_default(), required=_data_default() is None)
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=None, help="at most N images per class")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("bitstream-rtl", help="checkpoint -> ONNX -> plan -> Verilog -> RTL simulation -> bitstream + report",
                       description="The whole chain in one command. With no arguments: the bundled QAT+pruned checkpoint, the ULX3S-85F, out/.")
    try:
        from boards.flow import add_arguments, run
    except ImportError:
        add_arguments = run = None
    if add_arguments is not None:
        add_arguments(p)
        p.set_defaults(func=run)
    else:
        p.set_defaults(func=lambda a: (print("error: the boards flow is not installed", file=sys.stderr), 2)[1])

    args = ap.parse_args(argv)
    from export.compile import CompileError
    from export.plan import PlanError
    from quant.checkpoint import CheckpointError
    from quant.data import DataError
    errors: tuple = (CompileError, PlanError, CheckpointError, DataError)
    try:
        from boards.errors import BoardError
        errors += (BoardError,)
    except ImportError:
        pass
    from common.cli import run_command
    return run_command(args, errors)


if __name__ == "__main__":
    sys.exit(main())
