"""``hybrid-estimators score``: one output row per input line, in order.

With ``-o OUT`` the command also keeps two files beside ``OUT``:

``OUT.meta.json`` (the sidecar, rewritten atomically before every chunk's rows; with ``--ray``, once all are written)
    What ``--resume`` checks before it appends anything::

        {"format": "hybrid-estimators-score/1",
         "input": {"path": ..., "lines": N, "sha256": ...},
         "filter": {"name": ..., "version": ..., "probe_sha256": ...,
                    "dimensions": [...]},
         "options": {"stage1_only": ..., "backend": ..., "batch_size": ...}}

    ``input.sha256`` is the sha256 of the first ``input.lines`` input
    lines, each without its line ending and followed by ``\\n``; it covers
    at least every row of ``OUT``.
``OUT.lock`` (only while a run writes ``OUT``)
    Held with ``flock``: a second run on the same ``OUT`` is refused.
"""

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from collections import deque
from pathlib import Path

from .._io import atomic_write
from ..models import CALIBRATED_BACKENDS, STAGE1_BACKENDS
from ..scoring import (
    MultiScoredLine,
    ScoredLine,
    audit_chunk,
    count_lines,
    describe_id,
    iter_lines,
    parse_line,
    read_chunks,
    score_lines,
    score_lines_multi,
)
from ._common import (
    CommandError,
    HelpFormatter,
    add_cache_option,
    add_device_option,
    audit_rate,
    check_filter_folder,
    load_filter_or_fail,
    positive_int,
    quiet_model_loading,
)
from .info import filter_info

logger = logging.getLogger("hybrid_estimators.cli")


TABLE_COLUMNS = (  # header, width, alignment
    ("line", 6, ">"),
    ("id", 28, "<"),
    ("tier", 8, "<"),
    ("stage", 6, "<"),
    ("w.avg", 6, ">"),
    ("ms/art", 7, ">"),
    ("blocked_by / error", 0, "<"),
)
#: Where ``--columns`` puts the dimensions' scores: after ``w.avg``.
DIMENSIONS_AFTER = "w.avg"
MAX_NOTE = 70
SIDECAR_FORMAT = "hybrid-estimators-score/1"


# --- the table ----------------------------------------------------------------


def _escaped(character):
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text):
    """`text` on one line, with what a terminal would act on or hide escaped.

    Runs of whitespace become one space; controls (escape sequences
    included), format characters (bidi overrides, zero-width characters),
    lone surrogates and unassigned code points become ``\\xNN``,
    ``\\uNNNN`` or ``\\UNNNNNNNN``.

    Examples
    --------
    >>> printable("a\\x1b[31mred\\nline")
    'a\\\\x1b[31mred line'
    """
    text = " ".join(text.split())
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _cell(value, width, align, limit=MAX_NOTE):
    width_or_limit = width or limit
    text = "-" if value is None else printable(str(value)[: 4 * width_or_limit + 16])
    if len(text) > width_or_limit:
        text = text[: width_or_limit - 1] + "…"
    return f"{text:{align}{width}}" if width else text


def _columns(dimensions):
    columns = []
    for column in TABLE_COLUMNS:
        columns.append(column)
        if column[0] == DIMENSIONS_AFTER:
            columns.extend((name, max(5, len(name)), ">") for name in dimensions)
    return columns


def table_header(dimensions=()):
    """The table's header, with a column per dimension in `dimensions`."""
    return "  ".join(_cell(name, width, align) for name, width, align in _columns(dimensions))


def _number(value):
    return None if value is None else f"{value:.2f}"


def table_line(row, ms_per_article=None, dimensions=()):
    """One table line for `row`; `ms_per_article` defaults to the row's own share."""
    note = row.error or (f"blocked: {row.blocked_by}" if row.blocked_by else "")
    stage = None if row.stage_used is None else row.stage_used.replace("stage", "")
    if ms_per_article is None and row.seconds is not None:
        ms_per_article = 1000 * row.seconds
    scores = row.scores or {}
    values = [row.line, row.id, row.tier, stage, _number(row.weighted_average)]
    values += [_number(scores.get(name)) for name in dimensions]
    values += [None if ms_per_article is None else f"{ms_per_article:.1f}", note]
    return "  ".join(
        _cell(value, width, align)
        for value, (_, width, align) in zip(values, _columns(dimensions))
    ).rstrip()


