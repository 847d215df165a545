"""The plan format: save/load round trip, the sparse encoding and its bit accounting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.encoding import encode_best, encode_rows
from export.plan import Plan, PlanError, replace


def test_save_load_round_trip(bundled_plan, tmp_path):
    bundled_plan.save(tmp_path / "plan")
    again = Plan.load(tmp_path / "plan.json")
    assert again == bundled_plan
    again.layers[0].weight[0, 0, 0, 0] += 1
    assert again != bundled_plan


def test_load_refuses_other_versions_and_missing_files(bundled_plan, tmp_path):
    j, _ = bundled_plan.save(tmp_path / "p")
    doc = json.loads(j.read_text())
    doc["version"] = 99
    j.write_text(json.dumps(doc))
    with pytest.raises(PlanError, match="version 99"):
        Plan.load(j)
    with pytest.raises(PlanError, match="no such plan file"):
        Plan.load(tmp_path / "absent")


@pytest.mark.parametrize("json_text, npz_bytes, message", [
    ('{"version": ', None, "p.json: not a plan .JSONDecodeError"),
    ("[2]", None, "p.json: plan version None"),
    (None, b"garbage", "p.npz: not the sha256 that p.json records"),
    ("drop layers", None, "p.json: a corrupt plan .KeyError: 'layers'"),
])
def test_corrupt_files_are_one_line_plan_errors(bundled_plan, tmp_path, json_text, npz_bytes, message):
    j, n = bundled_plan.save(tmp_path / "p")
    if json_text == "drop layers":
        doc = json.loads(j.read_text())
        del doc["layers"]
        json_text = json.dumps(doc)
    if json_text is not None:
        j.write_text(json_text)
    if npz_bytes is not None:
        n.write_bytes(npz_bytes)
    with pytest.raises(PlanError, match=message) as e:
        Plan.load(tmp_path / "p")
    assert "re-run `python -m export plan`" in str(e.value) and "\n" not in str(e.value)


def test_a_stale_npz_beside_a_new_json_is_refused(bundled_plan, tmp_path):
    _, n = bundled_plan.save(tmp_path / "p")
    stale = n.read_bytes()
    other = replace(bundled_plan, layers=[replace(bundled_plan.layers[0], weight=bundled_plan.layers[0].weight + 1),
                                          *bundled_plan.layers[1:]])
    other.save(tmp_path / "p")
    assert Plan.load(tmp_path / "p") == other
    n.write_bytes(stale)
    with pytest.raises(PlanError, match="p.npz: not the sha256 that p.json records"):
        Plan.load(tmp_path / "p")


def test_sparse_encoding_gaps_longer_than_the_index_and_empty_rows():
    w = np.zeros((3, 40), dtype=np.int64)
    w[0, [0, 1, 39]] = [3, -8, 7]  # gap of 38 with 3-bit deltas: padding entries
    w[2, 20] = -1  # row 1 is all zero
    s = encode_rows(w, 4, 3)
    assert s.row_ptr.tolist()[1] - s.row_ptr.tolist()[0] == 3 + 5  # 38 = 5 jumps of 7 + 3
    assert s.row_ptr[2] == s.row_ptr[1]
    assert s.padding == 5 + 2  # row 2: 20 = 2 jumps of 7 + 6
    assert (s.to_dense(40) == w).all()
    assert s.stored_bits == s.entries * 7 + 4 * s.ptr_bits


def test_encode_best_is_the_minimum_over_index_widths():
    rng = np.random.default_rng(3)
    w = rng.integers(-7, 8, (16, 300)) * (rng.random((16, 300)) < 0.1)
    best = encode_best(w, 4)
    assert best.stored_bits == min(encode_rows(w, 4, b).stored_bits for b in range(1, 17))
    assert (best.to_dense(300) == w).all()
