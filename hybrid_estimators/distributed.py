"""Scoring beyond one machine: a filter or a router over a Ray Data dataset.

:func:`score_dataset` runs the per-chunk logic of ``hybrid-estimators
score`` (:func:`~hybrid_estimators.scoring.parse_line`,
:func:`~hybrid_estimators.scoring.score_chunk`) in a pool of Ray actors, each of
which loads the models once. The rows it returns are the CLI's JSONL rows:
bad input becomes error rows, none is lost, and every row keeps its 1-based
``line`` so that the input order can be restored.

Ray is optional: ``pip install "hybrid_estimators[ray]"``.
"""

import json
import logging
import math
import time
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from .scoring import (
    OUTPUT_COLUMNS,
    audit_chunk,
    parse_article,
    parse_line,
    score_chunk_multi,
    score_timed,
    split_lines,
)

logger = logging.getLogger(__name__)

#: A path with one of these suffixes is read as Parquet, any other as JSONL.
PARQUET_SUFFIXES = (".parquet", ".pq")
#: Column of a JSONL file's raw lines, before parsing.
RAW = "raw"
#: Columns of the rows scored by several filters; ``filters`` is the JSON
#: text of the ``filters`` object of ``score --filter A --filter B``'s rows.
MULTI_OUTPUT_COLUMNS = ("line", "id", "error", "best_filter", "filters")


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ImportError(
            f"score_dataset needs Ray Data ({error}): pip install \"hybrid_estimators[ray]\""
        ) from None
    return ray


def _init_ray(ray, address):
    if ray.is_initialized():
        return
    logger.info("Starting Ray (%s)", "local" if address is None else f"address={address}")
    ray.init(address=address, ignore_reinit_error=True)


# --- reading ----------------------------------------------------------------


def _jsonl_chunks(batch, batch_size):
    """File bytes -> one row per chunk of `batch_size` lines, as ``scoring.read_chunks`` makes them.

    A row holds the chunk's first line number (``line``, from 1) and its raw
    lines (``raw``): an actor scores each chunk whole, so every article is
    embedded in the same batch as by the CLI without Ray, and the scores'
    bytes are the same whatever the batch size.
    """
    import pyarrow as pa

    for data in batch["bytes"].to_pylist():
        lines = split_lines(data)  # \n, \r\n or \r, as the CLI splits them
        starts = range(0, len(lines), batch_size)
        yield pa.table({
            "line": pa.array([start + 1 for start in starts], pa.int64()),
            RAW: pa.array([lines[start : start + batch_size] for start in starts], pa.list_(pa.large_binary())),
        })


