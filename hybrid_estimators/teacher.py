"""Stage 2 as the teacher: its scores over unlabelled articles, as an artifact.

``hybrid-estimators score --filter F --all-stage2 IN.jsonl -o teacher.jsonl``
(or :func:`teacher_scores` in Python) runs Stage 2 on every article once;
everything that learns from Stage 2 reads that file back with
:func:`read_teacher_scores`, which refuses a file that misses articles, has
other dimensions or comes from another filter or Stage 2. Each row of such
a file carries ``teacher = {"filter": "name/version", "stage2_sha256": ...}``.

Probes trained on Stage 2's scores and thresholds certified against them
must use disjoint articles: :func:`disjoint_split` splits them (seeded) and
:func:`check_disjoint` refuses any overlap it can detect by id or text.
"""

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone

from ._io import adapter_fingerprint
from .text import as_frame, text_hashes

__all__ = [
    "TeacherScoresError",
    "teacher_scores",
    "routing_every_article",
    "sample_weight_params",
    "teacher_identity",
    "read_teacher_scores",
    "make_distillation_set",
    "disjoint_split",
    "check_disjoint",
    "text_hashes",
]

logger = logging.getLogger(__name__)


class TeacherScoresError(ValueError):
    """A teacher-scores file does not fit the filter or the articles."""


def _unwrap(stage):
    return getattr(stage, "estimator", stage)  # FrozenEstimator


def _stable_repr(value):
    """A parameter's text, the same in every process (no object addresses)."""
    if hasattr(value, "get_params") and not isinstance(value, type):
        inner = ", ".join(f"{key}={_stable_repr(item)}" for key, item in sorted(value.get_params(deep=False).items()))
        return f"{type(value).__qualname__}({inner})"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_stable_repr(item) for item in value) + "]"
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__qualname__)}"
    return str(value)


