"""The cocotb test: images in, logits and cycle counts out, one JSON line per image.

Run by sim.runner.simulate, which passes the job file in $SIM_JOB: `images` (a .npy of uint8
(N, C, H, W)), `image_file` (where the harness's `$readmemh` reads), `num_classes`,
`timeout_cycles`, `backpressure` (random `logits.ready`) and `results` (the JSON-lines file
written here). Per image: load it into the harness's pixel memory, pulse `start`, take
`num_classes` logits over the stream, wait for `done`, read `cycles`. Python wakes only on events
(the logits' `valid`, `done`), never per cycle while the accelerator computes: a Python driver
costs ~15 us of CPU per cycle (measured), the paper model's whole RTL ~1.8 us.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, SimTimeoutError, with_timeout
from cocotb.utils import get_sim_time

from sim.harness import PERIOD_NS


def hwc_hex(image: np.ndarray) -> str:
    """The pixel stream's order (row-major pixels, R, G, B each) as `$readmemh` lines."""
    return "\n".join(f"{v:02x}" for v in image.transpose(1, 2, 0).reshape(-1).tolist()) + "\n"


async def cycle(dut, n: int = 1) -> None:
    for _ in range(n):
        await FallingEdge(dut.clk)


async def edge(signal) -> None:
    await RisingEdge(signal)


async def pulse(dut, signal) -> None:
    """Hold `signal` high across exactly one rising edge (set and cleared at falling edges)."""
    signal.value = 1
    await cycle(dut)
    signal.value = 0


async def receive(dut, count: int, rng: random.Random | None) -> list[int]:
    """Take `count` transfers from the `logits` stream. Decisions are made at the falling edge,
    so `ready` is stable before the rising edge that completes a transfer; with `rng`, `ready`
    is random (back-pressure). Sleeps on `valid` between bursts."""
    got: list[int] = []
    dut.logits__ready.value = 0 if rng else 1
    while len(got) < count:
        if not dut.logits__valid.value:
            await RisingEdge(dut.logits__valid)
        await FallingEdge(dut.clk)
        ready = 1 if rng is None else rng.random() < 0.6
        dut.logits__ready.value = ready
        await ReadOnly()
        if ready and dut.logits__valid.value:
            got.append(dut.logits__payload.value.to_signed())
    await FallingEdge(dut.clk)
    dut.logits__ready.value = 0
    return got


async def run_image(dut, job: dict, image: np.ndarray, rng: random.Random | None) -> dict:
    k, n_pixels = int(job["num_classes"]), int(image.size)
    Path(job["image_file"]).write_text(hwc_hex(image))
    await pulse(dut, dut.load)
    done = cocotb.start_soon(edge(dut.done))
    t_start = get_sim_time("ns")
    await pulse(dut, dut.start)
    timeout = int(job["timeout_cycles"]) * PERIOD_NS
    rec: dict = {"logits": None, "cycles": None, "error": None}
    try:
        rec["logits"] = await with_timeout(receive(dut, k, rng), timeout, "ns")
        if not done.done():
            await with_timeout(done, 100 * PERIOD_NS, "ns")
    except SimTimeoutError:
        got = "no" if rec["logits"] is None else "all"
        rec["error"] = (f"timeout: {got} logits and no `done` within {job['timeout_cycles']} cycles "
                        f"(took {int(dut.pixels_sent.value)} of {n_pixels} pixels)")
        done.cancel()
        return rec
    t_done = get_sim_time("ns")
    rec["sim_cycles"] = round((t_done - t_start) / PERIOD_NS)
    # the image's span on the simulator's clock (start pulse to the last logit and `done`): a stream's
    # throughput is images over the first start to the last done
    rec["start_cycle"], rec["done_cycle"] = round(t_start / PERIOD_NS), round(t_done / PERIOD_NS)
    await cycle(dut)
    rec["cycles"] = int(dut.cycles.value)
    sent = int(dut.pixels_sent.value)
    if sent != n_pixels:
        rec["error"] = f"the accelerator took {sent} of {n_pixels} pixels before `done`"
    return rec


@cocotb.test()
async def run_images(dut):
    """Every image of the job, in order; results as JSON lines."""
    job = json.loads(Path(os.environ["SIM_JOB"]).read_text())
    images = np.load(job["images"])
    rng = random.Random(job.get("seed", 0)) if job.get("backpressure") else None
    for sig in (dut.start, dut.load, dut.logits__ready):
        sig.value = 0
    out = open(job["results"], "w", buffering=1)
    wall0, cpu0, sim0 = time.perf_counter(), time.process_time(), get_sim_time("ns")
    reset_needed = True
    for i, image in enumerate(images):
        if reset_needed:
            dut.rst.value = 1
            await cycle(dut, 4)
            dut.rst.value = 0
            await cycle(dut)
        t0 = time.perf_counter()
        rec = await run_image(dut, job, image, rng)
        reset_needed = rec["error"] is not None
        rec.update(index=i, wall_s=time.perf_counter() - t0)
        out.write(json.dumps(rec) + "\n")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    sim_cycles = round((get_sim_time("ns") - sim0) / PERIOD_NS)
    # per CPU second too: the simulator shares its cores, and wall time counts the others' share
    out.write(json.dumps({"summary": True, "sim_cycles": sim_cycles, "wall_s": wall, "cpu_s": cpu,
                          "sim_cycles_per_second": sim_cycles / wall if wall else 0.0,
                          "sim_cycles_per_cpu_second": sim_cycles / cpu if cpu else 0.0}) + "\n")
    out.close()
