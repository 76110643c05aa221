"""cascade_report, its JSON/frame/text forms, CascadeFrontierDisplay and ``evaluate``."""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from hybrid_estimators import filters
from hybrid_estimators.datasets import make_articles
from hybrid_estimators.evaluation import (
    DEFAULT_THRESHOLDS,
    DISTRIBUTION_METRICS,
    METRICS,
    MIN_VERDICT_ARTICLES,
    CascadeFrontierDisplay,
    CascadeReport,
    cascade_report,
    format_report,
)
from hybrid_estimators.metrics import medium_plus_recall
from hybrid_estimators.router import HybridRouterRegressor
from hybrid_estimators.text import ArticleText
from hybrid_estimators.tiers import apply_gatekeepers, tier_of, weighted_average

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = np.array([0.6, 0.4])
THRESHOLD = 4.3
SECONDS = {"stage1": 0.002, "stage2": 0.05}
TEXTS = FunctionTransformer(np.ravel)  # ArticleText's one column -> what TfidfVectorizer reads


from hybrid_estimators.cli import evaluate as evaluate_command  # noqa: E402
from hybrid_estimators.cli._common import common_options  # noqa: E402


# --- data whose answers are known ----------------------------------------------


@pytest.fixture(scope="module")
def data():
    """Distinct rows; dimension 1 is non-linear, so a linear Stage 1 errs on it."""
    rng = np.random.RandomState(0)
    X = rng.uniform(0, 10, size=(150, 3))
    Y = np.c_[X[:, 0], X[:, 1] * X[:, 2] / 10]
    return X, Y


@pytest.fixture(scope="module")
def stage1(data):
    return Ridge().fit(*data)


@pytest.fixture(scope="module")
def exact_stage2(data):
    """Returns the true scores of every training row (1-NN on distinct rows)."""
    return KNeighborsRegressor(n_neighbors=1).fit(*data)


def make_router(stage1, stage2, data, threshold=THRESHOLD, **params):
    return HybridRouterRegressor(
        stage1, stage2, WEIGHTS, threshold=threshold, prefit=["stage1", "stage2"], **params
    ).fit(*data)


@pytest.fixture(scope="module")
def exact_router(stage1, exact_stage2, data):
    return make_router(stage1, exact_stage2, data)


@pytest.fixture(scope="module")
def exact_report(exact_router, data):
    return cascade_report(exact_router, *data, n_bootstraps=300, random_state=0)


def averages(scores, gatekeepers=None):
    scores = np.clip(scores, 0, 10)
    return apply_gatekeepers(scores, weighted_average(scores, WEIGHTS), gatekeepers)[0]


def value(estimate):
    return estimate["value"]


def all_estimates(node):
    """Every {"value", "low", "high"} dict of a (to_dict) report."""
    if isinstance(node, dict):
        if set(node) == {"value", "low", "high"}:
            yield node
        else:
            for child in node.values():
                yield from all_estimates(child)
    elif isinstance(node, list):
        for child in node:
            yield from all_estimates(child)


# --- cascade_report -----------------------------------------------------------------


def test_an_exact_stage2_is_perfect_and_the_hybrid_errs_only_where_it_skips(
    exact_report, exact_router, stage1, data
):
    X, Y = data
    stage1_errors = np.abs(averages(stage1.predict(X)) - averages(Y))
    routed = exact_router.route(X)
    assert 0 < routed.sum() < len(Y)

    systems = exact_report.systems
    assert value(systems["stage2"]["weighted_average_mae"]) == 0
    for metric in ("tier_accuracy", "medium_plus_recall", "medium_plus_precision"):
        assert value(systems["stage2"][metric]) == 1
    assert all(value(e) == 0 for e in systems["stage2"]["mae"].values())
    assert value(systems["stage1"]["weighted_average_mae"]) == pytest.approx(stage1_errors.mean())
    skipped = ~routed
    assert value(systems["hybrid"]["weighted_average_mae"]) == pytest.approx(
        stage1_errors[skipped].mean() * skipped.mean()
    )
    dimension_1 = np.abs(np.clip(stage1.predict(X)[:, 1], 0, 10) - Y[:, 1])
    assert value(systems["stage1"]["mae"]["dim_1"]) == pytest.approx(dimension_1.mean())
    assert value(systems["hybrid"]["mae"]["dim_1"]) == pytest.approx(
        dimension_1[skipped].sum() / len(Y)
    )


def test_the_paired_difference_of_an_exact_stage2_is_negative(
    exact_report, exact_router, stage1, data
):
    X, Y = data
    stage1_errors = np.abs(averages(stage1.predict(X)) - averages(Y))
    routed = exact_router.route(X)
    comparison = exact_report.comparison
    assert comparison["all"]["n"] == len(Y)
    assert comparison["routed"]["n"] == routed.sum()
    assert value(comparison["all"]["difference"]) == pytest.approx(-stage1_errors.mean())
    assert value(comparison["routed"]["difference"]) == pytest.approx(-stage1_errors[routed].mean())
    assert value(comparison["routed"]["stage2_mae"]) == 0
    assert comparison["all"]["difference"]["high"] < 0
    assert comparison["routed"]["difference"]["high"] < 0
    assert comparison["routed"]["stage2_better"] and exact_report.stage2_better


def test_a_stage2_equal_to_stage1_earns_nothing(stage1, data):
    router = make_router(stage1, stage1, data)
    report = cascade_report(router, *data, n_bootstraps=200, random_state=0)
    for scope in ("all", "routed"):
        difference = report.comparison[scope]["difference"]
        assert difference == {"value": 0.0, "low": 0.0, "high": 0.0}
        assert not report.comparison[scope]["stage2_better"]
    assert not report.stage2_better
    same = [
        m for m in METRICS if m not in ("skip_rate", "seconds_per_article", "medium_plus_routed")
    ]
    for metric in same:
        assert report.systems["hybrid"][metric] == report.systems["stage1"][metric], metric
        assert report.systems["stage2"][metric] == report.systems["stage1"][metric], metric
    assert report.systems["hybrid"]["mae"] == report.systems["stage1"]["mae"]
    assert {value(p["weighted_average_mae"]) for p in report.grid} == {
        value(report.systems["stage1"]["weighted_average_mae"])
    }


