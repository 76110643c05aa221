"""What every command of ``hybrid-estimators`` shares: errors, loading, options."""

import argparse
import contextlib
import logging
import warnings
from pathlib import Path

logger = logging.getLogger("hybrid_estimators.cli")

PROG = "hybrid-estimators"
EXIT_FATAL = 2
#: ``--strict``: the exit status when a quality verdict failed (the work is written all the same).
EXIT_STRICT = 2


class CommandError(Exception):
    """A fatal error, reported as one line without a traceback."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, but not the None or False of an option that is off."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def add_cache_option(parser):
    """``--cache DIR``: embeddings kept on disk, shared by processes and commands."""
    parser.add_argument(
        "--cache", type=Path, metavar="DIR",
        help="keep embeddings in this folder (keyed by model, settings and text): "
        "a later command or run embeds no article twice; default: this process only",
    )


def add_device_option(parser):
    """``--device``: where both stages run."""
    parser.add_argument(
        "--device", metavar="DEVICE",
        help="torch device of both stages, e.g. cpu, cuda, cuda:1 (default: CUDA when "
        "available, else the CPU); an unavailable one is refused",
    )


def common_options():
    """The options every command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="also log the library's progress"
    )
    common.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return common


def text_columns_option(text):
    """``--text-columns body=content,headline=title``: the articles' fields -> the filter's.

    Examples
    --------
    >>> text_columns_option("body=content,headline=title")
    {'body': 'content', 'headline': 'title'}
    """
    from ..text import ARTICLE_FIELDS

    mapping = {}
    for pair in text.split(","):
        source, equals, target = (part.strip() for part in pair.partition("="))
        if not equals or not source or target not in ARTICLE_FIELDS:
            raise argparse.ArgumentTypeError(
                f"expected FIELD=TARGET pairs with TARGET one of {', '.join(ARTICLE_FIELDS)} "
                f"(e.g. body=content), got {pair!r}"
            )
        mapping[source] = target
    return mapping


def add_text_columns_option(parser):
    """``--text-columns``: which JSON fields hold the filter's title and content."""
    parser.add_argument(
        "--text-columns", type=text_columns_option, metavar="FIELD=TARGET,...",
        help="map the articles' fields onto the filter's text fields (title, content), e.g. "
        "body=content,headline=title; without it, an article that lacks one of them but has "
        "text in another field is an error row naming both",
    )


def add_strict_option(parser, written):
    """``--strict``: a failed quality verdict makes the command exit with status 2."""
    parser.add_argument(
        "--strict", action="store_true",
        help=f"exit with status {EXIT_STRICT} when a quality verdict of the filter fails "
        f"(near-constant probe, no better than the mean or the majority tier, ...); {written} "
        "is written all the same",
    )


def failed_verdicts(folder, stage1_only=False, report=False):
    """The failed :func:`~hybrid_estimators.filters.quality_verdicts` of a filter folder.

    The same verdicts :func:`~hybrid_estimators.filters.load_filter` warns
    about: without Stage 2 (`stage1_only`, or none in the filter) its
    recorded evaluation is not judged. With `report`, each is also logged
    as one stderr line (:func:`report_verdicts`). An unreadable folder
    gives none (loading the filter reports it).
    """
    from ..filters import FilterError, FilterSpec, quality_verdicts, read_metadata

    try:
        metadata = read_metadata(folder)
        spec = FilterSpec.from_yaml(Path(folder) / "config.yaml")
    except (FilterError, OSError):
        return []
    if stage1_only or spec.hybrid_inference.get("stage2") is None:
        metadata = {**metadata, "evaluation": None}
    failed = [verdict for verdict in quality_verdicts(metadata) if not verdict.passed]
    if report:
        report_verdicts(spec.qualified_name, failed)
    return failed


def report_verdicts(name, verdicts):
    """Log each failed verdict as one stderr line, in the words ``load_filter`` warns with."""
    for verdict in verdicts:
        if not verdict.passed:
            logger.warning("filter %s: %s", name, verdict.message)


def strict_status(args, failed, written):
    """0, or :data:`EXIT_STRICT` with a line saying why when ``--strict`` and a verdict failed."""
    if not (getattr(args, "strict", False) and failed):
        return 0
    logger.error(
        "--strict: %d quality verdict(s) failed (above); %s was written all the same, exiting with "
        "status %d", len(failed), written, EXIT_STRICT,
    )
    return EXIT_STRICT


