"""Routing metrics and scorers for ``GridSearchCV(scoring=..., refit=...)``.

Plain functions take true scores, routing masks or predictions; scorers
take ``(estimator, X, Y)`` where `estimator` is a fitted
:class:`~hybrid_estimators.router.HybridRouterRegressor` (or a
:class:`~hybrid_estimators.calibration.TunedThresholdRouterCV`) and use its
weights, tiers, gatekeepers and routing.

scikit-learn's scorer registry cannot be extended safely, so the names are
served by :data:`ROUTING_SCORERS` (pass it, or a sub-dict, as
``scoring=``) and :func:`get_routing_scorer` (which falls back to
:func:`sklearn.metrics.get_scorer` for scikit-learn's own names). Following
scikit-learn, greater is better: losses are negated (``neg_mae``,
``neg_expected_cost``).

Examples
--------
>>> import numpy as np
>>> from sklearn.linear_model import Ridge
>>> from sklearn.model_selection import GridSearchCV
>>> from sklearn.neighbors import KNeighborsRegressor
>>> from hybrid_estimators.router import HybridRouterRegressor
>>> rng = np.random.RandomState(0)
>>> X = rng.uniform(0, 10, size=(90, 2))
>>> Y = np.c_[X[:, 0], X.mean(axis=1)]
>>> router = HybridRouterRegressor(Ridge(), KNeighborsRegressor(), [0.5, 0.5])
>>> search = GridSearchCV(router, {"threshold": [2.0, 4.0, 6.0]}, cv=3,
...                       scoring=ROUTING_SCORERS, refit="medium_plus_recall")
>>> search.fit(X, Y).best_params_
{'threshold': 2.0}
"""

import numpy as np
from sklearn.metrics import get_scorer

from ._cache import measured_seconds_per_row
from .tiers import apply_gatekeepers, medium_threshold, tier_of, weighted_average

__all__ = [
    "ROUTING_SCORERS",
    "cross_validated_stage1_metrics",
    "expected_cost",
    "get_routing_scorer",
    "make_expected_cost_scorer",
    "medium_plus_recall",
    "skip_rate",
    "tier_accuracy",
    "weighted_average_mae",
]


def _true_averages(Y_true, weights, gatekeepers=None):
    scores = np.asarray(Y_true, dtype=float)
    scores = scores.reshape(-1, 1) if scores.ndim == 1 else scores
    averages = weighted_average(scores, weights)
    return apply_gatekeepers(scores, averages, gatekeepers)[0]


def is_medium_plus(Y_true, weights, *, tiers=None, gatekeepers=None):
    """Whether each article's true weighted average reaches the MEDIUM tier.

    Parameters
    ----------
    Y_true : array-like of shape (n_samples, n_dimensions)
    weights : array-like of shape (n_dimensions,) or dict
    tiers : dict or None, default=None
    gatekeepers : dict of int to (float, float) or None, default=None

    Returns
    -------
    medium_plus : ndarray of bool, shape (n_samples,)

    See Also
    --------
    medium_plus_recall : The share of these articles Stage 2 sees.
    hybrid_estimators.tiers.medium_threshold : Where MEDIUM starts.

    Examples
    --------
    >>> is_medium_plus([[3.0, 6.0], [1.0, 2.0]], [0.5, 0.5]).tolist()
    [True, False]
    """
    averages = _true_averages(Y_true, weights, gatekeepers)
    return averages >= medium_threshold(tiers)


