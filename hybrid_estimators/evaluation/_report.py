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
    "medium_plus_recall",
    "medium_plus_precision",
    "medium_plus_routed",
    "skip_rate",
    "seconds_per_article",
)

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
    ``medium_plus_precision``, ``medium_plus_routed``, ``skip_rate`` and
    ``seconds_per_article``, plus ``mae``: dimension name -> estimate.

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
        routed or Stage 2 is unavailable).
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
            Columns ``section`` (``"system"``, ``"tier"``, ``"language"`` or
            ``"grid"``), ``group`` (tier or language; None otherwise),
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
