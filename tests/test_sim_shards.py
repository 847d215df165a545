"""Sharded RTL simulation (sim.shards): contiguous shards, records merged in image order, the
figures of one stream either way; over local processes (`--jobs`) and over a local Ray that the
test starts (`--ray`)."""

from __future__ import annotations

import json

import pytest

from common.errors import UserError
from sim.__main__ import main
from sim.shards import Shard, merged_stream_cycles, shard_ranges
from quant_helpers import class_images

# figures a run measures on its own clock: they differ between runs by design
WALL = ("sim_wall_s", "sim_cycles", "sim_cycles_per_second", "sim_cycles_per_cpu_second", "shards", "jobs", "backend",
        "per_image")  # per_image: compared without its shard-relative start and done cycles


def test_shards_are_contiguous_and_even():
    assert shard_ranges(7, 3) == [range(0, 2), range(2, 4), range(4, 7)]
    assert shard_ranges(2, 4) == [range(0, 1), range(1, 2)]
    assert shard_ranges(5, 1) == [range(0, 5)]
    for n, jobs in ((96, 2), (95, 7), (1, 3)):
        parts = shard_ranges(n, jobs)
        assert [i for p in parts for i in p] == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(UserError, match="--jobs must be at least 1"):
        shard_ranges(4, 0)


def _shard(first: int, n: int, latency: int = 100, period: int = 40, start: int = 7) -> Shard:
    """A shard's records as a reset accelerator streams them: image j done latency + j * period after the start."""
    recs = [{"index": first + j, "error": None, "start_cycle": start + j * period,
             "done_cycle": start + latency + j * period} for j in range(n)]
    return Shard(first, recs, {"sim_cycles": 0, "wall_s": 1.0}, "h")


def test_merged_stream_is_the_one_stream_of_all_images():
    one, _ = merged_stream_cycles([_shard(0, 9)])
    assert one == 100 + 8 * 40
    merged, why = merged_stream_cycles([_shard(0, 3), _shard(3, 3, start=11), _shard(6, 3)])
    assert (merged, why) == (one, None)
    # shards of one image show no period; a non-uniform shard (gaps, back-pressure) gives no figure
    assert merged_stream_cycles([_shard(0, 1), _shard(1, 1)])[0] is None
    bumpy = _shard(3, 3)
    bumpy.records[2]["done_cycle"] += 5
    none, why = merged_stream_cycles([_shard(0, 3), bumpy])
    assert none is None and "--jobs 1" in why
    bumpy.records[2]["error"] = "timeout"
    assert merged_stream_cycles([_shard(0, 3), bumpy]) == (None, "a shard's stream had an error")


@pytest.fixture(scope="module")
def five_images(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    class_images(data / "val", per_class=1)
    return data


def _run(tmp_path, data, name, *extra) -> dict:
    out = tmp_path / f"{name}.json"
    assert main(["run", "--data", str(data), "--split", "val", "--limit", "5", "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_jobs_merge_into_the_same_json(tmp_path, five_images, capsys):
    """--jobs 2 on the bundled model: the same per-image records in image order, the same
    bit-exactness, cycles and stream figures as --jobs 1; the shards are named."""
    one = _run(tmp_path, five_images, "one", "--jobs", "1")
    two = _run(tmp_path, five_images, "two", "--jobs", "2")
    assert one["bit_exact"] == two["bit_exact"] == 5
    assert [r["index"] for r in two["per_image"]] == list(range(5))
    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("start_cycle", "done_cycle")} for r in recs]  # noqa: E731
    assert strip(two["per_image"]) == strip(one["per_image"])
    assert {k: v for k, v in two.items() if k not in WALL} == {k: v for k, v in one.items() if k not in WALL}
    assert two["throughput_images_per_second"] is not None
    assert [(s["first"], s["images"]) for s in two["shards"]] == [(0, 2), (2, 3)] and two["jobs"] == 2
    assert one["shards"][0]["images"] == 5 and one["backend"] == two["backend"] == "local"
    assert "2 shards on this machine" in capsys.readouterr().err


def test_ray_runs_the_shards_on_a_local_ray(tmp_path, five_images, capsys):
    """--ray without an address starts a local Ray for the run and stops it after; the JSON is
    that of a local run."""
    import ray
    local = _run(tmp_path, five_images, "local", "--jobs", "2")
    remote = _run(tmp_path, five_images, "ray", "--ray", "--jobs", "2")
    assert remote["backend"] == "ray" and [s["images"] for s in remote["shards"]] == [2, 3]
    assert {k: v for k, v in remote.items() if k not in WALL} == {k: v for k, v in local.items() if k not in WALL}
    assert not ray.is_initialized()
    assert "2 shards on Ray (local)" in capsys.readouterr().err


def test_a_bad_ray_address_is_one_line(tmp_path, five_images, capsys):
    out = tmp_path / "s.json"
    assert main(["run", "--data", str(five_images), "--split", "val", "--limit", "2", "--ray", "127.0.0.1:1",
                 "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2 and "--ray 127.0.0.1:1: cannot connect" in err[-1] and not out.exists()


def test_generated_rtl_is_kept_by_content(tmp_path, monkeypatch):
    """sim.verify.generate_rtl: a second run of the same plan and array copies the accelerator from
    the RTL cache (no generation), byte for byte; another weight or array is another entry."""
    import copy

    import numpy as np

    import hw.top
    from hw.config import ArrayConfig
    from hw_helpers import random_plan
    from sim.verify import generate_rtl, rtl_key
    monkeypatch.setenv("SIM_RTL_CACHE_DIR", str(tmp_path / "cache"))
    plan = random_plan(np.random.default_rng(3))
    first = generate_rtl(plan, "2x2", tmp_path / "a")
    monkeypatch.setattr(hw.top, "generate", lambda *a, **k: pytest.fail("generated again"))
    second = generate_rtl(plan, "2x2", tmp_path / "b")
    names = sorted(p.name for p in first.iterdir())
    assert "accelerator.v" in names and names == sorted(p.name for p in second.iterdir())
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
    other = copy.deepcopy(plan)
    other.layers[0].weight = other.layers[0].weight.copy()
    other.layers[0].weight.flat[0] ^= 1
    keys = {rtl_key(plan, ArrayConfig(2, 2)), rtl_key(other, ArrayConfig(2, 2)), rtl_key(plan, ArrayConfig(2, 3))}
    assert len(keys) == 3
