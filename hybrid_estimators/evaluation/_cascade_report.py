"""Stage 1 alone, Stage 2 alone and the cascade, measured on the same labelled articles."""

import dataclasses
import logging
import time
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_consistent_length

from ..router import cache_info, measured_seconds_per_row
from ..tiers import (
    SCORE_MAX,
    SCORE_MIN,
    apply_gatekeepers,
    medium_threshold,
    tier_of,
    weighted_average,
)
from ..exceptions import InSampleWarning
from ._bootstrap import _PairedBootstrap
from ._distribution import RESAMPLED, ks_statistic, register_distribution
from ._report import DEFAULT_THRESHOLDS, METRICS, SYSTEMS, CascadeReport, verdict_of
from ._training_articles import in_sample_articles, take, take_predictions, unchecked_stages

logger = logging.getLogger(__name__)

# --- per-article terms ----------------------------------------------------------


@dataclasses.dataclass
class _Truth:
    """True scores and what every system is measured against."""

    scores: np.ndarray
    weights: np.ndarray
    gatekeepers: dict
    tiers: dict
    dimension_names: list

    def __post_init__(self):
        self.medium = medium_threshold(self.tiers)
        self.average = self.final_average(self.scores)
        self.tier = tier_of(self.average, self.tiers)
        self.medium_plus = self.average >= self.medium
        self.high_name, self.high = max(self.tiers.items(), key=lambda item: item[1])
        self.high_plus = self.average >= self.high

    def final_average(self, scores):
        """Weighted average with gatekeepers applied, as ``predict_report`` gives."""
        averages = weighted_average(scores, self.weights)
        return apply_gatekeepers(scores, averages, self.gatekeepers)[0]


def _terms(truth, scores, routed, seconds):
    """``{metric: (numerator, denominator)}`` per article, for one system.

    `scores` are the system's final scores, `routed` which articles Stage 2
    scored, `seconds` the time each article costs.
    """
    n = len(truth.scores)
    ones = np.ones(n)
    average = truth.final_average(scores)
    predicted_plus = average >= truth.medium
    hits = predicted_plus & truth.medium_plus
    terms = {
        "weighted_average_mae": (np.abs(average - truth.average), ones),
        "tier_accuracy": (tier_of(average, truth.tiers) == truth.tier, ones),
        "high_recall": ((average >= truth.high) & truth.high_plus, truth.high_plus),
        "medium_plus_recall": (hits, truth.medium_plus),
        "medium_plus_precision": (hits, predicted_plus),
        "medium_plus_routed": (routed & truth.medium_plus, truth.medium_plus),
        "skip_rate": (~routed, ones),
        "seconds_per_article": (np.broadcast_to(seconds, (n,)), ones),
    }
    for j, name in enumerate(truth.dimension_names):
        terms[("mae", name)] = (np.abs(scores[:, j] - truth.scores[:, j]), ones)
    return terms


def _register(bootstrap, prefix, terms, mask=None):
    for metric, (numerator, denominator) in terms.items():
        if mask is not None:
            numerator, denominator = numerator * mask, denominator * mask
        bootstrap.add(prefix + (metric,), numerator, denominator)


def _estimate(result):
    value, low, high = (float(x) for x in result)
    return {"value": value, "low": low, "high": high}


def _collect(results, prefix, n, dimension_names):
    metrics = {"n": int(n)}
    for metric in METRICS:
        metrics[metric] = _estimate(results[prefix + (metric,)])
        if metric == "weighted_average_mae":
            metrics["mae"] = {
                name: _estimate(results[prefix + (("mae", name),)]) for name in dimension_names
            }
    return metrics


# --- running the stages ---------------------------------------------------------


def _as_scores(predictions, n_samples, n_dimensions, name):
    predictions = np.ascontiguousarray(predictions, dtype=float)  # one layout: one rounding
    if predictions.ndim == 1:
        predictions = predictions.reshape(-1, 1)
    if predictions.shape != (n_samples, n_dimensions):
        raise ValueError(
            f"{name} must have shape ({n_samples}, {n_dimensions}) (articles, "
            f"dimensions); got {predictions.shape}."
        )
    if not np.all(np.isfinite(predictions)):
        raise ValueError(f"{name} holds NaN or infinite scores.")
    return predictions