def check_filter_folder(folder):
    folder = Path(folder)
    if not folder.is_dir():
        raise CommandError(f"filter folder {folder} does not exist")
    if not (folder / "config.yaml").is_file():
        raise CommandError(f"{folder} is not a filter folder: it has no config.yaml")
    return folder


@contextlib.contextmanager
def quiet_model_loading(quiet):
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


def load_filter_or_fail(
    folder, stage1_only=False, verbose=False, backend="auto", dtype="auto", calibration=None, cache=None,
    device=None, report_quality=True, text_columns=None,
):
    """:func:`~hybrid_estimators.filters.load_filter`, its errors as one line.

    Its :class:`~hybrid_estimators.exceptions.FilterQualityWarning` s
    (the failed quality verdicts) become one stderr line each, or none
    without `report_quality` (a command that reports them at its end);
    other warnings pass through unchanged.
    """
    from ..exceptions import FilterQualityWarning
    from ..filters import load_filter

    folder = check_filter_folder(folder)
    try:
        with quiet_model_loading(not verbose), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FilterQualityWarning)
            router = load_filter(
                folder, stage1_only=stage1_only, backend=backend, dtype=dtype, calibration=calibration,
                cache=True if cache is None else str(cache), device=device,
                text_columns=text_columns,
            )
    except (ValueError, OSError, ImportError) as error:  # FilterError is a ValueError
        raise CommandError(f"cannot load filter {folder}: {error}") from None
    finally:
        _relay(caught, report_quality)
    return router


def _relay(caught, report_quality):
    from ..exceptions import FilterQualityWarning

    for warning in caught:
        if issubclass(warning.category, FilterQualityWarning):
            if report_quality:
                logger.warning("%s", warning.message)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def load_labelled(folder):
    from ..datasets import load_articles

    folder = Path(folder)
    for name in ("articles.jsonl", "filter.yaml"):
        if not (folder / name).is_file():
            raise CommandError(f"{folder} is not a labelled folder: it has no {name}")
    try:
        return load_articles(folder)
    except (ValueError, KeyError, OSError) as error:
        raise CommandError(f"cannot read {folder}: {error}") from None



def print_metrics(metrics, indent=""):
    """Print ``{name: number}`` as aligned lines on stdout (a command's output)."""
    width = max(map(len, metrics), default=0)
    for name, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{indent}{name:<{width}}  {shown}")


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def nonnegative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def folds(text):
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2, got {value}")
    return value


def share(text):
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {value}")
    return value


def audit_rate(text):
    """A share in (0, 1]: of the skipped articles, how many ``--audit`` checks."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {value}")
    return value


def cv_option(text):
    if text in ("auto", "prefit"):
        return text
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be 'auto', 'prefit' or >= 2, got {value}")
    return str(value)


def layer_sizes(text):
    return [positive_int(size) for size in text.split(",")]


def read_article_lines(path):
    """The valid articles of a JSONL file, their line numbers and the number of lines.

    Invalid lines are logged and left out.
    """
    import pandas as pd

    from ..scoring import parse_line, read_chunks

    try:
        with open(path, "rb") as file:
            rows = [parse_line(number, raw) for chunk in read_chunks(file, 256) for number, raw in chunk]
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None
    valid = [row for row in rows if row.error is None]
    for row in rows:
        if row.error is not None:
            logger.warning("%s: %s (left out)", path, row.error)
    if not valid:
        raise CommandError(f"{path} has no valid article")
    articles = pd.DataFrame([{**row.article, "id": row.id} for row in valid], dtype=object)
    return articles, [row.line for row in valid], len(rows)


def read_teacher_file(path, filter_, data, lines, n_lines, *, allow_missing=False):
    """Stage 2's scores (``score --all-stage2`` of `data`) of the given lines of `data`.

    Refuses a file of another filter or Stage 2, or of another input; a
    valid article without scores (blocked by the prefilter) is refused too,
    unless `allow_missing` (its row is then NaN).
    """
    from ..teacher import TeacherScoresError, read_teacher_scores

    try:
        scores = read_teacher_scores(path, filter_, unlabelled=data)
    except (TeacherScoresError, OSError) as error:
        raise CommandError(str(error)) from None
    if len(scores) != n_lines:
        raise CommandError(
            f"{path} has {len(scores)} rows but {data} has {n_lines} lines: "
            "it misses articles or scores another input"
        )
    scores = scores.iloc[[line - 1 for line in lines]].reset_index(drop=True)
    missing = scores.isna().any(axis=1).to_numpy()
    if missing.any() and not allow_missing:
        raise CommandError(f"{path}: line {lines[int(missing.argmax())]} has no Stage 2 scores for a valid article")
    return scores