def medium_plus_recall(
    Y_true, routed, weights, *, tiers=None, gatekeepers=None, zero_division=1.0
):
    """Share of MEDIUM+ articles (by true weighted average) that Stage 2 sees.

    Parameters
    ----------
    Y_true : array-like of shape (n_samples, n_dimensions)
        True scores.
    routed : array-like of bool, shape (n_samples,)
        Which articles went to Stage 2.
    weights : array-like of shape (n_dimensions,) or dict
    tiers : dict or None, default=None
    gatekeepers : dict of int to (float, float) or None, default=None
    zero_division : float, default=1.0
        Returned when there is no MEDIUM+ article (nothing was missed).

    Returns
    -------
    recall : float

    See Also
    --------
    ROUTING_SCORERS : Its scorer, ``"medium_plus_recall"``.
    skip_rate : The cost side of the trade-off.
    hybrid_estimators.calibration.TunedThresholdRouterCV : Chooses the
        threshold with a lower confidence bound on this recall.

    Examples
    --------
    >>> medium_plus_recall([[5.0], [6.0], [1.0]], [True, False, False], [1.0])
    0.5
    """
    medium_plus = is_medium_plus(Y_true, weights, tiers=tiers, gatekeepers=gatekeepers)
    if not medium_plus.any():
        return float(zero_division)
    return float(np.asarray(routed, dtype=bool)[medium_plus].mean())


def skip_rate(routed):
    """Share of articles that skip Stage 2.

    See Also
    --------
    ROUTING_SCORERS : Its scorer, ``"skip_rate"``.
    medium_plus_recall : The quality side of the trade-off.
    expected_cost : The cost per article at a skip rate.

    Examples
    --------
    >>> skip_rate([True, False, False, False])
    0.75
    """
    routed = np.asarray(routed, dtype=bool)
    return float(1.0 - routed.mean()) if routed.size else 0.0


def weighted_average_mae(Y_true, Y_pred, weights):
    """Mean absolute error of the weighted averages.

    See Also
    --------
    ROUTING_SCORERS : Its negated scorer, ``"neg_mae"``.
    hybrid_estimators.tiers.weighted_average : The averages compared.

    Examples
    --------
    >>> weighted_average_mae([[2.0, 4.0]], [[3.0, 4.0]], [0.5, 0.5])
    0.5
    """
    return float(
        np.mean(np.abs(_true_averages(Y_true, weights) - _true_averages(Y_pred, weights)))
    )


def tier_accuracy(Y_true, Y_pred, weights, *, tiers=None, gatekeepers=None):
    """Share of articles whose predicted tier equals their true tier.

    See Also
    --------
    ROUTING_SCORERS : Its scorer, ``"tier_accuracy"``.
    hybrid_estimators.tiers.tier_of : The tier of a weighted average.

    Examples
    --------
    >>> tier_accuracy([[2.0], [5.0]], [[3.9], [3.9]], [1.0])
    0.5
    """
    true_tiers = tier_of(_true_averages(Y_true, weights, gatekeepers), tiers)
    predicted = tier_of(_true_averages(Y_pred, weights, gatekeepers), tiers)
    return float(np.mean(true_tiers == predicted))


def _majority_tier_share(Y_true, weights, tiers=None, gatekeepers=None):
    """Tier accuracy of always predicting the largest true tier (the majority-class baseline)."""
    _, counts = np.unique(tier_of(_true_averages(Y_true, weights, gatekeepers), tiers), return_counts=True)
    return float(counts.max() / counts.sum())


def expected_cost(skip, stage1_cost, stage2_cost):
    """Expected cost per article of the cascade: ``T1 + (1 - skip) * T2``.

    See Also
    --------
    make_expected_cost_scorer : Its negated scorer.
    skip_rate : The share of articles that skip Stage 2.

    Examples
    --------
    >>> expected_cost(0.5, 1.3, 37.9)
    20.25
    """
    if skip >= 1.0:
        return float(stage1_cost)
    return float(stage1_cost + (1.0 - skip) * stage2_cost)


def _router_of(estimator):
    """The fitted router behind `estimator` (itself, or a tuner's best)."""
    return getattr(estimator, "best_estimator_", estimator)


def _medium_plus_recall_scorer(estimator, X, Y):
    router = _router_of(estimator)
    return medium_plus_recall(
        Y,
        router.route(X),
        router.weights_,
        tiers=router.tiers_,
        gatekeepers=router.gatekeepers_,
    )


def _skip_rate_scorer(estimator, X, Y):
    return skip_rate(_router_of(estimator).route(X))


def _neg_mae_scorer(estimator, X, Y):
    router = _router_of(estimator)
    return -weighted_average_mae(Y, router.predict(X), router.weights_)


