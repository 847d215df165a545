"""Sharded RTL simulation: the images split into contiguous shards, one simulator process each,
on this machine (`jobs` threads, each driving its own Verilator process) or over a Ray cluster.

Each shard is a stream of its own, from a reset accelerator. The accelerator's cycles do not
depend on the pixels: from the second image of a stream on, each image takes the same start-to-
done cycles and is done a fixed period after the one before (hw.cycles.stream). So every shard
but the first starts with a warm-up image, the last of the shard before, whose record is
dropped: each kept image then has the cycles it has in one stream of all the images, and
`merged_stream_cycles` extends the first shard's span by the period per further image. Where the
shards' streams are not uniform (random gaps or back-pressure, or an error) it gives None and
says why.

Ray is an optional extra (`pip install -e ".[cluster]"`). A Ray task gets the accelerator's
Verilog and inventory as bytes, builds (or finds in its node's cache) the simulator and runs its
shard; every node needs the toolkit installed.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from common.errors import UserError
from sim import runner

LOCAL_RAY = "local"  # --ray without an address: start a Ray on this machine


@dataclass
class Shard:
    """One shard's outcome: its images' records (indices global), the simulator's totals, where it ran."""

    first: int
    records: list[dict]
    summary: dict
    host: str


def shard_ranges(n: int, jobs: int) -> list[range]:
    """`n` image indices in min(jobs, n) contiguous shards whose sizes differ by at most one."""
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    k = max(1, min(jobs, n))
    cuts = [n * j // k for j in range(k + 1)]
    return [range(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def _globalised(records: list[dict], lo: int, first: int) -> list[dict]:
    """The records of a shard run from image `lo`, indices global, without the warm-up ones before `first`."""
    return [{**r, "index": r["index"] + lo} for r in records if r["index"] + lo >= first]


def _warm(part: range) -> int:
    """Where a shard's simulation starts: one image before its own, but for the first shard."""
    return max(0, part.start - 1)


def run_local(build: runner.Build, stream: np.ndarray, num_classes: int, work_dir: Path, parts: list[range], *,
              timeout_cycles: int, gaps: bool = False, backpressure: bool = False,
              on_image: Callable[[dict], None] | None = None) -> list[Shard]:
    """Each shard of `stream` (uint8 images) through its own simulator process, all at once;
    `on_image` gets each record (global index) as it is written, from one thread at a time."""
    lock, stop = threading.Lock(), threading.Event()
    host = socket.gethostname()

    def one(k: int, part: range) -> Shard:
        lo = _warm(part)

        def seen(rec: dict) -> None:
            if on_image and rec["index"] + lo >= part.start:
                with lock:
                    on_image({**rec, "index": rec["index"] + lo})

        res = runner.simulate(build, stream[lo:part.stop], num_classes, work_dir / (f"run{k}" if k else "run"),
                              timeout_cycles=timeout_cycles, gaps=gaps, backpressure=backpressure, on_image=seen,
                              stop=stop)
        return Shard(part.start, _globalised(res.images, lo, part.start), res.summary, host)

    if len(parts) == 1:
        return [one(0, parts[0])]
    with ThreadPoolExecutor(len(parts)) as pool:
        futures = [pool.submit(one, k, p) for k, p in enumerate(parts)]
        try:
            return [f.result() for f in futures]
        except BaseException:  # Ctrl-C, SIGTERM, a shard that failed: every simulator ends with the run
            stop.set()
            raise


def simulate_files(files: dict[str, bytes], pixels: int, stream: np.ndarray, num_classes: int, lo: int, first: int, *,
                   timeout_cycles: int, gaps: bool = False, backpressure: bool = False) -> Shard:
    """A shard on whatever machine runs this: the accelerator's files (name -> bytes) into a
    temporary folder, the simulator built or taken from this machine's cache, the images of
    `stream` (global indices from `lo`) run, those before `first` (the warm-up) dropped."""
    tmp = Path(tempfile.mkdtemp(prefix="sim-shard-"))
    try:
        rtl = tmp / "rtl"
        rtl.mkdir()
        for name, blob in files.items():
            (rtl / name).write_bytes(blob)
        b = runner.build(rtl, pixels)
        res = runner.simulate(b, stream, num_classes, tmp / "run", timeout_cycles=timeout_cycles, gaps=gaps,
                              backpressure=backpressure)
        return Shard(first, _globalised(res.images, lo, first), res.summary, socket.gethostname())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError('--ray needs Ray, an optional extra: pip install -e ".[cluster]"') from None
    return ray


def ray_cpus(address: str) -> int:
    """The CPUs of the Ray cluster at `address` (LOCAL_RAY: a Ray started here)."""
    ray = _connect(import_ray(), address)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a `host:port` (or `ray://host:port`) nothing answers at, in one line: Ray itself
    retries an unreachable head for minutes."""
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray's own lookup
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"--ray {address}: cannot connect to a Ray cluster there ({e.strerror or e.__class__.__name__}); "
                        "give its head's address, e.g. 10.0.0.1:6379, or --ray alone for a local Ray") from None


def _connect(ray, address: str):
    if not ray.is_initialized():
        if address != LOCAL_RAY:
            check_reachable(address)
        try:
            if address == LOCAL_RAY:
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise UserError(f"--ray {address}: cannot connect to a Ray cluster there ({e.__class__.__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); give its head's address, e.g. 10.0.0.1:6379, "
                            "or --ray alone for a local Ray") from None
    return ray


def run_ray(rtl_dir: Path, pixels: int, stream: np.ndarray, num_classes: int, parts: list[range], address: str, *,
            timeout_cycles: int, gaps: bool = False, backpressure: bool = False,
            on_image: Callable[[dict], None] | None = None) -> list[Shard]:
    """Each shard as a Ray task of one CPU on the cluster at `address`; `on_image` gets a shard's
    records as the shard finishes."""
    ray = _connect(import_ray(), address)
    files = {p.name: p.read_bytes() for p in Path(rtl_dir).iterdir() if p.is_file()}
    task = ray.remote(num_cpus=1, max_retries=0)(simulate_files)
    files_ref = ray.put(files)
    pending = {task.remote(files_ref, pixels, stream[_warm(p):p.stop], num_classes, _warm(p), p.start,
                           timeout_cycles=timeout_cycles, gaps=gaps, backpressure=backpressure): p for p in parts}
    done: list[Shard] = []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            shard = ray.get(ready[0])
            del pending[ready[0]]
            done.append(shard)
            for r in shard.records if on_image else ():
                on_image(r)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return sorted(done, key=lambda s: s.first)


def shutdown_local_ray(address: str | None) -> None:
    """Stop the Ray that `run_ray` started here (a cluster given by address keeps running)."""
    if address == LOCAL_RAY:
        ray = import_ray()
        if ray.is_initialized():
            ray.shutdown()


def merged_stream_cycles(shards: list[Shard]) -> tuple[int | None, str | None]:
    """The cycles from the first image's start to the last image's done, as one stream of every
    shard's images would take: the first shard's own span, then one period per further image,
    the period being each shard's (uniform) interval between dones. (None, why) when a shard's
    stream is not uniform or no shard shows a period."""
    spans = []
    for s in shards:
        if not s.records or any(r["error"] is not None or r.get("done_cycle") is None for r in s.records):
            return None, "a shard's stream had an error"
        spans.append([(r["start_cycle"], r["done_cycle"]) for r in s.records])
    if len(spans) == 1:
        return spans[0][-1][1] - spans[0][0][0], None
    gaps = {b[1] - a[1] for sp in spans for a, b in zip(sp, sp[1:])}
    if len(gaps) != 1:
        return None, ("the shards' streams are not uniform (random gaps or back-pressure, or too few images a shard); "
                      "run with --jobs 1 for the stream's figures" if gaps else "every shard holds one image: no period to merge by")
    period = gaps.pop()
    first = spans[0]
    n = sum(len(sp) for sp in spans)
    return first[-1][1] - first[0][0] + (n - len(first)) * period, None


def merged_sim_summary(shards: list[Shard], wall_s: float) -> dict:
    """The simulators' totals over the shards: cycles summed, the wall time of them all together."""
    cycles = sum(s.summary["sim_cycles"] for s in shards)
    cpu = sum(s.summary.get("cpu_s", 0.0) for s in shards)
    return {"sim_cycles": cycles, "wall_s": wall_s, "cpu_s": cpu,
            "sim_cycles_per_second": cycles / wall_s if wall_s else 0.0,
            "sim_cycles_per_cpu_second": cycles / cpu if cpu else 0.0}