def test_skip_rate_and_routing_recall_match_the_router(exact_report, exact_router, data):
    X, Y = data
    routed = exact_router.route(X)
    hybrid = exact_report.systems["hybrid"]
    assert value(hybrid["skip_rate"]) == pytest.approx(1 - routed.mean())
    assert value(hybrid["medium_plus_routed"]) == pytest.approx(
        medium_plus_recall(Y, routed, WEIGHTS, tiers=exact_router.tiers_)
    )
    assert value(exact_report.systems["stage1"]["skip_rate"]) == 1
    assert value(exact_report.systems["stage2"]["skip_rate"]) == 0
    at_threshold = [p for p in exact_report.grid if p["threshold"] == THRESHOLD]
    assert len(at_threshold) == 1 and at_threshold[0]["n_routed"] == routed.sum()
    assert {k: at_threshold[0][k] for k in METRICS} == {k: hybrid[k] for k in METRICS}


def test_the_grid_runs_from_all_of_stage2_to_all_of_stage1(exact_report, exact_router, data):
    thresholds = [p["threshold"] for p in exact_report.grid]
    assert thresholds == sorted(set(DEFAULT_THRESHOLDS) | {THRESHOLD})
    first = exact_report.grid[0]
    assert first["threshold"] == 0 and first["n_routed"] == len(data[1])
    assert first["weighted_average_mae"] == exact_report.systems["stage2"]["weighted_average_mae"]
    assert value(first["skip_rate"]) == 0

    report = cascade_report(
        exact_router, *data, thresholds=[10.5, 0.0], n_bootstraps=50, random_state=0
    )
    assert [p["threshold"] for p in report.grid] == [0.0, THRESHOLD, 10.5]
    beyond = report.grid[-1]
    assert beyond["n_routed"] == 0 and value(beyond["skip_rate"]) == 1
    for metric in ("weighted_average_mae", "tier_accuracy", "medium_plus_recall"):
        assert beyond[metric] == report.systems["stage1"][metric]
    maes = [value(p["weighted_average_mae"]) for p in exact_report.grid]
    assert maes == sorted(maes)  # an exact Stage 2: each article routed away costs MAE


def test_time_per_article_is_stage1_plus_the_routed_share_of_stage2(exact_router, data):
    X, Y = data
    report = cascade_report(exact_router, X, Y, n_bootstraps=0, seconds_per_article=SECONDS)
    share = exact_router.route(X).mean()
    t1, t2 = SECONDS["stage1"], SECONDS["stage2"]
    assert value(report.systems["stage1"]["seconds_per_article"]) == pytest.approx(t1)
    assert value(report.systems["stage2"]["seconds_per_article"]) == pytest.approx(t2)
    assert value(report.systems["hybrid"]["seconds_per_article"]) == pytest.approx(t1 + share * t2)
    for point in report.grid:
        assert value(point["seconds_per_article"]) == pytest.approx(
            t1 + point["n_routed"] / len(Y) * t2
        )


def test_stage_times_are_measured(exact_router, data):
    report = cascade_report(exact_router, *data, n_bootstraps=0)
    assert report.seconds_per_article["stage1"] > 0
    assert report.seconds_per_article["stage2"] > 0


def test_stage1_time_survives_the_router_cache(exact_router, data):
    exact_router.predict(data[0])  # Stage 1 rows are now cached
    report = cascade_report(exact_router, *data, n_bootstraps=0)
    assert report.seconds_per_article["stage1"] > 0


def test_intervals_hold_the_estimate_and_are_reproducible(exact_router, data):
    kwargs = {"n_bootstraps": 300, "seconds_per_article": SECONDS, "language": ["a", "b"] * 75}
    first = cascade_report(exact_router, *data, random_state=3, **kwargs).to_dict()
    again = cascade_report(exact_router, *data, random_state=3, **kwargs).to_dict()
    other = cascade_report(exact_router, *data, random_state=4, **kwargs).to_dict()
    assert first == again
    assert first["systems"] != other["systems"]
    assert first["random_state"] == 3 and first["n_bootstraps"] == 300
    estimates = list(all_estimates(first))
    assert len(estimates) > 500
    for estimate in estimates:
        if estimate["value"] is not None:
            assert estimate["low"] <= estimate["value"] + 1e-12
            assert estimate["value"] <= estimate["high"] + 1e-12


def test_a_wider_confidence_gives_wider_intervals(exact_router, data):
    kwargs = {"n_bootstraps": 400, "random_state": 0, "seconds_per_article": SECONDS}
    narrow = cascade_report(exact_router, *data, confidence=0.5, **kwargs)
    wide = cascade_report(exact_router, *data, confidence=0.95, **kwargs)
    mae_narrow = narrow.systems["stage1"]["weighted_average_mae"]
    mae_wide = wide.systems["stage1"]["weighted_average_mae"]
    assert mae_wide["low"] < mae_narrow["low"] < mae_narrow["high"] < mae_wide["high"]
    assert wide.confidence == 0.95


def test_breakdowns_by_true_tier_and_by_language(exact_report, exact_router, data):
    X, Y = data
    true_tiers = tier_of(averages(Y), exact_router.tiers_)
    assert list(exact_report.by_tier) == ["high", "medium", "low"]
    for tier, systems in exact_report.by_tier.items():
        assert set(systems) == {"stage1", "stage2", "hybrid"}
        assert systems["stage1"]["n"] == np.sum(true_tiers == tier)
        assert value(systems["stage2"]["tier_accuracy"]) == 1
    assert exact_report.by_language == {}
    low_recall = exact_report.by_tier["low"]["stage1"]["medium_plus_recall"]
    assert low_recall["value"] != low_recall["value"]  # NaN: no MEDIUM+ article is low

    language = np.where(np.arange(len(Y)) < 100, "en", None)
    report = cascade_report(exact_router, X, Y, n_bootstraps=50, language=language)
    assert {k: v["hybrid"]["n"] for k, v in report.by_language.items()} == {
        "en": 100,
        "unknown": 50,
    }
    stage1 = [v["stage1"] for v in report.by_language.values()]
    overall = value(report.systems["stage1"]["weighted_average_mae"])
    assert sum(value(m["weighted_average_mae"]) * m["n"] for m in stage1) / len(Y) == pytest.approx(
        overall
    )


