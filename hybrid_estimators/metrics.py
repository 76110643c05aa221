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

from .router import measured_seconds_per_row
from .tiers import apply_gatekeepers, medium_threshold, tier_of, weighted_average

__all__ = [
    "ROUTING_SCORERS",
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

    Examples
    --------
    >>> skip_rate([True, False, False, False])
    0.75
    """
    routed = np.asarray(routed, dtype=bool)
    return float(1.0 - routed.mean()) if routed.size else 0.0


def weighted_average_mae(Y_true, Y_pred, weights):
    """Mean absolute error of the weighted averages.

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

    Examples
    --------
    >>> tier_accuracy([[2.0], [5.0]], [[3.9], [3.9]], [1.0])
    0.5
    """
    true_tiers = tier_of(_true_averages(Y_true, weights, gatekeepers), tiers)
    predicted = tier_of(_true_averages(Y_pred, weights, gatekeepers), tiers)
    return float(np.mean(true_tiers == predicted))


def expected_cost(skip, stage1_cost, stage2_cost):
    """Expected cost per article of the cascade: ``T1 + (1 - skip) * T2``.

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

    Examples
    --------
    >>> scorer = make_expected_cost_scorer(1.3, 37.9)
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


#: Routing scorers by name, for ``GridSearchCV(scoring=ROUTING_SCORERS)``.
ROUTING_SCORERS = {
    "medium_plus_recall": _medium_plus_recall_scorer,
    "skip_rate": _skip_rate_scorer,
    "neg_mae": _neg_mae_scorer,
    "tier_accuracy": _tier_accuracy_scorer,
    "neg_expected_cost": make_expected_cost_scorer(),
}


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
