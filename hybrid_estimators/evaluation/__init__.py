"""Stage 1 alone, Stage 2 alone and the cascade, on the same labelled articles.

:func:`cascade_report` answers the question a cascade must answer before it
ships: does Stage 2 earn its place? It runs each stage of a fitted
:class:`~hybrid_estimators.router.HybridRouterRegressor` once over every
article (timed), derives the hybrid at any threshold from those two score
arrays without running anything again, and measures every system with
bootstrap percentile intervals over one shared set of resamples (so that
differences between systems are paired). :class:`CascadeFrontierDisplay`
draws MAE and time per article against the threshold.

The package's modules, one job each: ``_cascade_report`` (running the
stages, the per-article terms, :func:`cascade_report`), ``_report`` (the
:class:`CascadeReport` it returns and its :func:`verdict_of`),
``_bootstrap`` (paired percentile intervals), ``_distribution`` (predicted
against true weighted averages), ``_training_articles`` (which articles a
stage was trained on: :func:`in_sample_articles`), ``_formatting``
(:func:`format_report`) and ``_display`` (:class:`CascadeFrontierDisplay`).
"""

from ._cascade_report import cascade_report
from ._display import CascadeFrontierDisplay
from ._formatting import format_report
from ._distribution import DISTRIBUTION_METRICS
from ._report import (
    DEFAULT_THRESHOLDS,
    METRICS,
    MIN_VERDICT_ARTICLES,
    SYSTEMS,
    CascadeReport,
    verdict_of,
)
from ._training_articles import in_sample_articles

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DISTRIBUTION_METRICS",
    "METRICS",
    "MIN_VERDICT_ARTICLES",
    "SYSTEMS",
    "CascadeFrontierDisplay",
    "CascadeReport",
    "cascade_report",
    "format_report",
    "in_sample_articles",
    "verdict_of",
]