def _as_repeated_scores(predictions, n_samples, n_dimensions, name):
    """Given predictions as (n_repeats, n_samples, n_dimensions): one set, or one per repetition."""
    predictions = np.asarray(predictions, dtype=float)
    if predictions.ndim < 3:
        return _as_scores(predictions, n_samples, n_dimensions, name)[np.newaxis]
    if predictions.ndim > 3 or len(predictions) == 0:
        raise ValueError(
            f"{name} must have shape ({n_samples}, {n_dimensions}) or (n_repeats, "
            f"{n_samples}, {n_dimensions}); got {predictions.shape}."
        )
    return np.stack([
        _as_scores(run, n_samples, n_dimensions, f"{name}[{i}]") for i, run in enumerate(predictions)
    ])


def _check_targets(router, Y, n_samples):
    names = [str(name) for name in router.dimension_names_]
    if hasattr(Y, "columns"):
        columns = [str(column) for column in Y.columns]
        if sorted(columns) != sorted(names):
            raise ValueError(f"Y's columns {columns} are not the router's dimensions {names}.")
        Y = Y.set_axis(columns, axis=1)[names]
    return _as_scores(Y, n_samples, len(names), "Y")


def _stage1_seconds(router, elapsed, n_samples, hits_before):
    """Seconds per article of Stage 1, not fooled by the router's prediction cache."""
    if cache_info()["row_hits"] == hits_before:
        return elapsed / n_samples
    routing_estimator = getattr(router, "routing_score_", None)
    stages = [router.stage1_] + ([] if routing_estimator is None else [routing_estimator])
    measured = [measured_seconds_per_row(stage) for stage in stages]
    if any(seconds is None for seconds in measured):
        logger.warning(
            "Stage 1 was served from the router's cache and never timed in this "
            "process: its seconds per article are not known"
        )
        return np.nan
    logger.info("Stage 1 was served from the router's cache: using its last measured time")
    return float(sum(measured))


def _warm_up(stage, X):
    """Predict one article untimed, so that a lazily loaded model is not timed."""
    stage.predict(X.iloc[:1] if hasattr(X, "iloc") else X[:1])


def _run_stage1(router, X, n_samples, n_dimensions, stage1_predictions):
    """Stage 1's scores, routing scores and seconds per article."""
    if stage1_predictions is not None:
        scores = _as_repeated_scores(stage1_predictions, n_samples, n_dimensions, "stage1_predictions")
        routing = [weighted_average(run, router.weights_) for run in scores]
        return scores, np.clip(routing, SCORE_MIN, SCORE_MAX), np.nan
    _warm_up(router.stage1_, X)
    hits_before = cache_info()["row_hits"]
    started = time.perf_counter()
    scores = router.predict_stage1(X)  # also computes (and caches) the routing scores
    elapsed = time.perf_counter() - started
    seconds = _stage1_seconds(router, elapsed, n_samples, hits_before)
    routing = np.asarray(router.routing_scores(X), dtype=float)[np.newaxis]
    scores = _as_scores(scores, n_samples, n_dimensions, "Stage 1's output")[np.newaxis]
    return scores, routing, seconds


def _run_stage2(router, X, n_samples, n_dimensions, stage2_predictions):
    """Stage 2's scores of every article and its seconds per article (None, NaN without)."""
    stage2 = getattr(router, "stage2_", None)
    if stage2 is None:
        if stage2_predictions is not None:
            raise ValueError("stage2_predictions were given for a router without Stage 2.")
        return None, np.nan
    if stage2_predictions is not None:
        return _as_repeated_scores(stage2_predictions, n_samples, n_dimensions, "stage2_predictions"), np.nan
    logger.info("Stage 2 scores all %d articles for the report", n_samples)
    _warm_up(stage2, X)
    started = time.perf_counter()
    scores = stage2.predict(X)
    seconds = (time.perf_counter() - started) / n_samples
    return _as_scores(scores, n_samples, n_dimensions, "Stage 2's output")[np.newaxis], seconds


def _languages(X, language, n_samples):
    if language is None:
        if not isinstance(X, pd.DataFrame) or "language" not in X.columns:
            return None
        language = X["language"]
    language = list(language)
    if len(language) != n_samples:
        raise ValueError(f"language has {len(language)} entries for {n_samples} articles.")
    return np.array(["unknown" if pd.isna(v) else str(v) for v in language], dtype=object)


