"""The result of :func:`~hybrid_estimators.evaluation.cascade_report`: plain, JSON-ready data."""

import dataclasses

import numpy as np
import pandas as pd

from .._io import json_safe

#: Thresholds of the default grid (the router's own is always added).
DEFAULT_THRESHOLDS = np.round(np.arange(0, 10.01, 0.25), 2)

#: The systems compared, in report order.
SYSTEMS = ("stage1", "stage2", "hybrid")

#: Metrics of every system, group and threshold (besides per-dimension MAE).
METRICS = (
    "weighted_average_mae",
    "tier_accuracy",
    "high_recall",
    "medium_plus_recall",
    "medium_plus_precision",
    "medium_plus_routed",
    "skip_rate",
    "seconds_per_article",
)

#: Fewest articles routed to Stage 2 for a verdict on it: with fewer paired
#: differences a percentile bootstrap interval covers far less often than
#: it claims, so the verdict reads "inconclusive".
MIN_VERDICT_ARTICLES = 30

#: The verdicts of :func:`verdict_of`.
VERDICTS = ("stage2_better", "stage2_worse", "inconclusive", "unavailable")

# --- the result ---------------------------------------------------------------


@dataclasses.dataclass
class CascadeReport:
    """What :func:`cascade_report` measured: plain, JSON-ready data.

    Every estimate is a dict ``{"value", "low", "high"}``: the point estimate
    on all articles and its bootstrap percentile interval at `confidence`
    (NaN, or None after :meth:`to_dict`, where a metric is undefined, e.g.
    the MEDIUM+ recall of a group without a MEDIUM+ article).

    A *metrics* dict holds ``n`` (articles) and one estimate for each of
    ``weighted_average_mae``, ``tier_accuracy``, ``medium_plus_recall``,
    ``medium_plus_precision``, ``medium_plus_routed``, ``skip_rate``,
    ``seconds_per_article`` and ``high_recall`` (share of the truly HIGH
    articles, true weighted average at or above the highest tier's bound,
    predicted HIGH), plus ``mae``: dimension name -> estimate.

    Attributes
    ----------
    n : int
        Number of articles.
    threshold : float
        The router's threshold (its ``threshold_`` where it has one): where
        ``systems["hybrid"]`` is measured.
    confidence : float
        Coverage of the intervals.
    n_bootstraps : int
        Number of resamples.
    random_state : int, str or None
        Seed of the resamples (a ``RandomState`` is recorded by its repr).
    dimension_names : list of str
    tiers : dict of str to float
        The router's tiers (name -> lower bound).
    stage1_source : {"router", "stage1_predictions"}
        Where Stage 1's scores came from.
    stage2_source : {"router", "stage2_predictions"}
        Where Stage 2's scores came from.
    stage2_weight : float
        The router's ``stage2_weight``: the ``"stage2"`` system is
        ``stage2_weight * Stage 2 + (1 - stage2_weight) * Stage 1``, what
        the router returns for a routed article.
    stage2_available : bool
        False for a Stage-1-only router: ``systems["stage2"]`` and the
        comparison are then None and the hybrid is Stage 1.
    seconds_per_article : dict
        ``{"stage1": float, "stage2": float}``, measured (NaN when not).
    systems : dict
        ``"stage1"``, ``"stage2"``, ``"hybrid"`` -> metrics (or None).
    by_tier : dict
        True tier -> system -> metrics, for every tier of the router.
    by_language : dict
        Language -> system -> metrics; empty without languages.
    grid : list of dict
        One metrics dict per threshold of the grid (increasing), with the
        extra keys ``threshold`` and ``n_routed``: the hybrid there.
    comparison : dict or None
        ``"all"`` and ``"routed"`` (articles routed at `threshold`) ->
        ``{"n", "stage1_mae", "stage2_mae", "difference", "stage2_better"}``:
        the paired difference of weighted-average MAE, Stage 2 minus
        Stage 1, on the same articles; ``stage2_better`` is True only when
        the interval's upper bound is below 0.
    stage2_better : bool
        ``comparison["routed"]["stage2_better"]``: Stage 2 is better than
        Stage 1 on the articles the cascade gives it (False when none is
        routed or Stage 2 is unavailable). The interval alone: `verdict`
        also weighs the sample size.
    distribution : dict
        System -> ``{"n", "sd_ratio", "p90_predicted", "p90_true",
        "ks_statistic"}`` (None for an unavailable system): the predicted
        weighted averages against the true ones (standard deviation
        ratio predicted / true, the 90th percentile of each, with
        intervals; the two-sample Kolmogorov-Smirnov statistic, a number
        without interval). A ratio below 1 is a compressed range.
    undefined_metrics : dict of str to str
        Metric -> why it is NaN for every system, e.g. ``high_recall``
        when no article is truly HIGH (the highest tier).
    training_articles : dict
        ``{"recorded", "n_given", "n_trained_on", "n_left_out",
        "unchecked_stages"}``: whether the router records its training
        articles (:func:`in_sample_articles`), how many articles were
        given, how many of them a stage that scored them here was trained
        on, how many of those were left out of every number, and the
        stages scoring here whose training articles are not recorded.
    in_sample : bool
        True when training articles were kept (``allow_training_articles``):
        every number is then in sample and says nothing of new articles.
    verdict : {"stage2_better", "stage2_worse", "inconclusive", "unavailable"}
        :func:`verdict_of` the comparison; `verdict_reason` says why.
    verdict_reason : str

    See Also
    --------
    cascade_report : Measures it.
    format_report : The report as text.
    CascadeFrontierDisplay : The report's grid, plotted.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.neighbors import KNeighborsRegressor
    >>> from hybrid_estimators.evaluation import cascade_report
    >>> from hybrid_estimators.router import HybridRouterRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(0, 10, size=(80, 2))
    >>> Y = np.c_[X[:, 0], np.sqrt(10 * X[:, 1])]
    >>> router = HybridRouterRegressor(Ridge().fit(X, Y), KNeighborsRegressor(n_neighbors=1).fit(X, Y),
    ...                                [0.5, 0.5], threshold=4.0, prefit=["stage1", "stage2"]).fit(X, Y)
    >>> report = cascade_report(router, X, Y, n_bootstraps=100, random_state=0)
    >>> report.n, report.threshold, report.verdict
    (80, 4.0, 'stage2_better')
    >>> CascadeReport.from_dict(report.to_dict()).to_dict() == report.to_dict()  # JSON round trip
    True
    >>> report.to_frame().columns[:4].tolist()
    ['section', 'group', 'system', 'threshold']
    """

    n: int
    threshold: float
    confidence: float
    n_bootstraps: int
    random_state: object
    dimension_names: list
    tiers: dict
    stage1_source: str
    stage2_available: bool
    seconds_per_article: dict
    systems: dict
    by_tier: dict
    by_language: dict
    grid: list
    comparison: object
    stage2_better: bool
    stage2_source: str = "router"
    stage2_weight: float = 1.0
    distribution: dict = None
    undefined_metrics: dict = dataclasses.field(default_factory=dict)
    training_articles: dict = None
    in_sample: bool = False
    verdict: str = None
    verdict_reason: str = None

    def to_dict(self):
        """The report as JSON-safe built-in types (NaN becomes None).

        Returns
        -------
        data : dict
        """
        return json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data):
        """Rebuild a report from :meth:`to_dict` (e.g. read back from JSON).

        Parameters
        ----------
        data : dict

        Returns
        -------
        report : CascadeReport
        """
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    def to_frame(self):
        """Every estimate as one row of a long DataFrame.

        Returns
        -------
        frame : DataFrame
            Columns ``section`` (``"system"``, ``"tier"``, ``"language"``,
            ``"grid"`` or ``"distribution"``), ``group`` (tier or language; None otherwise),
            ``system``, ``threshold``, ``n``, ``metric`` (``"mae:NAME"`` for
            a dimension), ``value``, ``low``, ``high``. Pivot it, e.g.
            ``frame.query("section == 'system'").pivot(index="system",
            columns="metric", values="value")``.
        """
        rows = []
        for system, metrics in self.systems.items():
            rows += _frame_rows(metrics, "system", None, system, self.threshold)
        for section, breakdown in (("tier", self.by_tier), ("language", self.by_language)):
            for group, systems in breakdown.items():
                for system, metrics in systems.items():
                    rows += _frame_rows(metrics, section, group, system, self.threshold)
        for point in self.grid:
            rows += _frame_rows(point, "grid", None, "hybrid", point["threshold"])
        for system, statistics in (self.distribution or {}).items():
            rows += _distribution_rows(statistics, system, self.threshold)
        columns = ["section", "group", "system", "threshold", "n", "metric", "value", "low", "high"]
        return pd.DataFrame(rows, columns=columns)

    def to_text(self):
        """The report as fixed-width text tables (see :func:`format_report`)."""
        from ._formatting import format_report

        return format_report(self)



