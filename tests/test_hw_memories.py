# amaranth: UnusedElaboratable=no
"""ActivationBuffer under amaranth.sim against a flat numpy array: vector writes of 1..cols
elements at any address (every bank phase), vector reads at any address, strided reads."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.memories import READ_LATENCY, ActivationBuffer, banks_for
from hw.window import strided_cols


async def write_random(ctx, dut, rng, model, *, writes: int, top: int, counts: tuple[int, int]):
    """`writes` vector writes of counts[0]..counts[1] random bytes at addresses below `top`, into
    the buffer and into `model`; `writing` raised one cycle ahead of the first and lowered after."""
    ctx.set(dut.writing, 1)
    await ctx.tick()
    for _ in range(writes):
        addr, count = int(rng.integers(0, top)), int(rng.integers(counts[0], counts[1] + 1))
        vals = rng.integers(0, 256, size=dut.cols)
        ctx.set(dut.wr, dut.wr.shape().const({"valid": 1, "addr": addr, "count": count, "data": [int(v) for v in vals]}))
        model[addr:addr + count] = vals[:count]
        await ctx.tick()
    ctx.set(dut.wr.valid, 0)
    ctx.set(dut.writing, 0)


@pytest.mark.parametrize("cols,depth,width", [(1, 70, 8), (3, 70, 8), (4, 70, 8), (9, 70, 8), (2, 1100, 20)])
def test_buffer_vector_writes_and_reads(cols, depth, width):
    """The last case has banks of 550 rows of 20 bits: two block-deep pieces (512 + 38) per bank."""
    rng = np.random.default_rng(cols)
    dut = ActivationBuffer(cols, depth, width, 11)
    model = np.zeros(dut.rows * dut.banks, dtype=np.int64)
    usable = depth - cols

    async def bench(ctx):
        await write_random(ctx, dut, rng, model, writes=depth, top=usable, counts=(1, cols))
        for addr in list(range(usable)) + list(rng.integers(0, usable, size=20)):
            ctx.set(dut.raddr, int(addr))
            await ctx.tick().repeat(READ_LATENCY)
            got = [ctx.get(dut.rdata[c]) for c in range(cols)]
            assert got == list(model[addr:addr + cols]), f"read at {addr}"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("cols,depth,write_cols,aligned", [(9, 300, 1, 8), (9, 300, 9, 8), (9, 300, 1, None),
                                                         (4, 70, 1, 2), (2, 1100, 1, 1), (9, 300, 9, 1)])
def test_narrow_ports(cols, depth, write_cols, aligned):
    """One-element writes (write_cols 1) at every address, and aligned reads of `aligned` elements
    at every multiple (or full reads anywhere), against a flat array; rdata past an aligned read is 0."""
    rng = np.random.default_rng(depth + cols)
    dut = ActivationBuffer(cols, depth, 8, 11, write_cols=write_cols, read_aligned=aligned)
    model = np.zeros(dut.rows * dut.banks, dtype=np.int64)
    n = cols if aligned is None else aligned

    async def bench(ctx):
        # count 0: a valid write of nothing
        await write_random(ctx, dut, rng, model, writes=2 * depth, top=depth - write_cols, counts=(0, write_cols))
        step = 1 if aligned is None else aligned
        for addr in range(0, depth - n, step):
            ctx.set(dut.raddr, addr)
            await ctx.tick().repeat(READ_LATENCY)
            got = [ctx.get(dut.rdata[c]) for c in range(cols)]
            assert got[:n] == list(model[addr:addr + n]), f"read at {addr}"
            assert got[n:] == [0] * (cols - n), f"past the aligned read at {addr}"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("cols,max_stride", [(9, 2), (11, 3), (8, 2), (3, 2), (16, 4)])
def test_strided_reads(cols, max_stride):
    """With rstride_m1 = s - 1, rdata[c] is the element at raddr + c * s for every column whose
    read stays within one turn of the banks (hw.window.strided_cols), at every address; s = 1 reads
    as an unstrided buffer does."""
    rng = np.random.default_rng(cols * 7 + max_stride)
    depth = 200
    dut = ActivationBuffer(cols, depth, 8, 11, max_stride=max_stride)
    model = np.zeros(dut.rows * dut.banks, dtype=np.int64)

    async def bench(ctx):
        await write_random(ctx, dut, rng, model, writes=depth, top=depth - cols, counts=(1, cols))
        for s in range(1, max_stride + 1):
            ctx.set(dut.rstride_m1, s - 1)
            n = strided_cols(cols, s)
            assert s == 1 or n == min(cols, (dut.banks - 1) // s + 1)
            for addr in range(0, depth - s * n):
                ctx.set(dut.raddr, addr)
                await ctx.tick().repeat(READ_LATENCY)
                got = [ctx.get(dut.rdata[c]) for c in range(n)]
                assert got == list(model[addr:addr + s * n:s]), f"stride {s} read at {addr}"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_narrow_ports_validate():
    with pytest.raises(ValueError, match="write_cols must be 1 or cols"):
        ActivationBuffer(9, 100, 8, 10, write_cols=4)
    with pytest.raises(ValueError, match="read_aligned must be a power of two"):
        ActivationBuffer(9, 100, 8, 10, read_aligned=3)
    with pytest.raises(ValueError, match="read_aligned must be a power of two"):
        ActivationBuffer(4, 100, 8, 10, read_aligned=8)
    with pytest.raises(ValueError, match="max_stride must be 1..16, and 1 with aligned reads"):
        ActivationBuffer(4, 100, 8, 10, read_aligned=2, max_stride=2)


def test_banks_are_a_power_of_two():
    assert [banks_for(c) for c in (1, 2, 3, 9, 16)] == [1, 2, 4, 16, 16]


def test_buffer_validates():
    with pytest.raises(ValueError, match="cols must be 1..16"):
        ActivationBuffer(17, 100, 8, 10)
    with pytest.raises(ValueError, match="cannot address"):
        ActivationBuffer(4, 1000, 8, 6)


@pytest.mark.parametrize("width,words", [(20, 1300), (8, 100), (40, 513), (80, 5000), (36, 1100)])
def test_rom_pieces_answer_after_rom_latency(width, words):
    """rom() split into block-deep pieces (5000 words of 80 bits: five of 1024 words, 1100 of 36
    bits: three of 512) answers every address ROM_LATENCY cycles later, across piece boundaries
    and back."""
    from amaranth import Module, Signal

    from hw.memories import ROM_LATENCY, rom, rom_depth
    block_depth = lambda _width: rom_depth(words, width)  # noqa: E731 (the piece depth of this ROM)

    rng = np.random.default_rng(width)
    init = [int.from_bytes(rng.bytes(16), "little") % (1 << width) for _ in range(words)]
    m = Module()
    addr = Signal(range(words))
    out = rom(m, "t", width, init, addr)
    pieces = -(-words // block_depth(width))
    names = ["t"] if pieces == 1 else [f"t{i}" for i in range(pieces)]
    assert [m.submodules[n].depth for n in names] == ([block_depth(width)] * pieces if pieces > 1 else [words])  # padded
    edge = min(block_depth(width), words - 1)  # the first word of the second piece, if any
    order = [int(a) for a in rng.integers(0, words, size=60)] + [words - 1, 0, edge - 1, edge, 0]

    async def bench(ctx):
        seen = []
        for a in order + [0] * ROM_LATENCY:
            ctx.set(addr, a)
            await ctx.tick()
            seen.append(ctx.get(out))
        assert seen[ROM_LATENCY - 1:ROM_LATENCY - 1 + len(order)] == [init[a] for a in order]

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("width,words", [(80, 15510), (80, 512), (350, 39), (20, 1300), (8, 100), (1, 20000), (36, 1100)])
def test_rom_pieces_take_the_fewest_block_rams(width, words):
    """rom()'s pieces, padded to one depth, each in its own cheapest block shape (what the fit check
    counts), take no more blocks than the whole ROM in its cheapest shape; of equal shapes the
    shallower, and no piece has a cheaper or equal arrangement more than one block deep."""
    import math

    from boards.fit import BLOCK_SHAPES, MemoryNeed, blocks_for
    from hw.memories import pieces_of, rom_depth
    depth, pieces, _ = pieces_of(words, width, rom_depth(words, width))
    sizes = [depth] * pieces if pieces > 1 else [words]
    used = sum(blocks_for(MemoryNeed(f"p{i}", width, d, True, True), "ecp5") for i, d in enumerate(sizes))
    fewest = min(math.ceil(width / w) * math.ceil(words / d) for w, d in BLOCK_SHAPES["ecp5"])
    assert used == fewest
    assert all(d >= depth or math.ceil(width / w) * math.ceil(words / d) > fewest for w, d in BLOCK_SHAPES["ecp5"])
    one_deep = math.ceil(width / dict((d, w) for w, d in BLOCK_SHAPES["ecp5"])[depth])
    assert all(math.ceil(width / w) * math.ceil(sizes[0] / d) > one_deep for w, d in BLOCK_SHAPES["ecp5"] if d < depth)
    if (width, words) == (80, 15510):  # the edge model's weights at 10 rows: 8 pieces instead of 31
        assert (depth, pieces, used) == (2048, 8, 72)
