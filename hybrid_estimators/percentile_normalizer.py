"""One scale for several filters: percentile rank on a reference sample of traffic.

Filters' raw scores have very different distributions: the same weighted
average of 5 may be a top-1% article for one filter and an ordinary one for
another. :class:`PercentileNormalizer` maps a filter's score to ten times
its empirical cumulative distribution on a reference sample of traffic, so
that a normalised 9 means "scores above about 90% of the reference
articles" for every filter. The scale depends on the traffic it was fitted
on: the fitted map records the sample's size and hash.
:func:`best_filter` picks, per article, the filter with the highest
normalised score.
"""

import hashlib
import numbers

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["PercentileNormalizer", "best_filter"]

SCALE = 10.0


class PercentileNormalizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Map scores to 10 × their percentile rank on a reference sample.

    For each column, the fitted map is the empirical cumulative
    distribution function of the reference sample, times 10: a score
    ``s`` becomes ``10 × (share of reference scores <= s)`` at the sample's
    distinct values, linearly interpolated between them (``numpy.interp``),
    10 above the sample's maximum and ``10 × (share at the minimum)`` at or
    below its minimum. The map is monotone and lies in [0, 10]. It is kept
    as a breakpoint table of at most `max_breakpoints` points (evenly
    spaced in rank when the sample has more distinct values; the first and
    last are always kept); :meth:`to_table` and :meth:`from_table` convert
    it exactly. Missing scores (NaN: blocked articles) are left out of the
    fit and stay missing.

    Parameters
    ----------
    max_breakpoints : int, default=1001
        Most breakpoints kept per column (>= 2). With fewer distinct
        values in the sample, the map is the exact interpolated ECDF.

    Attributes
    ----------
    x_thresholds_ : list of ndarray
        Per column, reference scores at the breakpoints (increasing).
    y_thresholds_ : list of ndarray
        Per column, 10 × the ECDF at those scores (non-decreasing, in [0, 10]).
    n_samples_ : ndarray of int
        Per column, the reference scores fitted (NaN left out).
    sample_sha256_ : str
        sha256 of the reference sample as given to ``fit`` (float64 values,
        row-major, little-endian): identifies the traffic the scale means.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Column names, when `X` had string column names.

    See Also
    --------
    best_filter : The filter with the highest normalised score, per article.
    sklearn.preprocessing.QuantileTransformer : Also a rank transform; this
        one is kept as a plain, exactly reproducible breakpoint table.
    hybrid_estimators.isotonic_calibrator.IsotonicCalibrator : Calibrates a
        filter's scores before they are normalised.

    Examples
    --------
    >>> import numpy as np
    >>> reference = np.array([[1.0], [2.0], [2.0], [3.0], [8.0]])
    >>> normalizer = PercentileNormalizer().fit(reference)
    >>> normalizer.transform([[0.0], [2.0], [2.5], [8.0], [9.5]]).ravel()
    array([ 2.,  6.,  7., 10., 10.])
    >>> int(normalizer.n_samples_[0])
    5
    """

    _parameter_constraints = {"max_breakpoints": [Interval(numbers.Integral, 2, None, closed="left")]}

    def __init__(self, max_breakpoints=1001):
        self.max_breakpoints = max_breakpoints

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the interpolated ECDF of each column of the reference sample `X`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Reference scores (e.g. a filter's weighted averages on traffic).
        y : None
            Ignored.

        Returns
        -------
        self : PercentileNormalizer
        """
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        self.sample_sha256_ = hashlib.sha256(
            np.ascontiguousarray(X, dtype="<f8").tobytes()
        ).hexdigest()
        self.x_thresholds_, self.y_thresholds_, counts = [], [], []
        for j in range(X.shape[1]):
            known = X[~np.isnan(X[:, j]), j]
            if not len(known):
                raise ValueError(f"Column {j} of X has no score (all NaN): nothing to rank against.")
            x, y = _ecdf_breakpoints(known, self.max_breakpoints)
            self.x_thresholds_.append(x)
            self.y_thresholds_.append(y)
            counts.append(len(known))
        self.n_samples_ = np.asarray(counts, dtype=np.int64)
        return self

    def transform(self, X):
        """Normalised scores in [0, 10]; NaN stays NaN.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        X_normalised : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        if not X.shape[0]:
            return np.empty_like(X)
        return np.column_stack([
            np.interp(X[:, j], x, y) for j, (x, y) in enumerate(zip(self.x_thresholds_, self.y_thresholds_))
        ])

    def to_table(self):
        """The fitted map as plain data, with the reference sample's size and hash.

        Returns
        -------
        table : dict
            ``scale`` (10), ``sample_sha256`` and ``columns``: one
            ``{"name", "n_samples", "x", "y"}`` per column (``numpy.interp(
            score, x, y)`` is :meth:`transform`).
        """
        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", [str(j) for j in range(self.n_features_in_)])
        return {
            "scale": SCALE,
            "max_breakpoints": int(self.max_breakpoints),
            "sample_sha256": self.sample_sha256_,
            "columns": [
                {"name": str(name), "n_samples": int(n), "x": x.tolist(), "y": y.tolist()}
                for name, n, x, y in zip(names, self.n_samples_, self.x_thresholds_, self.y_thresholds_)
            ],
        }

    @classmethod
    def from_table(cls, table):
        """A fitted normaliser from :meth:`to_table`'s output (no refit).

        Raises
        ------
        ValueError
            When a column's breakpoints are not two equally long lists of
            finite numbers with strictly increasing `x` and non-decreasing
            `y` in [0, 10].
        """
        columns = table["columns"]
        if not columns:
            raise ValueError("A normalisation table needs at least one column.")
        normalizer = cls(max_breakpoints=table.get("max_breakpoints", 1001))
        normalizer.x_thresholds_, normalizer.y_thresholds_ = [], []
        for column in columns:
            x, y = _checked_breakpoints(column)
            normalizer.x_thresholds_.append(x)
            normalizer.y_thresholds_.append(y)
        normalizer.n_samples_ = np.asarray([int(column["n_samples"]) for column in columns], dtype=np.int64)
        normalizer.sample_sha256_ = str(table["sample_sha256"])
        normalizer.n_features_in_ = len(columns)
        names = [str(column["name"]) for column in columns]
        if names != [str(j) for j in range(len(columns))]:
            normalizer.feature_names_in_ = np.asarray(names, dtype=object)
        return normalizer

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def _ecdf_breakpoints(values, max_breakpoints):
    """The distinct values and 10 × the share of `values` at or below each, thinned."""
    x, counts = np.unique(values, return_counts=True)
    y = SCALE * np.cumsum(counts) / len(values)
    if len(x) > max_breakpoints:  # evenly spaced in rank, both ends kept
        keep = np.unique(np.round(np.linspace(0, len(x) - 1, max_breakpoints)).astype(int))
        x, y = x[keep], y[keep]
    return x, y


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
    if np.any(np.diff(y) < 0) or y[0] < 0 or y[-1] > SCALE:
        raise ValueError(f"Column {name!r}: y must be non-decreasing within [0, {SCALE:g}].")
    return x, y


def best_filter(normalised_by_filter, blocked=None):
    """Per article, the filter with the highest normalised score.

    Parameters
    ----------
    normalised_by_filter : dict of str to array-like of shape (n_samples,)
        Each filter's normalised scores, in the filters' order of
        preference (a dict keeps its insertion order; a DataFrame's columns
        are taken in order too).
    blocked : dict of str to array-like of bool, or None, default=None
        Per filter, the articles it did not score (blocked by its
        prefilter, or an error): they are excluded for that filter. A NaN
        score is excluded too.

    Returns
    -------
    best : list of str or None
        Per article, the filter with the highest normalised score; on a
        tie, the first such filter in the given order; None when every
        filter is excluded for that article.

    See Also
    --------
    PercentileNormalizer : Puts each filter's scores on the scale compared.

    Examples
    --------
    >>> best_filter({"a": [3.0, 7.0, 5.0, float("nan")], "b": [4.0, 7.0, 9.0, float("nan")]},
    ...             blocked={"b": [False, False, True, False]})
    ['b', 'a', 'a', None]
    """
    names = [str(name) for name in normalised_by_filter]
    if not names:
        raise ValueError("best_filter needs at least one filter.")
    scores = np.column_stack([
        np.asarray(normalised_by_filter[name], dtype=np.float64).reshape(-1) for name in normalised_by_filter
    ])
    excluded = np.isnan(scores)
    for name, mask in (blocked or {}).items():
        if str(name) not in names:
            raise ValueError(f"blocked names filter {name!r}, which has no normalised scores.")
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        if mask.shape[0] != scores.shape[0]:
            raise ValueError(f"blocked[{name!r}] has {mask.shape[0]} rows, the scores {scores.shape[0]}.")
        excluded[:, names.index(str(name))] |= mask
    ranked = np.where(excluded, -np.inf, scores)
    first_best = np.argmax(ranked, axis=1)  # argmax returns the first maximum: the tie rule
    return [None if excluded[i].all() else names[k] for i, k in enumerate(first_best)]
