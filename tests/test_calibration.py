"""TunedThresholdRouterCV: the recall guarantee, its bookkeeping, real data."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, train_test_split
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from hybrid_estimators.calibration import (
    ThresholdCertificateDisplay,
    TunedThresholdRouterCV,
    clopper_pearson_upper,
)
from hybrid_estimators.embedding import E5Embedder
from hybrid_estimators.metrics import is_medium_plus, medium_plus_recall
from hybrid_estimators.probe import make_probe
from hybrid_estimators.router import HybridRouterRegressor
from hybrid_estimators.text import ArticleText


def noisy_data(n_samples, random_state):
    """Stage 1 (Ridge on X) sees the score only up to noise: it misses some."""
    rng = np.random.RandomState(random_state)
    X = rng.uniform(0, 10, size=(n_samples, 2))
    Y = np.clip(np.c_[X[:, 0], X[:, 0]] + rng.normal(0, 1.0, (n_samples, 2)), 0, 10)
    return X, Y


def numeric_router():
    return HybridRouterRegressor(Ridge(), KNeighborsRegressor(n_neighbors=3), [1, 1])


@parametrize_with_checks(
    [
        TunedThresholdRouterCV(
            HybridRouterRegressor(Ridge(), KNeighborsRegressor(n_neighbors=2)), cv=2
        )
    ]
)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        # tiny check data has too few MEDIUM+ rows to certify: threshold 0
        warnings.filterwarnings("ignore", message="No threshold above 0")
        check(estimator)


def test_clopper_pearson_matches_the_beta_quantile():
    assert clopper_pearson_upper(0, 45, 0.9) == pytest.approx(1 - 0.1 ** (1 / 45))
    assert clopper_pearson_upper(3, 100, 0.9) == pytest.approx(beta.ppf(0.9, 4, 97))
    assert clopper_pearson_upper(5, 5, 0.9) == 1.0


def test_chooses_the_largest_certified_threshold():
    X, Y = noisy_data(600, 0)
    tuner = TunedThresholdRouterCV(numeric_router(), cv=KFold(5, shuffle=True, random_state=0))
    tuner.fit(X, Y)
    results = tuner.cv_results_
    assert tuner.target_met_
    assert list(results.columns) == [
        "threshold", "recall", "recall_lower_bound", "p_value", "skip_rate",
        "low_skip_rate", "n_medium_plus", "n_missed", "passed",
    ]  # fmt: skip
    medium_plus = is_medium_plus(Y, [1, 1])
    assert tuner.n_medium_plus_ == medium_plus.sum() == results["n_medium_plus"].iloc[0]
    chosen = results[results["threshold"] == tuner.threshold_].iloc[0]
    assert chosen["recall_lower_bound"] >= 0.95
    assert tuner.recall_lower_bound_ == chosen["recall_lower_bound"]
    # the next candidate up adds a miss and loses the guarantee
    above = results[results["threshold"] > tuner.threshold_].iloc[0]
    assert above["recall_lower_bound"] < 0.95
    assert above["n_missed"] == chosen["n_missed"] + 1
    # bookkeeping agrees with the out-of-fold scores
    scores = tuner.oof_routing_scores_
    assert chosen["n_missed"] == (medium_plus & (scores < tuner.threshold_)).sum()
    assert tuner.expected_skip_rate_ == pytest.approx(np.mean(scores < tuner.threshold_))
    assert chosen["p_value"] <= 0.1 < above["p_value"]
    # the guarantee costs: the chosen threshold skips less than the seed's 4.5
    assert 0 < tuner.threshold_ < 4.5 and 0.2 < tuner.expected_skip_rate_ < 0.45
    assert tuner.best_estimator_.threshold == tuner.threshold_
    np.testing.assert_array_equal(tuner.route(X), tuner.best_estimator_.route(X))
    np.testing.assert_array_equal(tuner.predict(X), tuner.best_estimator_.predict(X))


def test_guarantee_holds_on_fresh_data_with_prefit_router():
    """Coverage over 200 calibration sets: realised recall >= target >= 90% of the time."""
    X, Y = noisy_data(2000, 1)
    router = numeric_router().fit(X, Y)
    X_new, Y_new = noisy_data(20_000, 2)
    medium_plus = is_medium_plus(Y_new, [1, 1])
    new_scores = router.routing_scores(X_new)[medium_plus]
    met = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(200):
            X_cal, Y_cal = noisy_data(120, 100 + seed)
            tuner = TunedThresholdRouterCV(router, cv="prefit").fit(X_cal, Y_cal)
            met.append(np.mean(new_scores >= tuner.threshold_) >= 0.95)
    assert np.mean(met) >= 0.88  # nominal 0.9; binomial noise sd ~0.02


def test_no_certifiable_threshold_routes_everything_and_says_so():
    X, Y = noisy_data(60, 3)  # about 30 MEDIUM+: 0 misses bound recall at 0.93
    with pytest.warns(UserWarning, match="No threshold above 0 reaches MEDIUM"):
        tuner = TunedThresholdRouterCV(numeric_router(), cv=3).fit(X, Y)
    assert not tuner.target_met_
    assert tuner.threshold_ == 0.0 and tuner.expected_skip_rate_ == 0.0
    assert tuner.route(X).all()
    assert tuner.recall_lower_bound_ == 1.0


def test_prefit_needs_a_fitted_router_and_keeps_its_stages():
    X, Y = noisy_data(600, 4)
    with pytest.raises(Exception, match="router must be fitted"):
        TunedThresholdRouterCV(numeric_router(), cv="prefit").fit(X, Y)
    router = numeric_router().fit(X[:300], Y[:300])
    tuner = TunedThresholdRouterCV(router, cv="prefit").fit(X[300:], Y[300:])
    assert tuner.best_estimator_.stage1_ is router.stage1_
    assert router.threshold == 4.5  # the given router is left as it was
    np.testing.assert_array_equal(tuner.oof_routing_scores_, router.routing_scores(X[300:]))


def test_bad_parameters_are_named():
    X, Y = noisy_data(100, 5)
    for params, name in [
        ({"target_recall": 1.0}, "target_recall"),
        ({"confidence": "high"}, "confidence"),
        ({"thresholds": 1}, "thresholds"),
    ]:
        with pytest.raises(ValueError, match=f"'{name}' parameter"):
            TunedThresholdRouterCV(numeric_router(), **params).fit(X, Y)


def test_display_marks_the_chosen_threshold_and_saves(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    X, Y = noisy_data(600, 6)
    tuner = TunedThresholdRouterCV(numeric_router(), cv=3, random_state=0).fit(X, Y)
    path = tmp_path / "calibration.png"
    display = ThresholdCertificateDisplay.from_estimator(tuner)
    display.figure_.savefig(path)
    assert path.stat().st_size > 1000
    labels = [line.get_label() for line in display.ax_.get_lines()]
    assert f"chosen threshold {tuner.best_threshold_:.2f}" in labels
    np.testing.assert_allclose(display.lines_["recall"].get_xdata(), tuner.cv_results_["threshold"])
    np.testing.assert_allclose(
        display.lines_["recall_lower_bound"].get_ydata(), tuner.cv_results_["recall_lower_bound"]
    )


def test_without_stored_results_the_display_refuses():
    X, Y = noisy_data(300, 7)
    tuner = TunedThresholdRouterCV(numeric_router(), store_cv_results=False).fit(X, Y)
    assert tuner.cv_results_ is None
    with pytest.raises(ValueError, match="store_cv_results=True"):
        ThresholdCertificateDisplay.from_estimator(tuner)


@pytest.mark.slow
def test_real_data_guarantee_holds_on_the_other_half(seece, minilm_path):
    X, Y, spec = seece
    weights = spec["dimensions"]
    medium_plus = is_medium_plus(Y, weights, tiers=spec["tiers"])
    X_cal, X_test, Y_cal, Y_test = train_test_split(
        X, Y, test_size=0.5, random_state=0, stratify=medium_plus
    )
    stage1 = make_pipeline(
        ArticleText(), E5Embedder(minilm_path, prefix="", show_progress_bar=False), make_probe()
    )
    stage2 = make_pipeline(
        ArticleText(),
        E5Embedder(minilm_path, prefix="", show_progress_bar=False),
        KNeighborsRegressor(n_neighbors=5),
    )
    router = HybridRouterRegressor(stage1, stage2, weights, tiers=spec["tiers"])
    tuner = TunedThresholdRouterCV(
        router, target_recall=0.95, confidence=0.9, cv=KFold(5, shuffle=True, random_state=0)
    ).fit(X_cal, Y_cal)
    assert tuner.target_met_ and tuner.recall_lower_bound_ >= 0.95
    realised = medium_plus_recall(Y_test, tuner.route(X_test), weights, tiers=spec["tiers"])
    assert realised >= 0.90
    assert isinstance(tuner.predict_report(X_test), pd.DataFrame)
    assert clone(tuner).get_params()["router__threshold"] == 4.5


# --- Stage 2 as the reference ------------------------------------------------


class ExactStage2(Ridge):
    """A Stage 2 whose verdict is the first feature: known to the test."""

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        return np.c_[X[:, 0], X[:, 0]]


def stage2_router(random_state):
    X, Y = noisy_data(200, random_state)
    return HybridRouterRegressor(Ridge(), ExactStage2(), [1, 1]).fit(X, Y)


def test_stage2_reference_refuses_folds():
    X, _ = noisy_data(100, 0)
    tuner = TunedThresholdRouterCV(numeric_router(), reference="stage2", cv=3)
    with pytest.raises(ValueError, match="cv='prefit'"):
        tuner.fit(X)


def test_oracle_reference_needs_y():
    X, _ = noisy_data(100, 0)
    with pytest.raises(ValueError, match="reference='stage2'"):
        TunedThresholdRouterCV(numeric_router()).fit(X)


def test_stage2_reference_labels_are_stage2_verdicts_and_teacher_scores_agree():
    router = stage2_router(1)
    X, _ = noisy_data(500, 2)
    run = TunedThresholdRouterCV(router, reference="stage2", cv="prefit").fit(X)
    teacher = TunedThresholdRouterCV(router, reference="stage2", cv="prefit").fit(
        X, router.stage2_.predict(X)
    )
    assert run.n_medium_plus_ == int((X[:, 0] >= 4.0).sum())
    assert run.best_threshold_ == teacher.best_threshold_
    assert run.n_samples_ == 500


def test_stage2_reference_guarantee_covers_at_confidence():
    """Many random calibration/test splits: realised recall >= target in >= confidence of them."""
    target, confidence, n_trials = 0.9, 0.8, 60
    router = stage2_router(3)
    X_all, _ = noisy_data(4000, 4)
    verdict = X_all[:, 0] >= 4.0
    rng = np.random.RandomState(5)
    held = []
    for _ in range(n_trials):
        order = rng.permutation(len(X_all))
        calibration, test = order[:300], order[300:]
        tuner = TunedThresholdRouterCV(
            router, reference="stage2", cv="prefit", target_recall=target, confidence=confidence
        ).fit(X_all[calibration])
        routed = router.routing_scores(X_all[test]) >= tuner.best_threshold_
        held.append(routed[verdict[test]].mean() >= target)
        assert tuner.best_threshold_ > 0
    assert np.mean(held) >= confidence


def test_default_folds_are_stratified_by_the_routers_own_reading_of_dict_weights(monkeypatch):
    """Dict weights in another order than Y's columns: the strata are the router's MEDIUM+."""
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.RandomState(0)
    X = rng.uniform(0, 10, size=(300, 3))
    Y = pd.DataFrame(
        np.clip(np.c_[X[:, 0], 10 - X[:, 0], X[:, 1]] + rng.normal(0, 0.5, (300, 3)), 0, 10),
        columns=["a", "b", "c"],
    )
    weights = {"c": 0.1, "a": 0.8, "b": 0.1}  # not the columns' order
    router = HybridRouterRegressor(Ridge(), KNeighborsRegressor(), weights)
    strata = []
    split = StratifiedKFold.split

    def recording(self, X, y=None, groups=None):
        strata.append(np.asarray(y))
        return split(self, X, y, groups)

    monkeypatch.setattr(StratifiedKFold, "split", recording)
    TunedThresholdRouterCV(router, cv=3, random_state=0).fit(X, Y)
    fitted = clone(router).fit(X, Y)
    np.testing.assert_allclose(fitted.weights_, [0.8, 0.1, 0.1])
    expected = is_medium_plus(Y.to_numpy(), fitted.weights_, tiers=fitted.tiers_)
    assert 0 < expected.sum() < len(Y)
    (recorded,) = strata
    np.testing.assert_array_equal(recorded, expected)
    # weights taken in the dict's order would read other articles as MEDIUM+
    in_dict_order = is_medium_plus(Y.to_numpy(), [0.1, 0.8, 0.1], tiers=fitted.tiers_)
    assert (in_dict_order != expected).sum() > 50


def _certified_tuner():
    X, Y = noisy_data(600, 6)
    tuner = TunedThresholdRouterCV(numeric_router(), cv=3, random_state=0).fit(X, Y)
    return tuner, is_medium_plus(Y, [0.5, 0.5])


def test_display_from_predictions_matches_from_estimator():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    tuner, medium_plus = _certified_tuner()
    assert medium_plus.sum() == tuner.n_medium_plus_
    from_estimator = ThresholdCertificateDisplay.from_estimator(tuner, name="demo")
    from_predictions = ThresholdCertificateDisplay.from_predictions(
        medium_plus, tuner.oof_routing_scores_, target_recall=tuner.target_recall,
        confidence=tuner.confidence, name="demo",
    )
    for attribute in ("thresholds", "recall", "recall_lower_bound", "skip_rate"):
        np.testing.assert_allclose(
            getattr(from_predictions, attribute), getattr(from_estimator, attribute)
        )
    assert from_predictions.threshold == from_estimator.threshold == tuner.best_threshold_
    title = from_estimator.ax_.get_title()
    assert title == from_predictions.ax_.get_title()
    assert title.startswith(f"demo: threshold {tuner.best_threshold_:.2f} certified")
    assert f"n = 600 articles, {tuner.n_medium_plus_} MEDIUM+" in title
    # the legend sits below the axes: it hides no curve
    legend_box = from_estimator.ax_.get_legend().get_window_extent()
    assert legend_box.y1 <= from_estimator.ax_.get_window_extent().y0

    with pytest.raises(ValueError, match="MEDIUM\\+"):
        ThresholdCertificateDisplay.from_predictions(np.full(10, 3), np.arange(10))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        ThresholdCertificateDisplay.from_predictions(medium_plus[:5], np.arange(10))


def test_display_honours_ax_name_and_style_keywords():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tuner, _ = _certified_tuner()
    fig, (left, right) = plt.subplots(1, 2)
    display = ThresholdCertificateDisplay.from_estimator(
        tuner, ax=right, name="seece_energy_tech/v1", lw=3, alpha=0.5
    )
    assert display.ax_ is right and display.figure_ is fig
    assert not left.get_lines()
    assert right.get_title().startswith("seece_energy_tech/v1: threshold")
    assert ThresholdCertificateDisplay.from_estimator(tuner).ax_.get_title().startswith(
        "HybridRouterRegressor: threshold"
    )
    for line in display.lines_.values():
        assert line.get_linewidth() == 3 and line.get_alpha() == 0.5
    display.plot(name="renamed")
    assert display.ax_.get_title().startswith("renamed: threshold")
    with pytest.raises(TypeError, match="Got both lw and linewidth"):
        display.plot(lw=1, linewidth=2)
    plt.close("all")


def test_display_says_matplotlib_is_needed(monkeypatch):
    import sys

    tuner, medium_plus = _certified_tuner()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="from_estimator requires matplotlib"):
        ThresholdCertificateDisplay.from_estimator(tuner)
    with pytest.raises(ImportError, match="from_predictions requires matplotlib"):
        ThresholdCertificateDisplay.from_predictions(medium_plus, tuner.oof_routing_scores_)