def _parquet_rows(batch):
    """File bytes -> the file's rows, with their 1-based position as ``line``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for data in batch["bytes"].to_pylist():
        table = pq.read_table(pa.BufferReader(data))
        if "line" in table.column_names:
            table = table.drop_columns(["line"])
        yield table.add_column(0, "line", pa.array(range(1, table.num_rows + 1), pa.int64()))


def _read_file(ray, path, batch_size):
    """A Parquet file as numbered rows, or a JSONL file as chunks of raw lines; whether chunks.

    One task splits the file (it must fit in a worker's memory); any path
    Ray's readers take works, ``s3://`` included.
    """
    files = ray.data.read_binary_files(str(path))
    if Path(str(path)).suffix.lower() in PARQUET_SUFFIXES:
        return files.map_batches(_parquet_rows, batch_size=1, batch_format="pyarrow"), False
    chunks = files.map_batches(
        _jsonl_chunks, fn_kwargs={"batch_size": batch_size}, batch_size=1, batch_format="pyarrow"
    )
    return chunks, True


def _num_rows(block):
    return block.num_rows


def _with_lines(block, first_line):
    import pyarrow as pa

    lines = pa.array(range(first_line, first_line + block.num_rows), pa.int64())
    return block.add_column(0, "line", lines)


def _numbered(ray, dataset):
    """`dataset` with a 1-based ``line`` column: its own, or the row positions."""
    if "line" in (dataset.columns() or ()):
        return dataset
    # Rows have positions once they are stored: number each stored block, in
    # order, from where the previous one ended (no row passes the driver).
    blocks = dataset.materialize().to_arrow_refs()
    sizes = ray.get([ray.remote(_num_rows).remote(block) for block in blocks])
    first_lines = (1 + np.cumsum([0, *sizes])[:-1]).tolist()
    number = ray.remote(_with_lines)
    return ray.data.from_arrow_refs(
        [number.remote(block, first) for block, first in zip(blocks, first_lines)]
    )


# --- scoring ----------------------------------------------------------------


def _loaded_scorer(filter_or_router, stage1_only):
    from .filters import Filter, load_filter

    if isinstance(filter_or_router, (str, PathLike)):
        return load_filter(filter_or_router, stage1_only=stage1_only)
    scorer = filter_or_router  # this actor's own unpickled copy
    if stage1_only:
        if not isinstance(scorer, Filter):
            raise ValueError(
                "stage1_only needs a filter folder or a Filter; for a router, pass one "
                "built with stage2=None"
            )
        scorer = scorer.set_params(stage2=None).fit()
    return scorer


def _loaded_filters(filters, stage1_only):
    """Name -> loaded filter, from folders or Filters (a mapping keeps its names)."""
    from .filters import Filter

    named = filters.items() if isinstance(filters, Mapping) else [(None, item) for item in filters]
    loaded = {}
    for name, item in named:
        scorer = _loaded_scorer(item, stage1_only)
        if name is None:
            if not isinstance(scorer, Filter):
                raise ValueError(
                    f"Several filters are filter folders or Filters (or a dict naming each), not {scorer!r}."
                )
            name = scorer.spec.qualified_name
        if name in loaded:
            raise ValueError(f"{name} is given twice: give each filter once.")
        loaded[name] = scorer
    return loaded


def _missing_as_none(value):
    """An input cell as the plain path's JSON parser gives it: NumPy scalars unboxed,
    pandas' missing value (NaN) as None. (Input, not output: rows are written by
    :meth:`~hybrid_estimators.scoring.ScoredLine.to_json`.)"""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _parsed_rows(batch, from_lines):
    lines = [int(line) for line in batch["line"]]
    if from_lines:  # chunks: a first line number and the chunk's raw lines
        return [
            parse_line(first + offset, bytes(raw))
            for first, raws in zip(lines, batch[RAW])
            for offset, raw in enumerate(raws)
        ]
    records = batch.drop(columns="line").to_dict("records")
    return [
        parse_article(line, {key: _missing_as_none(value) for key, value in record.items()})
        for line, record in zip(lines, records)
    ]


def _rows_frame(rows, optional=(), columns=OUTPUT_COLUMNS):
    # Object columns: Arrow then types the Python values as they are (an id 1
    # beside a missing one stays 1, where pandas would make it 1.0), and a
    # column of mixed ids falls back to Ray's Python-object type.
    columns = {name: [getattr(row, name) for row in rows] for name in (*columns, *optional)}
    columns["id"] = [_missing_as_none(value) for value in columns["id"]]
    return pd.DataFrame(
        {name: pd.Series(values, dtype=object) for name, values in columns.items()}
    )


class _BatchScorer:
    """A Ray actor's scorer: loads the router once, then scores batch after batch."""

    def __init__(self, filter_or_router, stage1_only, from_lines, all_stage2=False, audit=None, timings=False):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # weight-loading bars
        self.scorer = _loaded_scorer(filter_or_router, stage1_only)
        self.from_lines = from_lines
        self.teacher = self.audit = None
        self.optional = ()
        if all_stage2:
            self.scorer, self.teacher = _teaching(self.scorer)
            self.optional = ("teacher",)
        if audit is not None:
            from .audit import RecallAudit

            rate, seed = audit
            self.audit = RecallAudit(self.scorer, rate, random_state=seed)
            self.optional = ("audited", "audit_tier")
        if timings:
            self.optional = (*self.optional, "seconds")

    def __call__(self, batch):
        started = time.perf_counter()
        rows = _parsed_rows(batch, self.from_lines)
        parsing = (time.perf_counter() - started) / max(len(rows), 1)
        for row in rows:  # the chunk's lines are parsed together here: an equal share each
            row.seconds = parsing
        rows = score_timed(self.scorer, rows)
        if self.audit is not None:
            audit_chunk(self.audit, rows)
        for row in rows:
            if self.teacher is not None and row.stage_used == "stage2":
                row.teacher = self.teacher
        return _rows_frame(rows, self.optional)


class _MultiBatchScorer:
    """A Ray actor scoring each batch with several filters (one embedding for those that share one)."""

    def __init__(self, filters, stage1_only, from_lines):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        self.scorers = _loaded_filters(filters, stage1_only)
        self.from_lines = from_lines

    def __call__(self, batch):
        rows = score_chunk_multi(self.scorers, _parsed_rows(batch, self.from_lines))
        frame = _rows_frame(rows, columns=MULTI_OUTPUT_COLUMNS[:-1])
        frame["filters"] = pd.Series([json.dumps(row.to_record()["filters"]) for row in rows], dtype=object)
        return frame


