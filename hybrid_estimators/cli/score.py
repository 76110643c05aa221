"""``hybrid-estimators score``: one output row per input line, in order.

With ``-o OUT`` the command also keeps two files beside ``OUT``:

``OUT.meta.json`` (the sidecar, rewritten atomically before every chunk's rows; with ``--ray``, once all are written)
    What ``--resume`` checks before it appends anything::

        {"format": "hybrid-estimators-score/2",
         "input": {"path": ..., "lines": N, "sha256": ...},
         "filter": {"name": ..., "version": ..., "probe_sha256": ...,
                    "adapter_sha256": ..., "dimensions": [...],
                    "config": {the config as parsed: tiers, dimensions and
                               their gatekeepers, prefilter, hybrid_inference}},
         "options": {"stage1_only": ..., "backend": ..., "batch_size": ...,
                     "all_stage2": ..., "audit": ..., "audit_seed": ...,
                     "package_version": ...}}

    ``--resume`` refuses any difference in ``filter`` or ``options``, naming
    the field (``config.tiers.medium``, ``--batch-size``, ...).
    ``input.sha256`` is the sha256 of the first ``input.lines`` input
    lines, each without its line ending and followed by ``\\n``; it covers
    at least every row of ``OUT``.
``OUT.lock`` (only while a run writes ``OUT``)
    Held with ``flock``: a second run on the same ``OUT`` is refused.
"""

import contextlib
import json
import logging
import sys
import time
import warnings
from pathlib import Path

from .._io import atomic_write, json_safe
from ..exceptions import FilterQualityWarning
from ..models import CALIBRATED_BACKENDS, STAGE1_BACKENDS
from ..scoring import (
    MultiScoredLine,
    ScoredLine,
    audit_chunk,
    count_lines,
    parse_line,
    read_chunks,
    score_lines,
    score_lines_multi,
    skip_rate_message,
    skip_rate_summary,
)
from ._common import (
    CommandError,
    HelpFormatter,
    add_cache_option,
    add_device_option,
    add_strict_option,
    add_text_columns_option,
    audit_rate,
    failed_verdicts,
    load_filter_or_fail,
    positive_int,
    quiet_model_loading,
    strict_status,
)
from ._score_ray import _check_ray_arguments, _run_on_ray, _write_ray_sidecar  # noqa: F401
from ._score_resume import (  # noqa: F401 (_write_ray_sidecar, _filter_identity: tests use them from here)
    _add_to_sidecar,
    _audit_path,
    _check_output_path,
    _check_resumable,
    _filter_identity,
    _filters_identity,
    _InputLines,
    _is_regular,
    _open_input,
    _output_is_regular,
    _open_output,
    _output_lock,
    _resume,
    _short_name,
    _skip_record,
    _write_sidecar,
    resolve_runtime,
)
from ._score_table import (  # noqa: F401 (printable, table_line: the public names of the table)
    _Counts,
    _emit,
    _is_utf8,
    _multi_table_line,
    _MultiCounts,
    multi_table_header,
    _progress_bar,
    _table_dimensions,
    printable,
    table_header,
    table_line,
)

logger = logging.getLogger("hybrid_estimators.cli")


# --- several filters in one pass ---------------------------------------------------

MULTI_UNSUPPORTED = ("all_stage2", "columns")


