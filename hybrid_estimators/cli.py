"""The ``hybrid-estimators`` command.

Subcommands:

``score``
    Score a JSONL file of articles with a filter folder: one output line per
    input line, in order, streamed in chunks; bad lines become error rows.
``train-probe``
    Fit Stage 1 (``ArticleText`` + ``E5Embedder`` + ``make_probe``) on a
    labelled folder and save it as a filter folder, with cross-validated
    metrics.
``calibrate``
    Choose a filter's threshold with
    :class:`~hybrid_estimators.calibration.TunedThresholdRouterCV` and write
    it into the filter's ``config.yaml``.
``info``
    Show what a filter folder holds.
``benchmark``
    Run ``python -m benchmarks`` when the benchmarks are available.

Fatal errors (a missing filter, an unreadable input) print one line
``hybrid-estimators: error: ...`` and exit with status 2; everything that
concerns single articles is reported in their output rows instead.

Examples
--------
::

    hybrid-estimators score --filter filters/seece_energy_tech/v1 articles.jsonl
    hybrid-estimators score --filter F articles.jsonl -o scores.jsonl --resume
    hybrid-estimators score --filter F articles.jsonl -o scores.jsonl --ray --concurrency 8
    hybrid-estimators train-probe ../shared/data/seece_energy_tech -o filters/seece_energy_tech/v1
    hybrid-estimators calibrate --filter filters/seece_energy_tech/v1 held_out_folder
    hybrid-estimators info --filter filters/seece_energy_tech/v1
"""

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from .models import CALIBRATED_BACKENDS, STAGE1_BACKENDS

logger = logging.getLogger(__name__)

PROG = "hybrid-estimators"
EXIT_FATAL = 2
#: Decimals of the scores written to JSONL: enough for any use, few enough
#: that re-embedding the same text in another batch writes the same bytes.
DECIMALS = 4
ARTICLE_FIELDS = ("title", "content")


class CommandError(Exception):
    """A fatal error, reported as one line without a traceback."""


# --- score: reading and validating lines -----------------------------------


@dataclass
class ScoredLine:
    """One input line and everything reported about it."""

    line: int
    id: object = None
    article: dict = None  # title, content, language: set only for valid articles
    scores: dict = None
    weighted_average: float = None
    tier: str = None
    stage_used: str = None
    stage1_estimate: float = None
    gatekeeper_applied: bool = None
    blocked_by: str = None
    error: str = None

    def to_json(self):
        record = {
            "line": self.line,
            "id": self.id,
            "scores": self.scores,
            "weighted_average": self.weighted_average,
            "tier": self.tier,
            "stage_used": self.stage_used,
            "stage1_estimate": self.stage1_estimate,
            "gatekeeper_applied": self.gatekeeper_applied,
            "blocked_by": self.blocked_by,
            "error": self.error,
        }
        return json.dumps(record, ensure_ascii=False, allow_nan=False)


def _id_suffix(row_id):
    return "" if row_id is None else f" (id={row_id!r})"


def _refuse_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_line(line_number, raw):
    """Turn one raw input line into a :class:`ScoredLine`, valid or with its error."""
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
    return parse_article(line_number, article)


def parse_article(line_number, article):
    """Validate one decoded article (a JSON object) of line `line_number`."""
    from .text import as_texts

    if not isinstance(article, dict):
        return ScoredLine(
            line_number,
            error=f"line {line_number}: expected a JSON object (an article), got "
            f"{type(article).__name__}",
        )
    row_id = article.get("id")
    fields = {name: article[name] for name in ARTICLE_FIELDS if name in article}
    where = f"line {line_number}{_id_suffix(row_id)}"
    if not fields:
        return ScoredLine(
            line_number, row_id, error=f"{where}: has neither 'title' nor 'content'"
        )
    try:
        as_texts([fields])
    except ValueError as error:
        # as_texts names the row by its position in the list: always "row 0".
        message = str(error).removeprefix("row 0")
        return ScoredLine(line_number, row_id, error=f"{where}{message}")
    fields = {"title": "", "content": "", **fields, "language": article.get("language")}
    return ScoredLine(line_number, row_id, article=fields)


