"""Stage 2 as the teacher: its scores over unlabelled articles, as an artifact.

``hybrid-estimators score --filter F --all-stage2 IN.jsonl -o teacher.jsonl``
(or :func:`teacher_scores` in Python) runs Stage 2 on every article once;
everything that learns from Stage 2 reads that file back with
:func:`read_teacher_scores`, which refuses a file that misses articles, has
other dimensions or comes from another filter or Stage 2. Each row of such
a file carries ``teacher = {"filter": "name/version", "stage2_sha256": ...}``.

A teacher file is also checked row by row against the unlabelled file it
scored (``read_teacher_scores(..., unlabelled=U)``, which ``train-probe
--teacher-scores`` and ``calibrate --teacher-scores`` use): its sidecar
(``T.meta.json``, written by ``score -o T``) must say it scored every line
of ``U`` as it is now (the sidecar's ``input.lines`` and ``input.sha256``,
the sha256 of ``U``'s lines), and row ``k`` must be line ``k`` (its
``line``) of the article with ``U``'s id of line ``k``. The rows carry no
text hash of their own: the sidecar's hash of the whole input binds every
line's text, and ``line`` and ``id`` bind each row to its line, so a file
reordered (``tac``), with a row duplicated or missing, ids renamed or line
numbers shifted, or written from another input, is refused with the file
and the line named.

Probes trained on Stage 2's scores and thresholds certified against them
must use disjoint articles: :func:`disjoint_split` splits them (seeded) and
:func:`check_disjoint` refuses any overlap it can detect by id or text.
"""

import hashlib
import json
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone

from ._io import adapter_fingerprint
from .router import unwrap_frozen
from .text import as_frame, text_hashes

__all__ = [
    "TeacherScoresError",
    "teacher_scores",
    "routing_every_article",
    "sample_weight_params",
    "teacher_identity",
    "read_teacher_scores",
    "read_teacher_sidecar",
    "input_digest",
    "check_teacher_lines",
    "make_distillation_set",
    "disjoint_split",
    "check_disjoint",
    "text_hashes",
]

logger = logging.getLogger(__name__)


class TeacherScoresError(ValueError):
    """A teacher-scores file does not fit the filter or the articles.

    See Also
    --------
    read_teacher_scores : Raises it, naming the file and the line.

    Examples
    --------
    >>> issubclass(TeacherScoresError, ValueError)  # caught as any bad input
    True
    """


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

    See Also
    --------
    read_teacher_scores : Refuses rows with another identity.
    teacher_scores : The scores this identity vouches for.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyRegressor
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn.pipeline import make_pipeline
    >>> from hybrid_estimators import ArticleText, Filter, FilterSpec, make_articles
    >>> X, _ = make_articles(4, random_state=0)
    >>> def constant_stage(value):  # a prefit stage that scores every article `value`
    ...     model = make_pipeline(ArticleText(), "passthrough",
    ...                           DummyRegressor(strategy="constant", constant=[value]))
    ...     return FrozenEstimator(model.fit(X, np.zeros((len(X), 1))))
    >>> spec = FilterSpec.from_dict({"name": "demo", "version": "v1", "dimensions": {"impact": 1.0}})
    >>> demo = Filter(spec, constant_stage(2.0), constant_stage(6.0)).fit()

    >>> identity = teacher_identity(demo)
    >>> identity["filter"], len(identity["stage2_sha256"])
    ('demo/v1', 64)
    >>> other = Filter(spec, constant_stage(2.0), constant_stage(5.0)).fit()
    >>> teacher_identity(other)["stage2_sha256"] == identity["stage2_sha256"]  # another Stage 2
    False
    """
    stage2 = unwrap_frozen(filter_.stage2_)
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

    See Also
    --------
    read_teacher_scores : Read the same scores back from a
        ``score --all-stage2`` file, checked against the filter.
    make_distillation_set : Turn them into a training set for Stage 1.
    hybrid_estimators.filters.Filter : The filter whose Stage 2 scores.

    Examples
    --------
    Every article goes to Stage 2, whatever Stage 1 says (here Stage 1
    scores 2 and Stage 2 scores 6):

    >>> import numpy as np
    >>> from sklearn.dummy import DummyRegressor
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn.pipeline import make_pipeline
    >>> from hybrid_estimators import ArticleText, Filter, FilterSpec, make_articles
    >>> X, _ = make_articles(4, random_state=0)
    >>> def constant_stage(value):  # a prefit stage that scores every article `value`
    ...     model = make_pipeline(ArticleText(), "passthrough",
    ...                           DummyRegressor(strategy="constant", constant=[value]))
    ...     return FrozenEstimator(model.fit(X, np.zeros((len(X), 1))))
    >>> spec = FilterSpec.from_dict({"name": "demo", "version": "v1", "dimensions": {"impact": 1.0}})
    >>> demo = Filter(spec, constant_stage(2.0), constant_stage(6.0)).fit()
    >>> teacher_scores(demo, X)
       impact
    0     6.0
    1     6.0
    2     6.0
    3     6.0
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

    See Also
    --------
    teacher_scores : Scores with it.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyRegressor
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn.pipeline import make_pipeline
    >>> from hybrid_estimators import ArticleText, Filter, FilterSpec, make_articles
    >>> X, _ = make_articles(4, random_state=0)
    >>> def constant_stage(value):  # a prefit stage that scores every article `value`
    ...     model = make_pipeline(ArticleText(), "passthrough",
    ...                           DummyRegressor(strategy="constant", constant=[value]))
    ...     return FrozenEstimator(model.fit(X, np.zeros((len(X), 1))))
    >>> spec = FilterSpec.from_dict({"name": "demo", "version": "v1", "dimensions": {"impact": 1.0}})
    >>> demo = Filter(spec, constant_stage(2.0), constant_stage(6.0)).fit()

    >>> demo.route(X).tolist(), routing_every_article(demo).route(X).tolist()
    ([False, False, False, False], [True, True, True, True])
    """
    if filter_.stage2_ is None:
        raise ValueError("teacher scores need a filter with a Stage 2.")
    return clone(filter_).set_params(threshold=0.0).fit()  # routing scores are >= 0


