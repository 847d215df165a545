"""WindowGenerator under amaranth.sim against a Python walk of the same loops: every issued
step's activation, weight and bias address, first/last, and the tile's output address and
valid columns/rows; with a short reduction (K < 2*rows - 1) the last step waits for the drain."""

import pytest
from amaranth.sim import Simulator

from hw.window import WindowGenerator, window_config


def _walk(cin, h, w, k, cout, rows, cols):
    oh, ow = h - k + 1, w - k + 1
    for og in range(-(-cout // rows)):
        for y in range(oh):
            for xt in range(-(-ow // cols)):
                for ci in range(cin):
                    for ky in range(k):
                        for kx in range(k):
                            kidx = (ci * k + ky) * k + kx
                            yield {"act_addr": ci * h * w + (y + ky) * w + xt * cols + kx,
                                   "w_addr": 5 + og * cin * k * k + kidx, "b_addr": 2 + og,
                                   "first": kidx == 0, "last": kidx == cin * k * k - 1,
                                   "out_addr": og * rows * oh * ow + y * ow + xt * cols,
                                   "ncols": min(cols, ow - xt * cols), "nrows": min(rows, cout - og * rows)}


@pytest.mark.parametrize("cin,h,w,k,cout,rows,cols", [
    (2, 6, 7, 3, 5, 2, 3),   # ragged channel groups and column tiles
    (1, 4, 4, 1, 3, 4, 4),   # K = 1 < rows: stalls
    (7, 1, 1, 1, 3, 2, 1),   # a dense layer
])
def test_window_walk(cin, h, w, k, cout, rows, cols):
    dut = WindowGenerator(rows, cols, 12)
    cfg = window_config(cin, h, w, k, cout, h - k + 1, w - k + 1, rows, cols, w_base=5, b_base=2)
    want = list(_walk(cin, h, w, k, cout, rows, cols))
    kk = cin * k * k

    async def bench(ctx):
        ctx.set(dut.cfg, dut.cfg.shape().const(cfg))
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        got, last_at, n = [], None, 0
        while ctx.get(dut.busy):
            if ctx.get(dut.valid):
                got.append({key: ctx.get(getattr(dut, key)) for key in want[0]})
                if got[-1]["last"]:
                    if last_at is not None:
                        assert n - last_at >= max(kk, 2 * rows - 1), "a tile's sums were captured before the drain ended"
                    last_at = n
            await ctx.tick()
            n += 1
            assert n < 10 * len(want) + 100
        assert [{k2: int(v) for k2, v in g.items()} for g in got] == [{k2: int(v) for k2, v in x.items()} for x in want]
        assert n == kk + (len(want) // kk - 1) * max(kk, 2 * rows - 1)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