def _tier_accuracy_scorer(estimator, X, Y):
    router = _router_of(estimator)
    return tier_accuracy(
        Y,
        router.predict(X),
        router.weights_,
        tiers=router.tiers_,
        gatekeepers=router.gatekeepers_,
    )


def _measured_costs(router):
    stage1 = measured_seconds_per_row(router.stage1_)
    extra = (
        measured_seconds_per_row(router.routing_score_)
        if router.routing_score_ is not None
        else 0.0
    )
    stage2 = measured_seconds_per_row(router.stage2_)
    stage1 = None if stage1 is None or extra is None else stage1 + extra
    return stage1, stage2


def make_expected_cost_scorer(stage1_cost=None, stage2_cost=None):
    """Scorer of the negated expected cost per article, ``-(T1 + (1 - skip) * T2)``.

    Parameters
    ----------
    stage1_cost, stage2_cost : float or None, default=None
        Cost per article of each stage (e.g. the seed's 1.3 and 37.9 ms).
        None uses the seconds per row measured the last time the router's
        fitted stage really predicted (not served from the cache) in this
        process; NaN when it never did.

    Returns
    -------
    scorer : callable ``(estimator, X, Y) -> float``

    See Also
    --------
    ROUTING_SCORERS : Holds it with measured costs, ``"neg_expected_cost"``.
    expected_cost : The cost it negates.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.neighbors import KNeighborsRegressor
    >>> from hybrid_estimators.router import HybridRouterRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(0, 10, size=(90, 2))
    >>> Y = np.c_[X[:, 0], X.mean(axis=1)]
    >>> router = HybridRouterRegressor(Ridge(), KNeighborsRegressor(), [0.5, 0.5],
    ...                                threshold=4.0).fit(X, Y)
    >>> scorer = make_expected_cost_scorer(1.3, 37.9)  # ms per article of each stage
    >>> round(ROUTING_SCORERS["skip_rate"](router, X, Y), 2)
    0.31
    >>> round(scorer(router, X, Y), 2)  # -(1.3 + (1 - 0.31) * 37.9)
    -27.41
    """

    def neg_expected_cost(estimator, X, Y):
        router = _router_of(estimator)
        skip = skip_rate(router.route(X))
        measured1, measured2 = _measured_costs(router)
        t1 = measured1 if stage1_cost is None else stage1_cost
        t2 = measured2 if stage2_cost is None else stage2_cost
        t1 = np.nan if t1 is None else t1
        t2 = np.nan if t2 is None else t2
        return -expected_cost(skip, t1, t2)

    return neg_expected_cost


ROUTING_SCORERS = {
    "medium_plus_recall": _medium_plus_recall_scorer,
    "skip_rate": _skip_rate_scorer,
    "neg_mae": _neg_mae_scorer,
    "tier_accuracy": _tier_accuracy_scorer,
    "neg_expected_cost": make_expected_cost_scorer(),
}
"""Routing scorers by name, for ``GridSearchCV(scoring=ROUTING_SCORERS)``.

Each is a callable ``(estimator, X, Y) -> float``, greater is better, on a
fitted router (or a tuner: its best router): ``medium_plus_recall`` (the
share of truly MEDIUM+ articles sent to Stage 2), ``skip_rate``,
``neg_mae`` (of the weighted averages), ``tier_accuracy`` and
``neg_expected_cost`` (seconds per article measured on the router's
stages).

See Also
--------
get_routing_scorer : One of them by name, else scikit-learn's.
medium_plus_recall : The metric behind ``"medium_plus_recall"``.
make_expected_cost_scorer : ``"neg_expected_cost"`` with given costs.
hybrid_estimators.calibration.TunedThresholdRouterCV : Chooses the
    threshold with a guarantee on MEDIUM+ recall instead of a mean score.
hybrid_estimators.router.HybridRouterRegressor : The router they score.

Examples
--------
>>> import numpy as np
>>> from sklearn.linear_model import Ridge
>>> from sklearn.neighbors import KNeighborsRegressor
>>> from hybrid_estimators.router import HybridRouterRegressor
>>> rng = np.random.RandomState(0)
>>> X = rng.uniform(0, 10, size=(90, 2))
>>> Y = np.c_[X[:, 0], X.mean(axis=1)]
>>> router = HybridRouterRegressor(Ridge(), KNeighborsRegressor(), [0.5, 0.5],
...                                threshold=4.0).fit(X, Y)
>>> sorted(ROUTING_SCORERS)
['medium_plus_recall', 'neg_expected_cost', 'neg_mae', 'skip_rate', 'tier_accuracy']
>>> scores = {name: scorer(router, X, Y) for name, scorer in ROUTING_SCORERS.items()}
>>> round(scores["medium_plus_recall"], 2), round(scores["skip_rate"], 2)
(1.0, 0.31)
"""