def read_teacher_scores(path, filter_, articles=None, *, unlabelled=None):
    """Read a ``score --all-stage2`` output and check it fits `filter_` and `articles`.

    Parameters
    ----------
    path : str or path-like
        JSONL written by ``hybrid-estimators score --all-stage2 -o PATH``.
    filter_ : Filter
        The filter whose Stage 2 must have written it.
    articles : DataFrame or None, default=None
        The articles the file must score, in order (line ``i`` is article
        ``i``); their ``id`` column, when present, must match.
    unlabelled : str or path-like or None, default=None
        The JSONL file of articles the file must score: then its sidecar
        (:func:`read_teacher_sidecar`) must cover exactly this file's
        lines, and row ``k`` must be line ``k``, with the id of that line.

    Returns
    -------
    scores : DataFrame
        One column per dimension; NaN rows for lines that were blocked or
        invalid (they cannot teach).

    Raises
    ------
    TeacherScoresError
        Naming the file and the line: another filter or Stage 2, other
        dimensions, a row that is not from Stage 2, missing articles, rows
        out of order, duplicated or of other articles, another input.

    See Also
    --------
    teacher_scores : The same scores computed in Python.
    teacher_identity : The filter and Stage 2 each row must name.
    make_distillation_set : Turn the scores into a training set for Stage 1.

    Examples
    --------
    A file as ``score --all-stage2`` writes it (one row per article, each
    naming the filter and Stage 2 that scored it):

    >>> import numpy as np
    >>> from sklearn.dummy import DummyRegressor
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn.pipeline import make_pipeline
    >>> from hybrid_estimators import ArticleText, Filter, FilterSpec, make_articles
    >>> X, _ = make_articles(4, random_state=0)
    >>> def constant_stage(value):  # a prefit stage that scores every article `value`
    ...     model = make_pipeline(ArticleText(), "passthrough",
    ...                           DummyRegressor(strategy="constant", constant=[value]))
    ...     return FrozenEstimator(model.fit(X, np.zeros((len(X), 1))))
    >>> spec = FilterSpec.from_dict({"name": "demo", "version": "v1", "dimensions": {"impact": 1.0}})
    >>> demo = Filter(spec, constant_stage(2.0), constant_stage(6.0)).fit()
    >>> import json, os, tempfile
    >>> from hybrid_estimators.teacher import teacher_identity
    >>> path = os.path.join(tempfile.mkdtemp(), "teacher.jsonl")
    >>> with open(path, "w") as file:
    ...     for line, article in enumerate(X["id"], start=1):
    ...         row = {"id": article, "line": line, "scores": {"impact": 6.0},
    ...                "stage_used": "stage2", "teacher": teacher_identity(demo)}
    ...         _ = file.write(json.dumps(row) + "\\n")
    >>> read_teacher_scores(path, demo, X)["impact"].tolist()
    [6.0, 6.0, 6.0, 6.0]
    >>> read_teacher_scores(path, demo, X.iloc[::-1])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hybrid_estimators.teacher.TeacherScoresError: ...teacher.jsonl: line 1 scores article ..., expected ...
    """
    path = Path(path)
    identity = teacher_identity(filter_)
    names = list(filter_.dimension_names_)
    records = list(_teacher_records(path))
    rows = [_teacher_row(path, number, row, identity, names) for number, row in records]
    if unlabelled is not None:
        check_teacher_lines(path, [row for _, row in records], unlabelled)
    if articles is not None:
        _check_articles(path, [row for _, row in records], articles)
    return pd.DataFrame(
        [row if row is not None else [np.nan] * len(names) for row in rows], columns=names
    ).set_axis(articles.index if articles is not None else range(len(rows)))