def test_the_language_column_of_a_dataframe_is_used(data):
    X, Y = data
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(language=["en", "de", "fr"] * 50)
    numeric = ColumnTransformer([("numbers", "passthrough", ["a", "b", "c"])])
    stage1 = make_pipeline(numeric, Ridge()).fit(frame, Y)
    stage2 = make_pipeline(numeric, KNeighborsRegressor(n_neighbors=1)).fit(frame, Y)
    router = make_router(stage1, stage2, (frame, Y))
    report = cascade_report(router, frame, Y, n_bootstraps=50, random_state=0)
    assert {k: v["stage2"]["n"] for k, v in report.by_language.items()} == {
        "de": 50,
        "en": 50,
        "fr": 50,
    }
    assert value(report.systems["stage2"]["weighted_average_mae"]) == 0


def test_stage1_predictions_replace_stage1_and_its_routing(exact_router, data):
    X, Y = data
    given = Y + np.array([1.5, -2.0])  # known errors, some clipped at 0 and 10
    report = cascade_report(exact_router, X, Y, n_bootstraps=50, stage1_predictions=given)
    errors = np.abs(averages(given) - averages(Y))
    routed = np.clip(weighted_average(given, WEIGHTS), 0, 10) >= THRESHOLD
    assert report.stage1_source == "stage1_predictions"
    assert value(report.systems["stage1"]["weighted_average_mae"]) == pytest.approx(errors.mean())
    assert value(report.systems["stage1"]["mae"]["dim_0"]) == pytest.approx(
        np.abs(np.clip(given[:, 0], 0, 10) - Y[:, 0]).mean()
    )
    assert value(report.systems["hybrid"]["skip_rate"]) == pytest.approx(1 - routed.mean())
    assert value(report.systems["hybrid"]["weighted_average_mae"]) == pytest.approx(
        errors[~routed].sum() / len(Y)
    )
    assert np.isnan(report.seconds_per_article["stage1"])  # not run, not timed
    assert report.to_dict()["seconds_per_article"]["stage1"] is None
    assert report.seconds_per_article["stage2"] > 0


def test_stage2_predictions_replace_stage2_and_are_blended_as_the_router_blends(
    stage1, exact_stage2, data
):
    X, Y = data
    given = Y + np.array([1.0, -1.0])  # a Stage 2 with known errors
    report = cascade_report(make_router(stage1, exact_stage2, data), X, Y, n_bootstraps=20,
                            stage2_predictions=given)
    assert report.stage2_source == "stage2_predictions" and report.stage2_weight == 1
    assert value(report.systems["stage2"]["weighted_average_mae"]) == pytest.approx(
        np.abs(averages(given) - averages(Y)).mean()
    )
    assert np.isnan(report.seconds_per_article["stage2"])

    half = make_router(stage1, exact_stage2, data, stage2_weight=0.5)
    report = cascade_report(half, X, Y, n_bootstraps=20, stage2_predictions=given)
    blend = 0.5 * given + 0.5 * stage1.predict(X)
    routed = half.route(X)
    assert report.stage2_weight == 0.5
    assert value(report.systems["stage2"]["weighted_average_mae"]) == pytest.approx(
        np.abs(averages(blend) - averages(Y)).mean()
    )
    hybrid = np.where(routed[:, None], blend, stage1.predict(X))
    assert value(report.systems["hybrid"]["weighted_average_mae"]) == pytest.approx(
        np.abs(averages(hybrid) - averages(Y)).mean()
    )
    assert "stage2_weight=0.5" in report.to_text()
    assert CascadeReport.from_dict(json.loads(json.dumps(report.to_dict()))).stage2_weight == 0.5
    # What the report calls Stage 2 is what the router returns for a routed row.
    router_scores = cascade_report(half, X, Y, n_bootstraps=0)
    np.testing.assert_allclose(
        value(router_scores.systems["stage2"]["weighted_average_mae"]),
        np.abs(averages(half.predict_stage2(X)) - averages(Y)).mean(),
    )
    with pytest.raises(ValueError, match="router without Stage 2"):
        cascade_report(make_router(stage1, None, data), X, Y, stage2_predictions=given)


def test_repeated_out_of_fold_predictions_pool_their_repetitions(exact_router, data):
    X, Y = data
    runs = np.stack([Y + np.array([1.5, -2.0]), Y - np.array([0.5, 1.0])])  # two "repetitions"
    stage2 = np.stack([Y + 0.25, Y - 0.75])
    kwargs = {"n_bootstraps": 50, "random_state": 0}
    pooled = cascade_report(exact_router, X, Y, stage1_predictions=runs, stage2_predictions=stage2, **kwargs)
    each = [cascade_report(exact_router, X, Y, stage1_predictions=r, stage2_predictions=s, **kwargs)
            for r, s in zip(runs, stage2)]

    for system in ("stage1", "stage2", "hybrid"):
        for metric in ("weighted_average_mae", "tier_accuracy", "skip_rate"):
            assert value(pooled.systems[system][metric]) == pytest.approx(
                np.mean([value(report.systems[system][metric]) for report in each])
            )
    # Routed articles are pooled over the repetitions in which each is routed.
    routed = [np.clip(weighted_average(r, WEIGHTS), 0, 10) >= THRESHOLD for r in runs]
    errors = [[np.abs(averages(p) - averages(Y)) for p in (r, s)] for r, s in zip(runs, stage2)]
    difference = sum(((e2 - e1) * m).sum() for (e1, e2), m in zip(errors, routed)) / sum(m.sum() for m in routed)
    assert value(pooled.comparison["routed"]["difference"]) == pytest.approx(difference)
    assert pooled.comparison["routed"]["n"] == round(np.mean([m.sum() for m in routed]))
    # One repetition given as 3-D is the 2-D report (times given: measured ones vary).
    kwargs["seconds_per_article"] = SECONDS
    assert cascade_report(exact_router, X, Y, stage1_predictions=runs[:1], **kwargs).to_dict() == \
        cascade_report(exact_router, X, Y, stage1_predictions=runs[0], **kwargs).to_dict()
    with pytest.raises(ValueError, match="2 repetitions, stage2_predictions 3"):
        cascade_report(exact_router, X, Y, stage1_predictions=runs, stage2_predictions=np.stack([Y] * 3))


def test_the_weighted_average_error_applies_gatekeepers(stage1, exact_stage2, data):
    X, Y = data
    gatekeepers = {"dim_1": (3.0, 2.0)}
    router = make_router(stage1, exact_stage2, data, gatekeepers=gatekeepers)
    report = cascade_report(router, X, Y, n_bootstraps=0)
    gates = {1: (3.0, 2.0)}
    errors = np.abs(averages(stage1.predict(X), gates) - averages(Y, gates))
    assert value(report.systems["stage1"]["weighted_average_mae"]) == pytest.approx(errors.mean())
    assert errors.mean() != pytest.approx(np.abs(averages(stage1.predict(X)) - averages(Y)).mean())


