"""One scoring path: parse a line, score a chunk, the output row.

The ``hybrid-estimators score`` command and Ray Data
(:mod:`hybrid_estimators.distributed`) both read input lines with
:func:`parse_line`, score them with :func:`score_chunk` and write
:meth:`ScoredLine.to_json`: every input line gets exactly one output row,
in order, whatever its bytes.

The output row (one JSON object a line)::

    line               input line number, from 1
    id                 the article's id as given, made writable: lone
                       surrogates as ``\\udXXX`` text, inf/nan as the
                       strings "inf", "-inf", "nan"
    scores             {dimension: score 0-10} or null
    weighted_average   gatekeepers applied, or null
    normalised         the weighted average on the filter's common 0-10 scale
                       (10 x its percentile on the reference traffic the
                       filter's normalisation table was fitted on), or null:
                       the filter has no table, or the row is blocked/an error
    tier               "low", "medium", "high" or null
    stage_used         "stage1", "stage2" or null
    stage1_estimate    Stage 1's raw (unclipped) weighted average, or null
    gatekeeper_applied true/false, or null
    blocked_by         the prefilter's reason, or null
    error              why the line could not be scored, or null

and, only when asked for (they are absent otherwise)::

    teacher            with ``score --all-stage2``: {"filter": "name/version",
                       "stage2_sha256": ...}, who wrote these Stage 2 scores
    audited            with ``score --audit RATE``: whether this skipped
                       article was also sent through Stage 2 (scores unchanged)
    audit_tier         Stage 2's tier of an audited article, else null

Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (:func:`iter_lines`,
:func:`split_lines` and :func:`count_lines` agree); a last line may lack
its line ending.
"""

import json
import logging
import math
import numbers
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

import numpy as np
import pandas as pd

from ._io import _safe_str, json_safe
from ._lines import count_lines, iter_lines, read_chunks, split_lines  # noqa: F401 (the scoring API)
from ._skip_rate import (  # noqa: F401 (the scoring API)
    SKIP_RATE_CONFIDENCE,
    recorded_skip_rate,
    skip_rate_message,
    skip_rate_summary,
    warn_skip_rate,
)

logger = logging.getLogger(__name__)

#: Decimals of the scores written to JSONL: enough for any use, few enough
#: that re-embedding the same text in another batch writes the same bytes.
DECIMALS = 4
ARTICLE_FIELDS = ("title", "content")
#: Longest id shown inside an error message (the row's ``id`` is whole).
MAX_ID_IN_MESSAGE = 80
#: What a row says instead of an id nested too deeply to write.
UNWRITABLE_ID = "<id nested too deeply to write>"
#: Longest input line scored, in bytes: a longer one is an error row (it is
#: held once, as bytes, and never decoded).
MAX_LINE_BYTES = 64 << 20
#: Most tokens a stage reads from either end of an article's text: Stage 1's
#: ``max_seq_length`` or ``embedding_head_tail``, Stage 2's ``max_length`` or
#: ``head_tail`` (512 at most in the shipped filters), with room to spare.
MAX_TOKENS_READ = 2048
#: Characters one token spans at most, generously: a token is a run of the
#: text's characters (a subword, a number, a punctuation run), and what lies
#: between two tokens is a little whitespace.
CHARS_PER_TOKEN = 50
#: Characters kept from each end of a longer title or content
#: (:data:`MAX_TOKENS_READ` x :data:`CHARS_PER_TOKEN`): no stage reads the
#: middle of a text that long, so it is cut before anything copies the text;
#: the prefilter, too, sees the kept text.
KEEP_CHARS = MAX_TOKENS_READ * CHARS_PER_TOKEN
#: What replaces the cut middle.
CUT_MARK = "\n…\n"


def writable_id(value):
    """An id as given, made writable: its non-finite numbers as text, the rest :func:`json_safe`.

    JSON input may carry the tokens ``NaN`` and ``Infinity``; as an id they
    stay recognisable (``"nan"``, ``"inf"``, ``"-inf"``) instead of the
    ``null`` that :func:`~hybrid_estimators._io.json_safe` writes for a
    missing number.

    Examples
    --------
    >>> writable_id(float("inf")), writable_id({"k": "a\\ud800"})
    ('inf', {'k': 'a\\\\ud800'})
    """
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value):
        return str(float(value))
    return json_safe(value)


