# amaranth: UnusedElaboratable=no
"""The Accelerator on plans from export's compiler (export.testing's hypothesis strategy:
Brevitas model -> ONNX -> plan) equals export.reference, logits and every traced layer output,
on images that include the 0 / 255 extremes. HW_EXAMPLES=N runs more examples."""

import os

import numpy as np
import pytest

pytest.importorskip("brevitas")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from export import reference  # noqa: E402
from export.testing import materialize, model_specs, random_images  # noqa: E402
from hw.array import ArrayConfig  # noqa: E402
from hw.cycles import predict  # noqa: E402
from hw.top import Accelerator  # noqa: E402
from tests.hw_helpers import first_mismatch, run_images  # noqa: E402


@settings(max_examples=int(os.environ.get("HW_EXAMPLES", 6)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=model_specs(max_size=9, vocabulary="basic"), array=st.sampled_from(["1x1", "2x3", "4x4", "3x2"]))
def test_compiled_random_models_match_reference(tmp_path, spec, array):
    """Plans from export's compiler (Brevitas -> ONNX -> plan), images with the 0 / 255 extremes."""
    _, plan = materialize(spec, tmp_path)
    images = random_images(plan, 2, seed=spec.seed)
    dut = Accelerator(plan, ArrayConfig.parse(array))
    for image, (logits, cycles, writes) in zip(images, run_images(dut, images)):
        outs = reference.run(plan, image)
        assert first_mismatch(plan, outs, writes, dut.sched.act_width) is None
        np.testing.assert_array_equal(logits, outs[-1])
        assert cycles == predict(dut.sched)["total_cycles"]
