"""``hybrid-estimators normalise``: fit a filter's percentile scale on reference traffic."""

import json
import logging
from pathlib import Path

import numpy as np

from ._common import (
    CommandError,
    HelpFormatter,
    add_cache_option,
    add_device_option,
    load_filter_or_fail,
    folds,
    quiet_model_loading,
    read_article_lines,
)

logger = logging.getLogger("hybrid_estimators.cli")

MEANING = (
    "normalised = 10 x the share of this traffic's weighted averages at or below the score, "
    "linearly interpolated between the breakpoints (numpy.interp(weighted_average, x, y)); "
    "it ranks an article against this reference traffic, so it changes with the traffic"
)


def normalisation_table(filter_, articles, *, stage, max_breakpoints, traffic):
    """The normalisation table of `filter_` fitted on `articles` (a dict, JSON-ready).

    Blocked articles are left out of the reference sample and counted.
    """
    from .._io import json_safe
    from ..percentile_normalizer import PercentileNormalizer

    report = filter_.predict_report(articles)
    scored = report["blocked_by"].isna().to_numpy() & report["weighted_average"].notna().to_numpy()
    if not scored.any():
        raise CommandError(f"{traffic['file']}: the filter blocked every article; nothing to rank against")
    averages = report.loc[scored, ["weighted_average"]].reset_index(drop=True)
    normalizer = PercentileNormalizer(max_breakpoints=max_breakpoints).fit(averages)
    return json_safe({
        "filter": filter_.spec.qualified_name,
        "scores": stage,
        "meaning": MEANING,
        "traffic": {**traffic, "n_articles": len(report), "n_blocked": int((~scored).sum()),
                    "n_scored": int(scored.sum())},
        "normaliser": normalizer.to_table(),
    }), averages["weighted_average"].to_numpy()


def _normalise_command(args):
    from .._io import atomic_write
    from ..models import file_sha256

    filter_ = load_filter_or_fail(
        args.filter, stage1_only=not args.cascade, verbose=args.verbose, cache=args.cache,
        device=args.device,
    )
    articles, _, n_lines = read_article_lines(args.traffic)
    traffic = {"file": args.traffic.name, "sha256": file_sha256(args.traffic), "n_lines": n_lines}
    stage = "cascade" if args.cascade else "stage1"
    with quiet_model_loading(not args.verbose):
        table, averages = normalisation_table(
            filter_, articles, stage=stage, max_breakpoints=args.max_breakpoints, traffic=traffic
        )
    text = json.dumps(table, indent=1, allow_nan=False, ensure_ascii=False) + "\n"
    try:
        atomic_write(args.output, text)
    except OSError as error:
        raise CommandError(f"cannot write {args.output}: {error.strerror or error}") from None
    p10, p50, p90 = np.percentile(averages, [10, 50, 90])
    print(
        f"normalised {table['filter']} ({stage}) on {len(averages)} articles of {args.traffic} "
        f"({table['traffic']['n_blocked']} blocked); weighted average 10/50/90th percentiles "
        f"{p10:.2f} / {p50:.2f} / {p90:.2f}"
    )
    print(f"wrote {args.output}")
    return 0


def add_parser(subparsers, parents=()):
    """Register ``normalise`` on `subparsers`."""
    normalise = subparsers.add_parser(
        "normalise", parents=parents, formatter_class=HelpFormatter,
        help="fit a filter's percentile scale (0-10) on reference traffic",
        description="Score a JSONL file of reference traffic with the filter and write the map "
        "from its weighted average to a common 0-10 scale: 10 x the traffic's empirical CDF, "
        "as a breakpoint table with the traffic's size and sha256. Blocked articles are left "
        "out of the reference.",
    )
    normalise.add_argument("--filter", required=True, type=Path, help="filter folder")
    normalise.add_argument("traffic", type=Path, help="JSONL file of articles (no scores needed)")
    normalise.add_argument("-o", "--output", required=True, type=Path, help="table to write (JSON)")
    normalise.add_argument(
        "--cascade", action="store_true",
        help="rank the full cascade's weighted averages (Stage 2 on routed articles); "
        "default: Stage 1's, which never loads Stage 2",
    )
    normalise.add_argument(
        "--max-breakpoints", type=folds, default=1001,
        help="most breakpoints of the table (>= 2; evenly spaced in rank when the traffic has more distinct scores)",
    )
    add_cache_option(normalise)
    add_device_option(normalise)
    normalise.set_defaults(handler=_normalise_command)
    return normalise