def _table_dimensions(columns, dimensions):
    """The dimensions ``--columns`` asks for, checked against the filter's."""
    if columns is None:
        return ()
    names = [name.strip() for name in columns.split(",") if name.strip()]
    if names in (["scores"], ["all"]):
        return tuple(dimensions)
    unknown = [name for name in names if name not in dimensions]
    if unknown or not names:
        raise CommandError(
            f"--columns: unknown dimension(s) {unknown or [columns]}; this filter has "
            f"{', '.join(dimensions)} (or say --columns scores for all of them)"
        )
    return tuple(names)


# --- the filter, the input and the output, checked before any model loads ------


def _filter_identity(folder):
    """Name, version, probe sha256 and dimensions of a filter, read without a model."""
    from ..filters import FilterSpec, read_metadata

    folder = check_filter_folder(folder)
    try:
        spec = FilterSpec.from_yaml(folder / "config.yaml")
        metadata = read_metadata(folder)  # bounded, regular file only
    except (ValueError, OSError) as error:  # FilterError is a ValueError
        raise CommandError(f"cannot load filter {folder}: {error}") from None
    return {
        "name": spec.name,
        "version": spec.version,
        "probe_sha256": metadata.get("probe_sha256") if isinstance(metadata, dict) else None,
        "dimensions": list(spec.dimension_names),
    }


def _filters_identity(folders):
    """The identity of several filters scored in one pass: each one's, in output order."""
    filters = [_filter_identity(folder) for folder in folders]
    seen = set()
    for folder, identity in zip(folders, filters):
        if _short_name(identity) in seen:
            raise CommandError(f"--filter {folder} is {_short_name(identity)} again: give each filter once")
        seen.add(_short_name(identity))
    return {"filters": filters, "dimensions": {_short_name(f): f["dimensions"] for f in filters}}


def _short_name(identity):
    return f"{identity.get('name')}/{identity.get('version')}"


def _sidecar_path(output):
    return Path(f"{output}.meta.json")


