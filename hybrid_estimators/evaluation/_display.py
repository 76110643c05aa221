"""MAE and time per article of a cascade against its threshold, drawn with matplotlib."""

import numpy as np

from ._cascade_report import cascade_report
from ._report import CascadeReport

# --- display -----------------------------------------------------------------------------


class CascadeFrontierDisplay:
    """MAE and time per article of the cascade against its threshold.

    The hybrid's weighted-average MAE (with its bootstrap band) is drawn on
    the left axis and its time per article on the right one, against the
    threshold; Stage 1 alone and Stage 2 alone are horizontal reference
    lines on both, and the router's threshold a vertical line. Create it
    with :meth:`from_report` or :meth:`from_estimator`; all parameters are
    stored as attributes.

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
    ...     router, X, Y, ax=ax, n_bootstraps=100, random_state=0)
    >>> display.ax_ is ax, display.threshold_line_.get_xdata()[0]
    (True, 4.0)
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

    def plot(self, ax=None):
        """Draw the frontier.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Where to draw the MAE (the time goes on its twin); a new figure
            when None.

        Returns
        -------
        display : CascadeFrontierDisplay
        """
        _check_matplotlib(f"{type(self).__name__}.plot")
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(8, 4.5))
        thresholds = np.asarray(self.thresholds, dtype=float)
        mae = np.asarray(self.mae, dtype=float)
        low = np.asarray(self.mae_low, dtype=float)
        high = np.asarray(self.mae_high, dtype=float)
        milliseconds = 1000 * np.asarray(self.seconds_per_article, dtype=float)

        self.band_ = None
        if np.isfinite(low).any():
            label = "MAE interval" if self.confidence is None else f"{self.confidence:.0%} interval"
            self.band_ = ax.fill_between(thresholds, low, high, color="C0", alpha=0.2, label=label)
        (self.line_,) = ax.plot(thresholds, mae, color="C0", label="hybrid MAE")
        for value, style, name in (
            (self.stage1_mae, ":", "Stage 1"),
            (self.stage2_mae, "--", "Stage 2"),
        ):
            if _finite(value):
                ax.axhline(
                    value, color="C0", linestyle=style, linewidth=1, label=f"{name} only MAE"
                )
        self.threshold_line_ = ax.axvline(
            self.threshold, color="black", linestyle="-.", label=f"threshold {self.threshold:.2f}"
        )
        ax.set_xlabel("threshold (routing score)")
        ax.set_ylabel("MAE of the weighted average", color="C0")

        ax_time = ax.twinx()
        (self.time_line_,) = ax_time.plot(
            thresholds, milliseconds, color="C1", label="hybrid ms/article"
        )
        for value, style, name in (
            (self.stage1_seconds, ":", "Stage 1"),
            (self.stage2_seconds, "--", "Stage 2"),
        ):
            if _finite(value):
                ax_time.axhline(
                    1000 * value,
                    color="C1",
                    linestyle=style,
                    linewidth=1,
                    label=f"{name} only ms/article",
                )
        ax_time.set_ylabel("ms per article", color="C1")
        handles, labels = ax.get_legend_handles_labels()
        more_handles, more_labels = ax_time.get_legend_handles_labels()
        ax_time.legend(
            handles + more_handles,
            labels + more_labels,
            loc="upper center",
            fontsize="small",
            ncol=2,
        )

        self.ax_, self.ax_time_, self.figure_ = ax, ax_time, ax.figure
        return self

    @classmethod
    def from_report(cls, report, *, ax=None):
        """Plot the frontier of a :class:`CascadeReport` (or its ``to_dict()``).

        Parameters
        ----------
        report : CascadeReport or dict
        ax : matplotlib Axes, default=None

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
        )
        return display.plot(ax=ax)

    @classmethod
    def from_estimator(cls, router, X, Y, *, ax=None, **kwargs):
        """Measure `router` with :func:`cascade_report` and plot its frontier.

        Parameters
        ----------
        router : HybridRouterRegressor
            Fitted, with a Stage 2.
        X, Y
            Labelled articles.
        ax : matplotlib Axes, default=None
        **kwargs
            Passed to :func:`cascade_report` (``thresholds``,
            ``n_bootstraps``, ``confidence``, ``random_state``, ...).

        Returns
        -------
        display : CascadeFrontierDisplay
        """
        return cls.from_report(cascade_report(router, X, Y, **kwargs), ax=ax)


def _check_matplotlib(caller):
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"{caller} requires matplotlib: pip install 'hybrid_estimators[test]' "
            "or pip install matplotlib."
        ) from error


def _finite(value):
    return value is not None and np.isfinite(value)
