"""MAE and time per article of a cascade against its threshold, drawn with matplotlib."""

import dataclasses

import numpy as np

from .._plotting import check_matplotlib_support, validate_style_kwargs
from ..tiers import DEFAULT_TIERS, normalize_weights
from ._cascade_report import cascade_report
from ._report import CascadeReport



class CascadeFrontierDisplay:
    """MAE and time per article of the cascade against its threshold.

    The hybrid's weighted-average MAE (with its bootstrap band) is drawn on
    the left axis and its time per article on the right one, against the
    threshold; Stage 1 alone and Stage 2 alone are horizontal reference
    lines on both, and the router's threshold a vertical line; the title
    says what is shown (name, number of articles, threshold) and the
    legend sits below the axes, where it hides no data. Create it with
    :meth:`from_estimator`, :meth:`from_predictions` or
    :meth:`from_report`; all parameters are stored as attributes.

    Parameters
    ----------
    thresholds : ndarray of shape (n_thresholds,)
    mae, mae_low, mae_high : ndarray of shape (n_thresholds,)
        The hybrid's MAE and its interval at each threshold.
    seconds_per_article : ndarray of shape (n_thresholds,)
        The hybrid's time per article at each threshold.
    threshold : float
        The router's threshold.
    stage1_mae, stage2_mae : float or None, default=None
        MAE of each stage alone.
    stage1_seconds, stage2_seconds : float or None, default=None
        Time per article of each stage alone.
    confidence : float or None, default=None
        Coverage of the band (for the legend).
    n : int or None, default=None
        Number of articles measured (for the title).
    name : str or None, default=None
        What is measured, e.g. the filter (for the title and the legend).
    in_sample : bool, default=False
        Measured on articles a stage was trained on (said in the title).

    Attributes
    ----------
    ax_ : matplotlib Axes
        Axes of the MAE.
    ax_time_ : matplotlib Axes
        Twin axes of the time per article (milliseconds).
    figure_ : matplotlib Figure
    line_ : matplotlib Artist
        The hybrid's MAE.
    band_ : matplotlib Artist or None
        Its interval (None without intervals).
    time_line_ : matplotlib Artist
        The hybrid's time per article.
    threshold_line_ : matplotlib Artist
        The router's threshold.
    legend_ : matplotlib Legend
        Below the axes.

    See Also
    --------
    cascade_report : The numbers behind the plot.
    hybrid_estimators.calibration.ThresholdCertificateDisplay : Recall and its
        certified bound against the threshold.
    hybrid_estimators.router.HybridRouterRegressor : The cascade it plots.

    Examples
    --------
    >>> import numpy as np
    >>> from matplotlib.figure import Figure
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.neighbors import KNeighborsRegressor
    >>> from hybrid_estimators.router import HybridRouterRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(0, 10, size=(60, 2))
    >>> Y = np.c_[X[:, 0], np.sqrt(10 * X[:, 1])]
    >>> router = HybridRouterRegressor(
    ...     Ridge().fit(X, Y), KNeighborsRegressor(1).fit(X, Y), threshold=4.0,
    ...     prefit=["stage1", "stage2"]).fit(X, Y)
    >>> ax = Figure().subplots()
    >>> display = CascadeFrontierDisplay.from_estimator(
    ...     router, X, Y, ax=ax, name="demo", n_bootstraps=100, random_state=0)
    >>> display.ax_ is ax, display.threshold_line_.get_xdata()[0]
    (True, 4.0)
    >>> print(ax.get_title())
    demo: MAE and time per article against the threshold
    60 articles, threshold 4.00
    """

    def __init__(
        self,
        *,
        thresholds,
        mae,
        mae_low,
        mae_high,
        seconds_per_article,
        threshold,
        stage1_mae=None,
        stage2_mae=None,
        stage1_seconds=None,
        stage2_seconds=None,
        confidence=None,
        n=None,
        name=None,
        in_sample=False,
    ):
        self.thresholds = thresholds
        self.mae = mae
        self.mae_low = mae_low
        self.mae_high = mae_high
        self.seconds_per_article = seconds_per_article
        self.threshold = threshold
        self.stage1_mae = stage1_mae
        self.stage2_mae = stage2_mae
        self.stage1_seconds = stage1_seconds
        self.stage2_seconds = stage2_seconds
        self.confidence = confidence
        self.n = n
        self.name = name
        self.in_sample = in_sample

    def plot(self, ax=None, *, name=None, **kwargs):
        """Draw the frontier.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Where to draw the MAE (the time goes on its twin); a new figure
            when None.
        name : str, default=None
            What is measured, for the title and the legend; the display's
            `name` when None.
        **kwargs : dict
            Style keywords of the hybrid's MAE line (``color``, ``lw``,
            ...), as for :meth:`matplotlib.axes.Axes.plot`; an alias and
            its full name together are a ``TypeError``.

        Returns
        -------
        display : CascadeFrontierDisplay
        """
        check_matplotlib_support(f"{type(self).__name__}.plot")
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(8, 5), layout="constrained")
        name = self.name if name is None else name
        thresholds = np.asarray(self.thresholds, dtype=float)
        style = validate_style_kwargs(
            {"color": "C0", "linewidth": 2, "label": "hybrid MAE" if name is None else f"{name} (hybrid) MAE"},
            kwargs,
        )
        colour = style["color"]

        self.band_ = None
        low, high = (np.asarray(bound, dtype=float) for bound in (self.mae_low, self.mae_high))
        if np.isfinite(low).any():
            label = "MAE interval" if self.confidence is None else f"{self.confidence:.0%} interval"
            self.band_ = ax.fill_between(thresholds, low, high, color=colour, alpha=0.2, label=label)
        (self.line_,) = ax.plot(thresholds, np.asarray(self.mae, dtype=float), **style)
        for value, linestyle, stage in ((self.stage1_mae, ":", "Stage 1"), (self.stage2_mae, "--", "Stage 2")):
            if _finite(value):
                ax.axhline(value, color=colour, linestyle=linestyle, linewidth=1, label=f"{stage} only MAE")
        self.threshold_line_ = ax.axvline(
            self.threshold, color="black", linestyle="-.", label=f"threshold {self.threshold:.2f}"
        )
        ax.set_xlabel("threshold (routing score)")
        ax.set_ylabel("MAE of the weighted average", color=colour)
        self.ax_time_ = self._plot_time(ax, thresholds)
        ax.set_title(self._title(name), fontsize="medium")
        self.legend_ = self._legend(ax)
        self.ax_, self.figure_ = ax, ax.figure
        return self

    def _plot_time(self, ax, thresholds):
        ax_time = ax.twinx()
        milliseconds = 1000 * np.asarray(self.seconds_per_article, dtype=float)
        (self.time_line_,) = ax_time.plot(thresholds, milliseconds, color="C1", label="hybrid ms/article")
        for value, linestyle, stage in (
            (self.stage1_seconds, ":", "Stage 1"),
            (self.stage2_seconds, "--", "Stage 2"),
        ):
            if _finite(value):
                ax_time.axhline(
                    1000 * value, color="C1", linestyle=linestyle, linewidth=1,
                    label=f"{stage} only ms/article",
                )
        ax_time.set_ylabel("ms per article", color="C1")
        return ax_time

    def _title(self, name):
        what = "Cascade" if name is None else name
        details = [] if self.n is None else [f"{self.n} articles"]
        details.append(f"threshold {self.threshold:.2f}")
        if self.in_sample:
            details.append("IN SAMPLE (a stage was trained on these articles)")
        return f"{what}: MAE and time per article against the threshold\n{', '.join(details)}"

    def _legend(self, ax):
        """One legend for both axes, below them: it hides neither the band nor the time line."""
        handles, labels = ax.get_legend_handles_labels()
        more_handles, more_labels = self.ax_time_.get_legend_handles_labels()
        return self.ax_time_.legend(
            handles + more_handles,
            labels + more_labels,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.14),
            ncol=3,
            fontsize="small",
            frameon=False,
        )

    @classmethod
    def from_report(cls, report, *, ax=None, name=None, **kwargs):
        """Plot the frontier of a :class:`CascadeReport` (or its ``to_dict()``).

        Parameters
        ----------
        report : CascadeReport or dict
        ax : matplotlib Axes, default=None
        name : str, default=None
            What is measured (title and legend).
        **kwargs : dict
            Style keywords of the hybrid's MAE line (see :meth:`plot`).

        Returns
        -------
        display : CascadeFrontierDisplay
        """
        report = report if isinstance(report, CascadeReport) else CascadeReport.from_dict(report)
        if not report.grid:
            raise ValueError("the report has no threshold grid: its router has no Stage 2.")

        def column(metric, key):
            return np.array([point[metric][key] for point in report.grid], dtype=float)

        systems = report.systems
        display = cls(
            thresholds=np.array([point["threshold"] for point in report.grid], dtype=float),
            mae=column("weighted_average_mae", "value"),
            mae_low=column("weighted_average_mae", "low"),
            mae_high=column("weighted_average_mae", "high"),
            seconds_per_article=column("seconds_per_article", "value"),
            threshold=report.threshold,
            stage1_mae=systems["stage1"]["weighted_average_mae"]["value"],
            stage2_mae=systems["stage2"]["weighted_average_mae"]["value"],
            stage1_seconds=report.seconds_per_article["stage1"],
            stage2_seconds=report.seconds_per_article["stage2"],
            confidence=report.confidence,
            n=report.n,
            name=name,
            in_sample=bool(report.in_sample),
        )
        return display.plot(ax=ax, **kwargs)

    @classmethod
    def from_estimator(
        cls,
        router,
        X,
        Y,
        *,
        thresholds=None,
        n_bootstraps=1000,
        confidence=0.9,
        random_state=None,
        language=None,
        seconds_per_article=None,
        allow_training_articles=False,
        ax=None,
        name=None,
        **kwargs,
    ):
        """Measure `router` with :func:`cascade_report` and plot its frontier.

        Parameters
        ----------
        router : HybridRouterRegressor
            Fitted, with a Stage 2.
        X, Y
            Labelled articles.
        thresholds, n_bootstraps, confidence, random_state, language, \
seconds_per_article, allow_training_articles
            As for :func:`cascade_report`.
        ax : matplotlib Axes, default=None
        name : str, default=None
            What is measured; a loaded filter's name (``spec.qualified_name``)
            when None.
        **kwargs : dict
            Style keywords of the hybrid's MAE line (see :meth:`plot`).

        Returns
        -------
        display : CascadeFrontierDisplay
        """
        report = cascade_report(
            router, X, Y, thresholds=thresholds, n_bootstraps=n_bootstraps, confidence=confidence,
            random_state=random_state, language=language, seconds_per_article=seconds_per_article,
            allow_training_articles=allow_training_articles,
        )
        if name is None and getattr(router, "spec", None) is not None:
            name = getattr(router.spec, "qualified_name", None)
        return cls.from_report(report, ax=ax, name=name, **kwargs)

    @classmethod
    def from_predictions(
        cls,
        Y,
        stage1_predictions,
        stage2_predictions,
        *,
        weights=None,
        threshold,
        tiers=None,
        gatekeepers=None,
        stage2_weight=1.0,
        thresholds=None,
        n_bootstraps=1000,
        confidence=0.9,
        random_state=None,
        language=None,
        seconds_per_article=None,
        ax=None,
        name=None,
        **kwargs,
    ):
        """Plot the frontier of a cascade from its stages' scores, running nothing.

        The routing score is the weighted average of Stage 1's scores,
        clipped to 0-10 (the router's default), as :func:`cascade_report`
        does with given predictions.

        Parameters
        ----------
        Y : array-like or DataFrame of shape (n_samples, n_dimensions)
            True scores; a DataFrame's columns name the dimensions.
        stage1_predictions, stage2_predictions : array-like of shape \
(n_samples, n_dimensions) or (n_repeats, n_samples, n_dimensions)
            Each stage's scores of every article (Stage 2's before the
            `stage2_weight` blend).
        weights : array-like of shape (n_dimensions,), dict or None, default=None
            Weight of each dimension (a dict by dimension name); equal
            weights when None.
        threshold : float
            The cascade's routing threshold.
        tiers : dict of str to float or None, default=None
            Tier name -> lower bound; the default tiers when None.
        gatekeepers : dict or None, default=None
            As for :class:`~hybrid_estimators.router.HybridRouterRegressor`.
        stage2_weight : float, default=1.0
            Share of Stage 2 in a routed article's scores.
        thresholds, n_bootstraps, confidence, random_state, language, \
seconds_per_article
            As for :func:`cascade_report` (without `seconds_per_article`,
            no time is drawn).
        ax : matplotlib Axes, default=None
        name : str, default=None
            What is measured (title and legend).
        **kwargs : dict
            Style keywords of the hybrid's MAE line (see :meth:`plot`).

        Returns
        -------
        display : CascadeFrontierDisplay

        Examples
        --------
        >>> import numpy as np
        >>> from matplotlib.figure import Figure
        >>> rng = np.random.RandomState(0)
        >>> Y = rng.uniform(0, 10, size=(50, 2))
        >>> display = CascadeFrontierDisplay.from_predictions(
        ...     Y, Y + rng.normal(0, 1, Y.shape), Y, threshold=5.0, ax=Figure().subplots(),
        ...     seconds_per_article={"stage1": 0.01, "stage2": 0.5}, n_bootstraps=50,
        ...     random_state=0, name="demo", color="C2")
        >>> display.line_.get_label(), display.line_.get_color()
        ('demo (hybrid) MAE', 'C2')
        """
        given = _GivenStages.of(Y, weights, threshold, tiers, gatekeepers, stage2_weight)
        report = cascade_report(
            given, np.empty((len(Y), 0)), Y, thresholds=thresholds, n_bootstraps=n_bootstraps,
            confidence=confidence, random_state=random_state, language=language,
            stage1_predictions=stage1_predictions, stage2_predictions=stage2_predictions,
            seconds_per_article=seconds_per_article,
        )
        return cls.from_report(report, ax=ax, name=name, **kwargs)


@dataclasses.dataclass
class _GivenStages:
    """What :func:`cascade_report` reads of a router, for stages given by their scores."""

    dimension_names_: list
    weights_: np.ndarray
    tiers_: dict
    gatekeepers_: dict
    threshold_: float
    stage2_weight: float
    stage2_: object = True  # a Stage 2 exists; its scores are given

    @classmethod
    def of(cls, Y, weights, threshold, tiers, gatekeepers, stage2_weight):
        n_dimensions = np.shape(Y)[1] if np.ndim(Y) == 2 else 1
        if hasattr(Y, "columns"):
            names = [str(column) for column in Y.columns]
        elif isinstance(weights, dict):
            names = [str(name) for name in weights]
        else:
            names = [f"dim_{i}" for i in range(n_dimensions)]
        if weights is None:
            weights = np.ones(n_dimensions)
        elif isinstance(weights, dict):
            weights = [weights[name] for name in names]
        return cls(
            names,
            normalize_weights(weights, n_dimensions),
            dict(DEFAULT_TIERS if tiers is None else tiers),
            dict(gatekeepers or {}),
            float(threshold),
            float(stage2_weight),
        )


def _finite(value):
    return value is not None and np.isfinite(value)