def _score_multi_command(args):
    """``score --filter A --filter B ...``: one row per line with every filter's result."""
    refused = [f"--{name.replace('_', '-')}" for name in MULTI_UNSUPPORTED if getattr(args, name)]
    refused += ["--audit"] if args.audit is not None else []
    if refused:
        raise CommandError(
            f"{', '.join(refused)}: with one --filter only; score with each filter on its own"
        )
    if args.ray:
        return _score_multi_on_ray_command(args)
    _check_options_without_ray(args)
    identity = _filters_identity(args.filter)
    names = list(identity["dimensions"])

    def stream(scorers, lines, sink, n_done, n_total):
        counts, started = _MultiCounts(names), time.perf_counter()
        for rows in _stream_rows(
            lambda chunk: score_lines_multi(scorers, chunk), lines, sink, n_done, n_total, args, identity,
            lambda row: _multi_table_line(row, names), multi_table_header(names),
        ):
            for row in rows:
                counts.add(row)
        counts.seconds = time.perf_counter() - started
        return counts

    _, n_done, counts = _run_scoring(args, identity, lambda: _load_filters(args), stream)
    resumed = f" (resumed after line {n_done})" if n_done else ""
    skip = _report_skip_rate(args, dict(zip(names, args.filter)), counts.filters)
    logger.info("%s; %.2f s%s", counts.describe(resumed), counts.seconds, _skip_text(skip))
    return 0


def _load_filters(args):
    scorers = {}
    calibration = _calibration_articles(args)
    for folder in args.filter:
        with _bars_hidden(args.no_progress):
            scorer = load_filter_or_fail(
                folder, stage1_only=args.stage1_only, verbose=args.verbose,
                backend=args.backend, dtype=args.dtype, calibration=calibration, cache=args.cache,
                device=args.device, text_columns=args.text_columns,
            )
        if args.no_progress:
            _hide_stage2_progress(scorer)
        scorers[scorer.spec.qualified_name] = scorer  # each name once: see _filters_identity
    return scorers



# --- scoring --------------------------------------------------------------------

def _check_stage2_options(args):
    if args.all_stage2 and args.stage1_only:
        raise CommandError("--all-stage2 runs Stage 2 on every article: it cannot be --stage1-only")
    if args.audit is not None and (args.stage1_only or args.all_stage2):
        raise CommandError("--audit checks the articles that skip Stage 2: not with "
                           "--stage1-only or --all-stage2")
    if args.fail_on_audit and args.audit is None:
        raise CommandError("--fail-on-audit needs --audit RATE")


def _check_options_without_ray(args):
    if args.address is not None or args.concurrency is not None:
        raise CommandError("--address and --concurrency need --ray")
    if args.resume and args.output is None:
        raise CommandError("--resume needs -o/--output (the file to continue)")


def _score_command(args):
    """Score, then ``--strict``: exit 2 when a filter's quality verdict failed (rows written)."""
    folders = list(args.filter)
    status = _score_filters(args)
    failed = [verdict for folder in folders for verdict in failed_verdicts(folder, args.stage1_only)]
    return max(status, strict_status(args, failed, "every row"))


def _score_filters(args):
    _check_stage2_options(args)
    if args.ray and args.text_columns:
        raise CommandError("--text-columns is not supported with --ray: map the fields beforehand")
    args.runtime = resolve_runtime(args)  # once: what the sidecar says every row was computed with
    if len(args.filter) > 1:
        return _score_multi_command(args)
    args.filter = args.filter[0]
    if args.ray:
        return _score_on_ray_command(args)
    _check_options_without_ray(args)
    identity = _filter_identity(args.filter)
    dimensions = _table_dimensions(args.columns, identity["dimensions"])

    def load():
        router = _load_filter(args)
        return router, _recall_audit(router, args)

    def stream(loaded, lines, sink, n_done, n_total):
        router, audit = loaded
        return _score_stream(router, lines, sink, n_done, n_total, args, identity, dimensions, audit)

    (_, audit), n_done, counts = _run_scoring(args, identity, load, stream)
    resumed = f" (resumed after line {n_done})" if n_done else ""
    skip = _report_skip_rate(args, {_short_name(identity): args.filter}, {_short_name(identity): counts})
    logger.info("%s%s; %s%s", counts, resumed, counts.timing(), _skip_text(skip))
    return 0 if audit is None else _report_audit(audit, args)


