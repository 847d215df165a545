"""The core clock: the board oscillator as it is, or an ECP5 PLL (EHXPLLL) that multiplies it.

nextpnr-ecp5 derives the PLL output's constraint from the oscillator's FREQUENCY constraint and
the dividers, so the requested frequency is what place-and-route times against.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from boards.errors import BoardError

# ECP5 EHXPLLL limits (FPGA-TN-02200): PFD 3.125..400 MHz, VCO 400..800 MHz, output 3.125..400 MHz
PFD_MHZ = (3.125, 400.0)
VCO_MHZ = (400.0, 800.0)
OUT_MHZ = (3.125, 400.0)


@dataclass(frozen=True)
class PLLConfig:
    clki_div: int
    clkfb_div: int
    clkop_div: int
    fin_mhz: float

    @property
    def fout_mhz(self) -> float:
        return self.fin_mhz * self.clkfb_div / self.clki_div

    @property
    def vco_mhz(self) -> float:
        return self.fout_mhz * self.clkop_div


def ecp5_pll(fin_mhz: float, fout_mhz: float, tolerance: float = 0.01) -> PLLConfig:
    """Dividers for `fout_mhz` from `fin_mhz` (feedback from CLKOP), nearest first, VCO mid-range."""
    if not OUT_MHZ[0] <= fout_mhz <= OUT_MHZ[1]:
        raise BoardError(f"an ECP5 PLL makes {OUT_MHZ[0]}..{OUT_MHZ[1]} MHz, not {fout_mhz:g} MHz; choose another --clock-mhz")
    best = None
    for ref in range(1, 129):
        if not PFD_MHZ[0] <= fin_mhz / ref <= PFD_MHZ[1]:
            continue
        for fb in range(1, 81):
            for op in range(1, 129):
                cfg = PLLConfig(ref, fb, op, fin_mhz)
                if not VCO_MHZ[0] <= cfg.vco_mhz <= VCO_MHZ[1]:
                    continue
                key = (abs(cfg.fout_mhz - fout_mhz), abs(cfg.vco_mhz - 600.0))
                if best is None or key < best[0]:
                    best = (key, cfg)
    if best is None or best[0][0] > tolerance * fout_mhz:
        raise BoardError(f"no ECP5 PLL setting makes {fout_mhz:g} MHz from {fin_mhz:g} MHz within {tolerance:.0%}")
    return best[1]


class CoreClock(Elaboratable):
    """Drives the clock of the `sync` domain (defined by the parent) at `mhz` from the board
    clock through an ECP5 PLL, with reset held until the PLL locks. (At the board clock's own
    frequency, leave `sync` to the platform.)"""

    def __init__(self, mhz: float):
        self.mhz = mhz

    def elaborate(self, platform):
        m = Module()
        osc_hz = platform.default_clk_frequency
        if getattr(platform, "family", None) != "ecp5":
            raise BoardError(f"{type(platform).__name__}: a core clock other than the board's "
                             f"{osc_hz / 1e6:g} MHz needs a PLL, which boards/ builds only for ECP5")
        pll = ecp5_pll(osc_hz / 1e6, self.mhz)
        m.submodules.clk_buf = buf = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        locked = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{pll.fin_mhz:g}", a_FREQUENCY_PIN_CLKOP=f"{pll.fout_mhz:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=pll.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=pll.clkop_div,
            p_CLKOP_CPHASE=(pll.clkop_div - 1) // 2, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=pll.clkfb_div,
            i_RST=0, i_STDBY=0, i_CLKI=buf.i, o_CLKOP=ClockSignal("sync"), i_CLKFB=ClockSignal("sync"),
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        return m


__all__ = ["CoreClock", "PLLConfig", "ecp5_pll"]
