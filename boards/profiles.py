"""Board profiles: the part, its datasheet resources, the board clock and the toolchain.

Resource figures are the vendors' datasheet numbers for the part (Lattice FPGA-DS-02012 ECP5,
FPGA-DS-02008 iCE40 UltraPlus, Xilinx DS180 7 Series), not what a tool reports as usable.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from boards.errors import BoardError

TOOLCHAINS = ("ecp5", "ice40", "vendor")


@dataclass(frozen=True)
class BoardProfile:
    """One board: its FPGA part and what that part holds, and how to build for it.

    `bram_bits` counts the block RAMs (EBR / BRAM) at their full width; `bram_block_bits` is the
    size of one block, so a memory's block count can be worked out. `osc_mhz` is the board's
    oscillator; `clock_mhz` the core clock the design is built and constrained for (an ECP5 PLL
    makes it when the two differ).
    """

    name: str
    part: str
    package: str
    luts: int
    ffs: int
    dsps: int  # hard multipliers (ECP5 18x18, iCE40 SB_MAC16, Xilinx DSP48E1)
    bram_bits: int
    bram_block_bits: int
    spram_bits: int
    osc_mhz: float
    clock_mhz: float
    platform: str  # "module:Class" in amaranth_boards
    toolchain: str
    description: str = ""

    def __post_init__(self) -> None:
        if self.toolchain not in TOOLCHAINS:
            raise ValueError(f"{self.name}: toolchain must be one of {', '.join(TOOLCHAINS)}, got {self.toolchain!r}")

    @property
    def bram_blocks(self) -> int:
        return self.bram_bits // self.bram_block_bits

    @property
    def has_open_toolchain(self) -> bool:
        return self.toolchain in ("ecp5", "ice40")

    def platform_class(self) -> type:
        """The amaranth-boards platform class (imported on demand)."""
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(module), cls)


_K = 1024
_EBR_ECP5 = 18 * _K  # one sysMEM block: 18 Kbit
_EBR_ICE40 = 4 * _K  # one iCE40 EBR: 4 Kbit
_BRAM_7SERIES = 36 * _K  # one 7-series block RAM: 36 Kbit


def _ulx3s(size: str, luts: int, ebr: int, mults: int) -> BoardProfile:
    # ECP5 slices hold two LUT4s and two flip-flops, so FFs == LUTs.
    return BoardProfile(
        name=f"ulx3s-{size.lower()}", part=f"LFE5U-{size}", package="CABGA381",
        luts=luts, ffs=luts, dsps=mults, bram_bits=ebr * _EBR_ECP5, bram_block_bits=_EBR_ECP5,
        spram_bits=0, osc_mhz=25.0, clock_mhz=100.0, platform=f"amaranth_boards.ulx3s:ULX3S_{size}_Platform",
        toolchain="ecp5", description=f"Radiona ULX3S, Lattice ECP5 LFE5U-{size}, 25 MHz oscillator, PLL to 100 MHz, FTDI UART")


PROFILES: dict[str, BoardProfile] = {p.name: p for p in (
    _ulx3s("12F", luts=12_096, ebr=32, mults=28),
    _ulx3s("25F", luts=24_288, ebr=56, mults=28),
    _ulx3s("45F", luts=43_848, ebr=108, mults=72),
    _ulx3s("85F", luts=83_640, ebr=208, mults=156),
    BoardProfile(
        name="icebreaker", part="iCE40UP5K", package="SG48",
        luts=5280, ffs=5280, dsps=8, bram_bits=30 * _EBR_ICE40, bram_block_bits=_EBR_ICE40,
        spram_bits=4 * 256 * _K, osc_mhz=12.0, clock_mhz=12.0,
        platform="amaranth_boards.icebreaker:ICEBreakerPlatform", toolchain="ice40",
        description="1BitSquared iCEBreaker, Lattice iCE40UP5K, 12 MHz, FTDI UART"),
    BoardProfile(
        name="orangecrab", part="LFE5U-25F", package="CSFBGA285",
        luts=24_288, ffs=24_288, dsps=28, bram_bits=56 * _EBR_ECP5, bram_block_bits=_EBR_ECP5,
        spram_bits=0, osc_mhz=48.0, clock_mhz=48.0,
        platform="amaranth_boards.orangecrab_r0_2:OrangeCrabR0_2_25FPlatform", toolchain="ecp5",
        description="OrangeCrab r0.2, Lattice ECP5 LFE5U-25F, 48 MHz; UART on Feather pins 0 (RX) / 1 (TX)"),
    BoardProfile(
        name="arty-a7-35", part="XC7A35T", package="CSG324",
        luts=20_800, ffs=41_600, dsps=90, bram_bits=50 * _BRAM_7SERIES, bram_block_bits=_BRAM_7SERIES,
        spram_bits=0, osc_mhz=100.0, clock_mhz=100.0,
        platform="amaranth_boards.arty_a7:ArtyA7_35Platform", toolchain="vendor",
        description="Digilent Arty A7-35T, Xilinx Artix-7 XC7A35T, 100 MHz; Vivado builds the bitstream"),
)}

ALIASES = {"ulx3s": "ulx3s-85f", "arty": "arty-a7-35", "arty-a7": "arty-a7-35", "up5k": "icebreaker"}
DEFAULT_BOARD = "ulx3s-85f"


class UnknownBoard(BoardError, ValueError):
    """A board name that no profile has."""


def get_profile(name: str) -> BoardProfile:
    """The profile named `name` (case-insensitive; a few aliases such as `ulx3s`, `arty`)."""
    key = name.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in PROFILES:
        raise UnknownBoard(f"unknown board {name!r}; known boards: {', '.join(PROFILES)}")
    return PROFILES[key]


__all__ = ["ALIASES", "BoardProfile", "DEFAULT_BOARD", "PROFILES", "TOOLCHAINS", "UnknownBoard", "get_profile"]