def read_chunks(lines, batch_size, first_line=1):
    """Yield lists of ``(line_number, raw_bytes)``, `batch_size` at a time."""
    numbered = enumerate(lines, start=first_line)
    while chunk := list(islice(numbered, batch_size)):
        yield [(number, raw.rstrip(b"\r\n")) for number, raw in chunk]


def count_lines(path):
    """Lines of a file as :func:`read_chunks` sees them (a last line may lack ``\\n``)."""
    n_lines, last = 0, b"\n"
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            n_lines += block.count(b"\n")
            last = block[-1:]
    return n_lines + (last != b"\n")


# --- score: scoring a chunk -------------------------------------------------


def _rounded(value):
    value = float(value)
    return round(value, DECIMALS) if math.isfinite(value) else None


def _apply_report(row, report, dimension_names):
    row.scores = {name: _rounded(report[name]) for name in dimension_names}
    row.weighted_average = _rounded(report["weighted_average"])
    row.tier = str(report["tier"])
    row.stage_used = str(report["stage_used"])
    row.stage1_estimate = _rounded(report["stage1_estimate"])
    row.gatekeeper_applied = bool(report["gatekeeper_applied"])


def _articles_frame(rows):
    import pandas as pd

    return pd.DataFrame(
        {
            "title": [row.article["title"] for row in rows],
            "content": [row.article["content"] for row in rows],
        }
    )


def _mark_blocked(prefilter, rows):
    try:
        reasons = prefilter.blocked_by([row.article for row in rows])
    except Exception:  # a rule failed on some article: find which, one by one
        reasons = []
        for row in rows:
            try:
                reasons.append(prefilter.blocked_by([row.article])[0])
            except Exception as error:
                row.error = f"line {row.line}{_id_suffix(row.id)}: prefilter failed: {error}"
                reasons.append(None)
    for row, reason in zip(rows, reasons):
        row.blocked_by = reason


def _predict_rows(router, rows):
    dimension_names = list(router.dimension_names_)
    try:
        report = router.predict_report(_articles_frame(rows))
    except Exception as error:
        if len(rows) == 1:
            row = rows[0]
            row.error = (
                f"line {row.line}{_id_suffix(row.id)}: scoring failed: "
                f"{type(error).__name__}: {error}"
            )
            return
        logger.warning("Scoring a chunk failed (%s); scoring its rows one by one", error)
        for row in rows:
            _predict_rows(router, [row])
        return
    for row, values in zip(rows, report.to_dict("records")):
        _apply_report(row, values, dimension_names)


def score_chunk(router, rows):
    """Fill in blocked_by, scores or errors of the parsed lines of one chunk."""
    articles = [row for row in rows if row.article is not None]
    if articles:
        _mark_blocked(router.prefilter_, articles)
    to_score = [row for row in articles if row.blocked_by is None and row.error is None]
    if to_score:
        _predict_rows(router, to_score)
    return rows


# --- score: output ----------------------------------------------------------

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


def _check_filter_folder(folder):
    folder = Path(folder)
    if not folder.is_dir():
        raise CommandError(f"filter folder {folder} does not exist")
    if not (folder / "config.yaml").is_file():
        raise CommandError(f"{folder} is not a filter folder: it has no config.yaml")
    return folder


@contextlib.contextmanager
def _quiet_model_loading(quiet):
    """Hide transformers' weight-loading bars (noise in a command's stderr)."""
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    if quiet and shown:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and shown:
            transformers_logging.enable_progress_bar()


