"""Routing metrics and the scorers GridSearchCV uses."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KNeighborsRegressor

from hybrid_estimators.metrics import (
    ROUTING_SCORERS,
    expected_cost,
    get_routing_scorer,
    is_medium_plus,
    make_expected_cost_scorer,
    medium_plus_recall,
    skip_rate,
    tier_accuracy,
    weighted_average_mae,
)
from hybrid_estimators.router import HybridRouterRegressor

Y_TRUE = np.array([[8.0, 6.0], [4.0, 4.0], [3.0, 5.0], [1.0, 2.0], [9.0, 9.0]])
# weighted averages with weights (3, 1): 7.5, 4.0, 3.5, 1.25, 9.0


def test_plain_metrics_on_hand_computed_cases():
    weights = [3, 1]
    np.testing.assert_array_equal(
        is_medium_plus(Y_TRUE, weights), [True, True, False, False, True]
    )
    routed = np.array([True, False, True, False, True])
    assert medium_plus_recall(Y_TRUE, routed, weights) == pytest.approx(2 / 3)
    assert medium_plus_recall(Y_TRUE, routed, weights, tiers={"low": 0, "mid": 8}) == 1.0
    assert medium_plus_recall(Y_TRUE[3:4], [False], weights) == 1.0  # no MEDIUM+
    assert medium_plus_recall(Y_TRUE[3:4], [False], weights, zero_division=0) == 0.0
    # a gatekeeper on dimension 1 (< 5 caps at 3) demotes the second article
    assert medium_plus_recall(
        Y_TRUE, routed, weights, gatekeepers={1: (5.0, 3.0)}
    ) == pytest.approx(1.0)
    assert skip_rate(routed) == pytest.approx(0.4)
    Y_pred = Y_TRUE + [[1.0, 1.0], [0.0, -2.0], [1.0, 1.0], [0.0, 0.0], [-4.0, 0.0]]
    assert weighted_average_mae(Y_TRUE, Y_pred, weights) == pytest.approx(
        np.mean([1.0, 0.5, 1.0, 0.0, 3.0])
    )
    # predicted averages 8.5 (high), 3.5 (low), 4.5 (medium), 1.25, 6.0 (medium)
    assert tier_accuracy(Y_TRUE, Y_pred, weights) == pytest.approx(2 / 5)
    assert expected_cost(0.56, 1.3, 37.9) == pytest.approx(1.3 + 0.44 * 37.9)
    assert expected_cost(1.0, 1.3, np.nan) == 1.3


@pytest.fixture(scope="module")
def router_data():
    rng = np.random.RandomState(0)
    X = rng.uniform(0, 10, size=(150, 2))
    Y = np.clip(np.c_[X[:, 0], X.mean(axis=1)] + rng.normal(0, 0.5, (150, 2)), 0, 10)
    return X, Y


def test_scorers_use_the_routers_weights_tiers_and_routing(router_data):
    X, Y = router_data
    router = HybridRouterRegressor(
        Ridge(), KNeighborsRegressor(), [0.5, 0.5], threshold=5.0
    ).fit(X, Y)
    routed = router.route(X)
    assert ROUTING_SCORERS["medium_plus_recall"](router, X, Y) == medium_plus_recall(
        Y, routed, [0.5, 0.5]
    )
    assert ROUTING_SCORERS["skip_rate"](router, X, Y) == pytest.approx(1 - routed.mean())
    assert ROUTING_SCORERS["neg_mae"](router, X, Y) == pytest.approx(
        -weighted_average_mae(Y, router.predict(X), [0.5, 0.5])
    )
    assert ROUTING_SCORERS["tier_accuracy"](router, X, Y) == tier_accuracy(
        Y, router.predict(X), [0.5, 0.5]
    )
    given = make_expected_cost_scorer(1.3, 37.9)(router, X, Y)
    assert given == pytest.approx(-(1.3 + routed.mean() * 37.9))
    measured = ROUTING_SCORERS["neg_expected_cost"](router, X, Y)
    assert np.isfinite(measured) and measured < 0
    assert get_routing_scorer("skip_rate") is ROUTING_SCORERS["skip_rate"]
    assert get_routing_scorer("r2")(router, X, Y) == pytest.approx(router.score(X, Y))


def test_grid_search_with_routing_scorers_and_refit(router_data):
    X, Y = router_data
    router = HybridRouterRegressor(Ridge(), KNeighborsRegressor(), [0.5, 0.5])
    thresholds = [0.0, 3.0, 5.0, 7.0, 11.0]
    search = GridSearchCV(
        router,
        {"threshold": thresholds},
        cv=KFold(3, shuffle=True, random_state=0),
        scoring=ROUTING_SCORERS,
        refit="skip_rate",
    ).fit(X, Y)
    recall = search.cv_results_["mean_test_medium_plus_recall"]
    skip = search.cv_results_["mean_test_skip_rate"]
    assert recall[0] == 1.0 and skip[0] == 0.0  # threshold 0 routes all
    assert skip[-1] == 1.0  # threshold 11 routes none
    assert np.all(np.diff(skip) >= 0) and np.all(np.diff(recall) <= 0)
    assert search.best_params_ == {"threshold": 11.0}
    assert search.best_estimator_.threshold == 11.0


def test_measured_cost_of_every_candidate_when_its_stages_come_from_the_caches(router_data):
    """Each candidate's router owns a copy of the cached fit whose rows come from the
    prediction cache: its cost is the one measured on the same fitted state."""
    from hybrid_estimators.router import clear_cache, measured_seconds_per_row

    X, Y = router_data
    clear_cache()
    router = HybridRouterRegressor(Ridge(), KNeighborsRegressor(), [0.5, 0.5])
    search = GridSearchCV(
        router, {"threshold": [0.0, 5.0, 11.0]}, cv=KFold(3), scoring=ROUTING_SCORERS,
        refit=False,
    ).fit(X, Y)
    cost = search.cv_results_["mean_test_neg_expected_cost"]
    assert np.isfinite(cost).all() and (cost < 0).all()
    assert cost[0] < cost[-1]  # routing everything costs more than routing nothing

    first = HybridRouterRegressor(Ridge(), KNeighborsRegressor(), [0.5, 0.5]).fit(X, Y)
    first.predict(X)
    copy = HybridRouterRegressor(Ridge(), KNeighborsRegressor(), [0.5, 0.5]).fit(X, Y)
    copy.predict(X)  # served by the cache: its stages never run
    assert copy.stage2_ is not first.stage2_
    assert measured_seconds_per_row(copy.stage2_) == measured_seconds_per_row(first.stage2_)
    assert measured_seconds_per_row(KNeighborsRegressor().fit(X, Y)) is None
