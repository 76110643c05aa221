"""``hybrid-estimators score``: one output row per input line, in order."""

import contextlib
import json
import logging
import os
import sys
import time
from itertools import islice
from pathlib import Path

from ..models import CALIBRATED_BACKENDS, STAGE1_BACKENDS
from ..scoring import ScoredLine, count_lines, parse_line, read_chunks, score_chunk
from ._common import CommandError, HelpFormatter, load_filter_or_fail, positive_int
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
MAX_NOTE = 70


def _cell(value, width, align):
    text = "-" if value is None else " ".join(str(value).split())  # one table line per row
    if width and len(text) > width:
        text = text[: width - 1] + "…"
    return f"{text:{align}{width}}" if width else text


def table_header():
    return "  ".join(_cell(name, width, align) for name, width, align in TABLE_COLUMNS)


def table_line(row, ms_per_article):
    note = row.error or (f"blocked: {row.blocked_by}" if row.blocked_by else "")
    if len(note) > MAX_NOTE:
        note = note[: MAX_NOTE - 1] + "…"
    stage = None if row.stage_used is None else row.stage_used.replace("stage", "")
    average = None if row.weighted_average is None else f"{row.weighted_average:.2f}"
    values = (row.line, row.id, row.tier, stage, average, f"{ms_per_article:.1f}", note)
    return "  ".join(
        _cell(value, width, align)
        for value, (_, width, align) in zip(values, TABLE_COLUMNS)
    ).rstrip()


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
    size = path.stat().st_size
    if complete < size:
        logger.info("%s: dropping a partial last line of %d bytes", path, size - complete)
        os.truncate(path, complete)
    return n_done


class _Counts:
    def __init__(self):
        self.lines = self.scored = self.stage2 = self.blocked = self.errors = 0

    def add(self, row):
        self.lines += 1
        self.errors += row.error is not None
        self.blocked += row.blocked_by is not None and row.error is None
        self.scored += row.weighted_average is not None
        self.stage2 += row.stage_used == "stage2"

    def __str__(self):
        return (
            f"lines={self.lines} scored={self.scored} stage2={self.stage2} "
            f"blocked={self.blocked} errors={self.errors}"
        )


def _open_input(path):
    if str(path) == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None


def _score_command(args):
    from tqdm.auto import tqdm

    if args.ray:
        return _score_on_ray_command(args)
    if args.address is not None or args.concurrency is not None:
        raise CommandError("--address and --concurrency need --ray")
    if args.resume and args.output is None:
        raise CommandError("--resume needs -o/--output (the file to continue)")
    if args.output is not None and str(args.input) != "-":
        if Path(args.output).resolve() == Path(args.input).resolve():
            raise CommandError("the output file must not be the input file")
    source = _open_input(args.input)
    try:
        n_total = None if source is sys.stdin.buffer else count_lines(args.input)
        router = load_filter_or_fail(
            args.filter, stage1_only=args.stage1_only, verbose=args.verbose,
            backend=args.backend, calibration=_calibration_articles(args),
        )
        if args.quiet or args.no_progress:
            _hide_stage2_progress(router)
        n_done = prepare_resume(args.output) if args.resume else 0
        if n_total is not None and n_done > n_total:
            raise CommandError(
                f"{args.output} has {n_done} lines but {args.input} only {n_total}: "
                "not an output of this input"
            )
        sink = _open_output(args.output, append=args.resume)
        try:
            counts = _score_stream(router, source, sink, n_done, n_total, args, tqdm)
        finally:
            if sink is not None:
                sink.close()
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    resumed = f" (resumed after line {n_done})" if n_done else ""
    logger.info("%s%s", counts, resumed)
    return 0


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


def _score_stream(router, source, sink, n_done, n_total, args, tqdm):
    # Chunks always start at multiples of batch_size, and a resumed run
    # re-scores the whole chunk it stopped in: every article is then embedded
    # in the same batch as in an uninterrupted run, so the bytes are the same.
    first_chunk_start = n_done - n_done % args.batch_size
    skipped = sum(1 for _ in islice(source, first_chunk_start))
    last_line = skipped
    stdout_format = None if args.output is not None and args.quiet else args.format
    table, jsonl_to_stdout = stdout_format == "table", stdout_format == "jsonl"
    counts = _Counts()
    progress = tqdm(
        total=n_total,
        initial=n_done,
        unit="line",
        desc="scoring",
        file=sys.stderr,
        disable=True if args.quiet or args.no_progress else None,  # None: only on a terminal
    )
    if table:
        _emit(table_header(), progress)
    with progress:
        for chunk in read_chunks(source, args.batch_size, first_line=skipped + 1):
            started = time.perf_counter()
            rows = score_chunk(router, [parse_line(number, raw) for number, raw in chunk])
            ms_per_article = 1000 * (time.perf_counter() - started) / len(rows)
            last_line = rows[-1].line
            rows = [row for row in rows if row.line > n_done]
            lines = "".join(row.to_json() + "\n" for row in rows)
            if sink is not None:
                try:
                    sink.write(lines.encode("utf-8"))
                    sink.flush()
                except OSError as error:
                    raise CommandError(f"cannot write {args.output}: {error}") from None
            if jsonl_to_stdout:
                sys.stdout.write(lines)
                sys.stdout.flush()
            for row in rows:
                counts.add(row)
                if table:
                    _emit(table_line(row, ms_per_article), progress)
            progress.update(len(rows))
    if last_line < n_done:
        raise CommandError(
            f"{args.output} has {n_done} lines but the input only {last_line}: "
            "not an output of this input"
        )
    return counts


