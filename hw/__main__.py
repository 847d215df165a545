"""`python -m hw generate`: a plan (from ONNX, a saved plan, or the bundled model) to Verilog.

Writes accelerator.v (memory contents inline), its port and memory inventory accelerator.json
and a SystemVerilog testbench, and prints per layer the cycle model's prediction, the array
utilisation and the memory bits. Errors are one line on stderr and exit status 2, Ctrl-C exit
status 130 (every file is written atomically).
"""

from __future__ import annotations

import argparse
import sys
import time

ARRAY_HELP = """rows x cols of the PE array, 1..16 each (default 10x9). 10x9 fits the paper model:
its convs have 10 and 20 output channels (rows = 10 wastes none) and 62- and 27-pixel output
rows (cols = 9 tiles them as 7x9 = 63 and 3x9 = 27), so the convs keep ~98%% and ~99.9%% of the
90 multipliers busy, within an ECP5-85F's 156 DSPs. auto: of the arrays whose accelerator passes
--board's fit check, the one with the fewest predicted cycles per image for this model (fewer PEs
among equals). RxC/L also sets the sparse engine's lanes (1..16; default: one per 2048
stored entries of the largest pruned layer, at most 4)."""


def _plan(args):
    if args.onnx and args.plan:
        raise ValueError("give --onnx or --plan, not both")
    if args.plan:
        from export.plan import Plan
        return Plan.load(args.plan)
    from export.compile import compile_onnx, default_plan
    return compile_onnx(args.onnx) if args.onnx else default_plan()


def _table(info: dict) -> str:
    lines = [f"array {info['array']}: {info['multipliers']} multipliers, "
             f"{info['memory_bits_total'] / 1024:.1f} Kbit on chip, {info['total_cycles']} cycles per image (latency), "
             f"one image per {info['period_cycles']} cycles in a stream (predicted)",
             f"{'pass':7s} {'layer':24s} {'cycles':>9s} {'util':>7s} {'weight bits':>11s}"]
    for r in info["layers"]:
        util = f"{100 * r['utilisation']:6.2f}%" if "utilisation" in r else ""
        bits = f"{r['memory_bits']:11d}" if r["memory_bits"] else ""
        name = r["name"] if len(r["name"]) <= 20 else ".." + r["name"][-18:]
        index = "" if r["pass"] in ("load", "emit") else str(r["layer"])
        lines.append(f"{r['pass']:7s} {index:>3s} {name:20s} {r['cycles']:9d} {util:>7s} {bits:>11s}")
    lines.append("on-chip memories (bits):")
    lines += [f"  {name:16s} {bits:9d}" for name, bits in info["memory_bits"].items()]
    return "\n".join(lines)


def cmd_generate(args: argparse.Namespace) -> int:
    from boards.fit import array_for
    from hw.config import parse_array_option
    from hw.top import generate
    t0 = time.monotonic()
    parse_array_option(args.array)  # a bad --array is refused before the plan is compiled
    plan = _plan(args)
    config, fit = array_for(plan, args.array, args.board)
    if fit:
        print(f"--array auto: {config} ({fit})")
    info = generate(plan, config, args.out)
    print(_table(info))
    print(f"wrote {', '.join(info['files'])} to {args.out} in {time.monotonic() - t0:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    from boards.profiles import DEFAULT_BOARD
    parser = argparse.ArgumentParser(prog="python -m hw", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate", help="write the accelerator's Verilog and its port and memory inventory",
                         description="Compile a plan into accelerator.v (memory contents inline) + accelerator.json "
                                     "(ports, memories) and print the cycle model.")
    gen.add_argument("--onnx", help="a QCDQ model.onnx to compile (default: the bundled model)")
    gen.add_argument("--plan", metavar="STEM", help="a saved plan (STEM.json + STEM.npz) instead of ONNX")
    gen.add_argument("--array", default="10x9", metavar="RxC|auto", help=ARRAY_HELP)
    gen.add_argument("--board", default=DEFAULT_BOARD, help="the board --array auto fits (default %(default)s)")
    gen.add_argument("--out", required=True, metavar="DIR", help="output folder")
    gen.set_defaults(func=cmd_generate)
    args = parser.parse_args(argv)
    from common.cli import run_command
    # UnsupportedPlan, PlanError, CompileError, FitError and UnknownBoard are ValueErrors
    return run_command(args, (ValueError,))


if __name__ == "__main__":
    sys.exit(main())