def _teaching(scorer):
    """The filter routing every article to Stage 2, and its teacher identity."""
    from .filters import Filter
    from .teacher import routing_every_article, teacher_identity

    if not isinstance(scorer, Filter) or scorer.stage2_ is None:
        raise ValueError("all_stage2 needs a filter with a Stage 2.")
    return routing_every_article(scorer), teacher_identity(scorer)


def score_dataset(
    filter_or_router,
    dataset,
    *,
    batch_size=64,
    concurrency=2,
    address=None,
    stage1_only=False,
    all_stage2=False,
    audit_rate=None,
    audit_seed=0,
    timings=False,
):
    """Score articles on Ray Data, with the rows of ``hybrid-estimators score``.

    A pool of `concurrency` Ray actors each loads the models once and scores
    batches of `batch_size` rows: the prefilter, then Stage 1, then Stage 2
    on the routed rows of the batch only.

    Parameters
    ----------
    filter_or_router : str, path-like, Filter, HybridRouterRegressor, list or dict
        A filter folder, loaded with :func:`~hybrid_estimators.filters.load_filter`
        by each actor (so it must exist where the actors run; its
        ``backend="auto"`` and ``dtype="auto"`` resolve on each actor's
        machine: on a cluster of mixed CPU kinds, pass a Filter loaded with
        explicit ones so that every row is computed alike), or a fitted
        :class:`~hybrid_estimators.filters.Filter` or router, pickled to the
        actors (its embedder and Stage 2 reload their weights by path). A
        bare router has no prefilter: it blocks nothing. A list of filter
        folders or Filters (named ``"name/version"``), or a dict of name ->
        folder or Filter, scores every row with every filter, as ``score
        --filter A --filter B`` does: filters that share an embedder embed
        each article once.
    dataset : ray.data.Dataset, str or path-like
        Articles with ``title`` and/or ``content`` (``id`` and ``language``
        optional). A path names one Parquet file (``.parquet``, ``.pq``) or
        else one JSONL file, whose lines are read as the CLI reads them: a
        bad line becomes an error row. A dataset's rows keep their ``line``
        column if they have one, else they are numbered 1..n in the order of
        the dataset, which is materialized for that.
    batch_size : int, default=64
        Rows per batch given to an actor (and embedded together). A JSONL
        file's batches are its chunks of `batch_size` lines from line 1,
        as the CLI without Ray makes them: the same rows, byte for byte.
    concurrency : int, default=2
        Actors in the pool, each taking one CPU and loading the models
        once; fewer when the input has fewer batches.
    address : str, default=None
        Ray cluster to connect to when Ray is not initialized yet; None
        starts a local Ray (or joins the one ``RAY_ADDRESS`` names).
    stage1_only : bool, default=False
        Never route to Stage 2 (a filter's Stage 2 is then not even loaded).
    all_stage2 : bool, default=False
        Route every article to Stage 2 and add the ``teacher`` column
        (``score --all-stage2``: teacher scores); needs one filter, with a
        Stage 2.
    audit_rate : float in (0, 1] or None, default=None
        Also send this share of the skipped articles through Stage 2
        (``score --audit``): the ``audited`` and ``audit_tier`` columns,
        scores unchanged. The choice is a keyed hash of each article's text
        (:func:`~hybrid_estimators.audit.audit_selection`), the same on any
        actor; :meth:`~hybrid_estimators.audit.RecallAudit.update` on the
        rows gives the recall.
    audit_seed : int, default=0
        Key of that hash.
    timings : bool, default=False
        Add the ``seconds`` column (one filter only): each row's share of
        its batch's time, as ``score``'s table shows it in ``ms/art``.

    Returns
    -------
    scored : ray.data.Dataset
        One row per input row, none dropped, with the columns of the CLI's
        JSONL rows: ``line``, ``id``, ``scores`` (dimension -> score, rounded
        like the CLI's), ``weighted_average``, ``normalised``, ``tier``, ``stage_used``,
        ``stage1_estimate``, ``gatekeeper_applied``, ``blocked_by`` and
        ``error`` (and ``teacher``, or ``audited`` and ``audit_tier``, as
        asked). With several filters, the columns are ``line``, ``id``,
        ``error`` (the line itself is bad), ``best_filter`` and ``filters``: the JSON text of
        ``{"name/version": {scores, weighted_average, normalised, tier, stage_used,
        stage1_estimate, gatekeeper_applied, blocked_by, error}}``, the
        ``filters`` object of the CLI's rows (one Arrow type fits filters
        with different dimensions); :meth:`MultiScoredLine.from_record
        <hybrid_estimators.scoring.MultiScoredLine.from_record>` reads a
        row back. The input is read and stored at once, the scoring is
        lazy, and rows come in no particular order: sort by ``line`` for
        the input's.

    Raises
    ------
    ImportError
        When Ray Data is not installed.

    See Also
    --------
    hybrid_estimators.scoring.score_chunk : What each actor does with a batch.

    Examples
    --------
    >>> from hybrid_estimators import score_dataset
    >>> scored = score_dataset("filters/ai_engineering_practice/v1",
    ...                        "examples/articles.jsonl")  # doctest: +SKIP
    >>> scored.to_pandas().sort_values("line")[["id", "tier"]]  # doctest: +SKIP
    """
    several = isinstance(filter_or_router, (list, tuple, Mapping))
    if several and (all_stage2 or audit_rate is not None):
        raise ValueError("all_stage2 and an audit take one filter, not several.")
    if all_stage2 and (stage1_only or audit_rate is not None):
        raise ValueError("all_stage2 routes every article: not with stage1_only or an audit.")
    if audit_rate is not None and (stage1_only or not 0 < audit_rate <= 1):
        raise ValueError("audit_rate must lie in (0, 1], and an audit needs Stage 2 (not stage1_only).")
    ray = _import_ray()
    _init_ray(ray, address)
    if isinstance(dataset, (str, PathLike)):
        rows, from_lines = _read_file(ray, dataset, batch_size)
    else:
        rows, from_lines = _numbered(ray, dataset), False
    # One block per batch (a JSONL file's chunk is one row): a file arrives as
    # one block, and the actor pool spreads blocks, not the batches inside a
    # block. The rows are stored before the actors start, as actors holding
    # every CPU of the cluster would starve the tasks that read and split the input.
    per_batch = 1 if from_lines else batch_size
    rows = rows.repartition(target_num_rows_per_block=per_batch).materialize()
    n_actors = max(1, min(concurrency, rows.num_blocks()))  # no idle actor loads models
    if several:
        scorer, scorer_args = _MultiBatchScorer, (filter_or_router, stage1_only, from_lines)
    else:
        audit = None if audit_rate is None else (audit_rate, audit_seed)
        scorer_args = (filter_or_router, stage1_only, from_lines, all_stage2, audit, timings)
        scorer = _BatchScorer
    return rows.map_batches(
        scorer,
        fn_constructor_args=scorer_args,
        batch_size=per_batch,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=n_actors),
    )


