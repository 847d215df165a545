"""Netlist rewrites between synthesis and place-and-route: ECP5 block RAM output registers.

An ECP5 block RAM (DP16KD) has an output register of its own (REGMODE OUTREG), but yosys maps
every memory without it: the design's register after the block's read port stays a fabric
flip-flop. The block's clock-to-out is 5.6 ns, and nextpnr's placer can leave those flip-flops
up to 100 columns from their block (docs/boards.md). `absorb_output_registers` moves each such flip-flop into its block:
where every used output of a port drives exactly one plain flip-flop (the port's clock, no
enable, no set or reset) and nothing else, the port's REGMODE becomes OUTREG, each output takes
over its flip-flop's net and the flip-flops go. The function is unchanged (the register moves,
its timing is the block's); hw/ keeps a plain `Memory` and a register, the netlist the RTL
simulation checks.

    python -m boards.netlist IN.json OUT.json   (the flow's "outreg" step after synth on an ECP5)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from common.atomic import atomic_write_text

BLOCK = "DP16KD"
PORTS = ("A", "B")


def _plain_ff(cell: dict, clock) -> bool:
    """A TRELLIS_FF that loads DI every cycle of `clock` and is never set or reset."""
    p, c = cell["parameters"], cell["connections"]
    return (cell["type"] == "TRELLIS_FF" and str(p.get("CLKMUX", "CLK")).strip() == "CLK" and c.get("CLK") == clock
            and (str(p.get("CEMUX", "")).strip() == "1" or c.get("CE") == ["1"])
            and (c.get("LSR") in (["0"], None) or str(p.get("LSRMUX", "")).strip() == "0")
            and "DI" in c)


def absorb_output_registers(netlist: dict) -> int:
    """Rewrite `netlist` (yosys JSON, every module) in place; returns the ports given OUTREG."""
    done = 0
    for module in netlist["modules"].values():
        cells = module.get("cells", {})
        sinks: dict = defaultdict(list)
        for name, cell in cells.items():
            dirs = cell.get("port_directions", {})
            for port, bits in cell["connections"].items():
                if dirs.get(port) != "output":
                    for bit in bits:
                        sinks[bit].append((name, port))
        for port in module.get("ports", {}).values():
            if port["direction"] != "input":
                for bit in port["bits"]:
                    sinks[bit].append((None, None))
        for name in [n for n, c in cells.items() if c["type"] == BLOCK]:
            block = cells[name]
            conn, params = block["connections"], block["parameters"]
            for side in PORTS:
                if str(params.get(f"REGMODE_{side}", "NOREG")).strip() != "NOREG":
                    continue
                if conn.get(f"OCE{side}") != ["1"] or conn.get(f"RST{side}") != ["0"] or conn.get(f"CE{side}") != ["1"]:
                    continue
                clock = conn.get(f"CLK{side}")
                outs = [(p, bits[0]) for p, bits in conn.items() if p.startswith(f"DO{side}") and sinks.get(bits[0])]
                ffs = []
                for p, bit in outs:
                    s = sinks[bit]
                    if len(s) != 1 or s[0][0] is None or s[0][1] != "DI" or not _plain_ff(cells[s[0][0]], clock):
                        break
                    ffs.append((p, s[0][0]))
                else:
                    if not ffs:
                        continue
                    for p, ff in ffs:
                        conn[p] = cells[ff]["connections"]["Q"]
                        del cells[ff]
                    params[f"REGMODE_{side}"] = "OUTREG"
                    done += 1
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m boards.netlist", description=(
        "Move the flip-flop after each ECP5 block RAM read port into the block's own output "
        "register (REGMODE OUTREG), in a yosys JSON netlist."))
    ap.add_argument("netlist", type=Path, help="yosys JSON from synth_ecp5")
    ap.add_argument("out", type=Path, help="where to write the rewritten JSON")
    args = ap.parse_args(argv)
    try:
        netlist = json.loads(args.netlist.read_text())
    except (OSError, ValueError) as e:
        print(f"error: cannot read the netlist {args.netlist}: {e}", file=sys.stderr)
        return 2
    n = absorb_output_registers(netlist)
    atomic_write_text(args.out, json.dumps(netlist))
    print(f"{n} block RAM read ports now use their output register (REGMODE OUTREG)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
