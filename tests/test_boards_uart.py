"""UART blocks and the board's host-link protocol under amaranth.sim."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from boards.host import decode_reply, encode_request, reply_size
from boards.top import HostLink
from boards.uart import UARTRx, UARTTx, bit_period
from tests.boards_helpers import tiny_classifier, uart_recv, uart_send

PERIOD = 8


def run(dut, *testbenches, cycles_limit=None):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)
    sim.run()


def test_rx_receives_bytes_in_order():
    dut = UARTRx(PERIOD)
    data = bytes([0x00, 0xFF, 0x55, 0xA5, 0x01, 0x80])
    got = []

    async def drive(ctx):
        ctx.set(dut.data.ready, 1)
        await uart_send(ctx, dut.rx, data, PERIOD)
        await ctx.tick().repeat(4 * PERIOD)
        assert got == list(data)
        assert ctx.get(dut.overrun) == 0 and ctx.get(dut.frame_error) == 0

    async def collect(ctx):
        async for _, _, payload, valid in ctx.tick().sample(dut.data.payload, dut.data.valid):
            if valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_process(collect)
    sim.run_until(1e-6 * (len(data) + 6) * 10 * PERIOD)
    assert got == list(data)


def test_rx_flags_overrun_and_bad_stop_bit():
    dut = UARTRx(PERIOD)

    async def tb(ctx):
        await uart_send(ctx, dut.rx, b"\x12\x34", PERIOD)  # nobody takes them
        await ctx.tick().repeat(PERIOD)
        assert ctx.get(dut.overrun) == 1
        assert ctx.get(dut.data.payload) == 0x34
        # a frame whose stop bit is 0
        for bit in [0, 1, 0, 1, 0, 1, 0, 1, 0, 0]:
            ctx.set(dut.rx, bit)
            await ctx.tick().repeat(PERIOD)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * PERIOD)
        assert ctx.get(dut.frame_error) == 1

    run(dut, tb)


def test_tx_frames_match_the_receiver_model():
    dut = UARTTx(PERIOD)
    data = bytes(range(0, 256, 37))

    async def send(ctx):
        for b in data:
            ctx.set(dut.data.payload, b)
            ctx.set(dut.data.valid, 1)
            await ctx.tick().until(dut.data.ready)
        ctx.set(dut.data.valid, 0)

    async def recv(ctx):
        assert await uart_recv(ctx, dut.tx, len(data), PERIOD, timeout=4 * PERIOD) == data

    run(dut, send, recv)


def test_bit_period_refuses_what_the_clock_cannot_do():
    assert bit_period(25e6, 115_200) == 217
    with pytest.raises(ValueError, match="lower --baud"):
        bit_period(1e6, 921_600)
    with pytest.raises(ValueError, match="off by more than 2%"):
        bit_period(12e6, 2_500_000)


@pytest.mark.parametrize("seed", [0, 1])
def test_host_link_classifies_an_image_end_to_end(seed):
    """The host's request bytes go in on the RX pin; the TX pin's bytes decode to the model's logits."""
    accel = tiny_classifier(n_pixels=4 * 4 * 3, num_classes=5, seed=seed)
    dut = HostLink(accel, accel.n_pixels, accel.num_classes, PERIOD)
    rng = np.random.default_rng(seed + 10)
    image = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    expected = accel.model(image)
    # garbage before the magic byte must be skipped
    request = b"\x00\x17" + encode_request(image)

    async def host(ctx):
        await uart_send(ctx, dut.rx, request, PERIOD)

    async def board(ctx):
        reply = await uart_recv(ctx, dut.tx, reply_size(accel.num_classes), PERIOD,
                                timeout=len(request) * 12 * PERIOD + 2000)
        logits, cls = decode_reply(reply, accel.num_classes)
        assert logits.tolist() == expected.tolist()
        assert cls == int(np.argmax(expected))
        await ctx.tick().repeat(2)
        assert ctx.get(dut.klass) == cls
        assert ctx.get(dut.busy) == 0
        assert ctx.get(dut.error) == 0

    run(dut, host, board)


def test_decode_reply_rejects_a_wrong_class_byte_and_a_short_reply():
    from boards.host import LinkError

    good = np.array([3, -7, 9], dtype="<i4").tobytes() + bytes([2])
    assert decode_reply(good, 3)[1] == 2
    with pytest.raises(LinkError, match="not the argmax"):
        decode_reply(good[:-1] + bytes([0]), 3)
    with pytest.raises(LinkError, match="expected 13 reply bytes, got 12"):
        decode_reply(good[:-1], 3)


def test_ecp5_pll_dividers():
    from boards.clock import ecp5_pll
    from boards.errors import BoardError

    c = ecp5_pll(25, 100)
    assert (c.clki_div, c.clkfb_div, c.clkop_div, c.fout_mhz) == (1, 4, 6, 100) and 400 <= c.vco_mhz <= 800
    assert ecp5_pll(48, 96).fout_mhz == 96
    with pytest.raises(BoardError, match="within 1%"):
        ecp5_pll(25, 48)
    with pytest.raises(BoardError, match="--clock-mhz"):
        ecp5_pll(25, 500)
