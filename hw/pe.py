"""Processing element of the output-stationary systolic array: one multiply-accumulate per cycle.

The PE keeps its output value (the accumulator) in place while the reduction (Cin*k*k steps)
streams weights and activations past it. Each operand is registered on entry and handed on from
that register to the next PE (activations down, weights and their control to the right), so no
wire drives more than one multiplier: the array's operand nets have a fan-out of two whatever
its size. A second register, `shadow`, takes the finished sum so that the next tile accumulates
while the previous one drains out through the shadow chain.
"""

from __future__ import annotations

from amaranth import ClockSignal, Instance, Module, Mux, ResetSignal, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


MULT18 = 18  # operand bits of an ECP5 MULT18X18D


def ecp5_dsp(platform) -> bool:
    """True when the PE is elaborated for an ECP5 (the board flow's platform; None elsewhere)."""
    return getattr(platform, "family", None) == "ecp5"


def mult18x18d(m: Module, a, w, product) -> None:
    """`product` = a * w two clocks late, in one ECP5 MULT18X18D with its input and output
    registers on (Lattice sysDSP: REG_INPUTA/B and REG_OUTPUT on CLK0, signed operands): the same
    latency as the PE's `prod`/`prod_q` pair, and the two registers nextpnr's placer would not
    keep beside the multiplier are now inside it, so each route to and from the DSP gets a clock
    period of its own. yosys ships no simulation model of the primitive; the simulated netlist
    (platform None) keeps the behavioural pair."""
    ports = {"i_CLK0": ClockSignal(), "i_CE0": 1, "i_RST0": 0, "i_SIGNEDA": 1, "i_SIGNEDB": 1,
             "i_SOURCEA": 0, "i_SOURCEB": 0}
    for name, v in (("A", a), ("B", w)):
        ports.update({f"i_{name}{i}": v[min(i, len(v) - 1)] for i in range(MULT18)})  # sign-extended
    ports.update({f"i_C{i}": 0 for i in range(MULT18)})
    p = Signal(2 * MULT18)
    ports.update({f"o_P{i}": p[i] for i in range(2 * MULT18)})
    m.submodules.mult = Instance("MULT18X18D", p_REG_INPUTA_CLK="CLK0", p_REG_INPUTB_CLK="CLK0",
                                 p_REG_OUTPUT_CLK="CLK0", p_REG_PIPELINE_CLK="NONE", p_GSR="DISABLED",
                                 p_RESETMODE="SYNC", **ports)
    m.d.comb += product.eq(p[:len(product)])


class PE(wiring.Component):
    """Four stages. The operands `a`, `w` are registered (and handed on as `a_out`, `w_out`);
    `prod` <= a*w, registered once more (`prod_q`); two cycles after the operands their
    `en/last` arrive and are registered like the operands (`*_out`); then with `en`,
    acc <= acc + prod_q, and with `last` the sum goes to `shadow` and acc restarts from 0 (the
    flip-flops' synchronous reset, as on `rst`: no restart mux in front of the adder, and a tile
    always ends with `last`, so the next one starts from 0). So the sum
    of operands present at the inputs in cycle t is taken at the end of cycle t + 3. The second
    product register is for the ECP5, whose multipliers sit in a few rows across the chip: for an
    ECP5 platform the pair becomes the registers inside the MULT18X18D (mult18x18d()). `shift`
    moves `shadow_in` into `shadow` (the drain); `last` wins. The bias is added after the drain
    (one adder per column instead of a bias register in every PE); the sums wrap modulo
    2**acc_width, so the total is exact whenever it fits."""

    def __init__(self, a_width: int, w_width: int, acc_width: int):
        for name, v, lo, hi in (("a_width", a_width, 2, 17), ("w_width", w_width, 2, 17), ("acc_width", acc_width, 2, 48)):
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be {lo}..{hi} (signed bits), got {v}")
        self.a_width, self.w_width, self.acc_width = a_width, w_width, acc_width
        super().__init__({
            "a": In(signed(a_width)),
            "w": In(signed(w_width)),
            "en": In(1),
            "last": In(1),
            "shift": In(1),
            "shadow_in": In(signed(acc_width)),
            "a_out": Out(signed(a_width)),
            "w_out": Out(signed(w_width)),
            "en_out": Out(1),
            "last_out": Out(1),
            "acc": Out(signed(acc_width)),
            "shadow": Out(signed(acc_width)),
        })

    def elaborate(self, platform):
        m = Module()
        # datapath registers without reset (their configuration-time 0 is enough); control keeps its reset
        a, w = Signal.like(self.a, reset_less=True), Signal.like(self.w, reset_less=True)
        acc, shadow = Signal.like(self.acc, reset_less=True), Signal.like(self.shadow, reset_less=True)
        m.d.comb += [self.a_out.eq(a), self.w_out.eq(w), self.acc.eq(acc), self.shadow.eq(shadow)]
        m.d.sync += [a.eq(self.a), w.eq(self.w),
                     self.en_out.eq(self.en), self.last_out.eq(self.last)]
        prod_q = Signal(signed(self.a_width + self.w_width), reset_less=True)
        if ecp5_dsp(platform):
            mult18x18d(m, a, w, prod_q)
        else:
            prod = Signal.like(prod_q, reset_less=True)
            m.d.sync += [prod.eq(a * w), prod_q.eq(prod)]
        total = Signal(signed(self.acc_width))
        m.d.comb += total.eq(acc + prod_q)
        with m.If(self.shift):
            m.d.sync += shadow.eq(self.shadow_in)
        with m.If(self.en_out):
            m.d.sync += acc.eq(total)
            with m.If(self.last_out):
                m.d.sync += [shadow.eq(total), acc.eq(0)]
        with m.If(ResetSignal()):
            m.d.sync += acc.eq(0)  # acc has no reset of its own (reset_less); an image cut short leaves no partial sum
        return m
