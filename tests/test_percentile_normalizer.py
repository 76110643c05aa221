"""PercentileNormalizer (one scale across filters) and best_filter."""

import json

import numpy as np
import pandas as pd
import pytest
import skops.io
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils.estimator_checks import parametrize_with_checks

from hybrid_estimators._io import json_safe
from hybrid_estimators.percentile_normalizer import PercentileNormalizer, best_filter


@parametrize_with_checks([PercentileNormalizer(), PercentileNormalizer(max_breakpoints=3)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@settings(max_examples=50, deadline=None)
@given(
    reference=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=200),
    new=st.lists(st.floats(-5, 15, allow_nan=False), min_size=2, max_size=50),
    max_breakpoints=st.integers(2, 30),
)
def test_normalised_scores_are_monotone_and_within_0_10(reference, new, max_breakpoints):
    normalizer = PercentileNormalizer(max_breakpoints=max_breakpoints).fit(np.c_[reference])
    ordered = np.sort(np.asarray(new))
    out = normalizer.transform(ordered[:, np.newaxis]).ravel()
    assert np.all(np.diff(out) >= 0)
    assert out.min() >= 0 and out.max() <= 10
    assert normalizer.transform([[max(reference)]])[0, 0] == 10.0


def test_on_the_reference_it_is_ten_times_the_empirical_cdf():
    rng = np.random.RandomState(0)
    reference = np.round(rng.gamma(2.0, 1.2, size=500), 2)  # with ties
    out = PercentileNormalizer().fit(reference[:, np.newaxis]).transform(reference[:, np.newaxis]).ravel()
    ecdf = np.array([(reference <= value).mean() for value in reference])
    np.testing.assert_allclose(out, 10 * ecdf)
    assert abs(np.median(out) - 5) < 0.3


def test_two_differently_spread_filters_land_on_one_scale():
    rng = np.random.RandomState(0)
    traffic_a, traffic_b = rng.normal(2, 0.5, 1000), rng.normal(6, 2.0, 1000)
    a = PercentileNormalizer().fit(traffic_a[:, None])
    b = PercentileNormalizer().fit(traffic_b[:, None])
    # each filter's 90th percentile of its own traffic normalises to about 9
    assert abs(a.transform([[np.quantile(traffic_a, 0.9)]])[0, 0] - 9) < 0.1
    assert abs(b.transform([[np.quantile(traffic_b, 0.9)]])[0, 0] - 9) < 0.1


def test_thinned_table_keeps_the_ends_and_stays_close():
    rng = np.random.RandomState(1)
    reference = rng.uniform(0, 10, 5000)[:, None]
    exact = PercentileNormalizer(max_breakpoints=10_000).fit(reference)
    thinned = PercentileNormalizer(max_breakpoints=101).fit(reference)
    assert len(thinned.x_thresholds_[0]) == 101
    assert thinned.x_thresholds_[0][0] == reference.min() and thinned.x_thresholds_[0][-1] == reference.max()
    probe = rng.uniform(0, 10, 1000)[:, None]
    assert np.abs(thinned.transform(probe) - exact.transform(probe)).max() < 0.15


def test_table_round_trip_is_exact_and_records_the_sample():
    reference = pd.DataFrame({"weighted_average": np.random.RandomState(2).uniform(0, 8, 300)})
    normalizer = PercentileNormalizer().fit(reference)
    table = json.loads(json.dumps(json_safe(normalizer.to_table()), allow_nan=False))
    assert table["columns"][0]["n_samples"] == 300 and table["columns"][0]["name"] == "weighted_average"
    assert len(table["sample_sha256"]) == 64
    assert PercentileNormalizer().fit(reference.iloc[::-1]).sample_sha256_ != table["sample_sha256"]
    restored = PercentileNormalizer.from_table(table)
    probe = pd.DataFrame({"weighted_average": np.linspace(-1, 11, 777)})
    assert np.array_equal(restored.transform(probe), normalizer.transform(probe))
    column = table["columns"][0]
    assert np.array_equal(np.interp(probe["weighted_average"], column["x"], column["y"]), normalizer.transform(probe)[:, 0])
    loaded = skops.io.loads(skops.io.dumps(normalizer), trusted=["hybrid_estimators.percentile_normalizer.PercentileNormalizer"])
    assert np.array_equal(loaded.transform(probe), normalizer.transform(probe))


def test_blocked_articles_are_left_out_and_stay_missing():
    normalizer = PercentileNormalizer().fit([[1.0], [np.nan], [3.0]])
    assert normalizer.n_samples_.tolist() == [2]
    assert np.isnan(normalizer.transform([[np.nan]])[0, 0])
    with pytest.raises(ValueError, match="no score"):
        PercentileNormalizer().fit([[np.nan], [np.nan]])


def test_a_bad_table_is_refused():
    table = PercentileNormalizer().fit([[1.0], [2.0]]).to_table()
    table["columns"][0]["y"] = [5.0, 11.0]
    with pytest.raises(ValueError, match="within"):
        PercentileNormalizer.from_table(table)


def test_best_filter_takes_the_highest_then_the_first_and_skips_blocked():
    scores = {"b": [3.0, 7.0, 9.0, np.nan, 2.0], "a": [4.0, 7.0, 5.0, np.nan, np.nan]}
    blocked = {"b": [False, False, True, False, True]}
    assert best_filter(scores, blocked) == ["a", "b", "a", None, None]
    assert best_filter(scores) == ["a", "b", "b", None, "b"]
    assert best_filter(pd.DataFrame(scores)[["a", "b"]]) == ["a", "a", "b", None, "b"]


def test_best_filter_refuses_mismatched_blocked():
    with pytest.raises(ValueError, match="no normalised scores"):
        best_filter({"a": [1.0]}, {"c": [True]})
    with pytest.raises(ValueError, match="rows"):
        best_filter({"a": [1.0, 2.0]}, {"a": [True]})