def _load_filter(folder, stage1_only=False, verbose=False, backend="torch", calibration=None):
    from .filters import load_filter

    folder = _check_filter_folder(folder)
    try:
        with _quiet_model_loading(not verbose):
            return load_filter(folder, stage1_only=stage1_only, backend=backend, calibration=calibration)
    except (ValueError, OSError, ImportError) as error:  # FilterError is a ValueError
        raise CommandError(f"cannot load filter {folder}: {error}") from None


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
        router = _load_filter(
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


# --- score --ray ------------------------------------------------------------


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

    from .distributed import OUTPUT_COLUMNS, score_dataset

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


# --- train-probe ------------------------------------------------------------


def _load_labelled(folder):
    from .datasets import load_articles

    folder = Path(folder)
    for name in ("articles.jsonl", "filter.yaml"):
        if not (folder / name).is_file():
            raise CommandError(f"{folder} is not a labelled folder: it has no {name}")
    try:
        return load_articles(folder)
    except (ValueError, KeyError, OSError) as error:
        raise CommandError(f"cannot read {folder}: {error}") from None


def _filter_spec(data_spec, args):
    from .filters import FilterError, FilterSpec

    keys = ("name", "description", "dimensions", "tiers", "prefilter")
    config = {key: data_spec[key] for key in keys if key in data_spec}
    config["version"] = args.version
    config["hybrid_inference"] = {
        "embedding_model": args.embedding_model,
        "embedding_prefix": args.prefix,
        "max_seq_length": args.max_seq_length,
        "threshold": args.threshold,
        "stage2": None,
    }
    try:
        return FilterSpec.from_dict(config, source="filter.yaml")
    except FilterError as error:
        raise CommandError(str(error)) from None


def _gatekeeper_indices(spec):
    names = spec.dimension_names
    return {names.index(name): gate for name, gate in spec.gatekeepers.items()} or None


def cross_validated_metrics(stage1, X, Y, spec, *, threshold, cv, random_state):
    """Out-of-fold quality of a Stage 1 pipeline, as flat ``{name: number}``."""
    import numpy as np
    from sklearn.model_selection import KFold, cross_val_predict

    from .metrics import medium_plus_recall, skip_rate, tier_accuracy, weighted_average_mae
    from .tiers import weighted_average

    folds = KFold(cv, shuffle=True, random_state=random_state)
    Y_true = Y.to_numpy(dtype=float)
    Y_pred = cross_val_predict(stage1, X, Y_true, cv=folds)
    baseline = np.empty_like(Y_true)
    for train, test in folds.split(X):
        baseline[test] = Y_true[train].mean(axis=0)
    weights = np.array([spec.weights[name] for name in spec.dimension_names])
    gatekeepers = _gatekeeper_indices(spec)
    routed = weighted_average(np.clip(Y_pred, 0, 10), weights) >= threshold
    metrics = {
        "cv_folds": cv,
        "n_articles": len(Y_true),
        "cv_mae_weighted_average": weighted_average_mae(Y_true, Y_pred, weights),
        "cv_mae_weighted_average_baseline": weighted_average_mae(Y_true, baseline, weights),
        "cv_tier_accuracy": tier_accuracy(
            Y_true, Y_pred, weights, tiers=spec.tiers, gatekeepers=gatekeepers
        ),
        "cv_medium_plus_recall_at_threshold": medium_plus_recall(
            Y_true, routed, weights, tiers=spec.tiers, gatekeepers=gatekeepers
        ),
        "cv_skip_rate_at_threshold": skip_rate(routed),
    }
    for i, name in enumerate(spec.dimension_names):
        metrics[f"cv_mae_{name}"] = float(np.mean(np.abs(Y_true[:, i] - Y_pred[:, i])))
    return metrics


def _train_probe_command(args):
    from sklearn.base import clone
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import make_pipeline

    from .embedding import E5Embedder
    from .filters import save_filter
    from .probe import make_probe
    from .router import HybridRouterRegressor
    from .text import ArticleText

    X, Y, data_spec = _load_labelled(args.data)
    spec = _filter_spec(data_spec, args)
    Y = Y[spec.dimension_names]
    if len(X) < 2 * args.cv:
        raise CommandError(f"{args.data} has {len(X)} articles: too few for --cv {args.cv}")
    stage1 = make_pipeline(
        ArticleText(),
        E5Embedder(
            args.embedding_model,
            prefix=args.prefix,
            max_seq_length=args.max_seq_length,
            batch_size=args.batch_size,
            show_progress_bar=not args.no_progress,
        ),
        make_probe(tuple(args.hidden_layer_sizes), random_state=args.random_state),
    )
    logger.info("Cross-validating Stage 1 on %d articles (%d folds)", len(X), args.cv)
    with _quiet_model_loading(not args.verbose):
        metrics = cross_validated_metrics(
            stage1, X, Y, spec, threshold=args.threshold, cv=args.cv, random_state=args.random_state
        )
        fitted = FrozenEstimator(clone(stage1).fit(X, Y))
    router = HybridRouterRegressor(
        fitted,
        fitted,  # Stage-1-only filter (stage2: null): the router needs a Stage 2 to fit
        spec.weights,
        threshold=args.threshold,
        gatekeepers=spec.gatekeepers or None,
        tiers=spec.tiers,
    ).fit(X, Y)
    try:
        folder = save_filter(router, args.output, spec, training_data=(X, Y), metrics=metrics)
    except OSError as error:
        raise CommandError(f"cannot write {args.output}: {error}") from None
    print(f"saved filter {spec.name}/{spec.version} to {folder}")
    _print_metrics(metrics)
    return 0


def _print_metrics(metrics, indent=""):
    width = max(map(len, metrics), default=0)
    for name, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{indent}{name:<{width}}  {shown}")


# --- calibrate --------------------------------------------------------------


def _calibration_router(router, spec, mode):
    """The loaded router (``prefit``) or an unfitted one of the same Stage 1 (CV)."""
    if mode == "prefit":
        return router
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline

    from .embedding import E5Embedder
    from .router import HybridRouterRegressor
    from .text import ArticleText

    hybrid = spec.hybrid_inference
    probe = router.stage1.estimator[-1]  # load_filter: FrozenEstimator(Pipeline)
    stage1 = make_pipeline(
        ArticleText(),
        E5Embedder(
            hybrid["embedding_model"],
            prefix=hybrid["embedding_prefix"],
            max_seq_length=hybrid["max_seq_length"],
            show_progress_bar=False,
        ),
        clone(probe),
    )
    return HybridRouterRegressor(
        stage1, stage1, spec.weights, gatekeepers=spec.gatekeepers or None, tiers=spec.tiers
    )


def _write_config(folder, spec):
    import yaml

    path = Path(folder) / "config.yaml"
    text = yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(tmp, path)


def _calibrate_command(args):
    try:
        from .calibration import TunedThresholdRouterCV
    except ImportError as error:
        raise CommandError(f"calibrate needs hybrid_estimators.calibration: {error}") from None
    from sklearn.model_selection import KFold

    from .filters import data_hash

    router = _load_filter(args.filter, stage1_only=True, verbose=args.verbose)
    spec = router.filter_spec_
    X, Y, _ = _load_labelled(args.data)
    missing = [name for name in spec.dimension_names if name not in Y.columns]
    if missing:
        raise CommandError(f"{args.data} has no scores for the filter's dimensions {missing}")
    Y = Y[spec.dimension_names]
    trained_on_it = data_hash(X, Y) == router.metadata_.get("training_data_sha256")
    if args.cv == "auto":
        mode = "cv" if trained_on_it else "prefit"
    else:
        mode = "prefit" if args.cv == "prefit" else "cv"
    if mode == "prefit" and trained_on_it:
        logger.warning(
            "%s is the filter's training data: prefit calibration on it is optimistic", args.data
        )
    if args.cv.isdigit():
        n_splits = int(args.cv)
    else:  # as many folds as train-probe used for the filter's metrics
        n_splits = int(router.metadata_.get("metrics", {}).get("cv_folds", 5))
    cv = (
        "prefit"
        if mode == "prefit"
        else KFold(n_splits, shuffle=True, random_state=args.random_state)
    )
    tuner = TunedThresholdRouterCV(
        _calibration_router(router, spec, mode),
        target_recall=args.target_recall,
        confidence=args.confidence,
        cv=cv,
        refit=False,
        show_progress_bar=not args.no_progress,
    )
    with warnings.catch_warnings(record=True) as caught, _quiet_model_loading(not args.verbose):
        warnings.simplefilter("always", UserWarning)
        tuner.fit(X, Y)
    for warning in caught:
        logger.warning("%s", warning.message)
    spec.hybrid_inference.update(
        threshold=float(tuner.threshold_),
        target_recall=float(args.target_recall),
        confidence=float(args.confidence),
    )
    _write_config(args.filter, spec)
    how = "held-out (prefit)" if mode == "prefit" else f"out-of-fold ({n_splits}-fold CV)"
    print(f"calibrated {spec.name}/{spec.version} on {len(X)} articles, {how}")
    _print_metrics(
        {
            "threshold": tuner.threshold_,
            "target_recall": float(args.target_recall),
            "confidence": float(args.confidence),
            "recall_lower_bound": tuner.recall_lower_bound_,
            "expected_skip_rate": tuner.expected_skip_rate_,
            "n_medium_plus": tuner.n_medium_plus_,
            "target_met": tuner.target_met_,
        },
        indent="  ",
    )
    if spec.hybrid_inference["stage2"] is None:
        logger.info("this filter has no Stage 2 (stage2: null): the threshold routes nothing yet")
    print(f"wrote threshold {tuner.threshold_:.4f} to {Path(args.filter) / 'config.yaml'}")
    return 0


# --- info -------------------------------------------------------------------


def filter_info(folder):
    """What a filter folder holds, as a dict (nothing is embedded or run)."""
    from .filters import METADATA_FILE, FilterError, FilterSpec, load_probe

    folder = _check_filter_folder(folder)
    try:
        spec = FilterSpec.from_yaml(folder / "config.yaml")
    except FilterError as error:
        raise CommandError(str(error)) from None
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        metadata, metadata_error = {}, f"{folder / METADATA_FILE}: {error}"
    else:
        metadata_error = None
    probe_path = folder / spec.hybrid_inference["probe"]
    probe, probe_error = None, metadata_error
    if metadata_error is None:
        try:
            probe = load_probe(probe_path, metadata)
        except FilterError as error:
            probe_error = str(error)
    return {
        "folder": str(folder),
        "name": spec.name,
        "version": spec.version,
        "description": spec.description,
        "dimensions": spec.dimensions,
        "tiers": spec.tiers,
        "prefilter": spec.prefilter,
        "hybrid_inference": spec.hybrid_inference,
        "probe": _probe_summary(probe, probe_path, metadata) if probe is not None else None,
        "probe_error": probe_error,
        "embedding_dim": metadata.get("embedding_dim"),
        "n_training_articles": metadata.get("n_training_articles"),
        "training_data_sha256": metadata.get("training_data_sha256"),
        "versions": metadata.get("versions", {}),
        "metrics": metadata.get("metrics", {}),
    }


def _probe_summary(probe, path, metadata):
    import numpy as np

    head = probe[-1] if hasattr(probe, "steps") else probe
    coef = getattr(head, "coef_", None)  # linear probes: (n_outputs, n_inputs)
    return {
        "file": str(path),
        "model": type(head).__name__,
        "hidden_layer_sizes": list(getattr(head, "hidden_layer_sizes", ())),
        "n_inputs": getattr(probe, "n_features_in_", None),
        "n_outputs": getattr(head, "n_outputs_", None) or (None if coef is None else int(np.atleast_2d(coef).shape[0])),
        "n_iter": getattr(head, "n_iter_", None),
        "alpha": None if getattr(head, "alpha_", None) is None else float(head.alpha_),
        "sha256": metadata.get("probe_sha256"),
    }


def _probe_shape(probe):
    return str(tuple(probe["hidden_layer_sizes"])) if probe["hidden_layer_sizes"] else ""


def _probe_fit(probe):
    if probe.get("alpha") is not None:
        return f"alpha {probe['alpha']:g}"
    return f"{probe['n_iter']} epochs"


def _format_info(info):
    hybrid = info["hybrid_inference"]
    lines = [f"filter      {info['name']}/{info['version']}  ({info['folder']})"]
    if info["description"]:
        lines.append(f"description {info['description']}")
    lines.append("dimensions  weight  gatekeeper")
    width = max(map(len, info["dimensions"]))
    for name, entry in info["dimensions"].items():
        gate = (
            f"below {entry['gatekeeper_threshold']:g} caps at {entry['gatekeeper_max_score']:g}"
            if entry.get("gatekeeper")
            else "-"
        )
        lines.append(f"  {name:<{width}}  {entry['weight']:.3f}  {gate}")
    lines.append("tiers       " + ", ".join(f"{n} >= {b:g}" for n, b in info["tiers"].items()))
    calibrated = (
        f"calibrated: MEDIUM+ recall >= {hybrid['target_recall']:g} at confidence "
        f"{hybrid['confidence']:g}"
        if hybrid["target_recall"] is not None
        else "not calibrated"
    )
    routes = ", no Stage 2: routes nothing" if hybrid["stage2"] is None else ""
    lines.append(f"threshold   {hybrid['threshold']:g}  ({calibrated}{routes})")
    lines.append(
        f"embedder    {hybrid['embedding_model']}  (prefix {hybrid['embedding_prefix']!r}, "
        f"max_seq_length {hybrid['max_seq_length']}, dim {info['embedding_dim']})"
    )
    stage2 = hybrid["stage2"]
    lines.append(
        "stage2      none (Stage 1 only)"
        if stage2 is None
        else "stage2      " + ", ".join(f"{k}={v}" for k, v in stage2.items())
    )
    prefilter = info["prefilter"]
    lines.append(
        "prefilter   "
        + ("none" if not prefilter else "; ".join(f"{k}: {v}" for k, v in prefilter.items()))
    )
    probe = info["probe"]
    if probe is not None:
        lines.append(
            f"probe       {probe['model']}{_probe_shape(probe)}: "
            f"{probe['n_inputs']} inputs -> {probe['n_outputs']} outputs, "
            f"{_probe_fit(probe)}, sha256 {str(probe['sha256'])[:12]}… ok"
        )
    else:
        lines.append(f"probe       INVALID: {info['probe_error']}")
    if info["n_training_articles"] is not None:
        lines.append(
            f"training    {info['n_training_articles']} articles, sha256 "
            f"{str(info['training_data_sha256'])[:12]}…"
        )
    if info["versions"]:
        lines.append("versions    " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    lines.append("metrics" + ("" if info["metrics"] else "     none recorded"))
    if info["metrics"]:
        width = max(map(len, info["metrics"]))
        for name, value in info["metrics"].items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"  {name:<{width}}  {shown}")
    return "\n".join(lines)


def _info_command(args):
    info = filter_info(args.filter)
    if args.format == "json":
        print(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        print(_format_info(info))
    return 0 if info["probe_error"] is None else 1


# --- benchmark --------------------------------------------------------------


def _benchmarks_available():
    spec = importlib.util.find_spec("benchmarks")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    locations.append(str(Path.cwd() / "benchmarks"))
    return any((Path(location) / "__main__.py").is_file() for location in locations)


def _benchmark_command(args):
    if not _benchmarks_available():
        raise CommandError(
            "the benchmarks are not installed: run this from a source checkout that "
            "has benchmarks/__main__.py (it runs `python -m benchmarks`)"
        )
    command = [sys.executable, "-m", "benchmarks", *args.benchmark_args]
    logger.info("running %s", " ".join(command))
    return subprocess.call(command)


# --- argument parsing -------------------------------------------------------


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _folds(text):
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2, got {value}")
    return value


def _share(text):
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {value}")
    return value


def _cv_option(text):
    if text in ("auto", "prefit"):
        return text
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be 'auto', 'prefit' or >= 2, got {value}")
    return str(value)


def _layer_sizes(text):
    return [_positive_int(size) for size in text.split(",")]


def build_parser():
    """The argument parser of ``hybrid-estimators``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="also log the library's progress"
    )
    common.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")

    parser = argparse.ArgumentParser(
        prog=PROG, description="Two-stage scoring of news articles with filter folders."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    score = commands.add_parser(
        "score", parents=[common], help="score a JSONL file of articles",
        description="Score articles (one JSON object a line with id, title, content, "
        "language) with a filter: one output row per input line, in order.",
    )
    score.add_argument(
        "--filter", required=True, type=Path, help="filter folder (config.yaml, probe/)"
    )
    score.add_argument("input", help="JSONL file of articles, or - for stdin")
    score.add_argument("-o", "--output", type=Path, help="write JSONL rows to this file")
    score.add_argument("--stage1-only", action="store_true", help="never run Stage 2 (nor load it)")
    score.add_argument(
        "--batch-size", type=_positive_int, default=64, help="lines per chunk (default 64)"
    )
    score.add_argument(
        "--backend", choices=STAGE1_BACKENDS, default="torch",
        help="Stage 1 runtime (default torch; openvino-int8 is the fastest on a CPU, "
        "see python -m benchmarks; it needs --calibration)",
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
        "--concurrency", type=_positive_int, help="with --ray: Ray actors, one CPU each (default 2)"
    )
    score.add_argument(
        "--format", choices=("table", "jsonl"), default="table",
        help="what to print on stdout (default: a table)",
    )
    score.add_argument(
        "-q", "--quiet", action="store_true", help="with -o: print nothing on stdout"
    )
    score.set_defaults(handler=_score_command)

    train = commands.add_parser(
        "train-probe", parents=[common], help="fit Stage 1 on a labelled folder, save a filter",
        description="Fit ArticleText + E5Embedder + make_probe on a labelled folder "
        "(articles.jsonl + filter.yaml) and save a Stage-1-only filter folder.",
    )
    train.add_argument("data", type=Path, help="labelled folder (articles.jsonl + filter.yaml)")
    train.add_argument("-o", "--output", required=True, type=Path, help="filter folder to write")
    train.add_argument("--version", default="v1", help="filter version (default v1)")
    train.add_argument("--embedding-model", default="intfloat/multilingual-e5-small")
    train.add_argument("--prefix", default="passage: ", help="embedding prefix")
    train.add_argument("--max-seq-length", type=_positive_int, default=512)
    train.add_argument(
        "--hidden-layer-sizes", type=_layer_sizes, default=[256, 128], help="e.g. 256,128"
    )
    train.add_argument("--threshold", type=float, default=4.5, help="Stage 2 threshold")
    train.add_argument("--cv", type=_folds, default=5, help="folds for the metrics (>= 2)")
    train.add_argument("--batch-size", type=_positive_int, default=32, help="embedding batch size")
    train.add_argument("--random-state", type=int, default=0)
    train.set_defaults(handler=_train_probe_command)

    calibrate = commands.add_parser(
        "calibrate", parents=[common], help="choose a filter's threshold with a recall guarantee",
        description="Choose the threshold with TunedThresholdRouterCV and write threshold, "
        "target_recall and confidence into the filter's config.yaml.",
    )
    calibrate.add_argument("--filter", required=True, type=Path, help="filter folder to calibrate")
    calibrate.add_argument("data", type=Path, help="labelled folder (articles.jsonl + filter.yaml)")
    calibrate.add_argument("--target-recall", type=_share, default=0.95)
    calibrate.add_argument("--confidence", type=_share, default=0.9)
    calibrate.add_argument(
        "--cv", type=_cv_option, default="auto",
        help="'prefit' (data held out from training), a number of folds (refit the probe), "
        "or 'auto' (default): prefit, unless data is the filter's training data: then "
        "as many folds as train-probe used",
    )
    calibrate.add_argument("--random-state", type=int, default=0)
    calibrate.set_defaults(handler=_calibrate_command)

    info = commands.add_parser(
        "info", parents=[common], help="show what a filter folder holds",
    )
    info.add_argument("--filter", required=True, type=Path, help="filter folder")
    info.add_argument("--format", choices=("text", "json"), default="text")
    info.set_defaults(handler=_info_command)

    benchmark = commands.add_parser(
        "benchmark", parents=[common], help="run the speed benchmarks (python -m benchmarks)",
        usage=f"{PROG} benchmark [-v] [--no-progress] [BENCHMARK ARGUMENTS ...]",
    )
    # Its other arguments go to `python -m benchmarks` (see main).
    benchmark.set_defaults(handler=_benchmark_command, benchmark_args=[])
    return parser


class _CommandLogFilter(logging.Filter):
    """The CLI's own messages and warnings always; the library's only with -v."""

    def __init__(self, verbose):
        super().__init__()
        self.verbose = verbose

    def filter(self, record):
        return self.verbose or record.name == __name__ or record.levelno >= logging.WARNING


def _log_to_stderr(verbose):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    handler.addFilter(_CommandLogFilter(verbose))
    package = logging.getLogger(__name__.rpartition(".")[0])
    previous_level = package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    return package, handler, previous_level


def main(argv=None):
    """Run ``hybrid-estimators`` with `argv` (``sys.argv[1:]`` when None).

    Returns
    -------
    status : int
        0 on success, 2 on a fatal error (also for bad arguments), 1 when
        ``info`` finds an invalid probe, or the benchmarks' own status.
    """
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown and args.command != "benchmark":
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exit:  # --help, or bad arguments (argparse printed why)
        return exit.code
    if args.command == "benchmark":
        args.benchmark_args = unknown[1:] if unknown[:1] == ["--"] else unknown
    package, handler, previous_level = _log_to_stderr(args.verbose)
    try:
        return args.handler(args)
    except CommandError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_FATAL
    except BrokenPipeError:  # stdout closed early, as by `| head`: not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that exiting does not fail to flush
        return 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (rerun score with --resume to continue)", file=sys.stderr)
        return 130
    finally:
        package.removeHandler(handler)
        package.setLevel(previous_level)


if __name__ == "__main__":
    sys.exit(main())