def _lock_path(output):
    return Path(f"{output}.lock")


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def _check_output_path(output, input_path):
    """Refuse an output that would overwrite the input or cannot be written."""
    if output is None:
        return
    output = Path(output)
    folder = output.parent
    if not folder.is_dir():
        reason = "does not exist" if not folder.exists() else "is not a folder"
        raise CommandError(f"cannot write {output}: {folder} {reason}")
    if output.is_dir():
        raise CommandError(f"cannot write {output}: it is a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(f"cannot write {output}: folder {folder} is not writable")
    if output.exists() and not os.access(output, os.W_OK):
        raise CommandError(f"cannot write {output}: it is not writable")
    if str(input_path) == "-":
        return
    for path in (output, _sidecar_path(output), _lock_path(output)):
        if _same_file(path, input_path):
            raise CommandError(
                f"the output file must not be the input file: {path} is {input_path}"
            )


@contextlib.contextmanager
def _output_lock(output):
    """Hold ``OUT.lock`` while this run writes `output`; refuse if another run does."""
    if output is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = _lock_path(output)
    descriptor = _acquire(path, fcntl)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: see _acquire
        os.close(descriptor)


def _acquire(path, fcntl):
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise CommandError(f"cannot write {path}: {error.strerror or error}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(descriptor, 32).decode("ascii", "replace").strip() or "?"
            os.close(descriptor)
            output = str(path).removesuffix(".lock")
            raise CommandError(
                f"{output} is being written by another run (pid {holder}, lock {path}): "
                "wait for it to finish or stop it"
            ) from None
        # The previous holder unlinks the file before releasing it: a lock
        # taken on an unlinked file protects nothing, so take the new one.
        try:
            if os.fstat(descriptor).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    return descriptor


def _open_input(path):
    if str(path) == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None


class _InputLines:
    """The input's lines, counted and hashed as they are read, read-ahead kept.

    The hash is the sha256 of every line read so far, each without its line
    ending and followed by ``\\n``: the sidecar's ``input.sha256``.
    """

    def __init__(self, source):
        self._lines = iter_lines(source)
        self._sha256 = hashlib.sha256()
        self._ahead = deque()
        self.n_read = 0

    def take(self):
        """The next line from the input (None at its end), hashed."""
        line = next(self._lines, None)
        if line is not None:
            self._sha256.update(line + b"\n")
            self.n_read += 1
        return line

    def give_back(self, line):
        """Have the iteration yield `line` (already taken) before new ones."""
        self._ahead.append(line)

    def digest(self):
        return self._sha256.hexdigest()

    def __iter__(self):
        while self._ahead:
            yield self._ahead.popleft()
        while (line := self.take()) is not None:
            yield line


# --- resume -------------------------------------------------------------------


def _complete_rows(path):
    """Complete lines of an output and their bytes; checks the last one's ``line``."""
    n_done, complete, last = 0, 0, None
    with open(path, "rb") as file:
        for line in file:
            if not line.endswith(b"\n"):
                break
            n_done, complete, last = n_done + 1, complete + len(line), line
    if last is not None:
        try:
            last_line = json.loads(last)["line"]
        except (ValueError, KeyError, TypeError):
            last_line = None
        if last_line != n_done:
            raise CommandError(
                f"{path}: its line {n_done} is not the row of input line {n_done} "
                "(not an output of this command?): remove it or run without --resume"
            )
    return n_done, complete


def _drop_partial_row(path, complete):
    size = path.stat().st_size
    if complete < size:
        logger.info("%s: dropping a partial last line of %d bytes", path, size - complete)
        os.truncate(path, complete)


def prepare_resume(path):
    """Count the complete lines of an interrupted output and drop a partial last one.

    Returns
    -------
    n_done : int
        Input lines already scored (0 when `path` does not exist).
    """
    path = Path(path)
    if not path.exists():
        logger.info("%s does not exist yet: starting from the first line", path)
        return 0
    n_done, complete = _complete_rows(path)
    _drop_partial_row(path, complete)
    return n_done


def _refuse(output, why):
    raise CommandError(f"cannot resume {output}: {why}: remove it or run without --resume")


def _read_sidecar(output):
    path = _sidecar_path(output)
    try:
        sidecar = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        _refuse(output, f"its sidecar {path} is unreadable ({error})")
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        _refuse(output, f"{path} is not a sidecar of this command")
    return sidecar


def _filter_name(identity):
    if "filters" in identity:
        return "filters " + ", ".join(_filter_name(one) for one in identity["filters"])
    probe = str(identity.get("probe_sha256"))[:12]
    return f"{_short_name(identity)} (probe {probe}…)"


def _check_sidecar(sidecar, identity, args, n_done):
    """Refuse a sidecar of another filter or options; return the lines it covers."""
    output = args.output
    try:
        written, options = sidecar["filter"], sidecar["options"]
        n_lines, _ = int(sidecar["input"]["lines"]), str(sidecar["input"]["sha256"])
    except (KeyError, TypeError, ValueError):
        _refuse(output, f"its sidecar {_sidecar_path(output)} lacks what it should hold")
    if written != identity:
        if "filters" in written or "filters" in identity:
            what = f"{_filter_name(written)}, not {_filter_name(identity)}"
        elif written.get("dimensions") != identity["dimensions"]:
            what = f"dimensions {written.get('dimensions')}, not {identity['dimensions']}"
        else:
            what = f"filter {_filter_name(written)}, not {_filter_name(identity)}"
        _refuse(output, f"it was written with {what}")
    for option in ("stage1_only", "backend", "all_stage2"):
        if options.get(option, False if option == "all_stage2" else None) != getattr(args, option):
            _refuse(
                output,
                f"it was written with --{option.replace('_', '-')} {options.get(option)}, "
                f"this run has {getattr(args, option)}",
            )
    if options.get("batch_size") != args.batch_size:
        logger.warning(
            "%s was written with --batch-size %s: with %d the resumed rows' scores may "
            "differ in the last decimals", output, options.get("batch_size"), args.batch_size,
        )
    if n_lines < n_done:
        _refuse(output, f"it has {n_done} rows but its sidecar covers {n_lines} input lines")
    return n_lines


def _output_rows(path):
    with open(path, "rb") as file:
        for line in file:
            yield line


def _check_row(output_line, number, raw, dimensions, args):
    """Without a sidecar: is this output row the row of this input line?

    `dimensions` is the filter's list, or for several filters a dict of
    ``name/version`` to each one's list (the rows' ``filters``).
    """
    several = isinstance(dimensions, dict)
    try:
        row = json.loads(output_line)
        row_id, error, scores = row["id"], row["error"], row["filters" if several else "scores"]
    except (ValueError, KeyError, TypeError):
        _refuse(args.output, f"its line {number} is not a row of this command")
    parsed = parse_line(number, raw)
    expected = json.loads(ScoredLine(number, id=parsed.id).to_json())["id"]
    if row_id != expected:
        _refuse(
            args.output,
            f"its line {number} has id {printable(repr(row_id))[:60]} but line {number} "
            f"of {args.input} has id {printable(repr(expected))[:60]} (another input)",
        )
    if parsed.error is not None and error is None:
        _refuse(args.output, f"its line {number} is scored, but line {number} of {args.input} "
                             "is not a valid article (another input)")
    if several and error is None and list(scores) != list(dimensions):
        _refuse(args.output, f"its line {number} has filters {list(scores)}, this run "
                             f"{list(dimensions)} (other filters)")
    if not several and isinstance(scores, dict) and list(scores) != dimensions:
        _refuse(args.output, f"its line {number} has dimensions {list(scores)}, this filter "
                             f"{dimensions} (another filter)")


def _resume(args, identity, lines):
    """Check `args.output` against the input and the filter; the lines it already has.

    Reads the input up to the last line the output (or its sidecar) covers
    and gives back to `lines` those from the start of the chunk to re-score.
    Nothing is changed before every check passed.
    """
    output = Path(args.output)
    if not output.exists():
        logger.info("%s does not exist yet: starting from the first line", output)
        return 0
    n_done, complete = _complete_rows(output)
    sidecar = _read_sidecar(output) if n_done else None
    if sidecar is not None:
        n_check = _check_sidecar(sidecar, identity, args, n_done)
        rows = None
    else:
        n_check, rows = n_done, _output_rows(output)
    # Chunks start at multiples of batch_size, and a resumed run re-scores
    # the whole chunk it stopped in: every article is then embedded in the
    # same batch as in an uninterrupted run, so the bytes are the same.
    first_chunk_start = n_done - n_done % args.batch_size
    for number in range(1, n_check + 1):
        raw = lines.take()
        if raw is None:
            covered = f"{n_done} rows" if rows is not None else f"a sidecar covering {n_check} lines"
            _refuse(output, f"it has {covered} but {args.input} only {number - 1} lines "
                            "(not an output of this input)")
        if rows is not None:
            _check_row(next(rows), number, raw, identity["dimensions"], args)
        if number > first_chunk_start:
            lines.give_back(raw)
    if rows is not None:
        rows.close()
        if n_done:
            logger.warning(
                "%s has no sidecar %s: only its rows' ids and dimensions were checked "
                "against the input and the filter", output, _sidecar_path(output).name,
            )
    if sidecar is not None and lines.digest() != sidecar["input"]["sha256"]:
        _refuse(output, f"it was written from another input: the first {n_check} lines of "
                        f"{args.input} differ from those it was scored from")
    _drop_partial_row(output, complete)
    return n_done


def _write_sidecar(args, identity, lines):
    sidecar = {
        "format": SIDECAR_FORMAT,
        "input": {"path": str(args.input), "lines": lines.n_read, "sha256": lines.digest()},
        "filter": identity,
        "options": {
            "stage1_only": args.stage1_only, "backend": args.backend,
            "batch_size": args.batch_size, "all_stage2": args.all_stage2,
        },
    }
    try:
        atomic_write(_sidecar_path(args.output), json.dumps(sidecar, indent=1) + "\n")
    except OSError as error:
        raise CommandError(f"cannot write {_sidecar_path(args.output)}: {error}") from None


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

    def stream(scorers, lines, sink, n_done, n_total):
        started, n_lines = time.perf_counter(), 0
        for rows in _stream_rows(
            lambda chunk: score_lines_multi(scorers, chunk), lines, sink, n_done, n_total, args, identity,
            _multi_table_line,
        ):
            n_lines += len(rows)
        return n_lines, time.perf_counter() - started

    scorers, n_done, (n_lines, seconds) = _run_scoring(args, identity, lambda: _load_filters(args), stream)
    resumed = f" (resumed after line {n_done})" if n_done else ""
    logger.info("lines=%d filters=%d%s; %.2f s", n_lines, len(scorers), resumed, seconds)
    return 0


def _load_filters(args):
    scorers = {}
    calibration = _calibration_articles(args)
    for folder in args.filter:
        with _bars_hidden(args.no_progress):
            scorer = load_filter_or_fail(
                folder, stage1_only=args.stage1_only, verbose=args.verbose,
                backend=args.backend, calibration=calibration, cache=args.cache, device=args.device,
            )
        if args.no_progress:
            _hide_stage2_progress(scorer)
        scorers[scorer.spec.qualified_name] = scorer  # each name once: see _filters_identity
    return scorers


def _multi_table_line(row):
    cells = [_cell(row.line, 6, ">"), _cell(printable(describe_id(row.id)) if row.id is not None else None, 28, "<")]
    if row.error is not None:
        return "  ".join(cells + [_cell(row.error, 0, "<")]).rstrip()
    for name, result in row.results.items():
        if result.stage_used is None:
            outcome = f"blocked:{result.blocked_by}" if result.blocked_by else "error"
        else:
            outcome = f"{result.tier}/{result.stage_used[-1]}/{result.weighted_average:.2f}"
        cells.append(f"{name}={outcome}")
    return "  ".join(cells)


# --- scoring --------------------------------------------------------------------


class _Counts:
    def __init__(self):
        self.lines = self.scored = self.stage2 = self.blocked = self.errors = 0
        self.seconds = 0.0

    def add(self, row):
        self.lines += 1
        self.errors += row.error is not None
        self.blocked += row.blocked_by is not None and row.error is None
        self.scored += row.weighted_average is not None
        self.stage2 += row.stage_used == "stage2"

    def timing(self):
        """Wall-clock time of the run, in all and per line and scored article."""
        per_line = 1000 * self.seconds / max(self.lines, 1)
        per_scored = f", {1000 * self.seconds / self.scored:.1f} ms per scored article" if self.scored else ""
        return f"{self.seconds:.2f} s, {per_line:.1f} ms per line{per_scored}"

    def __str__(self):
        return (
            f"lines={self.lines} scored={self.scored} stage2={self.stage2} "
            f"blocked={self.blocked} errors={self.errors}"
        )


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
    _check_stage2_options(args)
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
    logger.info("%s%s; %s", counts, resumed, counts.timing())
    return 0 if audit is None else _report_audit(audit, args)


def _recall_audit(router, args):
    if args.audit is None:
        return None
    from ..audit import RecallAudit

    if router.stage2_ is None:
        raise CommandError(f"--audit needs a filter with a Stage 2: {args.filter} has none")
    return RecallAudit(router, args.audit, random_state=args.audit_seed)


def _report_audit(audit, args):
    """Log the audit's summary, write its JSON beside -o; 1 if it fails and must fail."""
    summary = audit.summary()  # warns, naming the filter, when the bound is under target
    logger.info(
        "audit: %d of %d skipped articles audited, %d Stage-2 MEDIUM+; recall vs Stage 2 "
        "%.3f, lower bound %.3f at confidence %.2f",
        summary["n_audited"], summary["n_skipped"], summary["audited_medium_plus"],
        summary["recall"], summary["recall_lower_bound"], summary["confidence"],
    )
    if args.output is not None:
        path = Path(f"{args.output}.audit.json")
        try:
            atomic_write(path, json.dumps(summary, indent=2) + "\n")
        except OSError as error:
            raise CommandError(f"cannot write {path}: {error}") from None
    return 1 if args.fail_on_audit and summary["below_target"] else 0


def _load_filter(args):
    calibration = _calibration_articles(args)
    with _bars_hidden(args.no_progress):
        router = load_filter_or_fail(
            args.filter, stage1_only=args.stage1_only, verbose=args.verbose,
            backend=args.backend, calibration=calibration, cache=args.cache, device=args.device,
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


def _open_output(path, append):
    if path is None:
        return None
    try:
        return open(path, "ab" if append else "wb")
    except OSError as error:
        raise CommandError(f"cannot write {path}: {error.strerror or error}") from None


def _is_utf8(stream):
    import codecs

    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name == "utf-8"
    except LookupError:
        return False


def _progress_bar(n_total, n_done, args):
    from tqdm.auto import tqdm

    return tqdm(
        total=n_total,
        initial=n_done,
        unit="line",
        desc="scoring",
        file=sys.stderr,
        disable=True if args.no_progress else None,  # None: only on a terminal
    )


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
    _check_output_path(args.output, args.input)
    source = _open_input(args.input)
    try:
        with _output_lock(args.output):
            lines = _InputLines(source)
            n_done = _resume(args, identity, lines) if args.resume else 0
            n_total = None if source is sys.stdin.buffer else count_lines(args.input)
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
        if audit is not None:
            audit_chunk(audit, rows)
        for row in rows:
            if teacher is not None and row.stage_used == "stage2":
                row.teacher = teacher
        return rows

    counts, started = _Counts(), time.perf_counter()
    for rows in _stream_rows(
        score_chunk, lines, sink, n_done, n_total, args, identity,
        lambda row: table_line(row, dimensions=dimensions), table_header(dimensions),
    ):
        if audit is not None and rows:
            audit.update(*zip(*[(r.stage_used, r.tier, r.audited, r.audit_tier) for r in rows]))
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


def _emit(text, progress):
    """Print a line to stdout without breaking the progress bar on stderr."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    text = text.encode(encoding, "backslashreplace").decode(encoding)
    if progress.disable:
        print(text, file=sys.stdout, flush=True)
    else:
        progress.write(text, file=sys.stdout)


# --- Ray --------------------------------------------------------------------------


def _check_ray_arguments(args, folders):
    """Refuse, before Ray starts, what --ray cannot do; the dimensions of each filter."""
    if args.resume:
        raise CommandError(
            "--resume does not work with --ray: rerun the whole input, or resume without --ray"
        )
    if str(args.input) == "-":
        raise CommandError("--ray reads a file, not stdin: save the input to a file first")
    if not Path(args.input).is_file():
        raise CommandError(f"cannot read {args.input}: no such file")
    if args.backend != "torch":
        raise CommandError(
            "--backend works without --ray; on Ray, pass score_dataset a router loaded "
            "with load_filter(folder, backend=...)"
        )
    _check_output_path(args.output, args.input)
    dimensions = []
    for folder in folders:
        info = filter_info(folder)  # checks config and probe without loading a model
        if info["probe_error"] is not None:
            raise CommandError(f"cannot load filter {folder}: {info['probe_error']}")
        dimensions.append(list(info["dimensions"]))
    return dimensions


@contextlib.contextmanager
def _ray_session(address, verbose):
    """Ray for one command: started (and stopped) here unless already running."""
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise CommandError(
            f"--ray needs Ray Data ({error}): pip install \"hybrid_estimators[ray]\""
        ) from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=verbose,
                logging_level=logging.INFO if verbose else logging.WARNING,
            )
        except (ConnectionError, ValueError, RuntimeError) as error:
            where = address or "a local Ray"
            raise CommandError(f"cannot start or reach {where}: {error}") from None
    context = ray.data.DataContext.get_current()
    data_logger = logging.getLogger("ray.data")
    bars, level = context.enable_progress_bars, data_logger.level
    context.enable_progress_bars = False  # the command shows its own, per line
    if not verbose:
        data_logger.setLevel(logging.WARNING)
    try:
        yield ray
    finally:
        context.enable_progress_bars = bars
        data_logger.setLevel(level)
        if started:
            ray.shutdown()


def _in_line_order(batches):
    """Rows of Arrow `batches`, as dicts, in line order 1, 2, ...: early ones wait."""
    pending, next_line = {}, 1
    for batch in batches:
        for row in batch.to_pylist():
            pending[row["line"]] = row
        while next_line in pending:
            yield pending.pop(next_line)
            next_line += 1
    if pending:
        raise CommandError(f"Ray returned no row for line {next_line} (but for later lines)")


def _ray_failure(error):
    """The first line of what failed inside Ray, without its remote traceback."""
    cause = getattr(error, "cause", None) or error
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"


def _ray_audit(args):
    """The driver's RecallAudit, counting the rows the actors audited (None without --audit).

    Also refuses, before Ray starts, --all-stage2 or --audit with a filter without Stage 2.
    """
    if not args.all_stage2 and args.audit is None:
        return None
    router = load_filter_or_fail(args.filter, verbose=args.verbose)  # loads no weights
    if router.stage2_ is None:
        option = "--all-stage2" if args.all_stage2 else "--audit"
        raise CommandError(f"{option} needs a filter with a Stage 2: {args.filter} has none")
    return _recall_audit(router, args)


def _score_on_ray_command(args):
    from ..distributed import OUTPUT_COLUMNS, score_dataset
    from ..scoring import OPTIONAL_COLUMNS

    [filter_dimensions] = _check_ray_arguments(args, [args.filter])
    dimensions = _table_dimensions(args.columns, filter_dimensions)
    audit = _ray_audit(args)
    counts = _Counts()

    def scored():
        return score_dataset(
            str(args.filter), str(args.input), batch_size=args.batch_size,
            concurrency=args.concurrency or 2, address=args.address,
            stage1_only=args.stage1_only, all_stage2=args.all_stage2,
            audit_rate=args.audit, audit_seed=args.audit_seed,
        )

    def row_of(record):
        columns = (*OUTPUT_COLUMNS, *(name for name in OPTIONAL_COLUMNS if name in record))
        row = ScoredLine(**{name: record[name] for name in columns})
        if audit is not None:
            audit.update([row.stage_used], [row.tier], [row.audited], [row.audit_tier])
        counts.add(row)
        return row

    counts.seconds = _run_on_ray(
        args, _filter_identity(args.filter), scored, row_of,
        lambda row, ms_per_article: table_line(row, ms_per_article, dimensions), table_header(dimensions),
    )
    logger.info("%s; %s", counts, counts.timing())
    return 0 if audit is None else _report_audit(audit, args)


def _score_multi_on_ray_command(args):
    from ..distributed import score_dataset

    _check_ray_arguments(args, args.filter)
    n_lines = 0

    def scored():
        return score_dataset(
            [str(folder) for folder in args.filter], str(args.input), batch_size=args.batch_size,
            concurrency=args.concurrency or 2, address=args.address, stage1_only=args.stage1_only,
        )

    def row_of(record):
        nonlocal n_lines
        n_lines += 1
        return MultiScoredLine.from_record(record)

    seconds = _run_on_ray(
        args, _filters_identity(args.filter), scored, row_of, lambda row, _: _multi_table_line(row)
    )
    logger.info("lines=%d filters=%d on Ray; %.2f s", n_lines, len(args.filter), seconds)
    return 0


def _run_on_ray(args, identity, scored, row_of, format_row, header=None):
    """Write the rows of ``scored()`` (a Ray dataset) in line order, as a run without Ray does.

    ``row_of(record)`` makes a Ray row an output row; ``format_row(row,
    ms_per_article)`` its ``--format table`` line. Returns the seconds the
    scoring took. The sidecar is written once the whole input is scored.
    """
    stdout_format = None if args.output is not None and args.quiet else args.format
    progress = _progress_bar(count_lines(args.input), 0, args)
    with _output_lock(args.output), _ray_session(args.address, args.verbose), progress:
        sink = _open_output(args.output, append=False)
        if sink is not None:  # a sidecar of an earlier run must not vouch for these rows
            _sidecar_path(args.output).unlink(missing_ok=True)
        if stdout_format == "table" and header is not None:
            _emit(header, progress)
        started, n_rows = time.perf_counter(), 0
        try:
            batches = scored().iter_batches(batch_size=None, batch_format="pyarrow")
            for record in _in_line_order(batches):
                row = row_of(record)
                n_rows += 1
                ms_per_article = 1000 * (time.perf_counter() - started) / n_rows
                _write_ray_row(row, sink, stdout_format, format_row(row, ms_per_article), progress, args)
        except CommandError:
            raise
        except Exception as error:  # a failure inside Ray: an actor, a task, the cluster
            raise CommandError(f"scoring on Ray failed: {_ray_failure(error)}") from None
        finally:
            if sink is not None:
                sink.close()
        seconds = time.perf_counter() - started
        if args.output is not None:
            _write_ray_sidecar(args, identity)
    return seconds


def _write_ray_sidecar(args, identity):
    """The sidecar of a complete Ray run: the whole input, read once more."""
    with open(args.input, "rb") as source:
        lines = _InputLines(source)
        for _ in lines:
            pass
        _write_sidecar(args, identity, lines)


def _write_ray_row(row, sink, stdout_format, table_text, progress, args):
    line = row.to_json() + "\n"
    if sink is not None:
        try:
            sink.write(line.encode("utf-8"))
        except OSError as error:
            raise CommandError(f"cannot write {args.output}: {error}") from None
    if stdout_format == "jsonl":
        sys.stdout.write(line if _is_utf8(sys.stdout) else row.to_json(ensure_ascii=True) + "\n")
        sys.stdout.flush()
    elif stdout_format == "table":
        _emit(table_text, progress)
    progress.update(1)


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
        "--backend", choices=STAGE1_BACKENDS, default="torch",
        help="Stage 1 runtime (openvino-int8 is faster only on CPUs with VNNI or AMX, see "
        "python -m benchmarks; it needs --calibration)",
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
    score.set_defaults(handler=_score_command)
    return score
