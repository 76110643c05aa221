"""A run compared with its filter's record: the observed skip rate beside the expected one.

Re-exported by :mod:`hybrid_estimators.scoring`, whose summaries (plain,
several filters, Ray) report it.
"""

import math
import numbers

__all__ = ["SKIP_RATE_CONFIDENCE", "recorded_skip_rate", "skip_rate_summary", "skip_rate_message",
           "warn_skip_rate"]


#: Of the binomial interval the observed skip rate is checked against.
SKIP_RATE_CONFIDENCE = 0.99


def recorded_skip_rate(metadata, threshold):
    """The skip rate the filter's calibration expects at `threshold`, or None.

    Parameters
    ----------
    metadata : dict or None
        The filter's metadata (``probe/metadata.json``).
    threshold : float
        The threshold the filter routes at: a calibration recorded for
        another threshold says nothing about this one.

    Returns
    -------
    rate : float or None

    See Also
    --------
    skip_rate_summary : Compares a run's skip rate with it.

    Examples
    --------
    >>> recorded_skip_rate({"calibration": {"threshold": 2.5, "expected_skip_rate": 0.31}}, 2.5)
    0.31
    >>> recorded_skip_rate({"calibration": {"threshold": 2.5, "expected_skip_rate": 0.31}}, 4.0) is None
    True
    """
    calibration = (metadata or {}).get("calibration") if isinstance(metadata, dict) else None
    if not isinstance(calibration, dict):
        return None
    rate, recorded = calibration.get("expected_skip_rate"), calibration.get("threshold")
    if not isinstance(rate, numbers.Real) or not isinstance(recorded, numbers.Real):
        return None
    if not math.isclose(float(recorded), float(threshold), rel_tol=1e-9, abs_tol=1e-9):
        return None
    return float(rate)


def skip_rate_summary(n_skipped, n_scored, expected, confidence=SKIP_RATE_CONFIDENCE):
    """The run's observed skip rate beside the expected one, and whether it is far from it.

    ``outside`` is True when `n_skipped` falls outside the central
    `confidence` interval of a binomial draw of `n_scored` articles with
    probability `expected` (None without an expectation or an article).

    See Also
    --------
    recorded_skip_rate : The expected skip rate.
    warn_skip_rate : Warns when the run is far from it.

    Examples
    --------
    >>> summary = skip_rate_summary(0, 20, 0.31)
    >>> summary["observed"], summary["expected"], summary["outside"]
    (0.0, 0.31, True)
    >>> skip_rate_summary(6, 20, 0.31)["outside"]
    False
    """
    from scipy.stats import binom

    observed = n_skipped / n_scored if n_scored else None
    interval = outside = None
    if expected is not None and n_scored:
        tail = (1 - confidence) / 2
        low, high = binom.ppf(tail, n_scored, expected), binom.ppf(1 - tail, n_scored, expected)
        interval = [float(low) / n_scored, float(high) / n_scored]
        outside = bool(n_skipped < low or n_skipped > high)
    return {
        "n_scored": int(n_scored), "n_skipped": int(n_skipped), "observed": observed,
        "expected": expected, "interval": interval, "confidence": float(confidence), "outside": outside,
    }


def skip_rate_message(name, summary):
    """The warning of a run whose skip rate is far from the filter's record.

    See Also
    --------
    skip_rate_summary : The summary it describes.
    """
    low, high = summary["interval"]
    return (
        f"filter {name}: this run skipped Stage 2 for {summary['observed']:.1%} of {summary['n_scored']} "
        f"scored articles, where its calibration expects {summary['expected']:.1%} ({summary['confidence']:.0%} "
        f"binomial interval {low:.1%}-{high:.1%}): these articles may not be like the ones it was "
        "calibrated on"
    )


def warn_skip_rate(name, summary):
    """Warn (:class:`~hybrid_estimators.exceptions.FilterQualityWarning`) when `summary` is outside.

    See Also
    --------
    skip_rate_summary : The summary it warns about.
    hybrid_estimators.exceptions.FilterQualityWarning : Its category.
    """
    if summary["outside"]:
        import warnings

        from .exceptions import FilterQualityWarning

        warnings.warn(skip_rate_message(name, summary), FilterQualityWarning, stacklevel=2)
