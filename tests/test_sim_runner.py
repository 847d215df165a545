"""sim.runner and sim.testbench on the PixelSums fixture (tests/sim_helpers.py), not the accelerator:
the build cache, the stream protocol corners (pixel bubbles, logits back-pressure), timeouts, and
images streamed back to back into a pipelined design, traced on two trace ports."""

from __future__ import annotations

import re

import numpy as np
import pytest

from sim import runner
from hw.inventory import INVENTORY_FILE, Inventory, Port
from sim.harness import REQUIRED, HarnessError, harness_verilog
from sim.verify import stream_figures
from sim_helpers import pixel_sums_expected, write_pixel_sums

SHAPE, CLASSES = (3, 8, 8), 5
PIXELS = int(np.prod(SHAPE))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("verilator-cache")


@pytest.fixture(scope="module")
def rtl(tmp_path_factory):
    d = tmp_path_factory.mktemp("pixelsums")
    write_pixel_sums(d, SHAPE, CLASSES, compute_cycles=200)
    return d


@pytest.fixture(scope="module")
def built(rtl, cache):
    return runner.build(rtl, PIXELS, cache_dir=cache)


@pytest.fixture(scope="module")
def piped(tmp_path_factory, cache):
    """The fixture with its load and its back as two pipeline stages (and a `trace1` port)."""
    d = tmp_path_factory.mktemp("pixelsums-pipelined")
    write_pixel_sums(d, SHAPE, CLASSES, compute_cycles=200, pipelined=True)
    return runner.build(d, PIXELS, cache_dir=cache)


def test_second_build_comes_from_the_cache(rtl, cache, built):
    assert built.compiled
    again = runner.build(rtl, PIXELS, cache_dir=cache)
    assert not again.compiled and again.dir == built.dir
    assert again.executable.stat().st_mtime == built.executable.stat().st_mtime