def _report_skip_rate(args, folders, counts):
    """Each filter's observed skip rate beside its record, warned once and added to the sidecar.

    `folders` and `counts` map a filter's ``name/version`` to its folder and
    its :class:`_Counts`. Returns ``{name: summary}`` (see
    :func:`~hybrid_estimators.scoring.skip_rate_summary`); empty when the
    run does not route (``--stage1-only``, ``--all-stage2``, no Stage 2).
    """
    if args.stage1_only or args.all_stage2:
        return {}
    summaries = {}
    for name, folder in folders.items():
        expected, routes = _skip_record(folder)
        if not routes:
            continue
        one = counts[name]
        summaries[name] = summary = skip_rate_summary(one.skipped, one.skipped + one.stage2, expected)
        if summary["outside"]:
            logger.warning("%s", skip_rate_message(name, summary))
    if summaries:
        _add_to_sidecar(args.output, skip_rate=summaries)
    return summaries


def _skip_text(summaries):
    texts = []
    for name, summary in summaries.items():
        if summary["observed"] is None:
            continue
        expected = "no record" if summary["expected"] is None else f"expected {summary['expected']:.1%}"
        who = f"{name} " if len(summaries) > 1 else ""
        texts.append(f"{who}skip rate {summary['observed']:.1%} ({expected})")
    return "".join(f"; {text}" for text in texts)


def _recall_audit(router, args):
    if args.audit is None:
        return None
    from ..audit import RecallAudit

    if router.stage2_ is None:
        raise CommandError(f"--audit needs a filter with a Stage 2: {args.filter} has none")
    return RecallAudit(router, args.audit, random_state=args.audit_seed)


