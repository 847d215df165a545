"""PixelLoader (HWC stream -> (C, H, W) addresses, with gaps in valid) and LogitEmitter (stored
accumulators -> signed 32-bit stream under random back-pressure) under amaranth.sim."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from export.plan import IntType
from hw.stream_io import LogitEmitter, PixelLoader, pixel_bytes


@pytest.mark.parametrize("shape, t", [((3, 4, 5), IntType(8, False, -8)), ((1, 5, 3), IntType(8, True, -7)),
                                      ((2, 3, 4), IntType(4, True, 0))])
def test_loader_writes_chw_addresses(shape, t):
    """Bytes in HWC order land at (C, H, W) addresses, sign-extended into a 10-bit buffer element when signed."""
    rng = np.random.default_rng(0)
    image = rng.integers(t.min, t.max + 1, size=shape)
    dut = PixelLoader(shape, cols=2, addr_width=8, act_width=10, signed=t.signed)
    stored = {}

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        stream = list(pixel_bytes(np.transpose(image, (1, 2, 0)).reshape(-1), t))
        done = False
        for _ in range(400):
            gap = rng.random() < 0.3
            ctx.set(dut.pixels.valid, not gap and bool(stream))
            if stream:
                ctx.set(dut.pixels.payload, int(stream[0]))
            _, _, ready, valid, wr, fin = await ctx.tick().sample(dut.pixels.ready, dut.pixels.valid, dut.wr, dut.done)
            if ready and valid:
                stream.pop(0)
            if wr.valid:
                assert wr.count == 1
                stored[wr.addr] = wr.data[0]
            done |= bool(fin)
        assert done and not stream

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert [stored[a] for a in range(image.size)] == list(image.reshape(-1) & 0x3FF)


def test_pixel_bytes_refuses_values_outside_the_input_type():
    assert pixel_bytes(np.array([-128, -1, 0, 127]), IntType(8, True, -7)).tolist() == [128, 255, 0, 127]
    with pytest.raises(ValueError, match="span -9..3, the model's 4-bit signed input takes -8..7"):
        pixel_bytes(np.array([-9, 3]), IntType(4, True, 0))


def test_emitter_streams_logits_under_backpressure():
    rng = np.random.default_rng(1)
    values = [-(1 << 23), (1 << 23) - 1, -1, 0, 12345]
    dut = LogitEmitter(len(values), acc_width=25, addr_width=4)
    got, dones = [], []

    async def bench(ctx):
        for i, v in enumerate(values):
            ctx.set(dut.logit, dut.logit.shape().const({"valid": 1, "addr": i, "data": v & ((1 << 25) - 1)}))
            await ctx.tick()
        ctx.set(dut.logit.valid, 0)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for n in range(100):
            ready = rng.random() < 0.5
            ctx.set(dut.logits.ready, ready)
            _, _, valid, payload, done = await ctx.tick().sample(dut.logits.valid, dut.logits.payload, dut.done)
            if valid and ready:
                got.append(payload)
            if done:
                dones.append(n)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == values and len(dones) == 1
