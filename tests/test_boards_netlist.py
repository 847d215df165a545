"""boards.netlist: ECP5 block RAM read registers moved into the blocks (REGMODE OUTREG), on
hand-made yosys JSON netlists, and through its command line."""

import copy
import json
import subprocess
import sys

import pytest

from boards.netlist import absorb_output_registers

CLK = 2


def ff(d, q, **params):
    return {"type": "TRELLIS_FF", "parameters": {"CEMUX": "1 ", "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR",
                                                  "REGSET": "RESET", **params},
            "port_directions": {"CLK": "input", "DI": "input", "LSR": "input", "Q": "output"},
            "connections": {"CLK": [CLK], "DI": [d], "LSR": ["0"], "Q": [q]}}


def block(outs: dict, **conn):
    """A DP16KD whose port A outputs DOA<i> drive the nets in `outs`; port B unused."""
    c = {"CLKA": [CLK], "CEA": ["1"], "OCEA": ["1"], "RSTA": ["0"], "CLKB": ["0"], "CEB": ["0"], "OCEB": ["1"],
         "RSTB": ["0"], **{f"DOA{i}": [n] for i, n in outs.items()}, "DOB0": [90], **conn}
    dirs = {k: ("output" if k.startswith("DO") else "input") for k in c}
    return {"type": "DP16KD", "parameters": {"REGMODE_A": "NOREG", "REGMODE_B": "NOREG"}, "port_directions": dirs,
            "connections": c}


def user(net):
    return {"type": "LUT4", "parameters": {}, "port_directions": {"A": "input", "Z": "output"},
            "connections": {"A": [net], "Z": [99]}}


def netlist(cells):
    return {"modules": {"top": {"ports": {"o": {"direction": "output", "bits": [99]}}, "cells": cells}}}


def test_each_output_flip_flop_moves_into_the_block():
    n = netlist({"ram": block({0: 10, 1: 11}), "q0": ff(10, 20), "q1": ff(11, 21), "u0": user(20), "u1": user(21)})
    assert absorb_output_registers(n) == 1
    cells = n["modules"]["top"]["cells"]
    assert set(cells) == {"ram", "u0", "u1"}
    ram = cells["ram"]
    assert ram["parameters"]["REGMODE_A"] == "OUTREG" and ram["parameters"]["REGMODE_B"] == "NOREG"
    assert ram["connections"]["DOA0"] == [20] and ram["connections"]["DOA1"] == [21]


@pytest.mark.parametrize("why,cells", [
    ("an output also drives logic", {"ram": block({0: 10, 1: 11}), "q0": ff(10, 20), "q1": ff(11, 21), "x": user(11)}),
    ("an output drives logic only", {"ram": block({0: 10, 1: 11}), "q0": ff(10, 20), "x": user(11)}),
    ("a flip-flop has an enable", {"ram": block({0: 10}), "q0": ff(10, 20, CEMUX="CE")}),
    ("a flip-flop on another clock", {"ram": block({0: 10}), "q0": {**ff(10, 20), "connections": {**ff(10, 20)["connections"], "CLK": [3]}}}),
    ("a flip-flop is reset", {"ram": block({0: 10}), "q0": {**ff(10, 20), "connections": {**ff(10, 20)["connections"], "LSR": [7]}}}),
    ("the port has a read enable", {"ram": block({0: 10}, CEA=[8]), "q0": ff(10, 20)}),
    ("the port is reset", {"ram": block({0: 10}, RSTA=[8]), "q0": ff(10, 20)}),
    ("an output is a module port", {"ram": block({0: 99}), "q0": ff(99, 20)}),
])
def test_a_port_that_is_not_a_plain_register_stays(why, cells):
    n = netlist(cells)
    before = copy.deepcopy(n)
    assert absorb_output_registers(n) == 0, why
    assert n == before, why


def test_the_command_line_writes_the_rewritten_netlist(tmp_path):
    src, out = tmp_path / "top.json", tmp_path / "out.json"
    src.write_text(json.dumps(netlist({"ram": block({0: 10}), "q0": ff(10, 20), "u": user(20)})))
    r = subprocess.run([sys.executable, "-m", "boards.netlist", str(src), str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and "1 block RAM read ports" in r.stdout
    assert json.loads(out.read_text())["modules"]["top"]["cells"]["ram"]["parameters"]["REGMODE_A"] == "OUTREG"
    (tmp_path / "bad.json").write_text("{")
    r = subprocess.run([sys.executable, "-m", "boards.netlist", str(tmp_path / "bad.json"), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "cannot read the netlist" in r.stderr and "Traceback" not in r.stderr