def _thresholds(thresholds, threshold):
    grid = DEFAULT_THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype=float)
    grid = np.unique(np.append(np.ravel(grid), float(threshold)))
    if not np.all(np.isfinite(grid)):
        raise ValueError(f"thresholds must be finite numbers; got {thresholds!r}.")
    return grid


def _check_parameters(n_bootstraps, confidence):
    if not isinstance(n_bootstraps, Integral) or isinstance(n_bootstraps, bool) or n_bootstraps < 0:
        raise ValueError(f"n_bootstraps must be an integer >= 0; got {n_bootstraps!r}.")
    if not isinstance(confidence, Real) or not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence!r}.")


def _recorded_seed(random_state):
    if random_state is None or isinstance(random_state, Integral):
        return None if random_state is None else int(random_state)
    return repr(random_state)


# --- cascade_report -----------------------------------------------------------------


def cascade_report(
    router,
    X,
    Y,
    *,
    thresholds=None,
    n_bootstraps=1000,
    confidence=0.9,
    random_state=None,
    stage1_predictions=None,
    stage2_predictions=None,
    language=None,
    seconds_per_article=None,
    allow_training_articles=False,
):
    """Measure Stage 1 alone, Stage 2 alone and the cascade on labelled articles.

    Stage 1 (with the routing scores) and Stage 2 each run once over all
    articles, timed with :func:`time.perf_counter` (after one untimed
    warm-up article each, so that loading a model is not timed); the hybrid at any
    threshold ``t`` is then derived without running anything again: Stage
    2's scores where the routing score is ``>= t``, Stage 1's elsewhere,
    costing ``T1 + share_routed * T2`` seconds per article. Scores are
    clipped to 0-10, as the router's final scores are.

    For each system: MAE of the weighted average (gatekeepers applied to the
    true and predicted averages, as in ``predict_report``), MAE per
    dimension, tier accuracy, MEDIUM+ recall and precision of the final
    tiers (true MEDIUM+: true weighted average at or above the MEDIUM
    bound), ``medium_plus_routed`` (share of true MEDIUM+ articles sent to
    Stage 2, what :func:`~hybrid_estimators.metrics.medium_plus_recall`
    measures), skip rate and seconds per article, each with a bootstrap
    percentile interval. The articles are resampled with replacement, and
    every system, group and threshold is measured on the same resamples, so
    the intervals of differences are paired.

    Parameters
    ----------
    router : HybridRouterRegressor
        Fitted (or a loaded :class:`~hybrid_estimators.filters.Filter`).
        Only its public API is used: ``predict_stage1``, ``routing_scores``,
        ``stage1_``, ``stage2_`` (None: Stage 2 is reported as
        unavailable), ``stage2_weight`` (Stage 2's scores are blended
        with Stage 1's as the router blends them on routed articles),
        ``routing_score_``, ``threshold_`` where it has one
        (else ``threshold``), ``weights_``, ``tiers_``, ``gatekeepers_``,
        ``dimension_names_``.
    X : DataFrame, list of dict, list of str or array-like
        Articles, in any form the stages accept; ideally none the stages
        were trained on.
    Y : array-like or DataFrame of shape (n_samples, n_dimensions)
        True scores; a DataFrame's columns must be the router's dimensions
        (in any order).
    thresholds : array-like of float or None, default=None
        Grid of thresholds of the hybrid;
        :data:`DEFAULT_THRESHOLDS` (0, 0.25, ..., 10) when None. The
        router's ``threshold`` is always added.
    n_bootstraps : int, default=1000
        Number of resamples; 0 leaves the intervals NaN.
    confidence : float, default=0.9
        Coverage of the percentile intervals.
    random_state : int, RandomState instance or None, default=None
        Seed of the resamples: an int makes the intervals reproducible.
    stage1_predictions : array-like of shape (n_samples, n_dimensions) or \
            (n_repeats, n_samples, n_dimensions), default=None
        Stage 1 scores to use instead of running Stage 1, e.g. out-of-fold
        predictions for articles Stage 1 was trained on; one set per
        repetition of a repeated cross-validation (e.g.
        :class:`~sklearn.model_selection.RepeatedKFold`), in which case
        every metric pools the repetitions: each article's error (routed or
        not, ...) is averaged over them before the articles are resampled.
        The routing scores are then the weighted average of these, clipped
        to 0-10 (the router's default rule, whatever its
        ``routing_score``), and Stage 1's time is not measured (see
        `seconds_per_article`).
    stage2_predictions : array-like of shape (n_samples, n_dimensions) or \
            (n_repeats, n_samples, n_dimensions), default=None
        Stage 2 scores to use instead of running Stage 2, e.g. out-of-fold
        predictions of its recipe (before the `stage2_weight` blend), one
        set per repetition as for `stage1_predictions` (same number of
        repetitions); its time is then not measured. Needs a router with a
        Stage 2.
    language : array-like of shape (n_samples,) or None, default=None
        Language of each article, for the breakdown by language; when None,
        the ``language`` column of a DataFrame `X`, if any. Missing values
        count as ``"unknown"``.
    seconds_per_article : dict or None, default=None
        ``{"stage1": s, "stage2": s}``: times per article to report instead
        of measuring (either key may be left out).
    allow_training_articles : bool, default=False
        What to do with articles a stage that scores them here was trained
        on (a loaded filter records them: :func:`in_sample_articles`; a
        stage whose scores are given as predictions is taken to be out of
        fold). False leaves them out of every number (the report says how
        many; a ``ValueError`` when no article is left); True keeps them,
        marks the report ``in_sample`` and issues an
        :class:`~hybrid_estimators.exceptions.InSampleWarning`.

    Returns
    -------
    report : CascadeReport
        Also for ``report.to_dict()`` (JSON), ``report.to_frame()`` and
        ``report.to_text()``.

    See Also
    --------
    CascadeFrontierDisplay : MAE and time per article against the threshold.
    hybrid_estimators.calibration.TunedThresholdRouterCV : Chooses the
        threshold with a recall guarantee.
    CascadeReport : What it returns.
    format_report : The report as the text ``evaluate`` prints.
    hybrid_estimators.router.HybridRouterRegressor : The cascade it measures.
    hybrid_estimators.filters.load_filter : A saved cascade to measure.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.neighbors import KNeighborsRegressor
    >>> from hybrid_estimators.router import HybridRouterRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(0, 10, size=(80, 2))
    >>> Y = np.c_[X[:, 0], np.sqrt(10 * X[:, 1])]
    >>> stage1 = Ridge().fit(X, Y)                            # some error
    >>> stage2 = KNeighborsRegressor(n_neighbors=1).fit(X, Y)  # exact here
    >>> router = HybridRouterRegressor(stage1, stage2, [0.5, 0.5], threshold=4.0,
    ...                                prefit=["stage1", "stage2"]).fit(X, Y)
    >>> report = cascade_report(router, X, Y, n_bootstraps=200, random_state=0)
    >>> report.systems["stage2"]["weighted_average_mae"]["value"]
    0.0
    >>> skip = report.systems["hybrid"]["skip_rate"]["value"]
    >>> bool(np.isclose(skip, 1 - router.route(X).mean()))
    True
    >>> report.comparison["routed"]["difference"]["high"] < 0, report.stage2_better
    (True, True)
    >>> [point["threshold"] for point in report.grid][:3]
    [0.0, 0.25, 0.5]
    >>> report.verdict, round(report.distribution["stage1"]["sd_ratio"]["value"], 2)
    ('stage2_better', 0.98)
    """
    _check_parameters(n_bootstraps, confidence)
    check_consistent_length(X, Y)
    stages = [name for name, given in (("stage1", stage1_predictions), ("stage2", stage2_predictions))
              if given is None]
    trained_on = in_sample_articles(router, X, stages=stages)
    training = _training_summary(
        trained_on, len(Y), allow_training_articles, unchecked_stages(router, stages)
    )
    if training["n_left_out"]:
        keep = ~trained_on
        X, Y, language = take(X, keep), take(Y, keep), take(language, keep)
        stage1_predictions = take_predictions(stage1_predictions, keep)
        stage2_predictions = take_predictions(stage2_predictions, keep)
    truth = _truth_of(router, Y)
    n_samples = len(truth.scores)
    threshold = _threshold_of(router)
    grid = _thresholds(thresholds, threshold)
    groups = _groups(truth, _languages(X, language, n_samples))
    scores = _score_articles(router, X, truth, stage1_predictions, stage2_predictions, seconds_per_article)
    systems = scores.systems(threshold)

    bootstrap = _PairedBootstrap(n_samples, n_bootstraps, confidence, random_state)
    _register_all(bootstrap, scores, systems, groups, grid, threshold)
    averages = scores.averages(threshold)
    for system, predicted in averages.items():
        register_distribution(bootstrap, system, predicted, truth.average)
    results = bootstrap.run()

    def metrics_of(prefix, n=n_samples):
        return _collect(results, prefix, n, truth.dimension_names)

    def breakdown(section):
        return {
            group: {
                system: metrics_of((section, group, system), int(mask.sum()))
                if system in systems
                else None
                for system in SYSTEMS
            }
            for group, mask in groups.get(section, {}).items()
        }

    comparison = _comparison(results, scores.routed(threshold)) if scores.available else None
    verdict, reason = verdict_of(comparison)
    report = CascadeReport(
        n=n_samples,
        threshold=threshold,
        confidence=float(confidence),
        n_bootstraps=int(n_bootstraps),
        random_state=_recorded_seed(random_state),
        dimension_names=truth.dimension_names,
        tiers={name: float(bound) for name, bound in truth.tiers.items()},
        stage1_source="router" if stage1_predictions is None else "stage1_predictions",
        stage2_available=scores.available,
        seconds_per_article={"stage1": scores.t1, "stage2": scores.t2},
        systems={s: metrics_of(("system", s)) if s in systems else None for s in SYSTEMS},
        by_tier=breakdown("tier"),
        by_language=breakdown("language"),
        grid=[
            {
                "threshold": float(t),
                "n_routed": int(round(scores.routed(t).sum())),
                **metrics_of(("grid", float(t))),
            }
            for t in (grid if scores.available else [])
        ],
        comparison=comparison,
        stage2_better=bool(comparison and comparison["routed"]["stage2_better"]),
        stage2_source="router" if stage2_predictions is None else "stage2_predictions",
        stage2_weight=float(getattr(router, "stage2_weight", 1.0)),
        distribution={
            s: _distribution(results, s, averages[s], truth.average) if s in averages else None
            for s in SYSTEMS
        },
        undefined_metrics=_undefined_metrics(truth),
        training_articles=training,
        in_sample=bool(training["n_trained_on"]) and bool(allow_training_articles),
        verdict=verdict,
        verdict_reason=reason,
    )
    _log_summary(report)
    return report