def _report_audit(audit, args):
    """Log the audit's summary, write its JSON beside -o; 1 if it fails and must fail."""
    with warnings.catch_warnings():  # RecallAudit logs it too: said once on stderr
        warnings.simplefilter("ignore", FilterQualityWarning)
        summary = audit.summary()  # logs, naming the filter, when the bound is under target
    logger.info(
        "audit: %d of %d skipped articles audited, %d Stage-2 MEDIUM+; recall vs Stage 2 "
        "%s, lower bound %s at confidence %.2f: %s",
        summary["n_audited"], summary["n_skipped"], summary["audited_medium_plus"],
        _shown(summary["recall"]), _shown(summary["recall_lower_bound"]), summary["confidence"],
        summary["verdict"] if summary["undetermined"] is None
        else f"{summary['verdict']} ({summary['undetermined']})",
    )
    if args.output is not None and _output_is_regular(args.output):
        path = _audit_path(args.output)
        try:
            atomic_write(path, json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
        except OSError as error:
            raise CommandError(f"cannot write {path}: {error}") from None
    if args.fail_on_audit and summary["verdict"] == "undetermined":
        logger.warning("--fail-on-audit: not failing, the audit is undetermined: %s", summary["undetermined"])
    return 1 if args.fail_on_audit and summary["below_target"] else 0


def _shown(value):
    return "n/a" if value is None else f"{value:.3f}"


def _load_filter(args):
    calibration = _calibration_articles(args)
    with _bars_hidden(args.no_progress):
        router = load_filter_or_fail(
            args.filter, stage1_only=args.stage1_only, verbose=args.verbose,
            backend=args.backend, dtype=args.dtype, calibration=calibration, cache=args.cache,
            device=args.device, text_columns=args.text_columns,
        )
    if args.no_progress:
        _hide_stage2_progress(router)
    if args.all_stage2:
        if router.stage2_ is None:
            raise CommandError(f"--all-stage2 needs a filter with a Stage 2: {args.filter} has none")
        from ..teacher import routing_every_article

        router = routing_every_article(router)
    return router


@contextlib.contextmanager
def _bars_hidden(hidden):
    """No weight-loading, download or conversion bars while models load, if `hidden`."""
    if not hidden:
        yield
        return
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    hub_shown = not are_progress_bars_disabled()
    disable_progress_bars()
    try:
        with quiet_model_loading(True):
            yield
    finally:
        if hub_shown:
            enable_progress_bars()


def _calibration_articles(args):
    """The valid articles of ``--calibration`` (a JSONL file), as a list of dicts."""
    if args.calibration is None:
        if args.backend in CALIBRATED_BACKENDS:
            raise CommandError(
                f"--backend {args.backend} is quantised on articles like the input: "
                "add --calibration FILE.jsonl (about a hundred of them)"
            )
        return None
    try:
        with open(args.calibration, "rb") as file:
            rows = [parse_line(number, raw) for chunk in read_chunks(file, 256) for number, raw in chunk]
    except OSError as error:
        raise CommandError(f"cannot read --calibration {args.calibration}: {error}") from None
    articles = [row.article for row in rows if row.error is None]
    if not articles:
        raise CommandError(f"--calibration {args.calibration} has no valid article")
    return articles


def _hide_stage2_progress(router):
    if router.stage2 is None:
        return
    stage2 = getattr(router.stage2, "estimator", router.stage2)
    if "show_progress_bar" in stage2.get_params():
        stage2.set_params(show_progress_bar=False)








def _teacher_of(router, args):
    if not args.all_stage2:
        return None
    from ..teacher import teacher_identity

    return teacher_identity(router)


def _run_scoring(args, identity, load, stream):
    """Read the input and write the output under its lock, resuming where ``--resume`` says.

    ``load()`` runs after the resume check and before the output is opened,
    so that a filter that fails to load leaves the output as it was; then
    ``stream(loaded, lines, sink, n_done, n_total)`` scores. Returns what
    ``load`` returned, the number of lines resumed past and what ``stream``
    returned.
    """
    source, input_stat = _open_input(args.input)
    try:
        _check_output_path(args.output, args.input, input_stat)
        if args.resume:
            _check_resumable(args, input_stat)
        with _output_lock(args.output):
            lines = _InputLines(source)
            n_done = _resume(args, identity, lines) if args.resume else 0
            # Only a regular file is read twice (counted, then scored): a pipe is read once.
            n_total = count_lines(args.input) if _is_regular(input_stat) and str(args.input) != "-" else None
            loaded = load()
            sink = _open_output(args.output, append=args.resume)
            try:
                return loaded, n_done, stream(loaded, lines, sink, n_done, n_total)
            finally:
                if sink is not None:
                    sink.close()
    finally:
        if source is not sys.stdin.buffer:
            source.close()


def _stream_rows(score_chunk, lines, sink, n_done, n_total, args, identity, format_row, header=None):
    """Score the lines chunk by chunk, write each chunk's rows, and yield them a chunk at a time.

    ``score_chunk(chunk)`` returns a row per line of the chunk; the rows at
    or before line `n_done` (written by the run being resumed) are dropped.
    The sidecar is written before a chunk's rows, so it covers every row in
    the output. ``format_row`` makes a row's line of ``--format table``.
    """
    first_line = n_done - n_done % args.batch_size + 1
    stdout_format = None if args.output is not None and args.quiet else args.format
    table, jsonl_to_stdout = stdout_format == "table", stdout_format == "jsonl"
    ascii_stdout = jsonl_to_stdout and not _is_utf8(sys.stdout)
    progress = _progress_bar(n_total, n_done, args)
    if table and header is not None:
        _emit(header, progress)
    with progress:
        for chunk in read_chunks(lines, args.batch_size, first_line=first_line):
            rows = [row for row in score_chunk(chunk) if row.line > n_done]
            text = "".join(row.to_json() + "\n" for row in rows)
            if sink is not None:
                _write_sidecar(args, identity, lines)
                _write(sink, text, args.output)
            if jsonl_to_stdout:
                sys.stdout.write(
                    "".join(row.to_json(ensure_ascii=True) + "\n" for row in rows) if ascii_stdout else text
                )
                sys.stdout.flush()
            if table:
                for row in rows:
                    _emit(format_row(row), progress)
            progress.update(len(rows))
            yield rows
    if sink is not None:
        _write_sidecar(args, identity, lines)  # an empty input has no chunk


def _score_stream(router, lines, sink, n_done, n_total, args, identity, dimensions, audit=None):
    teacher = _teacher_of(router, args)

    def score_chunk(chunk):
        rows = score_lines(router, chunk)
        if audit is not None:  # the rows this run writes: those of a resumed chunk are not
            audit_chunk(audit, [row for row in rows if row.line > n_done])
        for row in rows:
            if teacher is not None and row.stage_used == "stage2":
                row.teacher = teacher
        return rows

    counts, started = _Counts(), time.perf_counter()
    for rows in _stream_rows(
        score_chunk, lines, sink, n_done, n_total, args, identity,
        lambda row: table_line(row, dimensions=dimensions), table_header(dimensions),
    ):
        for row in rows:
            counts.add(row)
    counts.seconds = time.perf_counter() - started
    return counts


def _write(sink, text, output):
    try:
        sink.write(text.encode("utf-8"))
        sink.flush()
    except OSError as error:
        raise CommandError(f"cannot write {output}: {error}") from None




def _ray_audit(args):
    """The driver's RecallAudit, counting the rows the actors audited (None without --audit).

    Also refuses, before Ray starts, --all-stage2 or --audit with a filter without Stage 2.
    """
    if not args.all_stage2 and args.audit is None:
        return None
    router = load_filter_or_fail(args.filter, verbose=args.verbose, report_quality=False)  # no weights
    if router.stage2_ is None:
        option = "--all-stage2" if args.all_stage2 else "--audit"
        raise CommandError(f"{option} needs a filter with a Stage 2: {args.filter} has none")
    return _recall_audit(router, args)


def _score_on_ray_command(args):
    from ..distributed import OUTPUT_COLUMNS, score_dataset
    from ..scoring import OPTIONAL_COLUMNS

    [filter_dimensions] = _check_ray_arguments(args, [args.filter])
    failed_verdicts(args.filter, args.stage1_only, report=True)
    dimensions = _table_dimensions(args.columns, filter_dimensions)
    audit = _ray_audit(args)
    counts = _Counts()

    def scored():
        return score_dataset(
            str(args.filter), str(args.input), batch_size=args.batch_size,
            concurrency=args.concurrency or 2, address=args.address,
            stage1_only=args.stage1_only, all_stage2=args.all_stage2,
            audit_rate=args.audit, audit_seed=args.audit_seed, timings=True,
        )

    def row_of(record):
        columns = (*OUTPUT_COLUMNS, *(name for name in OPTIONAL_COLUMNS if name in record))
        row = ScoredLine(**{name: record[name] for name in columns}, seconds=record.get("seconds"))
        if audit is not None:
            audit.update([row.stage_used], [row.tier], [row.audited], [row.audit_tier])
        counts.add(row)
        return row

    identity = _filter_identity(args.filter)
    counts.seconds = _run_on_ray(
        args, identity, scored, row_of,
        lambda row: table_line(row, dimensions=dimensions), table_header(dimensions),
    )
    skip = _report_skip_rate(args, {_short_name(identity): args.filter}, {_short_name(identity): counts})
    logger.info("%s; %s%s", counts, counts.timing(), _skip_text(skip))
    return 0 if audit is None else _report_audit(audit, args)


def _score_multi_on_ray_command(args):
    from ..distributed import score_dataset

    _check_ray_arguments(args, args.filter)
    for folder in args.filter:
        failed_verdicts(folder, args.stage1_only, report=True)
    identity = _filters_identity(args.filter)
    names = list(identity["dimensions"])
    counts = _MultiCounts(names)

    def scored():
        return score_dataset(
            [str(folder) for folder in args.filter], str(args.input), batch_size=args.batch_size,
            concurrency=args.concurrency or 2, address=args.address, stage1_only=args.stage1_only,
        )

    def row_of(record):
        row = MultiScoredLine.from_record(record)
        counts.add(row)
        return row

    counts.seconds = _run_on_ray(
        args, identity, scored, row_of, lambda row: _multi_table_line(row, names), multi_table_header(names)
    )
    skip = _report_skip_rate(args, dict(zip(names, args.filter)), counts.filters)
    logger.info("%s; %.2f s%s", counts.describe(" on Ray"), counts.seconds, _skip_text(skip))
    return 0


# --- the parser -------------------------------------------------------------------


def add_parser(subparsers, parents=()):
    """Register ``score`` on `subparsers`."""
    score = subparsers.add_parser(
        "score", parents=parents, help="score a JSONL file of articles",
        formatter_class=HelpFormatter,
        description="Score articles (one JSON object a line with id, title, content, "
        "language) with a filter: one output row per input line, in order. Lines end "
        "at \\n, \\r\\n or \\r.",
    )
    score.add_argument(
        "--filter", required=True, type=Path, action="append",
        help="filter folder (config.yaml, probe/); give it again to score with several "
        "filters in one pass (one row per line holding every filter's result; filters "
        "that share an embedder embed each article once)",
    )
    score.add_argument("input", help="JSONL file of articles, or - for stdin")
    score.add_argument(
        "-o", "--output", type=Path,
        help="write JSONL rows to this file (and OUTPUT.meta.json, what --resume checks)",
    )
    score.add_argument("--stage1-only", action="store_true", help="never run Stage 2 (nor load it)")
    score.add_argument("--batch-size", type=positive_int, default=64, help="lines per chunk")
    score.add_argument(
        "--backend", choices=("auto", *STAGE1_BACKENDS), default="auto",
        help="Stage 1 runtime; auto: the fastest the filter records as qualified at iso-quality "
        "for this kind of CPU, else torch (openvino-int8 needs --calibration)",
    )
    score.add_argument(
        "--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
        help="Stage 2 precision; auto: bfloat16 where the hardware computes it and the filter "
        "records it as qualified for this kind of machine, else float32",
    )
    score.add_argument(
        "--calibration", type=Path,
        help="JSONL of articles like the input (about a hundred) that --backend openvino-int8 "
        "is quantised on",
    )
    score.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted run into -o (same --batch-size: same bytes); refused "
        "when -o was written from another input, with another filter or options, or is "
        "being written by another run",
    )
    score.add_argument(
        "--ray", action="store_true",
        help="score on Ray Data (a local Ray, or --address): same rows, in order; "
        "the table's ms/art is then wall-clock time over all actors",
    )
    score.add_argument(
        "--address", help="with --ray: the Ray cluster to use (default: start a local Ray)"
    )
    score.add_argument(
        "--concurrency", type=positive_int, help="with --ray: Ray actors, one CPU each (default 2)"
    )
    score.add_argument(
        "--format", choices=("table", "jsonl"), default="table", help="what to print on stdout"
    )
    score.add_argument(
        "--columns", metavar="{scores,NAME[,NAME...]}",
        help="also show these dimensions' scores in the table (scores or all: every one)",
    )
    score.add_argument(
        "--all-stage2", action="store_true",
        help="run Stage 2 on every article (teacher scores for calibrate --reference stage2 "
        "and distilled probes); rows say which filter and Stage 2 wrote them",
    )
    score.add_argument(
        "--audit", type=audit_rate, metavar="RATE",
        help="also send this seeded share (0, 1] of the articles that skip Stage 2 through "
        "it, scores unchanged: rows say audited and Stage 2's tier, the summary (and "
        "OUTPUT.audit.json) the recall relative to Stage 2 and its lower bound",
    )
    score.add_argument(
        "--audit-seed", type=int, default=0, help="which articles --audit picks (a keyed hash)"
    )
    score.add_argument(
        "--fail-on-audit", action="store_true",
        help="exit 1 when the audited recall's lower bound falls below the filter's target",
    )
    add_cache_option(score)
    add_device_option(score)
    score.add_argument(
        "-q", "--quiet", action="store_true",
        help="with -o: print nothing on stdout (progress bars stay: --no-progress)",
    )
    add_text_columns_option(score)
    add_strict_option(score, "every row")
    score.set_defaults(handler=_score_command)
    return score
