"""Per-dimension isotonic calibration of a stage's scores against the oracle's.

A regression student compresses the oracle's range toward the mean: it
under-scores the best articles and over-scores the worst.
:class:`IsotonicCalibrator` learns, for each dimension, the monotone map
from predicted to true scores (scikit-learn's
:class:`~sklearn.isotonic.IsotonicRegression`) and keeps it as a breakpoint
table: ``transform`` is ``numpy.interp`` over that table, so the table a
filter stores (:meth:`IsotonicCalibrator.to_table`) and the fitted
estimator give the same numbers by construction.

A calibration fitted on the articles its stage was fitted on learns the
stage's in-sample errors, which are smaller than its errors on new
articles: :func:`fit_out_of_fold_calibration` fits it on out-of-fold
predictions instead.
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context, clone
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import KFold, check_cv, cross_val_predict
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["IsotonicCalibrator", "fit_out_of_fold_calibration"]


class IsotonicCalibrator(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Map each column of predicted scores monotonically onto the true scores.

    One :class:`~sklearn.isotonic.IsotonicRegression` per column (dimension)
    is fitted from the predicted to the true scores, and kept as its
    breakpoints: ``transform`` interpolates linearly between them
    (``numpy.interp``), holds the end values outside them (as
    ``out_of_bounds="clip"``) and clips to ``[y_min, y_max]``. Missing
    predictions (NaN, e.g. articles a prefilter blocked) stay missing.

    Parameters
    ----------
    y_min : float, default=0.0
        Lowest calibrated score.
    y_max : float, default=10.0
        Highest calibrated score.
    increasing : bool or "auto", default=True
        Whether each map increases with the prediction. True keeps the
        stage's ranking (a calibration should not reverse it); "auto" lets
        :class:`~sklearn.isotonic.IsotonicRegression` choose per column from
        the sign of the Spearman correlation.
    distribution_weight : float in [0, 1], default=0.0
        Share of quantile mapping mixed into each map. 0 is the isotonic
        regression alone: the conditional mean, which has the lowest
        squared error but, like every conditional mean, a narrower spread
        than the truth when predictions are noisy. 1 maps the predictions'
        quantiles onto the truth's (each column's distribution matches the
        truth's, at a cost in MAE). The mixture of two monotone
        piecewise-linear maps is one, kept as one breakpoint table.
    n_quantiles : int, default=101
        Evenly spaced quantile levels of the quantile mapping (used only
        when `distribution_weight` > 0).

    Attributes
    ----------
    x_thresholds_ : list of ndarray
        Per column, the predicted scores at the breakpoints (increasing).
    y_thresholds_ : list of ndarray
        Per column, the calibrated scores at those breakpoints (monotone).
    n_features_in_ : int
        Number of columns (dimensions).
    feature_names_in_ : ndarray of str
        Column names, when `X` had string column names.

    See Also
    --------
    fit_out_of_fold_calibration : Fit it on a stage's out-of-fold predictions.
    sklearn.isotonic.IsotonicRegression : The map fitted per column.
    hybrid_estimators.percentile_normalizer.PercentileNormalizer : Puts
        calibrated scores of several filters on one scale.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.RandomState(0)
    >>> truth = rng.uniform(0, 10, size=(200, 2))
    >>> compressed = 5 + 0.5 * (truth - 5)  # a student that halves the range
    >>> calibrator = IsotonicCalibrator().fit(compressed, truth)
    >>> np.round(calibrator.transform([[3.0, 7.0]]), 2)
    array([[1., 9.]])
    >>> table = calibrator.to_table()
    >>> same = IsotonicCalibrator.from_table(table).transform(compressed)
    >>> bool(np.array_equal(same, calibrator.transform(compressed)))
    True
    """

    _parameter_constraints = {
        "y_min": [numbers.Real],
        "y_max": [numbers.Real],
        "increasing": ["boolean", StrOptions({"auto"})],
        "distribution_weight": [Interval(numbers.Real, 0, 1, closed="both")],
        "n_quantiles": [Interval(numbers.Integral, 2, None, closed="left")],
    }

    def __init__(self, y_min=0.0, y_max=10.0, increasing=True, distribution_weight=0.0, n_quantiles=101):
        self.y_min = y_min
        self.y_max = y_max
        self.increasing = increasing
        self.distribution_weight = distribution_weight
        self.n_quantiles = n_quantiles

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit one isotonic map per column of `X` to the matching column of `y`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Predicted scores (out of fold: see
            :func:`fit_out_of_fold_calibration`). Rows missing (NaN) in a
            column, or in its target, are left out of that column's fit.
        y : array-like of shape (n_samples,) or (n_samples, n_features)
            True scores: one column per column of `X`, or one target for
            every column.

        Returns
        -------
        self : IsotonicCalibrator
        """
        if not self.y_min < self.y_max:
            raise ValueError(f"y_min must be below y_max; got {self.y_min} and {self.y_max}.")
        X, y = validate_data(
            self, X, y, multi_output=True, ensure_all_finite="allow-nan", dtype=np.float64,
            y_numeric=True,
        )
        Y = _targets_per_column(y, X.shape[1])
        self.x_thresholds_, self.y_thresholds_ = [], []
        for j in range(X.shape[1]):
            known = ~(np.isnan(X[:, j]) | np.isnan(Y[:, j]))
            if not known.any():
                raise ValueError(f"Column {j} of X has no row with both a prediction and a target.")
            x, y = self._column_map(X[known, j], Y[known, j])
            self.x_thresholds_.append(x)
            self.y_thresholds_.append(y)
        return self

    def _column_map(self, predicted, truth):
        """One column's breakpoints: the isotonic map, mixed with quantile mapping if asked."""
        isotonic = IsotonicRegression(
            y_min=self.y_min, y_max=self.y_max, increasing=self.increasing, out_of_bounds="clip"
        ).fit(predicted, truth)
        x = np.asarray(isotonic.X_thresholds_, dtype=np.float64)
        y = np.asarray(isotonic.y_thresholds_, dtype=np.float64)
        if self.distribution_weight == 0:
            return x, y
        levels = np.linspace(0.0, 1.0, self.n_quantiles)
        quantile_x, first = np.unique(np.quantile(predicted, levels), return_index=True)
        true_quantiles = np.quantile(truth, levels if isotonic.increasing_ else levels[::-1])
        quantile_y = true_quantiles[first]  # tied prediction quantiles: the lowest level's
        merged = np.union1d(x, quantile_x)  # both maps are linear between these points
        mixed = (1 - self.distribution_weight) * np.interp(merged, x, y) + (
            self.distribution_weight * np.interp(merged, quantile_x, quantile_y)
        )
        return merged, np.clip(mixed, self.y_min, self.y_max)

    def transform(self, X):
        """Calibrated scores, clipped to ``[y_min, y_max]``; NaN stays NaN.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Predicted scores, in the columns of ``fit``.

        Returns
        -------
        X_calibrated : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        calibrated = np.column_stack([
            np.interp(X[:, j], x, y) for j, (x, y) in enumerate(zip(self.x_thresholds_, self.y_thresholds_))
        ]) if X.shape[0] else np.empty_like(X)
        return np.clip(calibrated, self.y_min, self.y_max)

    def to_table(self):
        """The fitted maps as plain data: what a filter folder stores.

        Returns
        -------
        table : dict
            ``y_min``, ``y_max``, ``increasing``, ``distribution_weight``,
            ``n_quantiles`` and ``columns``: one
            ``{"name", "x", "y"}`` per column, `x` and `y` the breakpoints
            as lists of floats (``numpy.interp(value, x, y)`` then clipping
            to ``[y_min, y_max]`` is :meth:`transform`).
        """
        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", [str(j) for j in range(self.n_features_in_)])
        return {
            "y_min": float(self.y_min),
            "y_max": float(self.y_max),
            "increasing": self.increasing,
            "distribution_weight": float(self.distribution_weight),
            "n_quantiles": int(self.n_quantiles),
            "columns": [
                {"name": str(name), "x": x.tolist(), "y": y.tolist()}
                for name, x, y in zip(names, self.x_thresholds_, self.y_thresholds_)
            ],
        }

    @classmethod
    def from_table(cls, table):
        """A fitted calibrator from :meth:`to_table`'s output (no refit).

        Parameters
        ----------
        table : dict
            As :meth:`to_table` returns it (e.g. read back from JSON).

        Returns
        -------
        calibrator : IsotonicCalibrator
            Its ``transform`` equals the original's exactly.

        Raises
        ------
        ValueError
            When a column's breakpoints are not two equally long lists of
            finite numbers with strictly increasing `x`, or its `y` is not
            monotone.
        """
        calibrator = cls(
            y_min=table["y_min"], y_max=table["y_max"], increasing=table["increasing"],
            distribution_weight=table.get("distribution_weight", 0.0),
            n_quantiles=table.get("n_quantiles", 101),
        )
        columns = table["columns"]
        if not columns:
            raise ValueError("A calibration table needs at least one column.")
        calibrator.x_thresholds_, calibrator.y_thresholds_ = [], []
        for column in columns:
            x, y = _checked_breakpoints(column)
            calibrator.x_thresholds_.append(x)
            calibrator.y_thresholds_.append(y)
        calibrator.n_features_in_ = len(columns)
        names = [str(column["name"]) for column in columns]
        if names != [str(j) for j in range(len(columns))]:
            calibrator.feature_names_in_ = np.asarray(names, dtype=object)
        return calibrator

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.required = True
        return tags


def _targets_per_column(y, n_columns):
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        return np.repeat(y[:, np.newaxis], n_columns, axis=1)
    if y.shape[1] == 1 and n_columns != 1:
        return np.repeat(y, n_columns, axis=1)
    if y.shape[1] != n_columns:
        raise ValueError(
            f"y has {y.shape[1]} columns but X has {n_columns}: give one target column per "
            "column of X, or one target for all."
        )
    return y


def _checked_breakpoints(column):
    name = column.get("name")
    x = np.asarray(column["x"], dtype=np.float64)
    y = np.asarray(column["y"], dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or not len(x):
        raise ValueError(f"Column {name!r}: x and y must be two equally long, non-empty lists.")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"Column {name!r}: breakpoints must be finite numbers.")
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"Column {name!r}: x must increase strictly.")
    steps = np.diff(y)
    if not (np.all(steps >= 0) or np.all(steps <= 0)):
        raise ValueError(f"Column {name!r}: y must be monotone.")
    return x, y


def fit_out_of_fold_calibration(
    stage, X, Y, *, cv=5, random_state=0, calibrator=None, return_predictions=False
):
    """Fit a calibrator on `stage`'s out-of-fold predictions of `X`.

    Each article's prediction comes from a clone of `stage` fitted on the
    other folds (:func:`~sklearn.model_selection.cross_val_predict`), so
    the calibration learns the errors the stage makes on articles it has
    not seen, not its smaller in-sample errors.

    Parameters
    ----------
    stage : estimator
        An unfitted stage (e.g. Stage 1's pipeline); cloned per fold.
    X : DataFrame, list of dict or array-like
        Articles.
    Y : array-like of shape (n_samples, n_dimensions)
        True scores.
    cv : int or cross-validation generator, default=5
        An int is ``KFold(cv, shuffle=True, random_state=random_state)``:
        the folds of a filter's recorded metrics and evaluation.
    random_state : int or None, default=0
        Seed of the fold shuffle when `cv` is an int.
    calibrator : estimator or None, default=None
        Fitted on (out-of-fold predictions, `Y`) after cloning;
        :class:`IsotonicCalibrator` when None.
    return_predictions : bool, default=False
        Also return the out-of-fold predictions.

    Returns
    -------
    calibrator : estimator
        Fitted.
    predictions : ndarray of shape (n_samples, n_dimensions)
        Only with `return_predictions`.

    See Also
    --------
    IsotonicCalibrator : The calibrator it fits.
    hybrid_estimators.metrics.cross_validated_stage1_metrics : Stage 1's
        out-of-fold errors.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(100, 3))
    >>> Y = np.clip(5 + 2 * X[:, :2], 0, 10)
    >>> calibrator = fit_out_of_fold_calibration(Ridge(alpha=50.0), X, Y, cv=5)
    >>> calibrator.n_features_in_
    2
    """
    if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        cv = KFold(int(cv), shuffle=True, random_state=random_state)
    cv = check_cv(cv)
    predictions = np.asarray(cross_val_predict(clone(stage), X, Y, cv=cv), dtype=np.float64)
    if predictions.ndim == 1:
        predictions = predictions[:, np.newaxis]
    calibrator = clone(IsotonicCalibrator() if calibrator is None else calibrator)
    calibrator.fit(predictions, np.asarray(Y, dtype=np.float64))
    return (calibrator, predictions) if return_predictions else calibrator
