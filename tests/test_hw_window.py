"""WindowGenerator under amaranth.sim against a Python walk of the same loops: every issued
step's activation, weight and bias address, first/last, and the tile's output address and
valid columns/rows; with a short reduction (K < the array's tile period) the last step waits
for the drain.
With zero padding, the taps inside the map (and addresses modulo 2**addr_width outside it);
with strides, rows skipped and as many outputs per tile as fit one turn of the buffer's banks; non-square kernels and
strides (kh x kw, sy x sx) count each axis to its own end."""

import pytest
from amaranth.sim import Simulator

from export.plan import pair
from hw.array import SystolicArray
from hw.window import WindowFeatures, WindowGenerator, window_config

AW = 12


def _out_hw(h, w, k, s, pad):
    (kh, kw), (sy, sx) = pair(k), pair(s)
    return (h + pad[0] + pad[2] - kh) // sy + 1, (w + pad[1] + pad[3] - kw) // sx + 1


def _walk(cin, h, w, k, cout, rows, cols, s=1, pad=(0, 0, 0, 0)):
    (kh, kw), (sy, sx) = pair(k), pair(s)
    oh, ow = _out_hw(h, w, k, s, pad)
    cs = sx if ow > 1 else 1
    banks = 1 << (cols - 1).bit_length()
    tcols = cols if cs == 1 else min(cols, (banks - 1) // cs + 1)  # strided reads within one turn of the banks
    for og in range(-(-cout // rows)):
        for y in range(oh):
            for xt in range(-(-ow // tcols)):
                for ci in range(cin):
                    for ky in range(kh):
                        for kx in range(kw):
                            kidx = (ci * kh + ky) * kw + kx
                            iy, ix = y * sy + ky - pad[0], xt * tcols * cs + kx - pad[1]
                            step = {"act_addr": (ci * h * w + iy * w + ix) % (1 << AW),
                                    "w_addr": 5 + og * cin * kh * kw + kidx, "b_addr": 2 + og,
                                    "first": kidx == 0, "last": kidx == cin * kh * kw - 1,
                                    "out_addr": og * rows * oh * ow + y * ow + xt * tcols,
                                    "ncols": min(tcols, ow - xt * tcols), "nrows": min(rows, cout - og * rows)}
                            if any(pad):
                                step["taps"] = sum((0 <= iy < h and 0 <= ix + c * cs < w) << c for c in range(cols))
                            yield step


@pytest.mark.parametrize("cin,h,w,k,cout,rows,cols,s,pad", [
    (2, 6, 7, 3, 5, 2, 3, 1, (0, 0, 0, 0)),   # ragged channel groups and column tiles
    (1, 4, 4, 1, 3, 4, 4, 1, (0, 0, 0, 0)),   # K = 1 < rows: stalls
    (7, 1, 1, 1, 3, 2, 1, 1, (0, 0, 0, 0)),   # a dense layer
    (2, 5, 6, 3, 3, 2, 4, 1, (1, 2, 2, 1)),   # padding up to k-1 on each side, asymmetric
    (2, 7, 7, 3, 3, 2, 3, 2, (1, 1, 1, 1)),   # stride 2, "same" padding, odd cols
    (1, 4, 9, 2, 2, 3, 1, 3, (0, 1, 1, 0)),   # stride 3 on one column
    (3, 2, 3, 3, 2, 2, 5, 1, (0, 0, 1, 0)),   # a padded global-pool window, wider tile than the map
    (1, 11, 6, (5, 2), 3, 2, 3, 2, (2, 1, 2, 0)),  # DS-CNN's first layer, small: tall kernel, stride 2, pads 2/1
    (2, 6, 7, (1, 3), 3, 2, 4, (2, 1), (0, 1, 0, 1)),  # a wide kernel, a row stride only
    (1, 9, 8, (3, 2), 2, 3, 3, (1, 3), (1, 0, 1, 0)),  # a column stride only
    (2, 4, 5, (2, 3), 2, 2, 2, 1, (0, 0, 0, 0)),   # non-square, no padding
    (2, 5, 21, 3, 3, 2, 9, 2, (1, 1, 1, 1)),   # stride 2 on 9 columns: 8 outputs a tile (16 banks)
    (1, 4, 17, 1, 2, 2, 5, 3, (0, 0, 0, 0)),   # stride 3 on 5 columns: 3 outputs a tile (8 banks)
])
def test_window_walk(cin, h, w, k, cout, rows, cols, s, pad):
    (kh, kw), (sy, sx) = pair(k), pair(s)
    oh, ow = _out_hw(h, w, k, s, pad)
    features = WindowFeatures(pad=any(pad), max_stride=sx if ow > 1 else 1, rect=kh != kw)
    period = SystolicArray.tile_period(rows)
    dut = WindowGenerator(rows, cols, AW, features, tile_period=period)
    cfg = window_config(cin, h, w, k, cout, oh, ow, rows, cols, w_base=5, b_base=2, stride=s, pad=pad, features=features)
    want = list(_walk(cin, h, w, k, cout, rows, cols, s, pad))
    kk = cin * kh * kw

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
                        assert n - last_at >= max(kk, period), "a tile's sums were captured before the drain ended"
                    last_at = n
            await ctx.tick()
            n += 1
            assert n < 10 * len(want) + 100
        assert [{k2: int(v) for k2, v in g.items()} for g in got] == [{k2: int(v) for k2, v in x.items()} for x in want]
        assert n == kk + (len(want) // kk - 1) * max(kk, period)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_window_config_refuses_what_the_generator_does_not_make():
    with pytest.raises(ValueError, match="stride 2"):
        window_config(1, 4, 4, 2, 1, 2, 2, 2, 2, 0, 0, stride=2)
    with pytest.raises(ValueError, match=r"padding \[1, 0, 0, 0\]"):
        window_config(1, 4, 4, 2, 1, 4, 3, 2, 2, 0, 0, pad=(1, 0, 0, 0), features=WindowFeatures(max_stride=2))
    with pytest.raises(ValueError, match="kernel 3x2"):
        window_config(1, 4, 4, (3, 2), 1, 2, 3, 2, 2, 0, 0)
