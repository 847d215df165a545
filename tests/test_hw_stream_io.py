"""PixelLoader (HWC stream -> (C, H, W) addresses, with gaps in valid) and LogitEmitter (stored
accumulators -> signed 32-bit stream under random back-pressure) under amaranth.sim."""

import numpy as np
from amaranth.sim import Simulator

from hw.stream_io import LogitEmitter, PixelLoader


def test_loader_writes_chw_addresses():
    rng = np.random.default_rng(0)
    shape = (3, 4, 5)
    image = rng.integers(0, 256, size=shape)
    dut = PixelLoader(shape, cols=2, addr_width=8, act_width=8)
    stored = {}

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        stream = list(np.transpose(image, (1, 2, 0)).reshape(-1))
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
    assert [stored[a] for a in range(image.size)] == list(image.reshape(-1))


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
