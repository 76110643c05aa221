"""Which of the evaluated articles a filter's stages were trained on (by text hash)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..router import unwrap_frozen
from ..text import recorded_articles

#: Where a filter records its training articles: its metadata's key.
TRAINING_KEY = "training_articles_sha256"

#: Stage 2's provenance file in its adapter folder, and the most of it read.
STAGE2_RECORD, MAX_RECORD_BYTES = "training.json", 1 << 20


def training_hash_sets(router):
    """The text hashes of each stage's training articles, None where not recorded.

    Stage 1: the filter's ``training_articles_sha256`` (its probe's training
    articles; for a distilled probe, its distillation set). Stage 2: the
    ``training_articles_sha256`` of its adapter's ``training.json`` where
    it has one; else the filter's set when ``training.json`` says Stage 2
    was fitted on as many articles (``n_articles``) as the probe (the
    shipped filters fit both on the same labelled articles); else not
    recorded.

    Parameters
    ----------
    router : HybridRouterRegressor or Filter

    Returns
    -------
    sets : dict
        ``{"stage1": frozenset or None}``, and ``"stage2"`` for a router
        with a Stage 2.
    """
    metadata = getattr(router, "metadata", None)
    metadata = metadata if isinstance(metadata, dict) else {}
    recorded = metadata.get(TRAINING_KEY)
    stage1 = frozenset(recorded) if recorded else None
    stage2 = unwrap_frozen(getattr(router, "stage2_", None))
    if stage2 is None:
        return {"stage1": stage1}
    record = _stage2_record(stage2)
    if record.get(TRAINING_KEY):
        return {"stage1": stage1, "stage2": frozenset(record[TRAINING_KEY])}
    same_articles = record.get("n_articles") is not None and record.get("n_articles") == metadata.get(
        "n_training_articles"
    )
    return {"stage1": stage1, "stage2": stage1 if same_articles else None}


def _stage2_record(stage2):
    """Stage 2's ``training.json`` beside its adapter, or {} (absent, unreadable, too large)."""
    adapter = getattr(stage2, "adapter", None)
    if adapter is None:
        return {}
    path = Path(adapter) / STAGE2_RECORD
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_RECORD_BYTES:
            return {}
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def in_sample_articles(router, X, *, stages=("stage1", "stage2")):
    """Which articles of `X` one of `stages` of `router` was trained on.

    Compares the articles' text hashes, normalised or exact
    (:func:`~hybrid_estimators.text.recorded_articles`), with each stage's
    recorded training articles (see :func:`training_hash_sets`).

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
        True for an article one of `stages` was trained on; None when none
        of the stages that score here records its training articles.

    See Also
    --------
    cascade_report : Leaves these articles out, with an ``InSampleWarning``.
    hybrid_estimators.exceptions.InSampleWarning : The warning it raises.

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
    sets = training_hash_sets(router)
    scoring = [stage for stage in sets if stage in stages]
    known = [sets[stage] for stage in scoring if sets[stage] is not None]
    if not known:  # nothing to compare with: no hashing
        return None if scoring else np.zeros(len(X), dtype=bool)
    return recorded_articles(X, frozenset().union(*known))


def unchecked_stages(router, stages):
    """The stages among `stages` that score here but record no training articles."""
    return [stage for stage, hashes in training_hash_sets(router).items()
            if stage in stages and hashes is None]


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
