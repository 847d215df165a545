"""`python -m boards list`: one line per known board, with its part, resources, clock and build kind."""

from boards.__main__ import main
from boards.profiles import PROFILES


def test_list_prints_one_line_per_board(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(PROFILES) >= 2
    for line, p in zip(lines, PROFILES.values()):
        assert line.split()[:2] == [p.name, p.part], line
        assert f"LUT {p.luts:>6,}" in line and f"DSP {p.dsps:>3}" in line and f"{p.clock_mhz:g} MHz" in line, line
        assert ("SPRAM" in line) == bool(p.spram_bits), line
        assert line.endswith("bitstream (open toolchain)" if p.has_open_toolchain else "RTL + Vivado script"), line
    assert any(l.startswith("ulx3s-85f ") for l in lines)  # the default board of bitstream-rtl
