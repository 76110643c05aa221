"""Weighted averages, tiers and gatekeepers of a filter's dimension scores.

Pure numpy: this module imports nothing of the package, so every other
module (and user code) can use it without loading a model.
"""

import numpy as np

#: The seed's tiers: LOW < 4.0 <= MEDIUM < 7.0 <= HIGH.
DEFAULT_TIERS = {"high": 7.0, "medium": 4.0, "low": 0.0}

SCORE_MIN, SCORE_MAX = 0.0, 10.0


def _as_2d_scores(scores):
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 1:
        scores = scores[np.newaxis, :]
    if scores.ndim != 2:
        raise ValueError(
            f"scores must be a 2-D array (n_articles, n_dimensions); got shape "
            f"{scores.shape}."
        )
    return scores


def normalize_weights(weights, n_dimensions=None):
    """Return `weights` as a float array that sums to 1.

    Parameters
    ----------
    weights : array-like of shape (n_dimensions,) or dict
        Non-negative weight per dimension, not all zero. A dict keeps its
        insertion order.
    n_dimensions : int, default=None
        When given, the number of weights must equal it.

    Returns
    -------
    weights : ndarray of shape (n_dimensions,)

    See Also
    --------
    weighted_average : Averages scores with these weights.

    Examples
    --------
    >>> normalize_weights({"impact": 2.0, "novelty": 6.0}).tolist()
    [0.25, 0.75]
    >>> normalize_weights([1.0, -1.0])
    Traceback (most recent call last):
    ...
    ValueError: weights must be finite and non-negative; got array([ 1., -1.]).
    """
    if isinstance(weights, dict):
        weights = list(weights.values())
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 1 or weights.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D array; got {weights!r}.")
    if n_dimensions is not None and weights.size != n_dimensions:
        raise ValueError(
            f"weights has {weights.size} entries but the scores have "
            f"{n_dimensions} dimensions."
        )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(f"weights must be finite and non-negative; got {weights!r}.")
    total = weights.sum()
    if total <= 0:
        raise ValueError("weights must not all be zero.")
    return weights / total


def weighted_average(scores, weights):
    """Weighted average of each article's dimension scores.

    Parameters
    ----------
    scores : array-like of shape (n_articles, n_dimensions)
    weights : array-like of shape (n_dimensions,) or dict
        Normalised to sum to 1.

    Returns
    -------
    averages : ndarray of shape (n_articles,)

    See Also
    --------
    tier_of : The tier of each average.
    apply_gatekeepers : Caps averages where a gatekeeper scores too low.
    normalize_weights : How the weights are checked and normalised.

    Examples
    --------
    >>> weighted_average([[2.0, 6.0]], [0.25, 0.75])
    array([5.])
    """
    scores = _as_2d_scores(scores)
    return scores @ normalize_weights(weights, scores.shape[1])


def tier_of(averages, tiers=None):
    """Name of the tier each weighted average falls into.

    A score belongs to the highest tier whose lower bound it reaches.

    Parameters
    ----------
    averages : array-like of shape (n_articles,)
    tiers : dict of str to float, default=None
        Tier name to lower bound; :data:`DEFAULT_TIERS` when None.

    Returns
    -------
    tiers : ndarray of str, shape (n_articles,)

    See Also
    --------
    weighted_average : The averages it names.
    medium_threshold : Where the MEDIUM tier starts.
    DEFAULT_TIERS : The tiers used when none are given.

    Examples
    --------
    >>> tier_of([1.0, 4.0, 6.99, 7.0]).tolist()
    ['low', 'medium', 'medium', 'high']
    """
    tiers = DEFAULT_TIERS if tiers is None else tiers
    ordered = sorted(tiers.items(), key=lambda item: item[1])
    names = np.array([name for name, _ in ordered], dtype=object)
    bounds = np.array([bound for _, bound in ordered], dtype=float)
    averages = np.atleast_1d(np.asarray(averages, dtype=float))
    index = np.searchsorted(bounds, averages, side="right") - 1
    return names[np.clip(index, 0, len(names) - 1)]


def medium_threshold(tiers=None):
    """Lower bound of the MEDIUM tier (the second-lowest tier).

    See Also
    --------
    tier_of : The tier of each weighted average.
    hybrid_estimators.metrics.medium_plus_recall : The share of MEDIUM+
        articles Stage 2 sees.

    Examples
    --------
    >>> medium_threshold()
    4.0
    """
    tiers = DEFAULT_TIERS if tiers is None else tiers
    bounds = sorted(float(bound) for bound in tiers.values())
    if len(bounds) < 2:
        raise ValueError(f"tiers need at least two levels; got {tiers!r}.")
    return bounds[1]


def apply_gatekeepers(scores, averages, gatekeepers):
    """Cap the weighted average where a gatekeeper dimension scores too low.

    The seed's rule: a dimension marked gatekeeper that scores below its
    ``threshold`` caps the article's weighted average at ``max_score`` (the
    uplifting filter: evidence_level < 3 caps at 3.0).

    Parameters
    ----------
    scores : array-like of shape (n_articles, n_dimensions)
    averages : array-like of shape (n_articles,)
    gatekeepers : dict of int to (float, float) or None
        Dimension index to ``(threshold, max_score)``.

    Returns
    -------
    capped : ndarray of shape (n_articles,)
    applied : ndarray of bool, shape (n_articles,)
        Whether a gatekeeper lowered the article's average.

    See Also
    --------
    weighted_average : The averages it caps.
    tier_of : The tier of the capped averages.

    Examples
    --------
    >>> capped, applied = apply_gatekeepers([[2.0, 9.0]], [6.0], {0: (3.0, 3.0)})
    >>> capped.tolist(), applied.tolist()
    ([3.0], [True])
    """
    scores = _as_2d_scores(scores)
    capped = np.asarray(averages, dtype=float).copy()
    applied = np.zeros(capped.shape, dtype=bool)
    for dimension, (threshold, max_score) in (gatekeepers or {}).items():
        gated = (scores[:, dimension] < threshold) & (capped > max_score)
        capped[gated] = max_score
        applied |= gated
    return capped, applied
