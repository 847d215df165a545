# amaranth: UnusedElaboratable=no
"""The Accelerator on plans from export's compiler (export.testing's hypothesis strategy:
Brevitas model -> ONNX -> plan) equals export.reference, logits and every traced layer output,
on images that include the 0 / 255 extremes: the basic vocabulary, and the full one (padding,
strides, per-channel shifts, average and global pools). HW_EXAMPLES=N runs more examples."""

import os

import numpy as np
import pytest

pytest.importorskip("brevitas")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from export import reference  # noqa: E402
from export.testing import materialize, model_specs, random_images  # noqa: E402
from hw.config import ArrayConfig  # noqa: E402
from hw.cycles import predict, stream  # noqa: E402
from hw.top import Accelerator  # noqa: E402
from tests.hw_helpers import first_mismatch, run_images, vocabulary_specs  # noqa: E402

EXAMPLES = int(os.environ.get("HW_EXAMPLES", 6))
ARRAYS = st.sampled_from(["1x1", "2x3", "4x4", "3x2"])


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=model_specs(max_size=9, vocabulary="basic"), array=ARRAYS)
def test_compiled_random_models_match_reference(tmp_path, spec, array):
    """Plans from export's compiler (Brevitas -> ONNX -> plan), images with the 0 / 255 extremes."""
    _check(tmp_path, spec, array)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
@given(spec=vocabulary_specs(max_size=9), array=ARRAYS)
def test_compiled_vocabulary_models_match_reference(tmp_path, spec, array):
    _check(tmp_path, spec, array)


def _check(tmp_path, spec, array):
    _, plan = materialize(spec, tmp_path)
    images = random_images(plan, 2, seed=spec.seed)
    dut = Accelerator(plan, ArrayConfig.parse(array))
    model = stream(dut.sched, len(images))  # the images overlap in the stages
    assert model[0][1] + 1 == predict(dut.sched)["total_cycles"]
    for image, (logits, cycles, writes), (start, done) in zip(images, run_images(dut, images), model):
        outs = reference.run(plan, image)
        assert first_mismatch(plan, outs, writes, dut.sched.act_width) is None
        np.testing.assert_array_equal(logits, outs[-1])
        assert cycles == done - start + 1
