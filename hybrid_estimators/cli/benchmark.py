"""``hybrid-estimators benchmark``: run ``python -m benchmarks``."""

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

from ._common import CommandError, PROG

logger = logging.getLogger("hybrid_estimators.cli")


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


def add_parser(subparsers, parents=()):
    """Register ``benchmark`` on `subparsers`; its other arguments go to the benchmarks."""
    benchmark = subparsers.add_parser(
        "benchmark", parents=parents, help="run the speed benchmarks (python -m benchmarks)",
        usage=f"{PROG} benchmark [-v] [--no-progress] [BENCHMARK ARGUMENTS ...]",
        description="Run `python -m benchmarks` with the arguments that follow (see "
        "`python -m benchmarks --help`); needs a source checkout, which has benchmarks/.",
    )
    benchmark.set_defaults(handler=_benchmark_command, benchmark_args=[])
    return benchmark