def _frame_rows(metrics, section, group, system, threshold):
    if metrics is None:
        return []
    rows = []
    for metric in METRICS:
        rows.append((metric, metrics[metric]))
    for name, estimate in metrics["mae"].items():
        rows.append((f"mae:{name}", estimate))
    return [
        {
            "section": section,
            "group": group,
            "system": system,
            "threshold": threshold,
            "n": metrics["n"],
            "metric": metric,
            "value": _number(estimate["value"]),
            "low": _number(estimate["low"]),
            "high": _number(estimate["high"]),
        }
        for metric, estimate in rows
    ]


def _number(value):
    return np.nan if value is None else float(value)


def _distribution_rows(statistics, system, threshold):
    if statistics is None:
        return []
    rows = []
    for metric, estimate in statistics.items():
        if metric == "n":
            continue
        if not isinstance(estimate, dict):  # a statistic without an interval
            estimate = {"value": estimate, "low": None, "high": None}
        rows.append({
            "section": "distribution", "group": None, "system": system, "threshold": threshold,
            "n": statistics["n"], "metric": metric, "value": _number(estimate["value"]),
            "low": _number(estimate["low"]), "high": _number(estimate["high"]),
        })
    return rows


def verdict_of(comparison):
    """Whether Stage 2 earns its place, from the paired comparison on routed articles.

    Parameters
    ----------
    comparison : dict or None
        :attr:`CascadeReport.comparison`.

    Returns
    -------
    verdict : {"stage2_better", "stage2_worse", "inconclusive", "unavailable"}
        ``"inconclusive"`` when fewer than :data:`MIN_VERDICT_ARTICLES`
        articles are routed, when there is no interval, or when the
        interval of Stage 2's MAE minus Stage 1's includes zero.
    reason : str

    See Also
    --------
    cascade_report : Compares the systems.
    format_report : Prints the verdicts.

    Examples
    --------
    >>> entry = {"n": 40, "difference": {"value": -0.2, "low": -0.3, "high": 0.05}}
    >>> verdict_of({"routed": entry})
    ('inconclusive', 'the paired interval of Stage 2 - Stage 1 MAE, [-0.300, 0.050], includes zero')
    >>> verdict_of({"routed": {**entry, "n": 12}})[1]
    'only 12 articles are routed to Stage 2; a verdict needs at least 30'
    """
    if comparison is None:
        return "unavailable", "the router has no Stage 2: nothing to compare"
    routed = comparison["routed"]
    difference = routed["difference"]
    if routed["n"] < MIN_VERDICT_ARTICLES:
        return "inconclusive", (
            f"only {routed['n']} articles are routed to Stage 2; a verdict needs at least "
            f"{MIN_VERDICT_ARTICLES}"
        )
    low, high = _number(difference["low"]), _number(difference["high"])
    if np.isnan(low) or np.isnan(high):
        return "inconclusive", "no bootstrap interval of the difference (n_bootstraps=0)"
    interval = f"{_number(difference['value']):.3f} [{low:.3f}, {high:.3f}]"
    if high < 0:
        return "stage2_better", f"Stage 2 - Stage 1 MAE on the {routed['n']} routed articles is {interval}"
    if low > 0:
        return "stage2_worse", f"Stage 2 - Stage 1 MAE on the {routed['n']} routed articles is {interval}"
    return "inconclusive", f"the paired interval of Stage 2 - Stage 1 MAE, [{low:.3f}, {high:.3f}], includes zero"
