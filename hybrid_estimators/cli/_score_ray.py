"""``hybrid-estimators score --ray``: the checks, the Ray session and the rows in line order."""

import contextlib
import logging
import os
import stat
import sys
import time

from ..scoring import count_lines
from ._common import CommandError
from ._score_resume import (
    _check_output_path,
    _InputLines,
    _open_output,
    _output_is_regular,
    _output_lock,
    _sidecar_path,
    _write_sidecar,
)
from ._score_table import _emit, _is_utf8, _progress_bar
from .info import filter_info

logger = logging.getLogger("hybrid_estimators.cli")

def _check_ray_arguments(args, folders):
    """Refuse, before Ray starts, what --ray cannot do; the dimensions of each filter."""
    if args.resume:
        raise CommandError(
            "--resume does not work with --ray: rerun the whole input, or resume without --ray"
        )
    if str(args.input) == "-":
        raise CommandError("--ray reads a file, not stdin: save the input to a file first")
    try:
        input_stat = os.stat(args.input)
    except OSError as error:
        raise CommandError(f"cannot read {args.input}: {error.strerror or error}") from None
    if not stat.S_ISREG(input_stat.st_mode):
        raise CommandError(f"--ray reads a regular file, and {args.input} is not one: save it to a file first")
    if args.backend != "auto" or args.dtype != "auto":
        # each actor loads the folder itself, with load_filter's "auto" on its own machine
        raise CommandError(
            "--backend and --dtype work without --ray; on Ray, pass score_dataset a filter loaded "
            "with load_filter(folder, backend=..., dtype=...)"
        )
    _check_output_path(args.output, args.input, input_stat)
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



def _run_on_ray(args, identity, scored, row_of, format_row, header=None):
    """Write the rows of ``scored()`` (a Ray dataset) in line order, as a run without Ray does.

    ``row_of(record)`` makes a Ray row an output row; ``format_row(row)``
    its ``--format table`` line (``ms/art``: the row's own share of its
    batch's time, measured by the actor). Returns the seconds the
    scoring took. The sidecar is written once the whole input is scored.
    """
    stdout_format = None if args.output is not None and args.quiet else args.format
    progress = _progress_bar(count_lines(args.input), 0, args)
    with _output_lock(args.output), _ray_session(args.address, args.verbose), progress:
        sink = _open_output(args.output, append=False)
        if sink is not None and _output_is_regular(args.output):  # an earlier run's sidecar must not vouch
            _sidecar_path(args.output).unlink(missing_ok=True)
        if stdout_format == "table" and header is not None:
            _emit(header, progress)
        started = time.perf_counter()
        try:
            batches = scored().iter_batches(batch_size=None, batch_format="pyarrow")
            for record in _in_line_order(batches):
                row = row_of(record)
                _write_ray_row(row, sink, stdout_format, format_row(row), progress, args)
        except CommandError:
            raise
        except Exception as error:  # a failure inside Ray: an actor, a task, the cluster
            raise CommandError(f"scoring on Ray failed: {_ray_failure(error)}") from None
        finally:
            if sink is not None:
                sink.close()
        seconds = time.perf_counter() - started
        if args.output is not None and _output_is_regular(args.output):
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

