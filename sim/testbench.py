"""The cocotb test: images streamed back to back, logits and cycle counts out, one JSON line per image.

Run by sim.runner.simulate, which passes the job file in $SIM_JOB: `images` (a .npy of uint8
(N, C, H, W)), `image_file` (where the harness's `$readmemh` reads), `num_classes`,
`timeout_cycles`, `backpressure` (random `logits.ready`) and `results` (the JSON-lines file
written here).

The accelerator's contract (hw.top): `start` (one cycle) is taken only while `busy` is low, and
the accelerator then takes one image's C*H*W pixels; several images may be in flight, each giving
`num_classes` logits and then a `done` pulse, in start order, with its start-to-done count on
`cycles` from the cycle after. Two coroutines follow it. The feeder loads the next image into the
harness's pixel memory once the harness has sent all of the previous one (`fed`) and pulses
`start` as soon as `busy` is low, without waiting for `done`; the collector takes each image's
logits, `done` and `cycles` in order. So images overlap as far as the hardware lets them, and the
stream's throughput (sim.verify.stream_figures) is the hardware's. An error (a timeout, pixels
left untaken) is that image's record; the accelerator is then reset and the stream resumes at the
next image. Python wakes only on events (`fed`, `busy`, the logits' `valid`, `done`), never per
cycle while the accelerator computes: a Python driver costs ~15 us of CPU per cycle (measured),
the paper model's whole RTL ~1.8 us.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import Event, FallingEdge, ReadOnly, RisingEdge, SimTimeoutError, with_timeout
from cocotb.utils import get_sim_time

from sim.harness import PERIOD_NS


def hwc_hex(image: np.ndarray) -> str:
    """The pixel stream's order (row-major pixels, R, G, B each) as `$readmemh` lines."""
    return "\n".join(f"{v:02x}" for v in image.transpose(1, 2, 0).reshape(-1).tolist()) + "\n"


async def cycle(dut, n: int = 1) -> None:
    for _ in range(n):
        await FallingEdge(dut.clk)


def now() -> int:
    """The simulator's clock cycle (exact at a falling edge, where the testbench acts)."""
    return round(get_sim_time("ns") / PERIOD_NS)


async def pulse(dut, signal) -> None:
    """Hold `signal` high across exactly one rising edge (set and cleared at falling edges)."""
    signal.value = 1
    await cycle(dut)
    signal.value = 0


async def receive(dut, count: int, rng: random.Random | None) -> list[int]:
    """Take `count` transfers from the `logits` stream. Decisions are made at the falling edge,
    so `ready` is stable before the rising edge that completes a transfer; with `rng`, `ready`
    is random (back-pressure). Sleeps on `valid` between bursts. `ready` stays low until the
    first decision: the stream may hold the next image's logits already, and a transfer at the
    next rising edge would be lost."""
    got: list[int] = []
    dut.logits__ready.value = 0
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


@dataclass
class Feeder:
    """The feeder's progress, read by the collector: each image's start (cycle and event) and the
    image the harness's pixel memory holds, from its `load` pulse on."""

    started: dict[int, Event]
    start_cycle: dict[int, int] = field(default_factory=dict)
    loaded: int = -1


async def feed(dut, job: dict, images: np.ndarray, first: int, feeder: Feeder) -> None:
    """Start images[first:] in order: each is loaded once the harness has sent every pixel of the
    previous one (its memory holds one image) and started as soon as `busy` is low."""
    for i in range(first, len(images)):
        if i > first and not dut.fed.value:
            await RisingEdge(dut.fed)
            await FallingEdge(dut.clk)
        Path(job["image_file"]).write_text(hwc_hex(images[i]))
        feeder.loaded = i
        await pulse(dut, dut.load)
        # `busy` is read at a falling edge, so a `start` set there is taken at the next rising edge
        while dut.busy.value:
            await FallingEdge(dut.busy)
            await FallingEdge(dut.clk)
        feeder.start_cycle[i] = now()
        await pulse(dut, dut.start)
        feeder.started[i].set()