#: Characters that ``str.splitlines`` and other readers take for line breaks:
#: escaped in the output so that a row is always exactly one line.
_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _dumps(record, ensure_ascii):
    text = json.dumps(record, ensure_ascii=ensure_ascii, allow_nan=False)
    for character, escaped in _LINE_BREAKS.items():
        text = text.replace(character, escaped)  # only inside strings: JSON has them nowhere else
    return text


@dataclass
class ScoredLine:
    """One input line and everything reported about it.

    See Also
    --------
    parse_line : Makes one from a raw line.
    score_chunk : Fills in its scores.
    MultiScoredLine : The row of several filters.
    """

    line: int
    id: object = None
    article: dict = None  # title, content, language: set only for valid articles
    scores: dict = None
    weighted_average: float = None
    normalised: float = None
    tier: str = None
    stage_used: str = None
    stage1_estimate: float = None
    gatekeeper_applied: bool = None
    blocked_by: str = None
    error: str = None
    #: This row's share of the scoring time (see :func:`score_lines`); not written.
    seconds: float = field(default=None, repr=False)
    teacher: dict = None
    audited: bool = None
    audit_tier: str = None

    def to_record(self):
        """The output row as a dict of JSON-safe values (see the module's docstring).

        Never fails: every value goes through :func:`~hybrid_estimators._io.json_safe`
        (the id through :func:`writable_id`), and an id
        nested too deeply for that is replaced by :data:`UNWRITABLE_ID`.
        """
        record = {}
        for name in OUTPUT_COLUMNS:
            try:
                value = getattr(self, name)
                record[name] = writable_id(value) if name == "id" else json_safe(value)
            except RecursionError:
                record[name] = UNWRITABLE_ID if name == "id" else None
        for name in OPTIONAL_COLUMNS:
            if getattr(self, name) is not None:
                record[name] = json_safe(getattr(self, name))
        return record

    def to_json(self, ensure_ascii=False):
        """The output row as one line of JSON (no newline); never fails.

        Parameters
        ----------
        ensure_ascii : bool, default=False
            Escape every non-ASCII character (for a stream that is not UTF-8).
        """
        record = self.to_record()
        try:
            return _dumps(record, ensure_ascii)
        except RecursionError:  # the conversion went through; the encoder ran out of stack
            record["id"] = UNWRITABLE_ID
            return _dumps(record, ensure_ascii)


#: Fields written only when a run asks for them.
OPTIONAL_COLUMNS = ("teacher", "audited", "audit_tier")
#: The output row's fields, in order.
OUTPUT_COLUMNS = tuple(
    f.name for f in fields(ScoredLine) if f.name not in ("article", "seconds", *OPTIONAL_COLUMNS)
)


def describe_id(row_id):
    """`row_id` for a message: its repr, JSON-safe and cut to :data:`MAX_ID_IN_MESSAGE`.

    See Also
    --------
    ScoredLine : The row whose id it describes.
    """
    try:
        text = repr(writable_id(row_id))
    except RecursionError:
        return UNWRITABLE_ID
    if len(text) > MAX_ID_IN_MESSAGE:
        text = text[: MAX_ID_IN_MESSAGE - 1] + "…"
    return text


def _id_suffix(row_id):
    return "" if row_id is None else f" (id={describe_id(row_id)})"