def teacher_identity(filter_):
    """Which filter and which Stage 2 produced teacher scores.

    Parameters
    ----------
    filter_ : Filter
        Fitted, with a Stage 2.

    Returns
    -------
    identity : dict
        ``{"filter": "name/version", "stage2_sha256": ...}``: the hash
        covers Stage 2's parameters, its adapter folder's files and the
        filter's ``stage2_weight``.
    """
    stage2 = _unwrap(filter_.stage2_)
    if stage2 is None:
        raise ValueError("teacher scores need a filter with a Stage 2.")
    params = {
        key: _stable_repr(value)
        for key, value in sorted(stage2.get_params(deep=False).items())
        if key not in {"adapter", "device", "batch_size", "show_progress_bar", "model_name_or_path"}
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    base = str(stage2.get_params().get("model_name_or_path", ""))
    digest.update(Path(base).name.encode())
    adapter = stage2.get_params().get("adapter")
    if adapter is not None:
        digest.update(adapter_fingerprint(adapter).encode())
    if filter_.stage2_weight != 1:  # the teacher's scores are the blend the filter returns
        digest.update(f"stage2_weight={float(filter_.stage2_weight)!r}".encode())
    spec = filter_.spec
    return {"filter": spec.qualified_name, "stage2_sha256": digest.hexdigest()}


def teacher_scores(filter_, X):
    """Stage 2's scores of every article (the Python ``score --all-stage2``).

    Parameters
    ----------
    filter_ : Filter
        Fitted, with a Stage 2.
    X : DataFrame or list of dict
        Articles.

    Returns
    -------
    scores : DataFrame
        One column per dimension, Stage 2's clipped scores (NaN for
        articles the prefilter blocks), X's index.
    """
    frame = as_frame(X)
    routes_all = routing_every_article(filter_)
    return pd.DataFrame(routes_all.predict(frame), columns=filter_.dimension_names_, index=frame.index)


def routing_every_article(filter_):
    """A copy of `filter_` that sends every article (the prefilter's aside) to Stage 2.

    What ``score --all-stage2`` scores with; `filter_` keeps its parameters.

    Raises
    ------
    ValueError
        For a filter without Stage 2.
    """
    if filter_.stage2_ is None:
        raise ValueError("teacher scores need a filter with a Stage 2.")
    return clone(filter_).set_params(threshold=0.0).fit()  # routing scores are >= 0


def read_teacher_scores(path, filter_, articles=None):
    """Read a ``score --all-stage2`` output and check it fits `filter_` and `articles`.

    Parameters
    ----------
    path : str or path-like
        JSONL written by ``hybrid-estimators score --all-stage2``.
    filter_ : Filter
        The filter whose Stage 2 must have written it.
    articles : DataFrame or None, default=None
        The articles the file must score, in order (line ``i`` is article
        ``i``); their ``id`` column, when present, must match.

    Returns
    -------
    scores : DataFrame
        One column per dimension; NaN rows for lines that were blocked or
        invalid (they cannot teach).

    Raises
    ------
    TeacherScoresError
        Naming the file and the line: another filter or Stage 2, other
        dimensions, a row that is not from Stage 2, missing articles.
    """
    path = Path(path)
    identity = teacher_identity(filter_)
    names = list(filter_.dimension_names_)
    rows = []
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            rows.append(_teacher_row(path, number, raw, identity, names))
    if articles is not None:
        _check_articles(path, rows, articles)
    return pd.DataFrame(
        [row if row is not None else [np.nan] * len(names) for row in rows], columns=names
    ).set_axis(articles.index if articles is not None else range(len(rows)))


def _teacher_row(path, number, raw, identity, names):
    where = f"{path}: line {number}"
    try:
        row = json.loads(raw)
    except ValueError as error:
        raise TeacherScoresError(f"{where}: not JSON: {error}") from None
    if row.get("error") is not None or row.get("blocked_by") is not None:
        return None
    teacher = row.get("teacher") or {}
    if teacher.get("filter") != identity["filter"]:
        raise TeacherScoresError(
            f"{where}: written by filter {teacher.get('filter')!r}, not {identity['filter']!r} "
            "(score it with --all-stage2 and this filter)"
        )
    if teacher.get("stage2_sha256") != identity["stage2_sha256"]:
        raise TeacherScoresError(
            f"{where}: written by another Stage 2 (sha256 {str(teacher.get('stage2_sha256'))[:12]}… "
            f"vs this filter's {identity['stage2_sha256'][:12]}…)"
        )
    if row.get("stage_used") != "stage2":
        raise TeacherScoresError(f"{where}: not scored by Stage 2 (run score with --all-stage2)")
    scores = row.get("scores") or {}
    if sorted(scores) != sorted(names):
        raise TeacherScoresError(f"{where}: has dimensions {sorted(scores)}, the filter {sorted(names)}")
    return [float(scores[name]) for name in names]


def _check_articles(path, rows, articles):
    if len(rows) != len(articles):
        raise TeacherScoresError(
            f"{path}: has {len(rows)} rows for {len(articles)} articles: it misses articles "
            "or scores others"
        )
    if "id" not in articles:
        return
    with open(path, "rb") as file:
        ids = [json.loads(raw).get("id") for raw in file]
    for number, (given, expected) in enumerate(zip(ids, articles["id"].tolist()), start=1):
        if given != expected:
            raise TeacherScoresError(
                f"{path}: line {number} scores article {given!r}, expected {expected!r}"
            )


def check_disjoint(X_train, X_certify):
    """Refuse articles that are both trained on and certified on (by id or text).

    Raises
    ------
    ValueError
        Naming how many articles overlap and one of them.
    """
    train, certify = as_frame(X_train), as_frame(X_certify)
    shared = set(text_hashes(train)) & set(text_hashes(certify))
    if "id" in train and "id" in certify:
        shared_ids = set(train["id"].dropna()) & set(certify["id"].dropna())
    else:
        shared_ids = set()
    if shared or shared_ids:
        example = next(iter(shared_ids)) if shared_ids else next(iter(shared))[:12] + "…"
        raise ValueError(
            f"{len(shared | shared_ids)} articles are both in the training and the certification "
            f"set (e.g. {example!r}): a threshold certified on articles its probe was trained on "
            "carries no guarantee"
        )


def disjoint_split(X, *, certify_size=0.5, random_state=0):
    """Seeded split of articles into a training and a certification part.

    Duplicates (same text) stay on one side, so :func:`check_disjoint` holds.

    Returns
    -------
    train, certify : ndarray of int
        Positions of the two parts.

    Examples
    --------
    >>> articles = [{"title": f"t{i % 50}", "content": ""} for i in range(100)]
    >>> train, certify = disjoint_split(articles, random_state=0)
    >>> len(train) + len(certify), len(set(train) & set(certify))
    (100, 0)
    """
    hashes = text_hashes(X)
    unique = np.unique(hashes)
    rng = np.random.RandomState(random_state)
    certify_hashes = set(rng.permutation(unique)[: int(round(certify_size * len(unique)))])
    certify = np.array([h in certify_hashes for h in hashes])
    return np.flatnonzero(~certify), np.flatnonzero(certify)


def make_distillation_set(
    X_teacher, Y_teacher, X_oracle=None, Y_oracle=None, *, teacher_weight=1.0, oracle_weight=1.0
):
    """Training set of Stage 2's scores on unlabelled articles, plus oracle labels.

    Parameters
    ----------
    X_teacher : DataFrame
        Unlabelled articles.
    Y_teacher : DataFrame
        Stage 2's scores of them (:func:`read_teacher_scores`); rows with
        NaN (blocked, invalid) are dropped.
    X_oracle, Y_oracle : DataFrame or None, default=None
        Oracle-labelled articles, with the same dimension columns.
    teacher_weight, oracle_weight : float, default=1.0
        Sample weight of each source's articles.

    Returns
    -------
    X : DataFrame
        ``title``, ``content`` (and ``id`` when given) of both sources.
    Y : DataFrame
    sample_weight : ndarray
    source : ndarray of {"teacher", "oracle"}
        Pass ``sample_weight`` to the probe's fit, e.g.
        ``stage1.fit(X, Y, probe__sample_weight=sample_weight)``.
    """
    keep = Y_teacher.notna().all(axis=1).to_numpy()
    parts = [(as_frame(X_teacher).iloc[keep], Y_teacher.iloc[keep], teacher_weight, "teacher")]
    if X_oracle is not None:
        parts.append((as_frame(X_oracle), Y_oracle[list(Y_teacher.columns)], oracle_weight, "oracle"))
    columns = [c for c in ("id", "title", "content", "language") if all(c in p[0] for p in parts)]
    X = pd.concat([p[0][columns] for p in parts], ignore_index=True)
    Y = pd.concat([p[1] for p in parts], ignore_index=True)
    sample_weight = np.concatenate([np.full(len(p[0]), float(p[2])) for p in parts])
    source = np.concatenate([np.full(len(p[0]), p[3], dtype=object) for p in parts])
    return X, Y, sample_weight, source


def sample_weight_params(pipeline, sample_weight):
    """Fit parameters passing `sample_weight` to a (nested) pipeline's final estimator.

    ``{"probe__sample_weight": w}`` for ``Pipeline([..., ("probe", ...)])``,
    the step names joined down nested pipelines; ``{}`` when every weight
    is 1, so that an estimator without ``sample_weight`` still fits.
    """
    if np.all(np.asarray(sample_weight) == 1):
        return {}
    name, step = pipeline.steps[-1]
    while hasattr(step, "steps"):
        inner, step = step.steps[-1]
        name = f"{name}__{inner}"
    return {f"{name}__sample_weight": sample_weight}
