# amaranth: UnusedElaboratable=no
"""ActivationBuffer under amaranth.sim against a flat numpy array: vector writes of 1..cols
elements at any address (every bank phase), vector reads at any address."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.memories import READ_LATENCY, ActivationBuffer, banks_for


@pytest.mark.parametrize("cols", [1, 3, 4, 9])
def test_buffer_vector_writes_and_reads(cols):
    rng = np.random.default_rng(cols)
    depth = 70
    dut = ActivationBuffer(cols, depth, 8, 8)
    model = np.zeros(dut.rows * dut.banks, dtype=np.int64)
    usable = depth - cols

    async def bench(ctx):
        for _ in range(60):
            addr, count = int(rng.integers(0, usable)), int(rng.integers(1, cols + 1))
            vals = rng.integers(0, 256, size=cols)
            ctx.set(dut.wr, dut.wr.shape().const({"valid": 1, "addr": addr, "count": count, "data": [int(v) for v in vals]}))
            model[addr:addr + count] = vals[:count]
            await ctx.tick()
        ctx.set(dut.wr.valid, 0)
        for addr in list(range(usable)) + list(rng.integers(0, usable, size=20)):
            ctx.set(dut.raddr, int(addr))
            await ctx.tick().repeat(READ_LATENCY)
            got = [ctx.get(dut.rdata[c]) for c in range(cols)]
            assert got == list(model[addr:addr + cols]), f"read at {addr}"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_banks_are_a_power_of_two():
    assert [banks_for(c) for c in (1, 2, 3, 9, 16)] == [1, 2, 4, 16, 16]


def test_buffer_validates():
    with pytest.raises(ValueError, match="cols must be 1..16"):
        ActivationBuffer(17, 100, 8, 10)
    with pytest.raises(ValueError, match="cannot address"):
        ActivationBuffer(4, 1000, 8, 6)
