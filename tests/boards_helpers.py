"""Helpers for the boards tests: a tiny accelerator with the real port shape, and UART line drivers."""

import numpy as np
from amaranth.hdl import Array, Module, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out


class TinyClassifier(wiring.Component):
    """A linear classifier, `logits = W @ pixels + b`, with hw.top.Accelerator's ports.

    One MAC steps through the classes for every pixel; weights live in a Memory (an EBR on the
    FPGA), so a CI build exercises memory, multiplier, streams and the host link.
    """

    pixels: In(stream.Signature(unsigned(8)))
    logits: Out(stream.Signature(signed(32)))
    start: In(1)
    busy: Out(1)
    done: Out(1)
    cycles: Out(32)

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise ValueError(f"weight must be (classes, pixels) and bias (classes,), got {weight.shape}, {bias.shape}")
        self.weight = np.asarray(weight, dtype=np.int64)
        self.bias = np.asarray(bias, dtype=np.int64)
        self.num_classes, self.n_pixels = weight.shape
        super().__init__()

    def model(self, pixels: np.ndarray) -> np.ndarray:
        return self.weight @ pixels.reshape(-1).astype(np.int64) + self.bias

    def elaborate(self, platform):
        m = Module()
        C, N = self.num_classes, self.n_pixels
        m.submodules.mem = mem = memory.Memory(shape=signed(8), depth=N * C,
                                               init=[int(v) for v in self.weight.T.reshape(-1)])
        rd = mem.read_port()
        acc = Array(Signal(signed(32), name=f"acc{c}") for c in range(C))
        addr = Signal(range(N * C + 1))
        pix = Signal(unsigned(8))
        c = Signal(range(C + 1))
        taken = Signal(range(N + 1))

        m.d.comb += rd.addr.eq(addr)
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.FSM():
            with m.State("idle"):
                with m.If(self.start):
                    m.d.sync += [acc[i].eq(int(b)) for i, b in enumerate(self.bias)]
                    m.d.sync += [addr.eq(0), taken.eq(0), self.cycles.eq(0), self.busy.eq(1)]
                    m.next = "pixel"
            with m.State("pixel"):
                m.d.comb += self.pixels.ready.eq(1)
                with m.If(self.pixels.valid):
                    m.d.sync += [pix.eq(self.pixels.payload), c.eq(0), taken.eq(taken + 1)]
                    m.next = "read"
            with m.State("read"):  # the weight of class 0 arrives next cycle
                m.next = "mac"
            with m.State("mac"):
                m.d.comb += rd.addr.eq(addr + 1)
                m.d.sync += [acc[c].eq(acc[c] + rd.data * pix), addr.eq(addr + 1), c.eq(c + 1)]
                with m.If(c == C - 1):
                    m.d.sync += c.eq(0)
                    m.next = "pixel"
                    with m.If(taken == N):
                        m.next = "out"
            with m.State("out"):
                m.d.comb += [self.logits.valid.eq(1), self.logits.payload.eq(acc[c])]
                with m.If(self.logits.ready):
                    m.d.sync += c.eq(c + 1)
                    with m.If(c == C - 1):
                        m.d.sync += self.busy.eq(0)
                        m.d.comb += self.done.eq(1)
                        m.next = "idle"
        return m


def tiny_classifier(n_pixels: int = 48, num_classes: int = 4, seed: int = 0) -> TinyClassifier:
    rng = np.random.default_rng(seed)
    return TinyClassifier(rng.integers(-128, 128, size=(num_classes, n_pixels)),
                          rng.integers(-5000, 5000, size=num_classes))


async def uart_send(ctx, pin, data: bytes, period: int) -> None:
    """Drive 8N1 frames onto `pin`, `period` clocks per bit."""
    for byte in data:
        for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
            ctx.set(pin, bit)
            await ctx.tick().repeat(period)


async def uart_recv(ctx, pin, count: int, period: int, timeout: int) -> bytes:
    """Sample `count` 8N1 frames from `pin` at mid-bit; fail after `timeout` idle clocks."""
    out = bytearray()
    for _ in range(count):
        idle = 0
        while ctx.get(pin):
            await ctx.tick()
            idle += 1
            assert idle < timeout, f"no start bit after {idle} clocks ({len(out)}/{count} bytes received)"
        await ctx.tick().repeat(period // 2)
        assert ctx.get(pin) == 0, "start bit glitch"
        byte = 0
        for i in range(8):
            await ctx.tick().repeat(period)
            byte |= ctx.get(pin) << i
        await ctx.tick().repeat(period)
        assert ctx.get(pin) == 1, f"byte {len(out)}: bad stop bit"
        out.append(byte)
    return bytes(out)


def tiny_config(size: int = 8, classes: int = 3):
    """conv, pool, pruned hidden layer, logits: the paper model's kinds, CI-sized."""
    from quant.model import LayerSpec, ModelConfig

    return ModelConfig("tiny", [LayerSpec("conv", 4, 3), LayerSpec("pool", kernel=2), LayerSpec("flatten"),
                                LayerSpec("linear", 8, w_bits=4, cls="P", sparsity=0.5),
                                LayerSpec("linear", classes, relu=False)],
                       classes, (3, size, size), quantized=True)


def random_checkpoint(path, config=None, seed: int = 0):
    """A quantized checkpoint of `config` (default: tiny_config()) with seeded weights on the
    power-of-two grid (export.testing's), its activation quantizers calibrated on random images."""
    import torch

    from export.testing import RandomModel, _set_weights
    from quant import checkpoint
    from quant.model import build

    cfg = config or tiny_config()
    model = build(cfg)
    _set_weights(model, RandomModel(cfg, seed))
    model.train()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randint(0, 256, (8, *cfg.in_shape), generator=gen).float() / 256.0)
    model.eval()
    return checkpoint.save(path, {"config": cfg.to_dict(), "class_names": [f"c{i}" for i in range(cfg.num_classes)],
                                  "state_dict": model.state_dict(), "metrics": {"val_acc": 0.5}})


def paper_checkpoint(path, seed: int = 0):
    """The paper CNN's shape (quantized, 90% pruned hidden layer) with random weights."""
    from quant.model import named_config, quantized_twin

    return random_checkpoint(path, quantized_twin(named_config("paper")), seed)