def _teacher_records(path):
    """``(line number, row)`` of each line of a teacher file, parsed."""
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                row = json.loads(raw)
            except ValueError as error:
                raise TeacherScoresError(f"{path}: line {number}: not JSON: {error}") from None
            if not isinstance(row, dict):
                raise TeacherScoresError(f"{path}: line {number}: not an output row (a JSON object)")
            yield number, row


def _teacher_row(path, number, row, identity, names):
    where = f"{path}: line {number}"
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
    for number, (row, expected) in enumerate(zip(rows, articles["id"].tolist()), start=1):
        if row.get("line", number) != number:
            raise TeacherScoresError(
                f"{path}: line {number}: is the row of input line {row.get('line')!r}, not {number}: "
                "rows reordered, duplicated, missing or renumbered"
            )
        if row.get("id") != expected:
            raise TeacherScoresError(
                f"{path}: line {number} scores article {row.get('id')!r}, expected {expected!r}"
            )


#: What ``score -o OUT`` writes beside ``OUT`` (see :mod:`hybrid_estimators.cli.score`).
SIDECAR_SUFFIX = ".meta.json"
SIDECAR_FORMAT_PREFIX = "hybrid-estimators-score/"
MAX_SIDECAR_BYTES = 1 << 20


def _sidecar_candidates(path):
    path = Path(path)
    candidates = [Path(f"{path}{SIDECAR_SUFFIX}")]
    resolved = Path(f"{path.resolve()}{SIDECAR_SUFFIX}")  # a sidecar keyed on the real file
    return candidates if resolved == candidates[0] else [*candidates, resolved]


