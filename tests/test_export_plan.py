"""The plan format: save/load round trip, the sparse encoding and its bit accounting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.encoding import encode_best, encode_rows
from export.plan import Plan, PlanError


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