def test_the_cache_keeps_the_most_recently_used_builds(tmp_path, monkeypatch):
    import os
    import time
    now = time.time()
    for i, age in enumerate([50, 10, 30, 40]):  # build i last used `age` seconds ago
        d = tmp_path / f"key{i}"
        d.mkdir()
        (d / "ok").write_text("1\n")
        os.utime(d / "ok", (now - age, now - age))
    for name, age in (("key9.tmp123", 2 * runner.STALE_BUILD_S), ("key8.tmp456", 10)):  # unfinished builds
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (now - age, now - age))
    removed = runner.prune_cache(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["key0", "key3", "key9.tmp123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key1", "key2", "key8.tmp456"]
    monkeypatch.setenv("SIM_CACHE_ENTRIES", "1")
    assert [p.name for p in runner.prune_cache(tmp_path)] == ["key2"]
    monkeypatch.setenv("SIM_CACHE_ENTRIES", "lots")
    with pytest.raises(ValueError, match=r"SIM_CACHE_ENTRIES='lots': must be a whole number"):
        runner.prune_cache(tmp_path)


def test_a_cache_hit_counts_as_a_use(rtl, cache, built):
    import os
    os.utime(built.dir / "ok", (1, 1))
    runner.build(rtl, PIXELS, cache_dir=cache)
    assert (built.dir / "ok").stat().st_mtime > 1


def test_cache_key_covers_verilog_data_files_and_flags(rtl, tmp_path):
    key = runner.build_key(rtl, PIXELS)[0]
    assert runner.build_key(rtl, PIXELS)[0] == key
    assert runner.build_key(rtl, PIXELS, waves=True)[0] != key
    assert runner.build_key(rtl, PIXELS + 1)[0] != key  # the harness's pixel memory
    other = write_pixel_sums(tmp_path, SHAPE, CLASSES, compute_cycles=201).parent
    assert runner.build_key(other, PIXELS)[0] != key
    (other / "weights.hex").write_text("01\n")
    k1 = runner.build_key(other, PIXELS)[0]
    (other / "weights.hex").write_text("02\n")
    assert runner.build_key(other, PIXELS)[0] != k1


@pytest.mark.parametrize("gaps,backpressure", [(False, False), (True, True)])
def test_logits_and_cycles(built, tmp_path, gaps, backpressure):
    images = np.random.default_rng(1).integers(0, 256, (6, *SHAPE), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    res = runner.simulate(built, images, CLASSES, tmp_path, timeout_cycles=10_000,
                          gaps=gaps, backpressure=backpressure)
    assert [r["error"] for r in res.images] == [None] * len(images)
    for r, img in zip(res.images, images):
        assert r["logits"] == pixel_sums_expected(img, CLASSES).tolist()
    cycles = [r["cycles"] for r in res.images]
    if not gaps:  # start, one pixel a cycle, the compute wait, one logit a cycle
        assert cycles == [1 + PIXELS + 201 + CLASSES] * len(images)
    else:
        assert min(cycles) > 1 + PIXELS + 201 + CLASSES
    assert all(r["sim_cycles"] >= c for r, c in zip(res.images, cycles))
    assert res.summary["sim_cycles"] >= sum(cycles)


def test_relative_run_folder_works_from_any_working_directory(built, tmp_path, monkeypatch):
    """`bitstream-rtl` defaults to `--out out`: a relative run folder must reach the simulator
    (which runs in its own working directory) as a usable path."""
    monkeypatch.chdir(tmp_path)
    images = np.random.default_rng(2).integers(0, 256, (2, *SHAPE), dtype=np.uint8)
    res = runner.simulate(built, images, CLASSES, "out/run", timeout_cycles=10_000)
    assert [r["logits"] for r in res.images] == [pixel_sums_expected(img, CLASSES).tolist() for img in images]
    assert (tmp_path / "out" / "run" / "job.json").is_file()


def test_a_timeout_is_a_clear_error_and_the_next_image_starts_clean(built, tmp_path):
    images = np.zeros((2, *SHAPE), dtype=np.uint8)
    res = runner.simulate(built, images, CLASSES, tmp_path, timeout_cycles=50)
    errors = [r["error"] for r in res.images]
    # after a reset, the second image gets exactly as far as the first
    m = re.fullmatch(rf"timeout: no logits and no `done` within 50 cycles \(took (\d+) of {PIXELS} pixels\)", errors[0])
    assert m and 0 < int(m.group(1)) < PIXELS and errors[1] == errors[0], errors


@pytest.mark.parametrize("gaps,backpressure", [(False, False), (True, True)])
def test_images_stream_into_a_pipelined_design(piped, tmp_path, gaps, backpressure):
    """Image i+1 starts while image i is still in the back stage: the stream's throughput beats
    1/latency, which it cannot if the testbench waited for each `done` before the next `start`."""
    images = np.random.default_rng(3).integers(0, 256, (4, *SHAPE), dtype=np.uint8)
    res = runner.simulate(piped, images, CLASSES, tmp_path, timeout_cycles=10_000, gaps=gaps,
                          backpressure=backpressure, trace_file=tmp_path / "trace.txt")
    recs = res.images
    assert [r["error"] for r in recs] == [None] * len(images)
    assert [r["logits"] for r in recs] == [pixel_sums_expected(img, CLASSES).tolist() for img in images]
    starts, dones = [r["start_cycle"] for r in recs], [r["done_cycle"] for r in recs]
    assert all(a < b for a, b in zip(starts, dones)) and starts == sorted(starts) and dones == sorted(dones)
    assert all(nxt < done for nxt, done in zip(starts[1:], dones)), (starts, dones)  # overlapped
    assert all(r["cycles"] >= 1 + PIXELS + 201 + CLASSES and r["sim_cycles"] >= r["cycles"] for r in recs)
    f = stream_figures(recs, 100.0)
    assert f["stream_cycles"] < len(images) * min(r["cycles"] for r in recs), f
    # both trace ports reach the file: every pixel as layer 0, every logit as layer 1
    lines = [l.split() for l in (tmp_path / "trace.txt").read_text().splitlines()]
    assert sum(l[0] == "0" for l in lines) == len(images) * PIXELS
    logits = [int(d, 16) - (1 << 32) * (int(d, 16) >> 31) for layer, _, count, d in lines if layer == "1"]
    assert logits == [v for r in recs for v in r["logits"]]


def test_a_timeout_in_a_stream_is_each_images_error(piped, tmp_path):
    """The back stage outlasts the timeout: every image times out after the next one has started,
    and after each reset the stream resumes at the next image, never hangs."""
    images = np.zeros((3, *SHAPE), dtype=np.uint8)
    res = runner.simulate(piped, images, CLASSES, tmp_path, timeout_cycles=300)
    assert [r["index"] for r in res.images] == [0, 1, 2]
    assert [r["error"] for r in res.images] == [
        f"timeout: no logits and no `done` within 300 cycles (took {PIXELS} of {PIXELS} pixels)"] * 3


def fake_ports(*groups: str, missing: str | None = None) -> dict[str, Port]:
    """The ports sim/ requires, and a trace port group per name in `groups` (less `missing`)."""
    ports = {n: Port(d, w) for n, (d, w) in REQUIRED.items()}
    for g in groups:
        for f, width in (("valid", 1), ("layer", 3), ("addr", 10), ("count", 2), ("data", 16)):
            ports[f"{g}__{f}"] = Port("output", width)
    ports.pop(missing, None)
    return ports


def test_harness_writes_every_trace_group():
    text = harness_verilog(fake_ports("trace", "trace1", "trace2"), 12)
    for g in ("trace", "trace1", "trace2"):
        assert (f"if (trace_fd != 0 && {g}__valid)\n      $fwrite(trace_fd, \"%0d %0d %0d %h\\n\", "
                f"{g}__layer, {g}__addr, {g}__count, {g}__data);") in text
    assert text.count("$fwrite") == 3
    assert harness_verilog(fake_ports("trace"), 12).count("$fwrite") == 1
    with pytest.raises(HarnessError, match="no port `trace__valid`"):
        harness_verilog(fake_ports("trace1"), 12)
    with pytest.raises(HarnessError, match="no port `trace2__data`"):
        harness_verilog(fake_ports("trace", "trace2", missing="trace2__data"), 12)


def test_harness_refuses_a_design_without_the_port_shape():
    with pytest.raises(HarnessError, match="no port `start`"):
        harness_verilog({"clk": Port("input", 1), "rst": Port("input", 1)}, 12)


def test_harness_keeps_the_reset_off_the_simulators_input_logic():
    """Verilator re-evaluates, at every time step, all logic that a VPI-writable signal reaches:
    the accelerator's reset reaches every flip-flop's next state, so it comes from a harness
    flip-flop, and only the testbench's four inputs are writable."""
    text = harness_verilog(fake_ports("trace"), 12)
    assert "    .rst(rst_q)," in text and "always @(posedge clk) rst_q <= rst;" in text
    writable = re.findall(r"(\w+) /\*verilator public_flat_rw\*/", text)
    assert sorted(writable) == ["load", "logits__ready", "rst", "start"]
    assert text.count("public_flat_rd") == 8  # clk and the outputs the testbench reads


def test_harness_ports_come_from_the_inventory_and_match_the_verilog(rtl):
    """accelerator.json's ports (from the component's signature) are the Verilog module's ports."""
    ports = Inventory.load(rtl / INVENTORY_FILE).ports
    text = (rtl / "accelerator.v").read_text()
    header = re.search(r"module accelerator\((.*?)\);", text, re.S).group(1)
    assert sorted(n.strip() for n in header.split(",")) == sorted(ports)
    for name, p in ports.items():
        width = f"[{p.width - 1}:0] " if p.width > 1 else ""
        assert re.search(rf"^\s*{p.direction} {re.escape(width)}{name};", text, re.M), (name, p)


def test_a_design_without_an_inventory_is_a_clear_error(rtl, tmp_path):
    (tmp_path / "accelerator.v").write_text((rtl / "accelerator.v").read_text())
    with pytest.raises(ValueError, match="no inventory"):
        runner.build_key(tmp_path, PIXELS)


def test_waveform_falls_back_to_vcd_without_lz4(rtl, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "waveform_format", lambda: "vcd")  # as on a machine without lz4.h
    b = runner.build(rtl, PIXELS, waves=True, cache_dir=cache)
    images = np.full((1, *SHAPE), 7, dtype=np.uint8)
    res = runner.simulate(b, images, CLASSES, tmp_path, timeout_cycles=10_000, trace_file=tmp_path / "trace.txt")
    assert res.images[0]["logits"] == pixel_sums_expected(images[0], CLASSES).tolist()
    wave = b.waveform(tmp_path)
    assert wave.name == "waves.vcd" and "$enddefinitions" in wave.read_text()[:100_000]
    # the fixture traces every pixel as layer 0 at its (C, H, W) address
    lines = (tmp_path / "trace.txt").read_text().splitlines()
    assert len(lines) == PIXELS and {l.split()[0] for l in lines} == {"0"} and lines[1].split()[1] == str(8 * 8)


def processes_naming(path) -> list[int]:
    """The ids of this machine's processes whose command line contains `path`."""
    import os
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(path).encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_ctrl_c_during_a_simulation_ends_the_simulator(built, tmp_path):
    def interrupt(record):
        raise KeyboardInterrupt
    images = np.zeros((5000, *SHAPE), dtype=np.uint8)  # minutes of simulation, were it left running
    with pytest.raises(KeyboardInterrupt):
        runner.simulate(built, images, CLASSES, tmp_path / "run", timeout_cycles=10_000, on_image=interrupt)
    assert processes_naming(tmp_path / "run") == []


def test_sigterm_during_a_simulation_ends_the_simulator(rtl, cache, built, tmp_path):
    import signal
    import subprocess
    import sys
    child = (f"import numpy as np\nfrom sim import runner\nb = runner.build({str(rtl)!r}, {PIXELS}, cache_dir={str(cache)!r})\n"
             f"runner.simulate(b, np.zeros((5000, *{SHAPE}), np.uint8), {CLASSES}, {str(tmp_path / 'run')!r}, "
             "timeout_cycles=10_000, on_image=lambda r: print('image', flush=True))\n")
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "image\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert processes_naming(tmp_path / "run") == []


def test_a_cache_path_with_a_space_works_and_keeps_no_build_folder(rtl, tmp_path):
    cache = tmp_path / "a cache"
    b = runner.build(rtl, PIXELS, cache_dir=cache)
    assert b.compiled and [p.name for p in cache.iterdir()] == [b.dir.name]
    images = np.full((1, *SHAPE), 3, dtype=np.uint8)
    res = runner.simulate(b, images, CLASSES, tmp_path / "a run", timeout_cycles=10_000)
    assert res.images[0]["logits"] == pixel_sums_expected(images[0], CLASSES).tolist()


def test_a_failing_shard_ends_every_simulator_of_a_sharded_run(rtl, cache, built, tmp_path):
    """sim.shards.run_local: when one shard's record handler raises (as Ctrl-C would end the main
    thread), the other shards' simulators stop too, instead of running their images to the end."""
    import time

    from sim.shards import run_local, shard_ranges

    images = np.zeros((20_000, *SHAPE), np.uint8)

    def fail(rec):
        raise KeyboardInterrupt

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_local(built, images, CLASSES, tmp_path, shard_ranges(len(images), 2), timeout_cycles=10_000, on_image=fail)
    assert time.monotonic() - t0 < 60
    assert processes_naming(tmp_path) == []
