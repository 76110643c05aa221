"""IsotonicCalibrator: per-dimension isotonic maps kept as breakpoint tables, fitted out of fold."""

import json

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold
from sklearn.utils.estimator_checks import parametrize_with_checks

from hybrid_estimators._io import json_safe
from hybrid_estimators.isotonic_calibrator import IsotonicCalibrator, fit_out_of_fold_calibration


@parametrize_with_checks([
    IsotonicCalibrator(),
    IsotonicCalibrator(increasing="auto", y_min=-5.0),
    IsotonicCalibrator(distribution_weight=0.5, n_quantiles=11),
])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _compressed(n=300, d=3, seed=0):
    rng = np.random.RandomState(seed)
    truth = rng.uniform(0, 10, size=(n, d))
    predicted = 5 + 0.5 * (truth - 5) + rng.normal(scale=0.5, size=(n, d))
    return predicted, truth


def test_calibration_restores_the_compressed_range():
    predicted, truth = _compressed()
    calibrated = IsotonicCalibrator().fit(predicted, truth).transform(predicted)
    assert calibrated.min() >= 0.0 and calibrated.max() <= 10.0
    ratio_before = predicted.std(axis=0) / truth.std(axis=0)
    ratio_after = calibrated.std(axis=0) / truth.std(axis=0)
    assert np.all(ratio_before < 0.6) and np.all(ratio_after > 0.9)
    assert np.abs(calibrated - truth).mean() < np.abs(predicted - truth).mean()


def test_each_column_is_the_isotonic_regression_of_that_column():
    predicted, truth = _compressed()
    calibrator = IsotonicCalibrator().fit(predicted, truth)
    new = np.random.RandomState(1).uniform(-2, 12, size=(50, 3))  # beyond the fitted range too
    for j in range(3):
        isotonic = IsotonicRegression(y_min=0, y_max=10, out_of_bounds="clip").fit(predicted[:, j], truth[:, j])
        np.testing.assert_allclose(calibrator.transform(new)[:, j], isotonic.predict(new[:, j]), atol=1e-12)


def test_table_round_trip_is_exact_through_json():
    predicted, truth = _compressed()
    frame = pd.DataFrame(predicted, columns=["a", "b", "c"])
    calibrator = IsotonicCalibrator().fit(frame, truth)
    table = json.loads(json.dumps(json_safe(calibrator.to_table()), allow_nan=False))
    assert [column["name"] for column in table["columns"]] == ["a", "b", "c"]
    restored = IsotonicCalibrator.from_table(table)
    new = pd.DataFrame(np.random.RandomState(2).uniform(-1, 11, size=(500, 3)), columns=["a", "b", "c"])
    assert np.array_equal(restored.transform(new), calibrator.transform(new))
    by_hand = np.column_stack([
        np.clip(np.interp(new[column["name"]], column["x"], column["y"]), 0, 10) for column in table["columns"]
    ])
    assert np.array_equal(by_hand, calibrator.transform(new))
    assert list(restored.get_feature_names_out()) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "column, message",
    [
        ({"name": "a", "x": [1.0, 1.0], "y": [2.0, 3.0]}, "increase strictly"),
        ({"name": "a", "x": [1.0, 2.0, 3.0], "y": [2.0, 1.0, 3.0]}, "monotone"),
        ({"name": "a", "x": [1.0, 2.0], "y": [2.0]}, "equally long"),
        ({"name": "a", "x": [1.0, None], "y": [2.0, 3.0]}, "finite"),
    ],
)
def test_a_bad_table_is_refused_naming_the_column(column, message):
    with pytest.raises(ValueError, match=message):
        IsotonicCalibrator.from_table({"y_min": 0.0, "y_max": 10.0, "increasing": True, "columns": [column]})