@dataclasses.dataclass
class _Scores:
    """Both stages' (clipped) scores of every article, routing scores and times."""

    truth: _Truth
    stage1: np.ndarray
    stage2: object  # ndarray, or None without a Stage 2
    routing: np.ndarray
    t1: float
    t2: float

    @property
    def available(self):
        return self.stage2 is not None

    def routed(self, threshold):
        if not self.available:
            return np.zeros(len(self.routing), dtype=bool)
        return self.routing >= threshold

    def hybrid(self, threshold):
        """Terms of the hybrid at `threshold`, derived without running a stage."""
        routed = self.routed(threshold)
        if not self.available:
            return _terms(self.truth, self.stage1, routed, self.t1)
        scores = np.where(routed[:, np.newaxis], self.stage2, self.stage1)
        return _terms(self.truth, scores, routed, self.t1 + self.t2 * routed)

    def averages(self, threshold):
        """Predicted final weighted average of every article, per available system."""
        averages = {"stage1": self.truth.final_average(self.stage1)}
        if self.available:
            routed = self.routed(threshold)[:, np.newaxis]
            averages["stage2"] = self.truth.final_average(self.stage2)
            averages["hybrid"] = self.truth.final_average(np.where(routed, self.stage2, self.stage1))
        else:
            averages["hybrid"] = averages["stage1"]
        return averages

    def systems(self, threshold):
        """Terms of each available system, the hybrid at `threshold`."""
        n = len(self.routing)
        systems = {"stage1": _terms(self.truth, self.stage1, np.zeros(n, dtype=bool), self.t1)}
        if self.available:
            systems["stage2"] = _terms(self.truth, self.stage2, np.ones(n, dtype=bool), self.t2)
        systems["hybrid"] = self.hybrid(threshold)
        return systems


