"""A Filter keeps scikit-learn's parameter contract: every parameter stored verbatim,
every fitted attribute derived from the parameters in ``fit`` (issue 20, item 1)."""

import pickle

import numpy as np
import pytest
from _numeric_filter import articles, numeric_filter
from sklearn.base import clone
from sklearn.dummy import DummyRegressor
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import parametrize_with_checks

from hybrid_estimators.calibration import TunedThresholdRouterCV
from hybrid_estimators.filters import Filter, FilterSpec


@pytest.fixture(scope="module")
def calibration_set():
    rng = np.random.RandomState(1)
    values = rng.uniform(0, 10, 200)
    return articles(values), np.c_[values, values]


def test_the_prefit_tuner_routes_at_the_threshold_it_reports(calibration_set):
    X, Y = calibration_set
    filter_ = numeric_filter(threshold=9.0)
    tuner = TunedThresholdRouterCV(filter_, cv="prefit", target_recall=0.9, confidence=0.9).fit(X, Y)
    best = tuner.best_estimator_
    assert tuner.threshold_ < 9.0
    assert best.threshold == tuner.threshold_
    expected = best.routing_scores(X) >= tuner.threshold_
    np.testing.assert_array_equal(best.route(X), expected)
    np.testing.assert_array_equal(tuner.route(X), expected)
    assert expected.mean() > 0.3  # far more than the 10% routed at 9.0
    np.testing.assert_allclose(tuner.predict(X), best.predict(X))
    assert best.spec_.hybrid_inference["threshold"] == tuner.threshold_
    assert filter_.threshold == 9.0  # the tuned router is not the caller's


def test_grid_search_over_the_threshold(calibration_set):
    X, Y = calibration_set
    search = GridSearchCV(numeric_filter(), {"threshold": [3.0, 6.0, 11.0]}, cv=3).fit(X, Y)
    assert search.best_estimator_.threshold in (3.0, 6.0, 11.0)
    assert len(search.cv_results_["mean_test_score"]) == 3


def test_set_params_changes_what_the_filter_does(calibration_set):
    X, _ = calibration_set
    filter_ = numeric_filter(threshold=4.0)
    routed = filter_.route(X)
    full = filter_.predict(X)
    half = clone(filter_).set_params(stage2_weight=0.5).fit().predict(X)
    stage1 = filter_.predict_stage1(X)
    np.testing.assert_allclose(half[routed], 0.5 * full[routed] + 0.5 * stage1[routed])
    assert not np.allclose(half[routed], full[routed])
    filter_.set_params(threshold=8.0)
    assert filter_.route(X).sum() < routed.sum()
    assert filter_.fit().spec_.hybrid_inference["threshold"] == 8.0


def test_weights_tiers_and_gatekeepers_are_parameters(calibration_set):
    X, _ = calibration_set
    filter_ = numeric_filter()
    assert filter_.get_params()["weights"] == {"a": 0.5, "b": 0.5}
    other = clone(filter_).set_params(weights={"b": 3.0, "a": 1.0}, tiers={"high": 7.0, "low": 0.0},
                                      gatekeepers={"a": (2.0, 1.0)}).fit()
    np.testing.assert_allclose(other.weights_, [0.25, 0.75])
    assert other.spec_.dimensions["a"] == {"weight": 1.0, "gatekeeper": True,
                                           "gatekeeper_threshold": 2.0, "gatekeeper_max_score": 1.0}
    assert other.spec_.tiers == {"high": 7.0, "low": 0.0}
    assert set(other.predict_report(X)["tier"].dropna()) <= {"high", "low"}
    assert filter_.spec.dimensions["a"] == {"weight": 0.5}  # the parameter is not touched


def test_clone_and_pickle_keep_everything(calibration_set):
    X, _ = calibration_set
    filter_ = numeric_filter(threshold=5.0, stage2_weight=0.5)
    for copy in (clone(filter_).fit(), pickle.loads(pickle.dumps(filter_))):
        assert copy.get_params(deep=False).keys() == filter_.get_params(deep=False).keys()
        assert copy.threshold == 5.0 and copy.stage2_weight == 0.5
        assert copy.spec == filter_.spec
        np.testing.assert_allclose(copy.predict(X), filter_.predict(X))


def test_repr_is_one_line():
    text = repr(numeric_filter())
    assert "\n" not in text
    assert text.startswith("Filter('numeric/v1'")


def test_a_stage_that_is_not_prefit_is_refused():
    filter_ = numeric_filter()
    with pytest.raises(ValueError, match="trains no stage: stage1"):
        clone(filter_).set_params(stage1=filter_.stage1.estimator, prefit=("stage2",)).fit()


# --- scikit-learn's own checks ------------------------------------------------------

_SPEC = FilterSpec.from_dict({"name": "checks", "version": "v1", "dimensions": {"a": 1.0}})
_NO_DATA = "fit trains nothing and reads no data (like FrozenEstimator): nothing to refuse"
_PREFIT = "the prefit stages were not trained on the check's data (a constant, one dimension)"
_ARTICLES = "a filter reads articles through its prefit Stage 1; it records no feature count"
_EXPECTED_FAILED_CHECKS = {
    "check_fit1d": _NO_DATA,
    "check_complex_data": _NO_DATA,
    "check_dtype_object": _NO_DATA,
    "check_estimators_nan_inf": _NO_DATA,
    "check_supervised_y_no_nan": _NO_DATA,
    "check_estimators_empty_data_messages": _NO_DATA,
    "check_regressors_train": _PREFIT,
    "check_regressor_multioutput": _PREFIT,
    "check_n_features_in": _ARTICLES,
    "check_n_features_in_after_fitting": _ARTICLES,
}


def _checks_filter():
    stage = FrozenEstimator(DummyRegressor(constant=[5.0], strategy="constant").fit([[0]], [[5.0]]))
    return Filter.from_spec(_SPEC, stage, stage)


@parametrize_with_checks([_checks_filter()], expected_failed_checks=lambda estimator: _EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# --- text columns on a loaded filter (issue 22, item 3) ------------------------------


def test_a_frame_without_the_filters_text_columns_is_refused_naming_both():
    filter_ = numeric_filter()
    frame = articles([5.0, 1.0]).rename(columns={"content": "body"})
    frame["url"] = ["https://example.org/a", "https://example.org/b"]
    for method in (filter_.predict, filter_.predict_report, filter_.route, filter_.routing_scores):
        with pytest.raises(ValueError, match=r"no \['content'\] column.*text in \['body'\].*text_columns=\{'body': 'content'\}"):
            method(frame)
    mapped = clone(filter_).set_params(text_columns={"body": "content"}).fit()
    expected = filter_.predict_report(articles([5.0, 1.0]))
    report = mapped.predict_report(frame)
    np.testing.assert_allclose(report[["a", "b"]], expected[["a", "b"]])
    assert report["blocked_by"].tolist() == [None, None]


def test_text_columns_maps_onto_the_filters_columns_only():
    with pytest.raises(ValueError, match="onto the filter's"):
        clone(numeric_filter()).set_params(text_columns={"body": "text"}).fit()


def test_strings_and_title_content_frames_are_scored_as_before():
    filter_ = numeric_filter()
    frame = articles([5.0])
    frame["url"] = ["https://example.org"]
    assert filter_.predict(frame).shape == (1, 2)