def _refuse_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_line(line_number, raw, text_columns=None):
    """Turn one raw input line into a :class:`ScoredLine`, valid or with its error.

    A line longer than :data:`MAX_LINE_BYTES` is an error row; a title or
    content longer than twice :data:`KEEP_CHARS` keeps only what a stage
    can read (see :func:`kept_text`). `text_columns` maps the article's
    fields onto ``title``/``content`` (see :func:`parse_article`).

    See Also
    --------
    parse_article : The same, from a parsed JSON object.
    score_chunk : Scores the rows it makes.
    ScoredLine : The row it returns.
    """
    if len(raw) > MAX_LINE_BYTES:
        return ScoredLine(
            line_number,
            error=f"line {line_number}: {len(raw)} bytes, longer than the {MAX_LINE_BYTES} a line may have",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return ScoredLine(line_number, error=f"line {line_number}: not UTF-8: {error}")
    if line_number == 1:
        text = text.removeprefix("\ufeff")
    if not text.strip():
        return ScoredLine(line_number, error=f"line {line_number}: empty line")
    try:
        article = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        return ScoredLine(line_number, error=f"line {line_number}: not JSON: {error}")
    return parse_article(line_number, article, text_columns)


def kept_text(value):
    """`value` cut to what a stage can read: :data:`KEEP_CHARS` from each end.

    See Also
    --------
    parse_line : Keeps only this much of each field.

    Examples
    --------
    >>> len(kept_text("x" * 10**6)) == 2 * KEEP_CHARS + len(CUT_MARK)
    True
    >>> kept_text("short")
    'short'
    """
    if not isinstance(value, str) or len(value) <= 2 * KEEP_CHARS + len(CUT_MARK):
        return value
    return value[:KEEP_CHARS] + CUT_MARK + value[-KEEP_CHARS:]


def parse_article(line_number, article, text_columns=None):
    """Validate one decoded article (a JSON object) of line `line_number`.

    `text_columns` (``{"body": "content"}``, as ``load_filter(...,
    text_columns=...)``) renames the article's fields first. An article
    that lacks ``title`` or ``content`` but holds text in another field is
    an error row naming both: it is never scored on part of its text.

    See Also
    --------
    parse_line : The same, from a raw line.
    """
    from .text import as_texts

    if not isinstance(article, dict):
        return ScoredLine(
            line_number,
            error=f"line {line_number}: expected a JSON object (an article), got "
            f"{type(article).__name__}",
        )
    row_id = article.get("id")
    where = f"line {line_number}{_id_suffix(row_id)}"
    refused = _unread_text(article, text_columns)
    if refused is not None:
        return ScoredLine(line_number, row_id, error=f"{where}: {refused}")
    article = {(text_columns or {}).get(name, name): value for name, value in article.items()}
    fields_ = {name: kept_text(article[name]) for name in ARTICLE_FIELDS if name in article}
    if not fields_:
        return ScoredLine(
            line_number, row_id, error=f"{where}: has neither 'title' nor 'content'"
        )
    try:
        as_texts([fields_])
    except ValueError as error:
        # as_texts names the row by its position in the list: always "row 0".
        message = str(error).removeprefix("row 0")
        return ScoredLine(line_number, row_id, error=f"{where}{message}")
    fields_ = {"title": "", "content": "", **fields_, "language": article.get("language")}
    return ScoredLine(line_number, row_id, article=fields_)


def _unread_text(article, text_columns):
    """Why `article` cannot be read whole with `text_columns` (None: it can)."""
    from .text import METADATA_COLUMNS

    text_columns = text_columns or {}
    for source, target in text_columns.items():
        if source in article and target in article and source != target:
            return f"has both {source!r} and {target!r}, which --text-columns maps {source!r} onto"
    renamed = {text_columns.get(name, name) for name in article}
    missing = [name for name in ARTICLE_FIELDS if name not in renamed]
    other = [
        name for name, value in article.items()
        if name not in text_columns and name not in ARTICLE_FIELDS and name not in METADATA_COLUMNS
        and isinstance(value, str) and value.strip()
    ]
    if not missing or not other:
        return None
    lacks = "neither 'title' nor 'content'" if len(missing) == 2 else f"no {missing[0]!r} field, which the filter reads,"
    return (
        f"has {lacks} but text in {other}: map it "
        f"(score --text-columns {other[0]}={missing[0]}; load_filter(folder, "
        f"text_columns={{{other[0]!r}: {missing[0]!r}}})) or leave it out"
    )


def _rounded(value):
    if value is None:
        return None
    value = float(value)
    return round(value, DECIMALS) if math.isfinite(value) else None


def _apply_report(row, report, dimension_names):
    row.blocked_by = report.get("blocked_by")
    if row.blocked_by is not None:
        return
    row.scores = {name: _rounded(report[name]) for name in dimension_names}
    row.weighted_average = _rounded(report["weighted_average"])
    row.normalised = _rounded(report.get("normalised"))
    row.tier = str(report["tier"])
    row.stage_used = str(report["stage_used"])
    row.stage1_estimate = _rounded(report["stage1_estimate"])
    row.gatekeeper_applied = bool(report["gatekeeper_applied"])


def articles_frame(rows):
    """The valid articles of parsed lines as a DataFrame (object columns).

    See Also
    --------
    score_chunk : Scores the frame's articles.
    """
    return pd.DataFrame(
        {name: [row.article[name] for row in rows] for name in (*ARTICLE_FIELDS, "language")},
        dtype=object,
    )


def _predict_rows(scorer, rows):
    dimension_names = list(scorer.dimension_names_)
    try:
        report = scorer.predict_report(articles_frame(rows))
    except Exception as error:
        if len(rows) == 1:
            row = rows[0]
            row.error = (
                f"line {row.line}{_id_suffix(row.id)}: scoring failed: "
                f"{type(error).__name__}: {error}"
            )
            return
        logger.warning(
            "Scoring a chunk failed (%s); scoring its rows one by one", _safe_str(str(error))
        )
        for row in rows:
            _predict_rows(scorer, [row])
        return
    for row, values in zip(rows, report.to_dict("records")):
        _apply_report(row, values, dimension_names)


def score_chunk(scorer, rows):
    """Fill in scores, ``blocked_by`` or errors of the parsed lines of one chunk.

    Parameters
    ----------
    scorer : Filter or HybridRouterRegressor
        Fitted; a :class:`~hybrid_estimators.filters.Filter` applies its
        prefilter (``blocked_by``), a bare router blocks nothing.
    rows : list of ScoredLine
        Parsed lines; those with an error are left as they are.

    Returns
    -------
    rows : list of ScoredLine
        The same objects, filled in.

    See Also
    --------
    score_lines : Parses and scores a chunk of raw lines, timing each row.
    parse_line : One raw line as a :class:`ScoredLine`.
    hybrid_estimators.distributed.score_dataset : The same rows on Ray Data.
    hybrid_estimators.filters.load_filter : A filter to score with.

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
    >>> spec = FilterSpec.from_dict({"name": "demo", "version": "v1", "dimensions": {"impact": 1.0},
    ...     "prefilter": {"min_length": 20}, "hybrid_inference": {"threshold": 4.0}})
    >>> demo = Filter.from_spec(spec, constant_stage(5.0), constant_stage(6.0)).fit()
    >>> lines = [b'{"id": "a", "title": "Solar", "content": "A solar farm with storage opened."}',
    ...          b'{"id": "b", "title": "Short", "content": ""}',
    ...          b'not json']
    >>> rows = score_chunk(demo, [parse_line(number, raw) for number, raw in enumerate(lines, start=1)])
    >>> [(row.id, row.stage_used, row.blocked_by) for row in rows]
    [('a', 'stage2', None), ('b', None, 'min_length:20'), (None, None, None)]
    >>> record = rows[0].to_record()  # the output line, as a dict
    >>> record["scores"], record["tier"], record["stage1_estimate"]
    ({'impact': 6.0}, 'medium', 5.0)
    >>> rows[2].error
    'line 3: not JSON: Expecting value: line 1 column 1 (char 0)'
    """
    to_score = [row for row in rows if row.article is not None and row.error is None]
    if to_score:
        _predict_rows(scorer, to_score)
    return rows


def score_lines(scorer, chunk):
    """Parse and score one chunk of ``(line_number, raw_bytes)``, timing each row.

    The articles of a chunk are embedded (and sent to Stage 2) together, so
    no article has a time of its own; each row's ``seconds`` is its share
    of the chunk's time instead, and the shares add up to it: a row's own
    parsing, plus, for a row that reached the stages, an equal share of
    the chunk's Stage 1 time (prefilter included) and, when routed, an
    equal share of its Stage 2 time. Error and blocked rows cost only
    their parsing.

    Parameters
    ----------
    scorer : Filter or HybridRouterRegressor
        Fitted (see :func:`score_chunk`).
    chunk : list of (int, bytes)
        Numbered raw lines, as :func:`read_chunks` yields them.

    Returns
    -------
    rows : list of ScoredLine
        One per line, in order, with ``seconds`` set.

    See Also
    --------
    score_chunk : Scores parsed rows, untimed.
    read_chunks : The chunks it takes.
    hybrid_estimators.distributed.score_dataset : The same on Ray Data.
    """
    rows, text_columns = [], getattr(scorer, "text_columns", None)
    for number, raw in chunk:
        started = time.perf_counter()
        row = parse_line(number, raw, text_columns)
        row.seconds = time.perf_counter() - started
        rows.append(row)
    return score_timed(scorer, rows)


def score_timed(scorer, rows):
    """:func:`score_chunk`, adding to each row's ``seconds`` its share of the chunk's time.

    See :func:`score_lines` for how the time is shared; a row's
    ``seconds`` (its parsing time) is taken as 0 when None.

    See Also
    --------
    score_lines : Parses, then scores with it.
    score_chunk : The same rows, untimed.
    """
    for row in rows:
        row.seconds = row.seconds or 0.0
    started = time.perf_counter()
    score_chunk(scorer, rows)
    _share_time(scorer, rows, time.perf_counter() - started)
    return rows


def _stage2_seconds(scorer, n_routed):
    """Stage 2's part of a chunk's time, from what the router measured."""
    stage2 = getattr(scorer, "stage2_", None)
    if not n_routed or stage2 is None:
        return 0.0
    from .router import measured_seconds_per_row

    return n_routed * (measured_seconds_per_row(stage2) or 0.0)


def _share_time(scorer, rows, seconds):
    scored = [row for row in rows if row.stage_used is not None]
    if not scored:  # all blocked or failed: what time there was went to the prefilter
        scored = [row for row in rows if row.article is not None] or rows
    routed = [row for row in scored if row.stage_used == "stage2"]
    stage2 = min(seconds, _stage2_seconds(scorer, len(routed)))
    for row in scored:
        row.seconds += (seconds - stage2) / len(scored)
    for row in routed:
        row.seconds += stage2 / len(routed)


def audit_chunk(audit, rows):
    """Send the audited share of a scored chunk's skipped rows through Stage 2 too.

    The rows' counterpart of :meth:`RecallAudit.audit
    <hybrid_estimators.audit.RecallAudit.audit>`, which it calls: scores
    are never changed; a skipped row gets ``audited`` (True or False) and,
    when audited, ``audit_tier`` (Stage 2's tier); the chunk's counts are
    added to `audit`. When Stage 2 fails on the audited articles, they are
    counted as not audited and the rows keep their scores.

    Parameters
    ----------
    audit : RecallAudit
    rows : list of ScoredLine
        Scored by :func:`score_chunk`.

    Returns
    -------
    rows : list of ScoredLine

    See Also
    --------
    hybrid_estimators.audit.RecallAudit : The audit it applies.
    score_chunk : Scores the rows first.
    """
    scored = [row for row in rows if row.stage_used is not None]
    if not scored:
        return rows
    report = pd.DataFrame(
        {"stage_used": [row.stage_used for row in scored], "tier": [row.tier for row in scored]},
        dtype=object,
    )
    try:
        columns = audit.audit(articles_frame(scored), report)
    except Exception as error:  # an audit must never cost a row its scores
        logger.warning("Stage 2 failed on audited articles (%s): not audited", _safe_str(str(error)))
        audit.update(report["stage_used"], report["tier"], [False] * len(scored), [None] * len(scored))
        columns = pd.DataFrame({"audited": False, "audit_tier": None}, index=report.index)
    for row, audited, tier in zip(scored, columns["audited"], columns["audit_tier"]):
        if row.stage_used == "stage1":
            row.audited = bool(audited)
            row.audit_tier = str(tier) if audited else None
    return rows


#: Fields of one filter's result inside a multi-filter row.
FILTER_COLUMNS = (
    "scores", "weighted_average", "normalised", "tier", "stage_used", "stage1_estimate",
    "gatekeeper_applied", "blocked_by", "error",
)


@dataclass
class MultiScoredLine:
    """One input line scored by several filters: one row, every filter's result.

    The row (one JSON object a line)::

        line, id, error    as in a one-filter row (error: the line itself is bad)
        best_filter        the filter with the highest normalised score
                           (:func:`~hybrid_estimators.percentile_normalizer.best_filter`:
                           the first filter given on a tie; a filter that
                           blocked the article, failed on it or has no
                           normalisation table is left out), null when none is left
        filters            {"name/version": {scores, weighted_average, normalised,
                           tier, stage_used, stage1_estimate, gatekeeper_applied,
                           blocked_by, error}} for every filter, in the order given

    See Also
    --------
    ScoredLine : The row of one filter.
    score_chunk_multi : Fills it in.
    """

    line: int
    id: object = None
    error: str = None
    results: dict = field(default_factory=dict)

    def to_record(self):
        base = ScoredLine(self.line, self.id, error=self.error).to_record()
        filters = {
            name: {column: json_safe(getattr(row, column)) for column in FILTER_COLUMNS}
            for name, row in self.results.items()
        }
        return {
            "line": base["line"], "id": base["id"], "error": base["error"],
            "best_filter": self.best_filter, "filters": filters,
        }

    @property
    def best_filter(self):
        """The filter with the highest normalised score, or None (see the class)."""
        from .percentile_normalizer import best_filter

        if not self.results:
            return None
        normalised = {
            name: [np.nan if row.normalised is None else float(row.normalised)]
            for name, row in self.results.items()
        }
        excluded = {
            name: [row.blocked_by is not None or row.error is not None]
            for name, row in self.results.items()
        }
        return best_filter(normalised, excluded)[0]

    def to_json(self, ensure_ascii=False):
        return _dumps(self.to_record(), ensure_ascii)

    @classmethod
    def from_record(cls, record):
        """The row back from :meth:`to_record`'s values (``filters`` may be its JSON text)."""
        filters = record["filters"]
        if isinstance(filters, str):
            filters = json.loads(filters)
        results = {
            name: ScoredLine(record["line"], record["id"], **{column: result.get(column) for column in FILTER_COLUMNS})
            for name, result in filters.items()
        }
        return cls(record["line"], record["id"], record["error"], results)


def score_chunk_multi(scorers, rows):
    """Score parsed lines with every filter of `scorers`: one :class:`MultiScoredLine` each.

    Parameters
    ----------
    scorers : dict of str to Filter
        Name (``"name/version"``) -> fitted filter, in output order.
    rows : list of ScoredLine
        Parsed lines (:func:`parse_line`, :func:`parse_article`); they are
        not changed.

    Returns
    -------
    rows : list of MultiScoredLine
        One per parsed line, in order.

    See Also
    --------
    score_chunk : The same with one filter.
    hybrid_estimators.percentile_normalizer.best_filter : The filter with
        the highest normalised score.
    """
    multi = [MultiScoredLine(row.line, row.id, row.error) for row in rows]
    for name, scorer in scorers.items():
        scored = score_chunk(scorer, [replace(row) for row in rows])
        for row, result in zip(multi, scored):
            if row.error is None:
                row.results[name] = result
    return multi


def score_lines_multi(scorers, chunk):
    """Parse a chunk once and score it with every filter of `scorers`.

    Filters that share an embedder (same model, prefix, token budget and
    backend) embed each article once between them: the embeddings come
    from the embedder's content-keyed cache (``E5Embedder(cache=True)``,
    the default, or a cache folder) for every filter after the first.
    Each filter then runs its own probe, prefilter and Stage 2 on its own
    routed rows.

    Parameters
    ----------
    scorers : dict of str to Filter
        Name (``"name/version"``) -> fitted filter, in output order.
    chunk : list of (int, bytes)
        Numbered raw lines, as :func:`read_chunks` yields them.

    Returns
    -------
    rows : list of MultiScoredLine
        One per line, in order.

    See Also
    --------
    score_lines : The same with one filter.
    score_chunk_multi : Scores parsed rows.
    """
    text_columns = next((getattr(scorer, "text_columns", None) for scorer in scorers.values()), None)
    return score_chunk_multi(scorers, [parse_line(number, raw, text_columns) for number, raw in chunk])