def _mean_terms(runs):
    """Each article's terms averaged over repetitions (numerators and denominators)."""
    if len(runs) == 1:
        return runs[0]
    return {
        metric: tuple(np.mean([np.asarray(run[metric][k], dtype=float) for run in runs], axis=0)
                      for k in (0, 1))
        for metric in runs[0]
    }


class _Repeated:
    """The scores of one or more repetitions of a (repeated) cross-validation.

    Every metric is a ratio of sums over articles of each article's terms
    averaged over the repetitions, so the bootstrap resamples articles and
    each keeps all its repetitions (the intervals stay paired).
    """

    def __init__(self, runs):
        self.runs = runs
        self.t1, self.t2 = runs[0].t1, runs[0].t2

    @property
    def available(self):
        return self.runs[0].available

    def routed(self, threshold):
        """Share of the repetitions in which each article is routed."""
        return np.mean([run.routed(threshold) for run in self.runs], axis=0)

    def hybrid(self, threshold):
        return _mean_terms([run.hybrid(threshold) for run in self.runs])

    def averages(self, threshold):
        """System -> predicted weighted averages, shape (n_repeats, n_samples)."""
        per_run = [run.averages(threshold) for run in self.runs]
        return {system: np.stack([run[system] for run in per_run]) for system in per_run[0]}

    def systems(self, threshold):
        per_run = [run.systems(threshold) for run in self.runs]
        return {system: _mean_terms([run[system] for run in per_run]) for system in per_run[0]}

    def comparison_terms(self, threshold):
        """Per article: (Stage 1 error, Stage 2 error, weight), over all and routed articles."""
        terms = {"all": [], "routed": []}
        for run in self.runs:
            systems = run.systems(threshold)
            error1 = systems["stage1"]["weighted_average_mae"][0]
            error2 = systems["stage2"]["weighted_average_mae"][0]
            routed = run.routed(threshold).astype(float)
            terms["all"].append((error1, error2, np.ones(len(routed))))
            terms["routed"].append((error1 * routed, error2 * routed, routed))
        return {
            scope: tuple(np.mean([run[k] for run in runs], axis=0) for k in range(3))
            for scope, runs in terms.items()
        }


