"""The `-m slow` benchmark: the bundled model's RTL on the whole validation split, bit for bit.

    python -m pytest -m slow tests/test_sim_benchmark.py -s
(the same as `python -m sim run --data ../shared/data/animals5 --split val --json sim_val.json`)
"""

from __future__ import annotations

import json

import pytest

from sim.__main__ import main


@pytest.mark.slow
def test_whole_validation_split_bit_exact(tmp_path, data_dir):
    out = tmp_path / "sim_val.json"
    rc = main(["run", "--data", str(data_dir), "--split", "val", "--json", str(out)])
    s = json.loads(out.read_text())
    print({k: v for k, v in s.items() if k != "per_image"})
    assert rc == 0 and s["bit_exact"] == s["class_agree"] == s["images"] == 700, s["diagnosis"]