def pixels_taken(dut, feeder: Feeder, i: int, n_pixels: int) -> int:
    """How many of image i's pixels the accelerator has taken (all, once the harness holds a later one)."""
    return int(dut.pixels_sent.value) if feeder.loaded == i else n_pixels


async def collect(dut, job: dict, i: int, n_pixels: int, feeder: Feeder, rng: random.Random | None) -> dict:
    """Image i's record: its logits, `done` and `cycles`, or the error that stopped it. Each wait
    (for its start, then its logits) is bounded by the job's timeout from the previous image's end."""
    k, limit = int(job["num_classes"]), int(job["timeout_cycles"])
    rec: dict = {"logits": None, "cycles": None, "error": None}
    try:
        if not feeder.started[i].is_set():
            await with_timeout(feeder.started[i].wait(), limit * PERIOD_NS, "ns")
    except SimTimeoutError:
        rec["error"] = f"timeout: not started within {limit} cycles (`busy` stayed high)"
        return rec
    try:
        rec["logits"] = await with_timeout(receive(dut, k, rng), limit * PERIOD_NS, "ns")
        # `done` comes after the last logit: by this falling edge, or later
        if not dut.done.value:
            await with_timeout(RisingEdge(dut.done), 100 * PERIOD_NS, "ns")
            await FallingEdge(dut.clk)
    except SimTimeoutError:
        got = "no" if rec["logits"] is None else "all"
        rec["error"] = (f"timeout: {got} logits and no `done` within {limit} cycles "
                        f"(took {pixels_taken(dut, feeder, i, n_pixels)} of {n_pixels} pixels)")
        return rec
    t_start, t_done = feeder.start_cycle[i], now()
    rec["sim_cycles"] = t_done - t_start
    # the image's span on the simulator's clock (start pulse to the last logit and `done`): a stream's
    # throughput is images over the first start to the last done
    rec["start_cycle"], rec["done_cycle"] = t_start, t_done
    await cycle(dut)
    rec["cycles"] = int(dut.cycles.value)
    sent = pixels_taken(dut, feeder, i, n_pixels)
    if sent != n_pixels:
        rec["error"] = f"the accelerator took {sent} of {n_pixels} pixels before `done`"
    return rec


async def reset(dut) -> None:
    for sig in (dut.start, dut.load, dut.logits__ready):
        sig.value = 0
    dut.rst.value = 1
    await cycle(dut, 4)
    dut.rst.value = 0
    await cycle(dut)


@cocotb.test()
async def run_images(dut):
    """Every image of the job, streamed; results as JSON lines in image order."""
    job = json.loads(Path(os.environ["SIM_JOB"]).read_text())
    images = np.load(job["images"])
    n_pixels = int(images[0].size) if len(images) else 0
    rng = random.Random(job.get("seed", 0)) if job.get("backpressure") else None
    out = open(job["results"], "w", buffering=1)
    wall0, cpu0, sim0 = time.perf_counter(), time.process_time(), get_sim_time("ns")
    t_last, i = wall0, 0
    while i < len(images):  # one stream per pass: from the first image, or the one after an error
        await reset(dut)
        feeder = Feeder({j: Event() for j in range(i, len(images))})
        task = cocotb.start_soon(feed(dut, job, images, i, feeder))
        while i < len(images):
            rec = await collect(dut, job, i, n_pixels, feeder, rng)
            # wall_s: the wall time from the previous image's record, the stream's cost of this image
            t = time.perf_counter()
            rec.update(index=i, wall_s=t - t_last)
            t_last, i = t, i + 1
            out.write(json.dumps(rec) + "\n")
            if rec["error"] is not None:
                break
        task.cancel()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    sim_cycles = round((get_sim_time("ns") - sim0) / PERIOD_NS)
    # per CPU second too: the simulator shares its cores, and wall time counts the others' share
    out.write(json.dumps({"summary": True, "sim_cycles": sim_cycles, "wall_s": wall, "cpu_s": cpu,
                          "sim_cycles_per_second": sim_cycles / wall if wall else 0.0,
                          "sim_cycles_per_cpu_second": sim_cycles / cpu if cpu else 0.0}) + "\n")
    out.close()