def _truth_of(router, Y):
    n_samples = len(Y)
    if n_samples == 0:
        raise ValueError("cascade_report needs at least one article.")
    return _Truth(
        _check_targets(router, Y, n_samples),
        np.asarray(router.weights_, dtype=float),
        dict(router.gatekeepers_ or {}),
        dict(router.tiers_),
        [str(name) for name in router.dimension_names_],
    )


def _score_articles(router, X, truth, stage1_predictions, stage2_predictions, seconds_per_article):
    """Run each stage once over every article (or take their given scores)."""
    n_samples, n_dimensions = truth.scores.shape
    stage1, routing, t1 = _run_stage1(router, X, n_samples, n_dimensions, stage1_predictions)
    stage2, t2 = _run_stage2(router, X, n_samples, n_dimensions, stage2_predictions)
    n_repeats = max(len(stage1), 1 if stage2 is None else len(stage2))
    if stage2 is not None and 1 < len(stage1) != len(stage2) > 1:
        raise ValueError(
            f"stage1_predictions has {len(stage1)} repetitions, stage2_predictions {len(stage2)}."
        )
    weight = getattr(router, "stage2_weight", 1.0)
    if stage2 is not None and weight != 1:  # what the router returns for a routed article
        stage2 = weight * stage2 + (1 - weight) * stage1
    seconds = {"stage1": t1, "stage2": t2, **(seconds_per_article or {})}
    runs = [
        _Scores(
            truth,
            np.clip(stage1[min(r, len(stage1) - 1)], SCORE_MIN, SCORE_MAX),
            None if stage2 is None else np.clip(stage2[min(r, len(stage2) - 1)], SCORE_MIN, SCORE_MAX),
            routing[min(r, len(routing) - 1)],
            float(seconds["stage1"]),
            float(seconds["stage2"]),
        )
        for r in range(n_repeats)
    ]
    return _Repeated(runs)


