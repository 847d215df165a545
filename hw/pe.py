"""Processing element of the output-stationary array: one multiply-accumulate per cycle.

The PE keeps its output value (the accumulator) in place while the reduction (Cin*k*k steps)
streams weights and activations past it; a second register, `shadow`, takes the finished sum so
that the next tile accumulates while the previous one drains out through the shadow chain.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class PE(wiring.Component):
    """Two stages: `prod` <= a*w every cycle; then with `en`, acc <= (first ? bias : acc) + prod,
    and with `last` the sum also goes to `shadow` (so `en/first/last/bias` belong to the operands
    of the cycle before). `shift` moves `shadow_in` into `shadow` (the drain); `last` wins."""

    def __init__(self, a_width: int, w_width: int, acc_width: int):
        for name, v, lo, hi in (("a_width", a_width, 2, 17), ("w_width", w_width, 2, 17), ("acc_width", acc_width, 2, 48)):
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be {lo}..{hi} (signed bits), got {v}")
        self.a_width, self.w_width, self.acc_width = a_width, w_width, acc_width
        super().__init__({
            "a": In(signed(a_width)),
            "w": In(signed(w_width)),
            "bias": In(signed(acc_width)),
            "en": In(1),
            "first": In(1),
            "last": In(1),
            "shift": In(1),
            "shadow_in": In(signed(acc_width)),
            "acc": Out(signed(acc_width)),
            "shadow": Out(signed(acc_width)),
        })

    def elaborate(self, platform):
        m = Module()
        prod = Signal(signed(self.a_width + self.w_width))
        m.d.sync += prod.eq(self.a * self.w)
        total = Signal(signed(self.acc_width))
        m.d.comb += total.eq(Mux(self.first, self.bias, self.acc) + prod)
        with m.If(self.shift):
            m.d.sync += self.shadow.eq(self.shadow_in)
        with m.If(self.en):
            m.d.sync += self.acc.eq(total)
            with m.If(self.last):
                m.d.sync += self.shadow.eq(total)
        return m
