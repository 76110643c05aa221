"""The ``hybrid-estimators`` command (also ``python -m hybrid_estimators``).

One module per subcommand:

``score`` (:mod:`.score`)
    Score a JSONL file of articles with a filter folder: one output line per
    input line, in order, streamed in chunks; bad lines become error rows.
``train-probe`` (:mod:`.train_probe`)
    Fit Stage 1 on a labelled folder and save it as a filter folder, with
    cross-validated metrics.
``calibrate`` (:mod:`.calibrate`)
    Choose a filter's threshold with
    :class:`~hybrid_estimators.calibration.TunedThresholdRouterCV` and write
    it into the filter's ``config.yaml``.
``evaluate`` (:mod:`.evaluate`)
    Stage 1 vs Stage 2 vs the cascade of a filter on a labelled folder.
``info`` (:mod:`.info`)
    Show what a filter folder holds.
``normalise`` (:mod:`.normalise`)
    Fit a filter's percentile scale (0-10) on reference traffic.
``benchmark`` (:mod:`.benchmark`)
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
    hybrid-estimators evaluate --filter filters/seece_energy_tech/v1 held_out_folder
    hybrid-estimators info --filter filters/seece_energy_tech/v1
    hybrid-estimators normalise --filter filters/seece_energy_tech/v1 traffic.jsonl -o normalisation.json
"""

import argparse
import logging
import os
import sys

from . import benchmark, calibrate, evaluate, info, normalise, score, train_probe
from ._common import EXIT_FATAL, PROG, CommandError, common_options
from .info import filter_info

__all__ = ["main", "build_parser", "filter_info", "CommandError"]

COMMANDS = (score, train_probe, calibrate, evaluate, info, normalise, benchmark)


def build_parser():
    """The argument parser of ``hybrid-estimators``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Two-stage scoring of news articles with filter folders."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()
    for command in COMMANDS:
        command.add_parser(commands, parents=[common])
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
