"""quant.metrics against hand-computed cases, and invariants on random ones."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant.metrics import classification_metrics, confusion_matrix, format_metrics

NAMES = ["cat", "cow", "elephant"]


def test_hand_computed_three_classes():
    # true:  0 0 1 1 2 2 2
    # pred:  0 1 1 1 2 0 2
    r = classification_metrics([0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 2, 0, 2], NAMES)
    assert r["confusion"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert r["images"] == 7
    assert r["accuracy"] == pytest.approx(5 / 7)
    pc = r["per_class"]
    # cat: tp 1, predicted 2, true 2 -> P 1/2, R 1/2, F1 1/2
    assert (pc["cat"]["precision"], pc["cat"]["recall"], pc["cat"]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    # cow: tp 2, predicted 3, true 2 -> P 2/3, R 1, F1 0.8
    assert (pc["cow"]["precision"], pc["cow"]["recall"], pc["cow"]["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    # elephant: tp 2, predicted 2, true 3 -> P 1, R 2/3, F1 0.8
    assert (pc["elephant"]["precision"], pc["elephant"]["recall"], pc["elephant"]["f1"]) == pytest.approx((1.0, 2 / 3, 0.8))
    assert [pc[c]["support"] for c in NAMES] == [2, 2, 3]
    assert r["precision_macro"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert r["recall_macro"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    assert r["f1_macro"] == pytest.approx((0.5 + 0.8 + 0.8) / 3)  # mean of F1s, not F1 of the means


def test_perfect_predictions():
    y = [2, 0, 1, 1, 0]
    r = classification_metrics(y, y, NAMES)
    assert r["accuracy"] == r["precision_macro"] == r["recall_macro"] == r["f1_macro"] == 1.0
    assert r["confusion"]["matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 1]]


def test_a_class_never_predicted_scores_zero_not_nan():
    r = classification_metrics([0, 1, 2], [0, 0, 0], NAMES)
    assert r["per_class"]["cow"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["per_class"]["cat"]["precision"] == pytest.approx(1 / 3)
    assert r["precision_macro"] == pytest.approx(1 / 9)
    assert r["recall_macro"] == pytest.approx(1 / 3)
    assert r["f1_macro"] == pytest.approx(0.5 / 3)  # cat: 2 * (1/3 * 1) / (4/3) = 0.5


def test_absent_class_is_left_out_of_macro_averages():
    r = classification_metrics([0, 1], [0, 0], NAMES)  # elephant neither true nor predicted
    assert r["per_class"]["elephant"]["support"] == 0
    assert r["recall_macro"] == pytest.approx(0.5)
    assert r["precision_macro"] == pytest.approx(0.25)


def test_empty_input():
    r = classification_metrics([], [], NAMES)
    assert r["images"] == 0 and r["accuracy"] == 0.0 and r["f1_macro"] == 0.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix([0, 3], [0, 1], 3)


def test_format_shows_headline_per_class_and_matrix():
    text = format_metrics(classification_metrics([0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 2, 0, 2], NAMES))
    assert "accuracy 0.7143" in text and "F1 0.7000" in text
    lines = text.splitlines()
    assert any(l.split()[:2] == ["cow", "0.6667"] for l in lines)
    assert [l.split() for l in lines[-3:]] == [["cat", "1", "1", "0"], ["cow", "0", "2", "0"], ["elephant", "1", "0", "2"]]


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60))))
def test_invariants(case):
    k, pairs = case
    y, p = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    names = [f"c{i}" for i in range(k)]
    r = classification_metrics(y, p, names)
    cm = np.array(r["confusion"]["matrix"])
    assert cm.sum() == len(y) and cm.trace() == (y == p).sum()
    assert r["accuracy"] == pytest.approx(float((y == p).mean()))
    # recall weighted by support is the accuracy
    assert sum(m["recall"] * m["support"] for m in r["per_class"].values()) / len(y) == pytest.approx(r["accuracy"])
    for i, m in enumerate(r["per_class"].values()):
        assert m["support"] == (y == i).sum()
        assert 0.0 <= m["f1"] <= max(m["precision"], m["recall"]) + 1e-12
    for key in ("precision_macro", "recall_macro", "f1_macro"):
        assert 0.0 <= r[key] <= 1.0