def _groups(truth, languages):
    """Section -> group name -> mask of its articles."""
    groups = {"tier": {name: truth.tier == name for name in _tier_order(truth.tiers)}}
    if languages is not None:
        groups["language"] = {name: languages == name for name in sorted(set(languages))}
    return groups


def _register_all(bootstrap, scores, systems, groups, grid, threshold):
    for system, terms in systems.items():
        _register(bootstrap, ("system", system), terms)
        for section, masks in groups.items():
            for group, mask in masks.items():
                _register(bootstrap, (section, group, system), terms, mask)
    if scores.available:
        for t in grid:
            _register(bootstrap, ("grid", float(t)), scores.hybrid(t))
        _register_comparison(bootstrap, scores.comparison_terms(threshold))


def _log_summary(report):
    def mae(system):
        metrics = report.systems[system]
        return "n/a" if metrics is None else f"{metrics['weighted_average_mae']['value']:.3f}"

    logger.info(
        "cascade report on %d articles: MAE stage1 %s, stage2 %s, hybrid %s at threshold %.2f",
        report.n,
        mae("stage1"),
        mae("stage2"),
        mae("hybrid"),
        report.threshold,
    )


def _threshold_of(router):
    """The threshold in use: ``threshold_`` where the router resolves one, else ``threshold``."""
    threshold = getattr(router, "threshold_", None)
    return float(router.threshold if threshold is None else threshold)


def _tier_order(tiers):
    """Tier names from the highest lower bound to the lowest."""
    return [name for name, _ in sorted(tiers.items(), key=lambda item: -item[1])]


def _register_comparison(bootstrap, terms):
    for scope, (error1, error2, weight) in terms.items():
        bootstrap.add(("comparison", scope, "stage1_mae"), error1, weight)
        bootstrap.add(("comparison", scope, "stage2_mae"), error2, weight)
        bootstrap.add(("comparison", scope, "difference"), error2 - error1, weight)


def _comparison(results, routed):
    comparison = {}
    for scope, n in (("all", routed.size), ("routed", int(round(routed.sum())))):
        entry = {"n": int(n)}
        for key in ("stage1_mae", "stage2_mae", "difference"):
            entry[key] = _estimate(results[("comparison", scope, key)])
        entry["stage2_better"] = bool(entry["difference"]["high"] < 0)  # NaN -> False
        comparison[scope] = entry
    return comparison


def _training_summary(trained_on, n_given, allow, unchecked):
    """What the report says of the training articles among the given ones (see CascadeReport)."""
    n_trained_on = 0 if trained_on is None else int(trained_on.sum())
    summary = {
        "recorded": trained_on is not None,
        "n_given": int(n_given),
        "n_trained_on": n_trained_on,
        "n_left_out": 0 if allow else n_trained_on,
        "unchecked_stages": list(unchecked),
    }
    if trained_on is not None and unchecked:
        logger.warning("%s records no training articles: not checked", " and ".join(unchecked))
    if trained_on is None:
        logger.info("the router records no training articles: cannot check that these are held out")
    elif n_trained_on and allow:
        warnings.warn(
            f"{n_trained_on} of {n_given} articles are articles a stage was trained on: every "
            "number of this report is in sample and says nothing of new articles",
            InSampleWarning,
            stacklevel=3,
        )
    elif n_trained_on == n_given:
        raise ValueError(
            f"no verdict: all {n_given} articles are articles a stage was trained on (the filter's "
            "training_articles_sha256); evaluate on held-out articles, or keep them and measure "
            "in sample (allow_training_articles=True; --allow-training-articles)"
        )
    elif n_trained_on:
        logger.warning(
            "left out %d of %d articles: a stage was trained on them", n_trained_on, n_given
        )
    return summary


def _distribution(results, system, predicted, true):
    n = int(predicted.shape[1])
    statistics = {"n": n}
    for name in RESAMPLED:
        statistics[name] = _estimate(results[("distribution", system, name)])
    statistics["ks_statistic"] = ks_statistic(predicted, true)
    return statistics


def _undefined_metrics(truth):
    if truth.high_plus.any():
        return {}
    return {
        "high_recall": f"no article is truly {truth.high_name.upper()} (true weighted average "
        f">= {truth.high:g})"
    }
