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
    n_repeats = len(predicted)
    pooled = np.ravel(predicted)  # repetition by repetition, as np.tile repeats the counts

    def statistics(counts):
        pooled_counts = np.tile(counts, (1, n_repeats))
        spread = weighted_std(true, counts)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(spread > 0, weighted_std(pooled, pooled_counts) / spread, np.nan)
        return np.column_stack([
            ratio,
            weighted_percentile(pooled, pooled_counts, 90),
            weighted_percentile(true, counts, 90),
        ])

    bootstrap.add_resampled([("distribution", system, name) for name in RESAMPLED], statistics)


def weighted_std(values, counts):
    """``np.std`` of `values` repeated `counts` times, for each row of `counts`.

    Examples
    --------
    >>> import numpy as np
    >>> values = np.array([1.0, 2.0, 4.0])
    >>> bool(np.isclose(weighted_std(values, np.array([[2, 0, 1]]))[0], np.std([1.0, 1.0, 4.0])))
    True
    """
    centre = values.mean()  # centred first: no cancellation
    deviations = values - centre
    total = counts.sum(axis=1)
    mean = counts @ deviations / total
    return np.sqrt(np.maximum(counts @ deviations**2 / total - mean**2, 0.0))


def weighted_percentile(values, counts, q):
    """``np.percentile(..., q)`` (linear) of `values` repeated `counts` times, for each row.

    Examples
    --------
    >>> import numpy as np
    >>> values = np.array([3.0, 1.0, 2.0, 9.0])
    >>> counts = np.array([[1, 2, 0, 1], [0, 1, 3, 0]])
    >>> expanded = [np.repeat(values, row) for row in counts]
    >>> bool(np.allclose(weighted_percentile(values, counts, 90),
    ...                  [np.percentile(sample, 90) for sample in expanded]))
    True
    """
    order = np.argsort(values, kind="stable")
    ordered, cumulative = values[order], np.cumsum(counts[:, order], axis=1)
    position = q / 100 * (cumulative[:, -1] - 1)
    below = np.floor(position)

    def value_at(rank):  # the rank-th (from 0) value of the sorted expanded sample
        return ordered[np.minimum((cumulative <= rank[:, np.newaxis]).sum(axis=1), len(values) - 1)]

    low, high = value_at(below), value_at(np.minimum(below + 1, cumulative[:, -1] - 1))
    return low + (position - below) * (high - low)


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
