"""Which of the evaluated articles a filter's stages were trained on (by text hash)."""

import numpy as np
import pandas as pd

from ..text import text_hashes

#: Where a filter records its training articles: its metadata's key.
TRAINING_KEY = "training_articles_sha256"


def in_sample_articles(router, X, *, stages=("stage1", "stage2")):
    """Which articles of `X` one of `stages` of `router` was trained on.

    A filter records the text hashes of its training articles
    (:func:`~hybrid_estimators.text.text_hashes`) in its metadata's
    ``training_articles_sha256``; that record covers the articles of a
    distilled probe's distillation set too. It is one set for the filter:
    a filter records no separate Stage 2 set (the shipped filters' Stage 1
    and Stage 2 were fitted on the same labelled articles), so an article
    in it counts as a training article of Stage 2 as well.

    Parameters
    ----------
    router : HybridRouterRegressor or Filter
        A loaded filter carries ``metadata``; any other router records no
        training articles.
    X : DataFrame or list of dict
        Articles.
    stages : sequence of {"stage1", "stage2"}, default=("stage1", "stage2")
        The stages whose scores come from `router` (leave out one scored
        out of fold). ``"stage2"`` counts only for a router with a Stage 2.

    Returns
    -------
    mask : ndarray of bool of shape (n_samples,) or None
        True for an article one of `stages` was trained on; None when
        `router` records no training articles (nothing can be checked).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from hybrid_estimators.text import text_hashes
    >>> X = [{"title": "Seen", "content": "a"}, {"title": "New", "content": "b"}]
    >>> filter_ = SimpleNamespace(stage2_=None,
    ...                           metadata={"training_articles_sha256": [text_hashes(X)[0]]})
    >>> in_sample_articles(filter_, X).tolist()
    [True, False]
    >>> in_sample_articles(filter_, X, stages=()).tolist()
    [False, False]
    >>> print(in_sample_articles(SimpleNamespace(stage2_=None), X))
    None
    """
    metadata = getattr(router, "metadata", None)
    recorded = metadata.get(TRAINING_KEY) if isinstance(metadata, dict) else None
    if not recorded:
        return None
    has_stage2 = getattr(router, "stage2_", None) is not None
    scored = {"stage1"} | ({"stage2"} if has_stage2 else set())
    hashes = text_hashes(X)
    if not scored & set(stages):
        return np.zeros(len(hashes), dtype=bool)
    return np.isin(hashes, list(recorded))


def take(values, keep):
    """The rows of `values` (articles, targets, languages) where `keep` is True."""
    if values is None:
        return None
    if isinstance(values, (pd.DataFrame, pd.Series)):
        return values.iloc[np.flatnonzero(keep)].reset_index(drop=True)
    if isinstance(values, np.ndarray):
        return values[keep]
    return [value for value, kept in zip(values, keep, strict=True) if kept]


def take_predictions(predictions, keep):
    """Given scores of shape ``(n,)``, ``(n, d)`` or ``(n_repeats, n, d)``, on the kept articles."""
    if predictions is None:
        return None
    predictions = np.asarray(predictions, dtype=float)
    if predictions.ndim <= 2:
        return predictions[keep]
    return predictions[:, keep]