def skip_rate(filter_, scored):
    """The skip rate of scored rows beside the one `filter_`'s calibration expects.

    What ``score``'s summary says: the share of scored articles that
    skipped Stage 2, the expected share (when the filter's calibration was
    recorded at the threshold it routes at), and whether the observed one
    lies outside a binomial interval of it, in which case a
    :class:`~hybrid_estimators.exceptions.FilterQualityWarning` says so.

    Parameters
    ----------
    filter_ : str, path-like or Filter
        The filter that scored the rows (a folder or a loaded Filter).
    scored : ray.data.Dataset, DataFrame or list of dict
        Rows of :func:`score_dataset` (one filter): their ``stage_used``.

    Returns
    -------
    summary : dict
        ``n_scored``, ``n_skipped``, ``observed``, ``expected``,
        ``interval``, ``confidence``, ``outside`` (see
        :func:`~hybrid_estimators.scoring.skip_rate_summary`).

    See Also
    --------
    score_dataset : Scores the rows whose skip rate it measures.
    hybrid_estimators.scoring.recorded_skip_rate : The skip rate expected.
    """
    from .scoring import recorded_skip_rate, skip_rate_summary, warn_skip_rate

    if isinstance(filter_, (str, PathLike)):
        from .filters import load_filter

        filter_ = load_filter(filter_, stage1_only=True)  # the record and threshold only
    if hasattr(scored, "select_columns"):
        stage_used = scored.select_columns(["stage_used"]).to_pandas()["stage_used"]
    else:
        stage_used = pd.DataFrame(scored)["stage_used"]
    n_skipped, n_routed = int((stage_used == "stage1").sum()), int((stage_used == "stage2").sum())
    threshold = filter_.spec.hybrid_inference["threshold"]
    summary = skip_rate_summary(n_skipped, n_skipped + n_routed, recorded_skip_rate(filter_.metadata, threshold))
    warn_skip_rate(filter_.spec.qualified_name, summary)
    return summary
