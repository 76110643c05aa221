import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybrid_estimators.tiers import (
    apply_gatekeepers,
    medium_threshold,
    normalize_weights,
    tier_of,
    weighted_average,
)


def test_weighted_average_normalises_weights():
    scores = np.array([[2.0, 6.0], [10.0, 0.0]])
    np.testing.assert_allclose(weighted_average(scores, [1, 3]), [5.0, 2.5])
    np.testing.assert_allclose(weighted_average(scores, {"a": 0.25, "b": 0.75}), [5.0, 2.5])


@pytest.mark.parametrize(
    "weights, message",
    [([1.0], "has 1 entries but the scores have 2"), ([1.0, -1.0], "non-negative"), ([0, 0], "all be zero")],
)
def test_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        weighted_average([[1.0, 2.0]], weights)


def test_tier_boundaries_follow_the_seed():
    assert tier_of([0.0, 3.999, 4.0, 6.999, 7.0, 10.0]).tolist() == [
        "low", "low", "medium", "medium", "high", "high"
    ]
    assert medium_threshold({"low": 0, "medium": 5.5, "high": 8}) == 5.5


def test_gatekeeper_caps_like_the_seed_uplifting_filter():
    # evidence_level (dimension 1) < 3 caps the weighted average at 3.0
    scores = np.array([[8.0, 2.0], [8.0, 3.0], [2.0, 1.0]])
    averages = weighted_average(scores, [0.5, 0.5])
    capped, applied = apply_gatekeepers(scores, averages, {1: (3.0, 3.0)})
    np.testing.assert_allclose(capped, [3.0, 5.5, 1.5])
    assert applied.tolist() == [True, False, False]


@given(
    st.lists(st.lists(st.floats(0, 10), min_size=3, max_size=3), min_size=1, max_size=20),
    st.lists(st.floats(0.01, 5), min_size=3, max_size=3),
)
def test_weighted_average_stays_within_the_dimension_range(scores, weights):
    scores = np.array(scores)
    averages = weighted_average(scores, weights)
    assert np.all(averages >= scores.min(axis=1) - 1e-9)
    assert np.all(averages <= scores.max(axis=1) + 1e-9)
    np.testing.assert_allclose(normalize_weights(weights).sum(), 1.0)