def get_routing_scorer(scoring):
    """A routing scorer by name, else scikit-learn's scorer of that name.

    Parameters
    ----------
    scoring : str or callable
        A key of :data:`ROUTING_SCORERS`, a scikit-learn scorer name or a
        callable (returned as is).

    Returns
    -------
    scorer : callable ``(estimator, X, Y) -> float``

    See Also
    --------
    ROUTING_SCORERS : The routing scorers by name.
    sklearn.metrics.get_scorer : Its fallback for scikit-learn's names.

    Examples
    --------
    >>> get_routing_scorer("skip_rate") is ROUTING_SCORERS["skip_rate"]
    True
    """
    if callable(scoring):
        return scoring
    if scoring in ROUTING_SCORERS:
        return ROUTING_SCORERS[scoring]
    return get_scorer(scoring)


def cross_validated_stage1_metrics(
    stage1,
    X,
    Y,
    weights,
    *,
    threshold,
    tiers=None,
    gatekeepers=None,
    cv=5,
    random_state=0,
    return_predictions=False,
):
    """Out-of-fold quality of Stage 1 candidates on the same folds, as flat metrics.

    Each candidate is cloned and refitted on every training fold of
    ``KFold(cv, shuffle=True, random_state=random_state)`` (so a pipeline's
    embedder reuses its embedding cache); the one with the lowest
    cross-validated MAE of the weighted average is chosen (the first on a
    tie). Predictions are clipped to 0-10 per dimension and weighted
    averages have the gatekeepers applied, as the router's final scores
    do. The baseline predicts each training fold's mean scores.

    This is the ``metrics`` block of a filter's ``probe/metadata.json``:
    ``train-probe``, ``scripts/make_filters.py`` and the examples all write it
    with this function.

    Parameters
    ----------
    stage1 : estimator or dict of str to estimator
        One Stage 1 (recorded as probe ``"custom"``) or candidates by name,
        e.g. ``{"ridge": ..., "mlp": ...}``.
    X : DataFrame, list of dict or array-like
        Articles.
    Y : DataFrame or array-like of shape (n_samples, n_dimensions)
        True scores; a DataFrame names the dimensions (taken in the order
        of a dict `weights`).
    weights : dict or array-like of shape (n_dimensions,)
    threshold : float
        Routing threshold for the recall and skip rate.
    tiers : dict or None, default=None
    gatekeepers : dict or None, default=None
        Dimension (index, or name with a DataFrame `Y`) to
        ``(threshold, max_score)``.
    cv : int, default=5
        Number of folds (>= 2).
    random_state : int or None, default=0
        Seed of the fold shuffle.
    return_predictions : bool, default=False
        Also return the chosen candidate's out-of-fold predictions.

    Returns
    -------
    metrics : dict
        ``cv_folds``, ``cv_random_state``, ``n_articles``, ``probe`` (the
        chosen candidate), ``cv_threshold``, ``cv_mae_weighted_average``,
        ``cv_mae_weighted_average_baseline``, ``cv_tier_accuracy``,
        ``cv_medium_plus_recall_at_threshold``,
        ``cv_skip_rate_at_threshold``, ``cv_mae_<dimension>`` for each
        dimension and, with several candidates,
        ``cv_mae_weighted_average_<candidate>`` for each.
    predictions : ndarray of shape (n_samples, n_dimensions)
        Only with `return_predictions`: out of fold, clipped to 0-10.

    See Also
    --------
    hybrid_estimators.filters.save_filter : Records these metrics in a
        filter's metadata.
    weighted_average_mae : The metric cross-validated.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyRegressor
    >>> from sklearn.linear_model import Ridge
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(0, 10, size=(60, 2))
    >>> Y = np.c_[X[:, 0], X[:, 1]]
    >>> metrics = cross_validated_stage1_metrics(
    ...     {"mean": DummyRegressor(), "ridge": Ridge()}, X, Y, [0.5, 0.5], threshold=4.0)
    >>> metrics["probe"], metrics["cv_folds"], metrics["n_articles"]
    ('ridge', 5, 60)
    >>> bool(metrics["cv_mae_weighted_average"] < metrics["cv_mae_weighted_average_baseline"])
    True
    """
    from sklearn.base import clone
    from sklearn.model_selection import KFold, cross_val_predict

    candidates = dict(stage1) if isinstance(stage1, dict) else {"custom": stage1}
    if not candidates:
        raise ValueError("stage1 must be an estimator or a non-empty dict of candidates.")
    names = list(weights) if isinstance(weights, dict) else None
    if hasattr(Y, "columns"):
        names = names or [str(column) for column in Y.columns]
        Y = Y[names] if isinstance(weights, dict) else Y
    Y_true = np.asarray(Y, dtype=float)
    names = names or [str(i) for i in range(Y_true.shape[1])]
    if gatekeepers:
        gatekeepers = {
            names.index(key) if isinstance(key, str) else int(key): tuple(value)
            for key, value in gatekeepers.items()
        }
    folds = KFold(int(cv), shuffle=True, random_state=random_state)
    truth = _true_averages(Y_true, weights, gatekeepers)

    def mae(predicted):
        return float(np.mean(np.abs(_true_averages(predicted, weights, gatekeepers) - truth)))

    predictions = {
        name: np.clip(cross_val_predict(clone(estimator), X, Y_true, cv=folds), 0.0, 10.0)
        for name, estimator in candidates.items()
    }
    maes = {name: mae(predicted) for name, predicted in predictions.items()}
    chosen = min(maes, key=maes.get)
    Y_pred = predictions[chosen]
    baseline = np.empty_like(Y_true)
    for train, test in folds.split(Y_true):
        baseline[test] = Y_true[train].mean(axis=0)
    routed = _true_averages(Y_pred, weights) >= threshold
    metrics = {
        "cv_folds": int(cv),
        "cv_random_state": random_state,
        "n_articles": len(Y_true),
        "probe": chosen,
        "cv_threshold": float(threshold),
        "cv_mae_weighted_average": maes[chosen],
        "cv_mae_weighted_average_baseline": mae(baseline),
        "cv_tier_accuracy": tier_accuracy(
            Y_true, Y_pred, weights, tiers=tiers, gatekeepers=gatekeepers
        ),
        "cv_tier_accuracy_baseline": _majority_tier_share(Y_true, weights, tiers, gatekeepers),
        "cv_routing_score_std": float(np.std(np.clip(_true_averages(Y_pred, weights), 0.0, 10.0))),
        "cv_medium_plus_recall_at_threshold": medium_plus_recall(
            Y_true, routed, weights, tiers=tiers, gatekeepers=gatekeepers
        ),
        "cv_skip_rate_at_threshold": skip_rate(routed),
    }
    for j, name in enumerate(names):
        metrics[f"cv_mae_{name}"] = float(np.mean(np.abs(Y_true[:, j] - Y_pred[:, j])))
        metrics[f"cv_mae_{name}_baseline"] = float(np.mean(np.abs(Y_true[:, j] - baseline[:, j])))
    if len(candidates) > 1:
        for name, value in maes.items():
            metrics[f"cv_mae_weighted_average_{name}"] = value
    return (metrics, Y_pred) if return_predictions else metrics