def _emit(text, progress):
    """Print a line to stdout without breaking the progress bar on stderr."""
    if progress.disable:
        print(text, file=sys.stdout, flush=True)
    else:
        progress.write(text, file=sys.stdout)


def _check_ray_arguments(args):
    if args.resume:
        raise CommandError(
            "--resume does not work with --ray: rerun the whole input, or resume without --ray"
        )
    if str(args.input) == "-":
        raise CommandError("--ray reads a file, not stdin: save the input to a file first")
    if not Path(args.input).is_file():
        raise CommandError(f"cannot read {args.input}: no such file")
    if args.output is not None and Path(args.output).resolve() == Path(args.input).resolve():
        raise CommandError("the output file must not be the input file")
    info = filter_info(args.filter)  # checks config and probe without loading a model
    if info["probe_error"] is not None:
        raise CommandError(f"cannot load filter {args.filter}: {info['probe_error']}")


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


def _score_on_ray_command(args):
    from tqdm.auto import tqdm

    from ..distributed import OUTPUT_COLUMNS, score_dataset

    _check_ray_arguments(args)
    if args.backend != "torch":
        raise CommandError(
            "--backend works without --ray; on Ray, pass score_dataset a router loaded "
            "with load_filter(folder, backend=...)"
        )
    n_total = count_lines(args.input)
    stdout_format = None if args.output is not None and args.quiet else args.format
    counts = _Counts()
    progress = tqdm(
        total=n_total, unit="line", desc="scoring", file=sys.stderr,
        disable=True if args.quiet or args.no_progress else None,
    )
    with _ray_session(args.address, args.verbose), progress:
        sink = _open_output(args.output, append=False)
        if stdout_format == "table":
            _emit(table_header(), progress)
        started = time.perf_counter()
        try:
            scored = score_dataset(
                str(args.filter), str(args.input), batch_size=args.batch_size,
                concurrency=args.concurrency or 2, address=args.address,
                stage1_only=args.stage1_only,
            )
            batches = scored.iter_batches(batch_size=None, batch_format="pyarrow")
            for record in _in_line_order(batches):
                row = ScoredLine(**{name: record[name] for name in OUTPUT_COLUMNS})
                counts.add(row)
                ms_per_article = 1000 * (time.perf_counter() - started) / counts.lines
                _write_ray_row(row, sink, stdout_format, ms_per_article, progress, args)
        except CommandError:
            raise
        except Exception as error:  # a failure inside Ray: an actor, a task, the cluster
            raise CommandError(f"scoring on Ray failed: {_ray_failure(error)}") from None
        finally:
            if sink is not None:
                sink.close()
    logger.info("%s", counts)
    return 0


def _write_ray_row(row, sink, stdout_format, ms_per_article, progress, args):
    line = row.to_json() + "\n"
    if sink is not None:
        try:
            sink.write(line.encode("utf-8"))
        except OSError as error:
            raise CommandError(f"cannot write {args.output}: {error}") from None
    if stdout_format == "jsonl":
        sys.stdout.write(line)
        sys.stdout.flush()
    elif stdout_format == "table":
        _emit(table_line(row, ms_per_article), progress)
    progress.update(1)


def add_parser(subparsers, parents=()):
    """Register ``score`` on `subparsers`."""
    score = subparsers.add_parser(
        "score", parents=parents, help="score a JSONL file of articles",
        formatter_class=HelpFormatter,
        description="Score articles (one JSON object a line with id, title, content, "
        "language) with a filter: one output row per input line, in order.",
    )
    score.add_argument(
        "--filter", required=True, type=Path, help="filter folder (config.yaml, probe/)"
    )
    score.add_argument("input", help="JSONL file of articles, or - for stdin")
    score.add_argument("-o", "--output", type=Path, help="write JSONL rows to this file")
    score.add_argument("--stage1-only", action="store_true", help="never run Stage 2 (nor load it)")
    score.add_argument("--batch-size", type=positive_int, default=64, help="lines per chunk")
    score.add_argument(
        "--backend", choices=STAGE1_BACKENDS, default="torch",
        help="Stage 1 runtime (openvino-int8 is the fastest on a CPU, see python -m "
        "benchmarks; it needs --calibration)",
    )
    score.add_argument(
        "--calibration", type=Path,
        help="JSONL of articles like the input (about a hundred) that --backend openvino-int8 "
        "is quantised on",
    )
    score.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted run into -o (same --batch-size: same bytes)",
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
        "-q", "--quiet", action="store_true", help="with -o: print nothing on stdout"
    )
    score.set_defaults(handler=_score_command)
    return score