def test_distribution_weight_mixes_in_quantile_mapping_and_restores_the_spread():
    rng = np.random.RandomState(0)
    truth = rng.uniform(0, 10, size=(400, 2))
    noisy = 5 + 0.5 * (truth - 5) + rng.normal(scale=1.5, size=truth.shape)  # noise: isotonic shrinks
    spread = {w: IsotonicCalibrator(distribution_weight=w).fit(noisy, truth).transform(noisy).std(axis=0)
              for w in (0.0, 0.5, 1.0)}
    assert np.all(spread[0.0] < 0.9 * truth.std(axis=0))
    assert np.all(spread[0.0] < spread[0.5]) and np.all(spread[0.5] < spread[1.0])
    np.testing.assert_allclose(spread[1.0], truth.std(axis=0), rtol=0.03)
    # the one merged table is the mixture of the two maps, exactly representable
    half = IsotonicCalibrator(distribution_weight=0.5, n_quantiles=21).fit(noisy, truth)
    new = rng.uniform(-1, 11, size=(300, 2))
    levels = np.linspace(0, 1, 21)
    for j in range(2):
        isotonic = IsotonicRegression(y_min=0, y_max=10, out_of_bounds="clip").fit(noisy[:, j], truth[:, j])
        quantile = np.interp(new[:, j], np.quantile(noisy[:, j], levels), np.quantile(truth[:, j], levels))
        expected = 0.5 * isotonic.predict(new[:, j]) + 0.5 * quantile
        np.testing.assert_allclose(half.transform(new)[:, j], expected, atol=1e-9)
    restored = IsotonicCalibrator.from_table(json.loads(json.dumps(half.to_table())))
    assert restored.get_params() == half.get_params()
    assert np.array_equal(restored.transform(new), half.transform(new))


def test_missing_predictions_stay_missing_and_are_left_out_of_the_fit():
    predicted, truth = _compressed()
    with_gaps = predicted.copy()
    with_gaps[:10, 0] = np.nan
    calibrator = IsotonicCalibrator().fit(with_gaps, truth)
    reference = IsotonicCalibrator().fit(predicted[10:], truth[10:])
    np.testing.assert_array_equal(calibrator.x_thresholds_[0], reference.x_thresholds_[0])
    out = calibrator.transform(with_gaps)
    assert np.isnan(out[:10, 0]).all() and not np.isnan(out[10:]).any()


def test_y_with_other_columns_is_refused():
    predicted, truth = _compressed()
    with pytest.raises(ValueError, match="one target column per column"):
        IsotonicCalibrator().fit(predicted, truth[:, :2])


def test_skops_round_trip_and_pandas_output():
    predicted, truth = _compressed()
    frame = pd.DataFrame(predicted, columns=["a", "b", "c"])
    calibrator = IsotonicCalibrator().fit(frame, truth).set_output(transform="pandas")
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(calibrator))
    assert untrusted == ["hybrid_estimators.isotonic_calibrator.IsotonicCalibrator"]
    loaded = skops.io.loads(skops.io.dumps(calibrator), trusted=untrusted)
    out = loaded.transform(frame)
    assert list(out.columns) == ["a", "b", "c"]
    pd.testing.assert_frame_equal(out, calibrator.transform(frame))


class _TracingStage(RegressorMixin, BaseEstimator):
    """Predicts the mean of its training targets and records which rows it was fitted on.

    The first column of X is the row's id.
    """

    log = []

    def fit(self, X, y):
        self.ids_ = frozenset(np.asarray(X)[:, 0].astype(int).tolist())
        self.mean_ = np.asarray(y, dtype=float).mean(axis=0)
        return self

    def predict(self, X):
        ids = np.asarray(X)[:, 0].astype(int)
        _TracingStage.log.append((self.ids_, frozenset(ids.tolist())))
        return np.tile(self.mean_, (len(ids), 1))


def test_out_of_fold_calibration_never_sees_a_fold_s_own_articles():
    _TracingStage.log.clear()
    rng = np.random.RandomState(0)
    X = np.c_[np.arange(60), rng.normal(size=60)]
    Y = rng.uniform(0, 10, size=(60, 2))
    calibrator, predictions = fit_out_of_fold_calibration(
        _TracingStage(), X, Y, cv=5, random_state=3, return_predictions=True
    )
    assert len(_TracingStage.log) == 5
    predicted_rows = set()
    for fitted_on, predicted in _TracingStage.log:
        assert not fitted_on & predicted
        assert len(fitted_on) + len(predicted) == 60
        predicted_rows |= predicted
    assert predicted_rows == set(range(60))
    # the same folds as KFold(5, shuffle=True, random_state=3): each row's prediction is its
    # training folds' mean
    for train, test in KFold(5, shuffle=True, random_state=3).split(X):
        np.testing.assert_allclose(predictions[test], np.tile(Y[train].mean(axis=0), (len(test), 1)))
    assert calibrator.n_features_in_ == 2


def test_out_of_fold_calibration_is_not_the_in_sample_one():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 40))
    Y = np.clip(5 + X[:, :2] + rng.normal(size=(120, 2)), 0, 10)
    out_of_fold = fit_out_of_fold_calibration(Ridge(alpha=1.0), X, Y)
    in_sample = IsotonicCalibrator().fit(clone(Ridge(alpha=1.0)).fit(X, Y).predict(X), Y)
    assert not np.array_equal(out_of_fold.x_thresholds_[0], in_sample.x_thresholds_[0])
