"""How the predicted weighted averages are spread against the true ones.

A regression student compresses its teacher's range toward the mean: its
MAE can look fine while no article reaches HIGH. These statistics compare
the two distributions of weighted averages (gatekeepers applied) over the
same articles: the ratio of their standard deviations (predicted / true),
the 90th percentile of each, and the two-sample Kolmogorov-Smirnov
statistic (:func:`scipy.stats.ks_2samp`).
"""

import numpy as np
from scipy.stats import ks_2samp

#: Distribution statistics of each system with a bootstrap interval.
RESAMPLED = ("sd_ratio", "p90_predicted", "p90_true")

#: Every distribution statistic of a system; the KS statistic has no interval.
DISTRIBUTION_METRICS = (*RESAMPLED, "ks_statistic")


def register_distribution(bootstrap, system, predicted, true):
    """Register `system`'s resampled statistics on `bootstrap`.

    `predicted` holds the weighted averages of each repetition, shape
    ``(n_repeats, n_samples)`` (pooled: each article counts once in all),
    `true` the true ones, shape ``(n_samples,)``.
    """

    def statistics(positions):
        pooled, actual = predicted[:, positions].ravel(), true[positions]
        spread = actual.std()
        ratio = pooled.std() / spread if spread > 0 else np.nan
        return [ratio, np.percentile(pooled, 90), np.percentile(actual, 90)]

    bootstrap.add_resampled([("distribution", system, name) for name in RESAMPLED], statistics)


def ks_statistic(predicted, true):
    """The two-sample KS statistic of the pooled predictions against the true averages.

    Reported without an interval: a percentile bootstrap of a supremum
    distance is biased upward (each resample adds its own noise to the
    difference of the two empirical distributions), so its interval would
    not hold the estimate.

    Examples
    --------
    >>> import numpy as np
    >>> ks_statistic(np.array([[1.0, 2.0, 3.0, 4.0]]), np.array([1.0, 2.0, 3.0, 4.0]))
    0.0
    >>> ks_statistic(np.array([[5.0, 5.0]]), np.array([1.0, 9.0]))
    0.5
    """
    return float(ks_2samp(np.ravel(predicted), true, method="asymp").statistic)