def _read_small_regular_file(path, limit):
    """The bytes of `path` if it is a regular file of at most `limit` bytes, else None."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block
    except FileNotFoundError:
        return None
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise TeacherScoresError(f"{path} is not a regular file")
        data = file.read(limit + 1)
    if len(data) > limit:
        raise TeacherScoresError(f"{path} is larger than {limit} bytes: not a sidecar of score")
    return data


def read_teacher_sidecar(path):
    """The sidecar ``score -o PATH`` wrote beside the teacher file `path`.

    Parameters
    ----------
    path : str or path-like
        The teacher file; its sidecar is ``PATH.meta.json``.

    Returns
    -------
    sidecar : dict
        With at least ``input = {"lines": int, "sha256": str}``.

    Raises
    ------
    TeacherScoresError
        When the sidecar is missing, not a regular file, not JSON or not
        one of ``score``'s, or lacks the input it covers.

    See Also
    --------
    read_teacher_scores : Checks a teacher file against its sidecar.
    input_digest : The ``input`` a sidecar records.

    Examples
    --------
    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "teacher.jsonl")
    >>> sidecar = {"format": "hybrid-estimators-score/1", "input": {"lines": 2, "sha256": "ab12"}}
    >>> _ = open(path + ".meta.json", "w").write(json.dumps(sidecar))
    >>> read_teacher_sidecar(path)["input"]
    {'lines': 2, 'sha256': 'ab12'}
    """
    for candidate in _sidecar_candidates(path):
        try:
            data = _read_small_regular_file(candidate, MAX_SIDECAR_BYTES)
        except OSError as error:
            raise TeacherScoresError(f"{path}: cannot read its sidecar {candidate}: {error}") from None
        if data is not None:
            break
    else:
        raise TeacherScoresError(
            f"{path}: has no sidecar {path}{SIDECAR_SUFFIX}: write teacher scores with "
            f"`score --all-stage2 -o {path}`, whose sidecar proves which input they score"
        )
    try:
        sidecar = json.loads(data)
        if not str(sidecar.get("format", "")).startswith(SIDECAR_FORMAT_PREFIX):
            raise ValueError(f"format {sidecar.get('format')!r}")
        sidecar["input"] = {"lines": int(sidecar["input"]["lines"]), "sha256": str(sidecar["input"]["sha256"])}
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise TeacherScoresError(f"{candidate}: not a sidecar of `score -o` ({error})") from None
    options = sidecar.get("options")
    if isinstance(options, dict) and options.get("all_stage2") is False:
        raise TeacherScoresError(f"{path}: its sidecar {candidate} says it was not scored with --all-stage2")
    return sidecar


def input_digest(path):
    """Lines of an input file and their sha256, as ``score`` records them in its sidecar.

    The sha256 of every line without its line ending, each followed by
    ``\\n`` (lines as :func:`hybrid_estimators.scoring.iter_lines` splits
    them).

    Returns
    -------
    n_lines : int
    sha256 : str

    See Also
    --------
    read_teacher_sidecar : The sidecar that records it.
    check_teacher_lines : Compares it with a teacher file's sidecar.

    Examples
    --------
    >>> import hashlib, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "in.jsonl")
    >>> _ = open(path, "wb").write(b'{"id": 1}\\r\\n{"id": 2}')
    >>> input_digest(path) == (2, hashlib.sha256(b'{"id": 1}\\n{"id": 2}\\n').hexdigest())
    True
    """
    n_lines, digest, _ = _input_lines(path)
    return n_lines, digest


def _input_lines(path):
    """Number of lines, their sha256 (as the sidecar's) and each line's output id."""
    from .scoring import ScoredLine, iter_lines, parse_line

    digest, ids = hashlib.sha256(), []
    with open(path, "rb") as file:
        for number, raw in enumerate(iter_lines(file), start=1):
            digest.update(raw + b"\n")
            ids.append(ScoredLine(number, parse_line(number, raw).id).to_record()["id"])
    return len(ids), digest.hexdigest(), ids


def check_teacher_lines(path, rows, unlabelled):
    """Refuse teacher `rows` (of file `path`) that are not one per line of `unlabelled`, in order.

    The sidecar must cover exactly `unlabelled`'s lines as they are now
    (count and sha256); row ``k`` must say ``line`` ``k`` and carry the id
    of `unlabelled`'s line ``k``.

    Raises
    ------
    TeacherScoresError
        Naming the file and the first line that does not fit.

    See Also
    --------
    read_teacher_scores : Runs it when given ``unlabelled=``.
    input_digest : The lines and sha256 compared.

    Examples
    --------
    >>> import json, os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> unlabelled = os.path.join(folder, "in.jsonl")
    >>> _ = open(unlabelled, "w").write('{"id": "a", "title": "A"}\\n{"id": "b", "title": "B"}\\n')
    >>> lines, sha256 = input_digest(unlabelled)
    >>> teacher = os.path.join(folder, "teacher.jsonl")
    >>> sidecar = {"format": "hybrid-estimators-score/1", "input": {"lines": lines, "sha256": sha256}}
    >>> _ = open(teacher + ".meta.json", "w").write(json.dumps(sidecar))
    >>> check_teacher_lines(teacher, [{"line": 1, "id": "a"}, {"line": 2, "id": "b"}], unlabelled)
    >>> check_teacher_lines(teacher, [{"line": 2, "id": "b"}, {"line": 1, "id": "a"}], unlabelled)
    Traceback (most recent call last):
    ...
    hybrid_estimators.teacher.TeacherScoresError: ...teacher.jsonl: line 1: is the row of input line 2, not 1: rows reordered, ...
    """
    sidecar = read_teacher_sidecar(path)
    n_lines, digest, ids = _input_lines(unlabelled)
    covered = sidecar["input"]
    if (covered["lines"], covered["sha256"]) != (n_lines, digest):
        raise TeacherScoresError(
            f"{path}: scored another input: its sidecar covers {covered['lines']} lines with sha256 "
            f"{covered['sha256'][:12]}…, {unlabelled} has {n_lines} lines with sha256 {digest[:12]}… "
            "(score the file again with --all-stage2)"
        )
    for number, row in enumerate(rows, start=1):
        if row.get("line") != number:
            raise TeacherScoresError(
                f"{path}: line {number}: is the row of input line {row.get('line')!r}, not {number}: "
                "rows reordered, duplicated, missing or renumbered"
            )
        if number <= n_lines and row.get("id") != ids[number - 1]:
            raise TeacherScoresError(
                f"{path}: line {number}: scores article {row.get('id')!r}, but line {number} of "
                f"{unlabelled} is {ids[number - 1]!r}"
            )
    if len(rows) != n_lines:
        raise TeacherScoresError(
            f"{path}: has {len(rows)} rows for the {n_lines} lines of {unlabelled}: "
            + ("it misses lines" if len(rows) < n_lines else f"line {n_lines + 1} scores no line of it")
        )


def check_disjoint(X_train, X_certify):
    """Refuse articles that are both trained on and certified on (by id or text).

    Texts are compared normalised (:func:`~hybrid_estimators.text.text_hashes`:
    NFKC, case folded, whitespace collapsed), so a trailing space does not
    make another article.

    Raises
    ------
    ValueError
        Naming how many articles overlap and one of them.

    See Also
    --------
    disjoint_split : A split that passes this check.
    hybrid_estimators.text.text_hashes : The normalised text hashes compared.

    Examples
    --------
    >>> train = [{"id": "a", "title": "Solar", "content": "Panels."}]
    >>> check_disjoint(train, [{"id": "b", "title": "Wind", "content": "Turbines."}])
    >>> check_disjoint(train, [{"id": "c", "title": "solar ", "content": "Panels."}])
    Traceback (most recent call last):
    ...
    ValueError: 1 articles are both in the training and the certification set (e.g. ...): ...
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

    See Also
    --------
    check_disjoint : Refuse articles in both parts, by id or text.
    make_distillation_set : The training part's set of Stage 2's scores.
    hybrid_estimators.calibration.TunedThresholdRouterCV : Certifies the
        threshold on the other part.

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

    See Also
    --------
    teacher_scores : Stage 2's scores of unlabelled articles.
    read_teacher_scores : The same, read from a ``score --all-stage2`` file.
    disjoint_split : Keep the certification articles out of training.
    sample_weight_params : The fit parameters that pass ``sample_weight``.

    Examples
    --------
    >>> import pandas as pd
    >>> from hybrid_estimators import make_articles
    >>> X, _ = make_articles(4, random_state=0)
    >>> Y_teacher = pd.DataFrame({"impact": [6.0, float("nan"), 5.0, 7.0]})  # row 1 was blocked
    >>> Y_oracle = pd.DataFrame({"impact": [1.0]})
    >>> X_train, Y_train, sample_weight, source = make_distillation_set(
    ...     X, Y_teacher, X.iloc[:1], Y_oracle, oracle_weight=3.0)
    >>> Y_train["impact"].tolist(), sample_weight.tolist(), source.tolist()
    ([6.0, 5.0, 7.0, 1.0], [1.0, 1.0, 1.0, 3.0], ['teacher', 'teacher', 'teacher', 'oracle'])
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

    See Also
    --------
    make_distillation_set : Returns the sample weights to pass.

    Examples
    --------
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.pipeline import Pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> stage1 = Pipeline([("scale", StandardScaler()), ("probe", Ridge())])
    >>> list(sample_weight_params(stage1, [1.0, 3.0]))
    ['probe__sample_weight']
    >>> sample_weight_params(stage1, [1.0, 1.0])
    {}
    """
    if np.all(np.asarray(sample_weight) == 1):
        return {}
    name, step = pipeline.steps[-1]
    while hasattr(step, "steps"):
        inner, step = step.steps[-1]
        name = f"{name}__{inner}"
    return {f"{name}__sample_weight": sample_weight}
