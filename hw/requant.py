"""Requantizer: accumulator -> activation, `acc * 2**-shift` rounded half to even, ReLU, saturate.

Bit-exact with export.reference.requantize. The constants (the shift split into a right and a
left amount with its rounding bias, `shift_config`; the clamp bounds with ReLU folded in) are
computed in Python by `requant_config` and held in a register by the sequencer; a per-channel
requantizer takes the shift constants with each value instead (from a ROM beside the biases).
The hardware only adds, shifts and clamps, in registered stages (input, rounding bit, round,
shift right, shift left, clamp: `LATENCY` cycles).
"""

from __future__ import annotations

import functools

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from export.plan import IntType
from hw.memories import delay_line

MAX_LEFT = 15  # largest left shift (negative plan shift) the requantizer implements
LATENCY = 6  # cycles from `acc` to `q`


def shift_layout(acc_width: int) -> data.StructLayout:
    return data.StructLayout({
        "shift_r": range(acc_width + 2),
        "shift_l": range(MAX_LEFT + 1),
        "half_m1": unsigned(acc_width + 1),  # 2**(shift_r-1) - 1, or 0 when shift_r == 0
        "odd_en": 1,  # shift_r > 0: ties go to the even neighbour
    })


def requant_layout(acc_width: int, out_width: int, per_channel: bool = False, mult_bits: int = 0) -> data.StructLayout:
    """The layer's constants: the clamp bounds, the shift unless it comes per channel, and with
    `mult_bits` an average's multiplier less one (contract rule 14; absent from a constant: 1)."""
    clamp = {"lo": signed(out_width + 1), "hi": signed(out_width + 1)}
    mult = {"mult_m1": unsigned(mult_bits)} if mult_bits else {}
    return data.StructLayout({**({} if per_channel else dict(shift_layout(acc_width).members)), **clamp, **mult})


def shift_config(shift: int, acc_width: int) -> dict:
    """The shift constants. A shift above acc_width+1 rounds every value to 0, exactly as
    acc_width+1 does, so it is clamped there."""
    if shift < -MAX_LEFT:
        raise ValueError(f"left shift {-shift} exceeds {MAX_LEFT}")
    right = min(max(shift, 0), acc_width + 1)
    return {"shift_r": right, "shift_l": max(-shift, 0), "half_m1": (1 << right >> 1) - 1 if right else 0,
            "odd_en": int(right > 0)}


def mult_config(mult: int) -> dict:
    """An average's multiplier (contract rule 14) as requantizer constants: none when it is 1."""
    return {"mult_m1": mult - 1} if mult != 1 else {}


def mult_bits(mults: list[int]) -> int:
    """Bits of the `mult_m1` constant for these multipliers; 0 (no multiplier) when all are 1."""
    return max([0] + [(m - 1).bit_length() for m in mults if m != 1])


@functools.lru_cache(maxsize=None)
def shift_word(shift: int, acc_width: int) -> int:
    """`shift_config` packed as a `shift_layout` word (a per-channel ROM entry)."""
    return shift_layout(acc_width).const(shift_config(shift, acc_width)).as_value().value


def requant_config(shift: int | None, relu: bool, out: IntType, acc_width: int) -> dict:
    """The constants for one layer; `shift` None when the shifts come per channel."""
    lo = max(out.min, 0) if relu else out.min
    return {**({} if shift is None else shift_config(shift, acc_width)), "lo": lo, "hi": out.max}


class Requantizer(wiring.Component):
    """`q` = saturate(round_half_even(acc * mult * 2**-shift)) LATENCY cycles after `acc`, as
    `out_width` raw bits (two's complement for signed types); `raw` is `acc` delayed alike.
    `per_channel`: the shift constants arrive on `shift` in the same cycle as `acc`. `mult_bits`:
    the multiplier (cfg.mult_m1 + 1) is generated; `acc * mult` must fit `acc_width` bits."""

    def __init__(self, acc_width: int, out_width: int, per_channel: bool = False, mult_bits: int = 0):
        if not 2 <= acc_width <= 40:
            raise ValueError(f"acc_width must be 2..40, got {acc_width}")
        if not 1 <= out_width <= 16:
            raise ValueError(f"out_width must be 1..16, got {out_width}")
        self.acc_width, self.out_width, self.per_channel, self.mult_bits = acc_width, out_width, per_channel, mult_bits
        super().__init__({
            "acc": In(signed(acc_width)),
            **({"shift": In(shift_layout(acc_width))} if per_channel else {}),
            "cfg": In(requant_layout(acc_width, out_width, per_channel, mult_bits)),
            "q": Out(unsigned(out_width)),
            "raw": Out(signed(acc_width)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, w = self.cfg, self.acc_width
        # the shift constants of the value in stage i (the layer's, or the value's own, delayed with it)
        sh = delay_line(m, self.shift, 4, "shift", reset_less=True) if self.per_channel else [cfg] * 4
        # 1: the input (an engine's bias adder ends here; times the multiplier); 2: the rounding bit (a variable bit
        # select); 3: round (the bit is the adder's carry in); 4: shift right; 5: shift left;
        # 6: clamp.
        a0, a1 = Signal(signed(w), reset_less=True), Signal(signed(w), reset_less=True)
        odd = Signal(reset_less=True)
        biased = Signal(signed(w + 2), reset_less=True)
        right = Signal(signed(w + 2), reset_less=True)
        shifted = Signal(signed(w + 2 + MAX_LEFT), reset_less=True)
        rounded = Cat(odd, a1).as_signed() + Cat(Const(1, 1), sh[1].half_m1)  # 2 * (a1 + half_m1 + odd) + 1
        m.d.sync += [
            a0.eq(self.acc * (cfg.mult_m1 + 1) if self.mult_bits else self.acc),
            a1.eq(a0), odd.eq((a0 >> sh[0].shift_r)[0] & sh[0].odd_en),
            biased.eq(rounded[1:].as_signed()),
            right.eq(biased >> sh[2].shift_r),
            shifted.eq(right << sh[3].shift_l),
            self.q.eq(Mux(shifted < cfg.lo, cfg.lo, Mux(shifted > cfg.hi, cfg.hi, shifted))),
        ]
        m.d.comb += self.raw.eq(delay_line(m, self.acc, LATENCY, "raw", reset_less=True)[-1])
        return m
