"""Board profiles: datasheet resources, platforms that exist, the unknown-board error."""

import pytest

from boards.profiles import DEFAULT_BOARD, PROFILES, UnknownBoard, get_profile


def test_every_profile_names_a_real_platform_with_its_part():
    for p in PROFILES.values():
        cls = p.platform_class()
        assert cls.device.upper().startswith(p.part.upper()), (p.name, cls.device)
        assert cls().default_clk_frequency == pytest.approx(p.osc_mhz * 1e6)
        assert p.clock_mhz == p.osc_mhz or p.toolchain == "ecp5"  # only ECP5 gets a PLL


def test_datasheet_figures():
    up5k = get_profile("icebreaker")
    assert (up5k.luts, up5k.ffs, up5k.dsps) == (5280, 5280, 8)
    assert up5k.bram_bits == 120 * 1024 and up5k.bram_blocks == 30 and up5k.spram_bits == 1024 * 1024
    ecp85 = get_profile("ulx3s-85f")
    assert (ecp85.luts, ecp85.dsps, ecp85.bram_blocks, ecp85.bram_bits) == (83_640, 156, 208, 3744 * 1024)
    assert get_profile("orangecrab").part == "LFE5U-25F" and get_profile("orangecrab").bram_bits == 1008 * 1024
    arty = get_profile("arty")
    assert (arty.luts, arty.ffs, arty.dsps, arty.bram_bits) == (20_800, 41_600, 90, 1800 * 1024)
    assert arty.toolchain == "vendor" and not arty.has_open_toolchain
    assert [get_profile(f"ulx3s-{s}f").dsps for s in (12, 25, 45, 85)] == [28, 28, 72, 156]


def test_names_are_forgiving_and_the_default_exists():
    assert get_profile("ULX3S_85F") is get_profile("ulx3s") is get_profile(DEFAULT_BOARD)
    assert get_profile("up5k").name == "icebreaker"


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(UnknownBoard) as err:
        get_profile("de10-nano")
    msg = str(err.value)
    assert "\n" not in msg and "de10-nano" in msg
    assert all(name in msg for name in PROFILES)
