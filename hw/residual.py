"""Residual adds on the store: a conv's drained outputs plus the skip tensor, requantized on the way to the buffer.

A fused pass (hw.graph) runs a conv whose only reader is an add. Each drained vector `q` (the conv's
requantized output: one operand of contract rule 13) meets the vector at the same flat addresses
of the add's other operand (the skip), read from the buffer where it waits, first through the
`skip` requantizer (a requant layer that only the add reads; else the identity), then
`out = requantize((q << la) + (s << lb))` with the add's shift, ReLU and clamp
(export/kinds/add.py). A pass without an add clears `skip_en` and passes `q` through the identity.
"""

from __future__ import annotations

from amaranth import Module, Mux, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from export.plan import IntType, Layer
from hw.requant import LATENCY as REQUANT_LATENCY
from hw.requant import Requantizer, requant_config, requant_layout

MAX_ADD_SHIFT = 15  # the largest left shift that puts an operand on the add's finer scale
LATENCY = REQUANT_LATENCY  # `q` -> `out`
SKIP_LATENCY = REQUANT_LATENCY  # `skip` arrives this many cycles before its `q`


def add_layout(act_width: int, acc_width: int) -> data.StructLayout:
    """A pass's add constants: the operands' signedness and left shifts, the skip's requantizer
    (on act_width + 1 bits) and the add's requantizer (on acc_width bits)."""
    return data.StructLayout({
        "skip_en": 1, "q_signed": 1, "s_signed": 1,
        "la": range(MAX_ADD_SHIFT + 1), "lb": range(MAX_ADD_SHIFT + 1),
        "skip": requant_layout(act_width + 1, act_width),
        "rq": requant_layout(acc_width, act_width),
    })


def identity_config(out: IntType | None, act_width: int, acc_width: int) -> dict:
    """The constants of a pass that adds nothing: `q` (of type `out`) leaves as it came."""
    t = out or IntType(act_width, True, 0)
    return {"skip_en": 0, "q_signed": int(t.signed), "s_signed": 0, "la": 0, "lb": 0,
            "skip": requant_config(0, False, t, act_width + 1), "rq": requant_config(0, False, t, acc_width)}


def add_config(add: Layer, branch: int, skip_type: IntType, requant: Layer | None, act_width: int,
               acc_width: int) -> dict:
    """The constants of `add` stored by the conv producing its operand `branch` (0 or 1); the other
    operand is a tensor of `skip_type`, requantized by the layer `requant` on its read when given.
    Raises ValueError for what the datapath cannot do (the caller names the layer)."""
    exps = (add.inp.exp, add.inp2.exp)
    e = min(exps)
    la, lb = exps[branch] - e, exps[1 - branch] - e
    if max(la, lb) > MAX_ADD_SHIFT:
        raise ValueError(f"operand scales 2^{exps[0]} and 2^{exps[1]} are {max(la, lb)} bits apart; "
                         f"the add aligns at most {MAX_ADD_SHIFT}")
    if not isinstance(add.shift, int):
        raise ValueError("a per-channel shift after an add; give the add one output scale")
    branch_type = (add.inp, add.inp2)[branch]
    skip = (requant_config(0, False, skip_type, act_width + 1) if requant is None else
            requant_config(int(requant.shift), requant.relu, requant.out, act_width + 1))
    s_type = skip_type if requant is None else requant.out
    return {"skip_en": 1, "q_signed": int(branch_type.signed), "s_signed": int(s_type.signed), "la": la, "lb": lb,
            "skip": skip, "rq": requant_config(add.shift, add.relu, add.out, acc_width)}


class AddOnStore(wiring.Component):
    """`cols` adders between the array's requantizers and the write bus.

    `q[c]`: a drained output (`act_width` raw bits); `skip[c]`: the skip element at the same
    address, sign-extended, SKIP_LATENCY cycles before its `q`; `out[c]` (raw bits, two's
    complement for a signed type) LATENCY cycles after `q`. `cfg` holds for the pass (add_layout)."""

    def __init__(self, cols: int, act_width: int, acc_width: int):
        if not (1 <= cols <= 16 and 1 <= act_width < acc_width):
            raise ValueError(f"need 1..16 columns and act_width < acc_width, got {cols}, {act_width}, {acc_width}")
        self.cols, self.act_width, self.acc_width = cols, act_width, acc_width
        super().__init__({
            "cfg": In(add_layout(act_width, acc_width)),
            "q": In(data.ArrayLayout(unsigned(act_width), cols)),
            "skip": In(data.ArrayLayout(signed(act_width + 1), cols)),
            "out": Out(data.ArrayLayout(unsigned(act_width), cols)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        for c in range(self.cols):
            rs = m.submodules[f"skip_rq{c}"] = Requantizer(self.act_width + 1, self.act_width)
            rq = m.submodules[f"add_rq{c}"] = Requantizer(self.acc_width, self.act_width)
            m.d.comb += [rs.acc.eq(self.skip[c]), rs.cfg.eq(cfg.skip), rq.cfg.eq(cfg.rq)]
            q = Mux(cfg.q_signed, self.q[c].as_signed(), self.q[c])
            s = Mux(cfg.s_signed, rs.q.as_signed(), rs.q)
            m.d.comb += [rq.acc.eq((q << cfg.la) + Mux(cfg.skip_en, s << cfg.lb, 0)), self.out[c].eq(rq.q)]
        return m
