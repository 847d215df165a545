"""`python -m boards`: classify an image on a board over its UART; list the known boards; check the tools.

    python -m boards classify --port /dev/ttyUSB0 IMAGE [--baud 115200] [--plan out/plan.json]
    python -m boards list
    python -m boards doctor
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from boards.errors import BoardError
from boards.top import DEFAULT_BAUD


def cmd_classify(args: argparse.Namespace) -> int:
    from boards.host import check_link, classify, load_image
    from export.plan import Plan

    check_link(args.baud, args.timeout)
    plan_path = Path(args.plan)
    if not plan_path.with_suffix(".json").is_file():
        raise BoardError(f"{plan_path}: no plan; pass --plan OUT/plan.json from the bitstream-rtl run that built the bitstream")
    plan = Plan.load(plan_path)
    num_classes = plan.layers[-1].out_shape[0]
    names = plan.class_names or [str(i) for i in range(num_classes)]
    image = load_image(args.image, plan.input_shape)
    c, h, w = plan.input_shape
    if image.shape != (h, w, c):
        raise BoardError(f"{args.image}: loads as {image.shape}, the model takes {(h, w, c)} (HWC)")
    logits, cls = classify(args.port, image, num_classes, args.baud, args.timeout)
    scale = 2.0 ** plan.logit_exp
    width = max(len(n) for n in names)
    for i, (name, v) in enumerate(zip(names, logits)):
        mark = "  <-" if i == cls else ""
        print(f"{name:<{width}}  {int(v):>12d}  ({v * scale:+.4f}){mark}")
    print(f"class: {names[cls]}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from boards.profiles import PROFILES

    for p in PROFILES.values():
        build = "bitstream (open toolchain)" if p.has_open_toolchain else "RTL + Vivado script"
        print(f"{p.name:<11} {p.part:<10} LUT {p.luts:>6,}  DSP {p.dsps:>3}  BRAM {p.bram_bits // 1024:>5} Kbit"
              f"{f'  SPRAM {p.spram_bits // 1024} Kbit' if p.spram_bits else ''}  {p.clock_mhz:g} MHz  {build}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from boards.doctor import doctor

    return doctor()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m boards",
                                 description="Talk to the accelerator on a board; list the boards; check the tools.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("classify", help="send an image to the board over its UART, print the logits and the class",
                       description="Loads IMAGE as the model sees it (72-px shorter side, centre 64x64), sends the magic "
                                   "byte and the HWC bytes, and prints the board's int32 logits and class.")
    p.add_argument("image", help="an image file (JPEG, PNG, ...)")
    p.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0 (any pyserial URL)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD, help="baud rate the bitstream was built for (default %(default)s)")
    p.add_argument("--plan", default="out/plan.json", help="the plan of the bitstream, for class names (default %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply (default %(default)s)")
    p.set_defaults(func=cmd_classify)
    p = sub.add_parser("list", help="the known boards and their resources")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("doctor", help="check the external tools the flows run (synthesis, place-and-route, Verilator)",
                       description="Lists yosys, nextpnr-ecp5/ice40, ecppack, icepack (YoWASP), Verilator, perl, the "
                                   "C++ compiler and make: where each was found ($YOSYS etc., next to this interpreter, "
                                   "or on PATH), its version, whether a YoWASP tool has done its first-use compilation, "
                                   "and the command that installs a missing one. Runs no YoWASP tool of this environment.",
                       epilog="Exit status: 0 when everything a default run (the default board's toolchain and the "
                              "RTL simulation) needs is installed, 1 otherwise.")
    p.set_defaults(func=cmd_doctor)
    args = ap.parse_args(argv)
    from export.plan import PlanError
    from quant.data import DataError
    from common.cli import run_command
    return run_command(args, (BoardError, PlanError, DataError))


if __name__ == "__main__":
    sys.exit(main())