def test_a_stage1_only_router_reports_stage2_as_unavailable(stage1, data):
    router = HybridRouterRegressor(
        stage1, None, WEIGHTS, threshold=THRESHOLD, prefit=["stage1"]
    ).fit(*data)
    report = cascade_report(router, *data, n_bootstraps=50, random_state=0)
    assert not report.stage2_available and not report.stage2_better
    assert report.systems["stage2"] is None and report.comparison is None
    assert report.grid == []
    assert (
        report.systems["hybrid"]["weighted_average_mae"]
        == report.systems["stage1"]["weighted_average_mae"]
    )
    assert value(report.systems["hybrid"]["skip_rate"]) == 1
    assert all(systems["stage2"] is None for systems in report.by_tier.values())
    assert "unavailable" in report.to_text()
    json.dumps(report.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="no Stage 2"):
        CascadeFrontierDisplay.from_report(report)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"confidence": 1.0}, "confidence"),
        ({"n_bootstraps": -1}, "n_bootstraps"),
        ({"stage1_predictions": np.zeros((3, 2))}, r"shape \(150, 2\)"),
        ({"language": ["en"]}, "language has 1 entries"),
        ({"thresholds": [np.nan]}, "finite"),
    ],
)
def test_invalid_arguments_are_refused(exact_router, data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cascade_report(exact_router, *data, **kwargs)


def test_y_must_hold_the_routers_dimensions(exact_router, data):
    X, Y = data
    with pytest.raises(ValueError, match="not the router's dimensions"):
        cascade_report(exact_router, X, pd.DataFrame(Y, columns=["a", "b"]))
    swapped = pd.DataFrame(Y[:, ::-1], columns=["dim_1", "dim_0"])
    kwargs = {"n_bootstraps": 20, "random_state": 0, "seconds_per_article": SECONDS}
    assert (
        cascade_report(exact_router, X, swapped, **kwargs).to_text()
        == cascade_report(exact_router, X, Y, **kwargs).to_text()
    )


# --- JSON, frame, text ---------------------------------------------------------------


def test_json_round_trip(exact_report):
    data = exact_report.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    back = CascadeReport.from_dict(json.loads(text))
    assert back.to_dict() == data
    assert format_report(back) == format_report(exact_report)
    assert set(data) == {
        "n",
        "threshold",
        "confidence",
        "n_bootstraps",
        "random_state",
        "dimension_names",
        "tiers",
        "stage1_source",
        "stage2_available",
        "seconds_per_article",
        "systems",
        "by_tier",
        "by_language",
        "grid",
        "comparison",
        "stage2_better",
        "stage2_source",
        "stage2_weight",
        "distribution",
        "undefined_metrics",
        "training_articles",
        "in_sample",
        "verdict",
        "verdict_reason",
    }
    assert data["n"] == 150 and data["threshold"] == THRESHOLD and data["confidence"] == 0.9
    assert set(data["systems"]["hybrid"]) == {"n", "mae", *METRICS}


def test_to_frame_has_one_row_per_estimate(exact_report):
    frame = exact_report.to_frame()
    per_metrics = len(METRICS) + 2  # and one MAE per dimension
    n_tables = 3 + 3 * 3 + len(exact_report.grid)
    n_distribution = 3 * len(DISTRIBUTION_METRICS)  # one row per system and statistic
    assert len(frame) == n_tables * per_metrics + n_distribution
    systems = frame.query("section == 'system'").pivot(
        index="system", columns="metric", values="value"
    )
    assert systems.loc["stage2", "weighted_average_mae"] == 0
    assert systems.loc["hybrid", "skip_rate"] == value(exact_report.systems["hybrid"]["skip_rate"])


def test_the_text_shows_every_system_the_verdict_and_the_grid(exact_report):
    text = exact_report.to_text()
    assert text.startswith("Cascade report: 150 articles, threshold 4.30, 90% bootstrap intervals")
    for needle in (
        "stage1",
        "stage2",
        "hybrid",
        "Verdict: Stage 2 earns its place",
        "By true tier",
        "dim_1",
        "4.30 *",
    ):
        assert needle in text, needle
    table = text.split("\n\n")[1].splitlines()
    assert len({len(line) for line in table}) == 1  # fixed width


# --- display -----------------------------------------------------------------------


def test_the_frontier_display_draws_mae_time_references_and_threshold(exact_report):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    display = CascadeFrontierDisplay.from_report(exact_report, ax=ax)
    assert display.ax_ is ax and display.figure_ is ax.figure
    assert display.ax_time_ is not ax and display.ax_time_.figure is ax.figure
    grid = exact_report.grid
    assert list(display.line_.get_xdata()) == [p["threshold"] for p in grid]
    assert list(display.line_.get_ydata()) == [value(p["weighted_average_mae"]) for p in grid]
    assert np.allclose(
        display.time_line_.get_ydata(), [1000 * value(p["seconds_per_article"]) for p in grid]
    )
    assert list(display.threshold_line_.get_xdata()) == [THRESHOLD, THRESHOLD]
    assert display.band_ is not None
    labels = [text.get_text() for text in display.ax_time_.get_legend().get_texts()]
    for label in (
        "hybrid MAE",
        "Stage 1 only MAE",
        "Stage 2 only MAE",
        "threshold 4.30",
        "hybrid ms/article",
        "Stage 2 only ms/article",
    ):
        assert label in labels
    stage1_line = [line for line in ax.get_lines() if line.get_label() == "Stage 1 only MAE"][0]
    assert stage1_line.get_ydata()[0] == value(
        exact_report.systems["stage1"]["weighted_average_mae"]
    )


def test_the_display_from_an_estimator_and_from_json(exact_router, data, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    display = CascadeFrontierDisplay.from_estimator(exact_router, *data, n_bootstraps=0)
    try:
        assert display.band_ is None  # no resamples, no band
        display.figure_.savefig(tmp_path / "frontier.png")
        assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        plt.close(display.figure_)
    report = cascade_report(exact_router, *data, n_bootstraps=20)
    again = CascadeFrontierDisplay.from_report(json.loads(json.dumps(report.to_dict())))
    plt.close(again.figure_)
    assert list(again.mae_low) == [p["weighted_average_mae"]["low"] for p in report.grid]


# --- the evaluate command -------------------------------------------------------------


def parse(argv):
    parser = argparse.ArgumentParser(prog="hybrid-estimators")
    evaluate_command.add_parser(parser.add_subparsers(dest="command"), parents=[common_options()])
    return parser.parse_args(argv)


def write_labelled_folder(folder, X, Y):
    folder.mkdir(parents=True)
    records = X.to_dict("records")
    for record, scores in zip(records, Y.to_dict("records"), strict=True):
        record["scores"] = scores
    (folder / "articles.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    dimensions = {name: 1.0 for name in Y.columns}
    (folder / "filter.yaml").write_text(yaml.safe_dump({"name": "demo", "dimensions": dimensions}))
    return folder


@pytest.fixture(scope="module")
def text_router():
    """A filter-like router on words: Ridge on TF-IDF, and an exact 1-NN Stage 2."""
    X, Y = make_articles(60, random_state=0)
    stage1 = make_pipeline(ArticleText(), TEXTS, TfidfVectorizer(), Ridge(alpha=0.1)).fit(X, Y)
    stage2 = make_pipeline(ArticleText(), TEXTS, TfidfVectorizer(), KNeighborsRegressor(1)).fit(
        X, Y
    )
    router = HybridRouterRegressor(
        FrozenEstimator(stage1),
        FrozenEstimator(stage2),
        {"energy_progress": 0.5, "health_benefit": 0.25, "economic_impact": 0.25},
        threshold=4.0,
    ).fit(X, Y)
    return router, X, Y


@pytest.fixture
def text_filter(text_router, monkeypatch, tmp_path_factory):
    """A filter folder whose load_filter returns `text_router`, and its training folder."""
    router, X, Y = text_router
    folder = tmp_path_factory.mktemp("filter")
    (folder / "config.yaml").write_text("name: demo\n")
    monkeypatch.setattr(filters, "load_filter", lambda path, **options: router)
    labelled = write_labelled_folder(tmp_path_factory.mktemp("data") / "demo", X, Y)
    return folder, labelled


def test_evaluate_prints_the_tables_and_writes_json_and_plot(text_filter, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    folder, labelled = text_filter
    out, plot = tmp_path / "out" / "report.json", tmp_path / "frontier.png"
    args = parse(
        [
            "evaluate",
            "--filter",
            str(folder),
            str(labelled),
            "-o",
            str(out),
            "--plot",
            str(plot),
            "--n-bootstraps",
            "100",
            "--random-state",
            "1",
        ]
    )
    assert args.handler is evaluate_command.run
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Cascade report: 60 articles, threshold 4.00")
    report = json.loads(out.read_text())
    assert report["n"] == 60 and report["random_state"] == 1 and report["n_bootstraps"] == 100
    assert report["stage1_source"] == "router"
    assert report["systems"]["stage2"]["weighted_average_mae"]["value"] == 0  # 1-NN, seen rows
    assert report["stage2_better"]
    assert printed == format_report(CascadeReport.from_dict(report))
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_cv_scores_stage1_out_of_fold(text_filter, tmp_path, capsys):
    folder, labelled = text_filter
    reports = {}
    for name, extra in (("in_sample", []), ("cv", ["--cv", "4"])):
        out = tmp_path / f"{name}.json"
        args = parse(
            [
                "evaluate",
                "--filter",
                str(folder),
                str(labelled),
                "-o",
                str(out),
                "--n-bootstraps",
                "0",
                *extra,
            ]
        )
        assert evaluate_command.run(args) == 0
        reports[name] = json.loads(out.read_text())
    capsys.readouterr()
    assert reports["cv"]["stage1_source"] == "stage1_predictions"
    mae = {k: r["systems"]["stage1"]["weighted_average_mae"]["value"] for k, r in reports.items()}
    assert mae["cv"] > 1.3 * mae["in_sample"]  # the probe has seen these articles
    assert reports["cv"]["seconds_per_article"]["stage1"] > 0
    stage2 = [r["systems"]["stage2"]["weighted_average_mae"] for r in reports.values()]
    assert stage2[0] == stage2[1]  # Stage 2 is the filter's either way


def test_out_of_fold_stage1_refits_only_the_probe(text_router):
    router, X, Y = text_router
    predictions, seconds = evaluate_command.out_of_fold_stage1(router, X, Y, cv=3, random_state=0)
    assert predictions.shape == Y.shape and seconds > 0
    again, _ = evaluate_command.out_of_fold_stage1(router, X, Y, cv=3, random_state=0)
    assert np.array_equal(predictions, again)
    assert not np.allclose(predictions, router.predict_stage1(X))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--refit-stage2"], "--refit-stage2 is not supported yet"),
        (["--cv", "100"], "--cv 100 needs at least 100 articles"),
    ],
)
def test_evaluate_fatal_errors_are_one_line(text_filter, capsys, extra, message):
    folder, labelled = text_filter
    args = parse(["evaluate", "--filter", str(folder), str(labelled), *extra])
    assert evaluate_command.run(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hybrid-estimators: error: ") and message in err
    assert err.count("\n") == 1


def test_evaluate_refuses_articles_labelled_for_another_filter(text_filter, tmp_path, capsys):
    folder, _ = text_filter
    X, Y = make_articles(5, random_state=1)
    other = write_labelled_folder(tmp_path / "other", X, Y.set_axis(["a", "b", "c"], axis=1))
    assert evaluate_command.run(parse(["evaluate", "--filter", str(folder), str(other)])) == 2
    err = capsys.readouterr().err
    assert "['a', 'b', 'c']" in err and "energy_progress" in err


def test_evaluate_refuses_missing_folders(tmp_path, capsys):
    args = parse(["evaluate", "--filter", str(tmp_path / "none"), str(tmp_path)])
    assert evaluate_command.run(args) == 2
    assert "filter folder" in (err := capsys.readouterr().err) and "does not exist" in err


def test_evaluate_help_documents_every_option_with_its_default():
    parser = argparse.ArgumentParser(prog="hybrid-estimators")
    command = evaluate_command.add_parser(parser.add_subparsers(), parents=[common_options()])
    text = command.format_help()
    for option in (
        "--filter",
        "--plot",
        "--cv",
        "--refit-stage2",
        "--random-state",
        "--n-bootstraps",
        "--confidence",
        "LABELLED_DIR",
    ):
        assert option in text
    assert "(default: 1000)" in text and "(default: 0.9)" in text
    assert all(action.help for action in command._actions)


def test_evaluate_a_saved_minilm_filter_with_cv(minilm_path, tmp_path, capsys):
    """A real filter folder (MiniLM + MLP probe) through load_filter."""
    from hybrid_estimators.embedding import E5Embedder
    from hybrid_estimators.filters import FilterSpec, save_filter
    from hybrid_estimators.probe import make_probe

    X, Y = make_articles(40, random_state=0)
    weights = {"energy_progress": 0.5, "health_benefit": 0.25, "economic_impact": 0.25}
    stage1 = make_pipeline(
        ArticleText(),
        E5Embedder(minilm_path, prefix="", show_progress_bar=False),
        make_probe((16,)),
    ).fit(X, Y)
    router = HybridRouterRegressor(FrozenEstimator(stage1), FrozenEstimator(stage1), weights).fit(
        X, Y
    )
    spec = FilterSpec.from_dict(
        {
            "name": "demo",
            "version": "v1",
            "dimensions": weights,
            "hybrid_inference": {
                "embedding_model": minilm_path,
                "embedding_prefix": "",
                "stage2": None,
            },
        }
    )
    folder = save_filter(router, tmp_path / "filter", spec, training_data=(X, Y))
    labelled = write_labelled_folder(tmp_path / "data", X, Y)
    out = tmp_path / "report.json"
    args = parse(
        [
            "evaluate",
            "--filter",
            str(folder),
            str(labelled),
            "--cv",
            "3",
            "--n-bootstraps",
            "50",
            "-o",
            str(out),
        ]
    )
    assert evaluate_command.run(args) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 40 and report["dimension_names"] == list(weights)
    assert report["stage1_source"] == "stage1_predictions"
    assert report["seconds_per_article"]["stage1"] > 0
    assert "Cascade report: 40 articles" in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_the_shipped_filter_end_to_end(seece_with_tiny_stage2, tmp_path, capsys):
    """The shipped Stage 1 (offline e5) and a tiny Qwen2 Stage 2 on a handful of generated articles
    (labels are random)."""
    folder = seece_with_tiny_stage2
    config = yaml.safe_load((folder / "config.yaml").read_text())
    names = list(config["dimensions"])
    X, _ = make_articles(8, random_state=0)
    Y = pd.DataFrame(np.random.RandomState(0).uniform(0, 10, (8, len(names))), columns=names)
    labelled = write_labelled_folder(tmp_path / "data", X, Y)
    out = tmp_path / "report.json"
    args = parse(
        [
            "evaluate",
            "--filter",
            str(folder),
            str(labelled),
            "-o",
            str(out),
            "--n-bootstraps",
            "100",
            "--random-state",
            "0",
        ]
    )
    assert evaluate_command.run(args) == 0
    report = json.loads(out.read_text())
    assert report["stage2_available"] and report["n"] == 8
    seconds = report["seconds_per_article"]
    assert 0 < seconds["stage1"] and 0 < seconds["stage2"]
    assert "Verdict:" in capsys.readouterr().out


# --- no in-sample verdict ----------------------------------------------------------------


@pytest.fixture
def seece_trained_on(seece_with_tiny_stage2, tmp_path):
    """A copy of the two-stage seece filter recording `X` as its training articles."""
    import shutil

    from hybrid_estimators.text import text_hashes

    def make(X, stage2_record=True):
        folder = tmp_path / "seece" / "v1"
        shutil.copytree(seece_with_tiny_stage2, folder)
        path = folder / "probe" / "metadata.json"
        metadata = json.loads(path.read_text())
        metadata["training_articles_sha256"] = sorted(set(text_hashes(X)))
        metadata["n_training_articles"] = len(X)
        path.write_text(json.dumps(metadata))
        if stage2_record:  # as the shipped filter's: Stage 2 fitted on as many articles
            record = {"data": "generated", "n_articles": len(X)}
            (folder / "model" / "training.json").write_text(json.dumps(record))
        return folder

    return make


def seece_articles(folder, n, random_state=0):
    names = list(yaml.safe_load((folder / "config.yaml").read_text())["dimensions"])
    X, _ = make_articles(n, random_state=random_state)
    Y = pd.DataFrame(np.random.RandomState(0).uniform(0, 10, (n, len(names))), columns=names)
    return X, Y


def run_evaluate(folder, labelled, *extra):
    return evaluate_command.run(
        parse(["evaluate", "--filter", str(folder), str(labelled), "--n-bootstraps", "50", *extra])
    )


@pytest.mark.slow
@pytest.mark.parametrize("cv", [[], ["--cv", "4"]])
def test_evaluate_gives_no_verdict_on_training_articles_only(
    seece_trained_on, seece_with_tiny_stage2, tmp_path, capsys, cv
):
    """The reproduction: every article is a training article (of Stage 2 too, so --cv does not help)."""
    X, Y = seece_articles(seece_with_tiny_stage2, 16)
    folder = seece_trained_on(X)
    labelled = write_labelled_folder(tmp_path / "data", X, Y)
    assert run_evaluate(folder, labelled, *cv) == 2
    captured = capsys.readouterr()
    assert "Verdict" not in captured.out
    assert "no verdict: all 16 articles" in captured.err and "--allow-training-articles" in captured.err
    assert ("records for Stage 2;" if cv else "records for Stage 1 and Stage 2;") in captured.err


@pytest.mark.slow
def test_a_stage2_without_a_training_record_is_said_unchecked(
    seece_trained_on, seece_with_tiny_stage2, tmp_path, capsys
):
    X, Y = seece_articles(seece_with_tiny_stage2, 30)  # --cv 3: 20 articles per fold
    folder = seece_trained_on(X, stage2_record=False)
    labelled = write_labelled_folder(tmp_path / "data", X, Y)
    out = tmp_path / "report.json"
    assert run_evaluate(folder, labelled, "--cv", "3", "-o", str(out)) == 0  # Stage 1 out of fold
    report = json.loads(out.read_text())
    assert report["n"] == 30 and report["training_articles"]["unchecked_stages"] == ["stage2"]
    assert "Training articles of Stage 2: not recorded, not checked" in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_leaves_training_articles_out_and_says_how_many(
    seece_trained_on, seece_with_tiny_stage2, tmp_path, capsys
):
    X, Y = seece_articles(seece_with_tiny_stage2, 12)
    folder = seece_trained_on(X.iloc[:5])
    labelled = write_labelled_folder(tmp_path / "data", X, Y)
    out = tmp_path / "report.json"
    assert run_evaluate(folder, labelled, "-o", str(out)) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 7 and not report["in_sample"]
    assert report["training_articles"] == {
        "recorded": True, "n_given": 12, "n_trained_on": 5, "n_left_out": 5, "unchecked_stages": []
    }
    printed = capsys.readouterr().out
    assert "Training articles: 5 of the 12 articles given were left out" in printed
    assert "in sample" not in printed
    assert "Verdict: inconclusive (only" in printed  # 7 articles: below the minimum


@pytest.mark.slow
def test_evaluate_allowed_training_articles_marks_every_number_in_sample(
    seece_trained_on, seece_with_tiny_stage2, tmp_path, capsys
):
    X, Y = seece_articles(seece_with_tiny_stage2, 10)
    folder = seece_trained_on(X)
    labelled = write_labelled_folder(tmp_path / "data", X, Y)
    out = tmp_path / "report.json"
    assert run_evaluate(folder, labelled, "-o", str(out), "--allow-training-articles") == 0
    report = json.loads(out.read_text())
    assert report["n"] == 10 and report["in_sample"]
    assert report["training_articles"]["n_trained_on"] == 10
    assert report["training_articles"]["n_left_out"] == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Cascade report [in sample]: 10 articles")
    assert "IN SAMPLE: 10 of these 10 articles are articles a stage was trained on" in printed
    assert "Verdict [in sample]: inconclusive" in printed
    titles = [line for line in printed.splitlines() if line.startswith(("MAE per", "By true", "Hybrid over"))]
    assert titles and all(line.endswith("[in sample]") for line in titles)
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    display = CascadeFrontierDisplay.from_report(report, ax=Figure().subplots())
    assert display.ax_.get_title().endswith("IN SAMPLE (a stage was trained on these articles)")


@pytest.mark.slow
def test_the_python_api_leaves_out_or_warns_in_sample(seece_trained_on, seece_with_tiny_stage2):
    from hybrid_estimators.exceptions import InSampleWarning

    X, Y = seece_articles(seece_with_tiny_stage2, 9)
    filter_ = filters.load_filter(seece_trained_on(X.iloc[:3]))
    kwargs = {"n_bootstraps": 20, "random_state": 0, "seconds_per_article": SECONDS}  # untimed
    report = cascade_report(filter_, X, Y, **kwargs)
    assert report.n == 6 and report.training_articles["n_left_out"] == 3 and not report.in_sample
    held_out = cascade_report(filter_, X.iloc[3:], Y.iloc[3:], **kwargs)
    assert held_out.to_dict()["systems"] == report.to_dict()["systems"]  # the same six articles
    with pytest.warns(InSampleWarning, match="3 of 9 articles"):
        kept = cascade_report(filter_, X, Y, allow_training_articles=True, **kwargs)
    assert kept.n == 9 and kept.in_sample
    with pytest.raises(ValueError, match="no verdict: all 3 articles"):
        cascade_report(filter_, X.iloc[:3], Y.iloc[:3], **kwargs)
    # Stage 1 scored out of fold (given) and a Stage 2 trained on them: still in sample.
    stage1 = filter_.predict_stage1(X)
    assert cascade_report(filter_, X, Y, stage1_predictions=stage1, **kwargs).n == 6


def test_cv_refuses_folds_too_small_for_the_probe(text_filter, text_router, tmp_path, capsys):
    folder, _ = text_filter
    _, X, Y = text_router
    labelled = write_labelled_folder(tmp_path / "small", X.iloc[:16], Y.iloc[:16])
    assert run_evaluate(folder, labelled, "--cv", "4") == 2
    err = capsys.readouterr().err
    assert "--cv 4 on 16 articles refits the probe on 12 articles per fold" in err
    assert f"at least {evaluate_command.MIN_TRAINING_ARTICLES_PER_FOLD} training articles" in err
    assert "at least 27 labelled articles for --cv 4" in err
    enough = write_labelled_folder(tmp_path / "enough", X.iloc[:27], Y.iloc[:27])
    assert run_evaluate(folder, enough, "--cv", "4") == 0  # 20 per fold


def test_evaluate_says_when_training_articles_cannot_be_checked(text_filter, capsys, caplog):
    folder, labelled = text_filter  # a router without metadata
    assert run_evaluate(folder, labelled) == 0
    assert "records no training articles" in caplog.text
    printed = capsys.readouterr().out
    assert "Training articles of Stage 1 and Stage 2: not recorded, not checked" in printed


# --- the verdict ----------------------------------------------------------------------------


def test_the_verdict_is_inconclusive_on_few_routed_articles(exact_router, data):
    X, Y = data
    report = cascade_report(exact_router, X[:40], Y[:40], n_bootstraps=200, random_state=0)
    routed = report.comparison["routed"]
    assert routed["n"] < MIN_VERDICT_ARTICLES and routed["difference"]["high"] < 0
    assert report.verdict == "inconclusive"
    assert f"a verdict needs at least {MIN_VERDICT_ARTICLES}" in report.verdict_reason
    assert "Verdict: inconclusive (only" in report.to_text()


def test_the_verdict_is_inconclusive_when_the_interval_includes_zero(stage1, data):
    noisy = make_router(stage1, NoisyStage(stage1, 0.05), data)
    report = cascade_report(noisy, *data, n_bootstraps=300, random_state=0)
    difference = report.comparison["routed"]["difference"]
    assert difference["low"] < 0 < difference["high"] and report.comparison["routed"]["n"] >= 30
    assert report.verdict == "inconclusive" and "includes zero" in report.verdict_reason
    assert "Verdict: inconclusive (the paired interval" in report.to_text()


def test_a_worse_stage2_is_said_to_be_worse(stage1, data):
    worse = make_router(stage1, NoisyStage(stage1, 2.0), data)
    report = cascade_report(worse, *data, n_bootstraps=200, random_state=0)
    assert report.comparison["routed"]["difference"]["low"] > 0
    assert report.verdict == "stage2_worse"
    assert "Verdict: Stage 2 does not earn its place: it is worse" in report.to_text()


class NoisyStage(RegressorMixin, BaseEstimator):
    """`stage`'s predictions plus seeded noise of standard deviation `scale`."""

    def __init__(self, stage=None, scale=1.0):
        self.stage = stage
        self.scale = scale

    def fit(self, X, Y):
        return self

    def predict(self, X):
        noise = np.random.RandomState(1).normal(scale=self.scale, size=(len(X), 2))
        return self.stage.predict(X) + noise

    def __sklearn_is_fitted__(self):
        return True


# --- distributions and HIGH recall -------------------------------------------------------


def test_distribution_statistics_match_their_definitions(exact_report, exact_router, stage1, data):
    from scipy.stats import ks_2samp

    X, Y = data
    true = averages(Y)
    predicted = averages(stage1.predict(X))
    statistics = exact_report.distribution["stage1"]
    assert statistics["n"] == 150
    assert value(statistics["sd_ratio"]) == pytest.approx(predicted.std() / true.std())
    assert value(statistics["p90_predicted"]) == pytest.approx(np.percentile(predicted, 90))
    assert value(statistics["p90_true"]) == pytest.approx(np.percentile(true, 90))
    assert statistics["ks_statistic"] == pytest.approx(ks_2samp(predicted, true).statistic)
    exact = exact_report.distribution["stage2"]
    assert value(exact["sd_ratio"]) == 1 and exact["ks_statistic"] == 0
    assert exact["sd_ratio"]["low"] == exact["sd_ratio"]["high"] == 1
    for name in ("sd_ratio", "p90_predicted"):
        estimate = statistics[name]
        assert estimate["low"] < estimate["value"] < estimate["high"], name
    frame = exact_report.to_frame().query("section == 'distribution'")
    assert set(frame["metric"]) == set(DISTRIBUTION_METRICS) and len(frame) == 12


def test_a_constant_stage1_has_no_spread(exact_stage2, data):
    from sklearn.dummy import DummyRegressor

    constant = DummyRegressor().fit(*data)
    report = cascade_report(make_router(constant, exact_stage2, data), *data, n_bootstraps=50,
                            random_state=0)
    statistics = report.distribution["stage1"]
    assert value(statistics["sd_ratio"]) == 0 and statistics["ks_statistic"] > 0.4
    assert value(report.systems["stage1"]["high_recall"]) == 0


def test_high_recall_counts_the_truly_high_articles_predicted_high(exact_report, stage1, data):
    X, Y = data
    true_high = averages(Y) >= 7
    predicted_high = averages(stage1.predict(X)) >= 7
    assert 0 < true_high.sum() < len(Y)
    recall = exact_report.systems["stage1"]["high_recall"]
    assert value(recall) == pytest.approx((true_high & predicted_high).sum() / true_high.sum())
    assert value(exact_report.systems["stage2"]["high_recall"]) == 1
    assert exact_report.undefined_metrics == {}
    assert "HIGH recall" in exact_report.to_text()


def test_high_recall_is_undefined_with_a_reason_without_high_articles(stage1, exact_stage2, data):
    X, Y = data
    low = Y < 7
    report = cascade_report(make_router(stage1, exact_stage2, data), X[low.all(axis=1)],
                            Y[low.all(axis=1)], n_bootstraps=50, random_state=0)
    assert np.isnan(value(report.systems["hybrid"]["high_recall"]))
    assert report.to_dict()["systems"]["hybrid"]["high_recall"]["value"] is None
    assert report.undefined_metrics["high_recall"].startswith("no article is truly HIGH")
    assert "(high_recall: n/a: no article is truly HIGH (true weighted average >= 7))" in report.to_text()


# --- the display from predictions, with ax, name and style ----------------------------------


def test_the_display_from_predictions_equals_the_one_from_the_estimator(
    exact_router, stage1, exact_stage2, data
):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    X, Y = data
    kwargs = {"n_bootstraps": 100, "random_state": 0, "seconds_per_article": SECONDS}
    from_estimator = CascadeFrontierDisplay.from_estimator(
        exact_router, X, Y, ax=Figure().subplots(), **kwargs
    )
    from_predictions = CascadeFrontierDisplay.from_predictions(
        Y, stage1.predict(X), exact_stage2.predict(X), weights=WEIGHTS, threshold=THRESHOLD,
        ax=Figure().subplots(), **kwargs,
    )
    for attribute in ("thresholds", "mae", "mae_low", "mae_high", "seconds_per_article"):
        np.testing.assert_array_equal(
            getattr(from_predictions, attribute), getattr(from_estimator, attribute), attribute
        )
    for attribute in ("threshold", "stage1_mae", "stage2_mae", "stage1_seconds", "n"):
        assert getattr(from_predictions, attribute) == getattr(from_estimator, attribute)
    assert from_predictions.ax_.get_title() == from_estimator.ax_.get_title()


def test_the_display_honours_ax_name_and_style_keywords(exact_report):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    display = CascadeFrontierDisplay.from_report(exact_report, ax=ax, name="demo/v1", lw=3, c="C3")
    assert display.ax_ is ax and display.line_.axes is ax
    assert display.line_.get_linewidth() == 3 and display.line_.get_color() == "C3"
    assert display.line_.get_label() == "demo/v1 (hybrid) MAE"
    assert ax.get_title() == (
        "demo/v1: MAE and time per article against the threshold\n150 articles, threshold 4.30"
    )
    again = display.plot(ax=Figure().subplots(), name="other")  # plot's name wins
    assert again.ax_.get_title().startswith("other: ")
    with pytest.raises(TypeError, match="aliases"):
        display.plot(ax=Figure().subplots(), color="red", c="blue")


def test_the_legend_is_below_the_axes_where_it_hides_no_data(exact_report):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), layout="constrained")
    display = CascadeFrontierDisplay.from_report(exact_report, ax=figure.subplots())
    figure.draw_without_rendering()  # runs the layout
    legend = display.legend_.get_window_extent()
    axes = display.ax_.get_window_extent()
    assert legend.y1 <= axes.y0  # entirely below the plotting area
    assert figure.bbox.contains(legend.x0, legend.y0) and figure.bbox.contains(legend.x1, legend.y1)


def test_the_help_states_the_verdicts_minimum():
    parser = argparse.ArgumentParser(prog="hybrid-estimators")
    command = evaluate_command.add_parser(parser.add_subparsers(), parents=[common_options()])
    text = " ".join(command.format_help().split())
    assert f"inconclusive below {MIN_VERDICT_ARTICLES} routed articles" in text
    assert f"at least {evaluate_command.MIN_TRAINING_ARTICLES_PER_FOLD} articles" in text
    assert "--allow-training-articles" in text
