"""Ratios of sums over articles, with percentile intervals on shared (paired) resamples.

Every metric of a cascade report is a ratio of sums over articles (an MAE is
a sum of absolute errors over a count, a recall a sum of hits over a sum of
positives), so one matrix of resample counts gives all the bootstrap
replicates at once.
"""

import warnings

import numpy as np
from sklearn.utils import check_random_state

#: Most resample-by-article counts held in memory at once.
_MAX_COUNTS = 2_000_000


def _ratio(numerator, denominator):
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.asarray(denominator, dtype=float)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


class _PairedBootstrap:
    """Ratios of sums over articles, with percentile intervals on shared resamples.

    ``add`` registers a statistic ``sum(numerator) / sum(denominator)``;
    ``add_resampled`` statistics that are no ratio of sums (a standard
    deviation, a percentile), computed from the resamples' counts of each
    article; ``run`` evaluates all of them on the full sample and on the
    same `n_bootstraps` resamples of articles (drawn with replacement).
    """

    def __init__(self, n_samples, n_bootstraps, confidence, random_state):
        self.n_samples = n_samples
        self.n_bootstraps = n_bootstraps
        self.confidence = confidence
        self.random_state = random_state
        self._keys, self._numerators, self._which = [], [], []
        self._denominators, self._denominator_index = [], {}
        self._resampled = []  # (keys, statistic)

    def add(self, key, numerator, denominator):
        denominator = np.asarray(denominator, dtype=float)
        token = denominator.tobytes()
        if token not in self._denominator_index:  # many statistics share one
            self._denominator_index[token] = len(self._denominators)
            self._denominators.append(denominator)
        self._keys.append(key)
        self._numerators.append(np.asarray(numerator, dtype=float))
        self._which.append(self._denominator_index[token])

    def add_resampled(self, keys, statistic):
        """Register ``statistic(counts)``: counts of shape (n_resamples, n_samples) -> one column per key."""
        self._resampled.append((list(keys), statistic))

    def run(self):
        """``{key: (value, low, high)}`` of every registered statistic."""
        numerators = np.column_stack(self._numerators)
        denominators = np.column_stack(self._denominators)
        which = np.asarray(self._which)
        value = _ratio(numerators.sum(axis=0), denominators.sum(axis=0)[which])
        value = np.concatenate([value, self._resampled_values(np.ones((1, self.n_samples)))[0]])
        keys = self._keys + [key for keys, _ in self._resampled for key in keys]
        low = high = np.full(value.shape, np.nan)
        if self.n_bootstraps:
            replicates = self._replicates(numerators, denominators, which)
            tail = 50.0 * (1.0 - self.confidence)
            with warnings.catch_warnings():  # a statistic undefined on every resample
                warnings.simplefilter("ignore", RuntimeWarning)
                low, high = np.nanpercentile(replicates, [tail, 100.0 - tail], axis=0)
        return {key: (value[i], low[i], high[i]) for i, key in enumerate(keys)}

    def _resampled_values(self, counts):
        values = [np.asarray(statistic(counts), dtype=float) for _, statistic in self._resampled]
        return np.column_stack(values) if values else np.empty((len(counts), 0))

    def _replicates(self, numerators, denominators, which):
        n = self.n_samples
        rng = check_random_state(self.random_state)
        n_resampled = sum(len(keys) for keys, _ in self._resampled)
        replicates = np.empty((self.n_bootstraps, numerators.shape[1] + n_resampled))
        chunk = max(1, _MAX_COUNTS // n)
        for start in range(0, self.n_bootstraps, chunk):
            size = min(chunk, self.n_bootstraps - start)
            drawn = rng.randint(0, n, size=(size, n)) + n * np.arange(size)[:, np.newaxis]
            counts = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)
            counts = counts.astype(float)
            rows = slice(start, start + size)
            replicates[rows, : numerators.shape[1]] = _ratio(
                counts @ numerators, (counts @ denominators)[:, which]
            )
            if n_resampled:
                replicates[rows, numerators.shape[1] :] = self._resampled_values(counts)
        return replicates
