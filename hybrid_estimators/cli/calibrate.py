"""``hybrid-estimators calibrate``: choose a filter's threshold with a recall guarantee."""

import logging
import warnings
from pathlib import Path

from ._common import CommandError, add_cache_option, add_device_option, HelpFormatter, cv_option, load_filter_or_fail, load_labelled, print_metrics, quiet_model_loading, share

logger = logging.getLogger("hybrid_estimators.cli")


def _calibration_router(filter_, spec, mode):
    """The loaded filter (``prefit``) or an unfitted router of the same Stage 1 (CV)."""
    if mode == "prefit":
        return filter_
    from sklearn.base import clone

    from ..router import HybridRouterRegressor

    stage1 = clone(filter_.stage1.estimator)  # load_filter: FrozenEstimator(Pipeline)
    stage1.set_params(e5embedder__show_progress_bar=False)
    return HybridRouterRegressor(
        stage1, None, spec.weights, gatekeepers=spec.gatekeepers or None, tiers=spec.tiers
    )


def _read_articles(path):
    """The valid articles of a JSONL file, with their line numbers."""
    from ..scoring import parse_line, read_chunks

    import pandas as pd

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


def _teacher_labels(args, filter_, articles, lines, n_lines):
    """Stage 2's scores of the articles from --teacher-scores (or None: run Stage 2)."""
    if args.teacher_scores is None:
        return None
    from ..teacher import TeacherScoresError, read_teacher_scores

    try:
        scores = read_teacher_scores(args.teacher_scores, filter_)
    except (TeacherScoresError, OSError) as error:
        raise CommandError(str(error)) from None
    if len(scores) != n_lines:
        raise CommandError(
            f"{args.teacher_scores} has {len(scores)} rows but {args.data} has {n_lines} lines: "
            "it misses articles or scores another input"
        )
    scores = scores.iloc[[line - 1 for line in lines]].reset_index(drop=True)
    if scores.isna().any(axis=1).any():
        line = lines[int(scores.isna().any(axis=1).to_numpy().argmax())]
        raise CommandError(f"{args.teacher_scores}: line {line} has no Stage 2 scores for a valid article")
    return scores


def _check_not_trained_on(filter_, articles, args):
    """Refuse certification articles the probe was trained on (by text hash)."""
    from ..teacher import text_hashes

    trained = filter_.metadata.get("training_articles_sha256")
    if not trained:
        logger.warning(
            "%s records no training articles: cannot check that %s is disjoint from them",
            args.filter, args.data,
        )
        return
    shared = set(text_hashes(articles)) & set(trained)
    if shared:
        raise CommandError(
            f"{len(shared)} articles of {args.data} are among the filter's training articles: "
            "certify on articles the probe was not trained on"
        )


def _oracle_calibration(args, filter_, TunedThresholdRouterCV):
    from ..filters import data_hash

    spec = filter_.spec
    X, Y, _ = load_labelled(args.data)
    missing = [name for name in spec.dimension_names if name not in Y.columns]
    if missing:
        raise CommandError(f"{args.data} has no scores for the filter's dimensions {missing}")
    Y = Y[spec.dimension_names]
    trained_on_it = data_hash(X, Y) == filter_.metadata.get("training_data_sha256")
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
    else:  # as many folds as the filter's metrics used
        n_splits = int(filter_.metadata.get("metrics", {}).get("cv_folds", 5))
    tuner = TunedThresholdRouterCV(
        _calibration_router(filter_, spec, mode),
        target_recall=args.target_recall,
        confidence=args.confidence,
        cv="prefit" if mode == "prefit" else n_splits,  # folds: shuffled, stratified by tier
        refit=False,
        random_state=args.random_state,
    )
    how = "held-out (prefit)" if mode == "prefit" else f"out-of-fold ({n_splits}-fold CV)"
    return tuner, X, Y, how


def _stage2_calibration(args, filter_, TunedThresholdRouterCV):
    if filter_.stage2_ is None:
        raise CommandError(f"{args.filter} has no Stage 2 (stage2: null): nothing to certify against")
    articles, lines, n_lines = _read_articles(args.data)
    _check_not_trained_on(filter_, articles, args)
    Y = _teacher_labels(args, filter_, articles, lines, n_lines)
    tuner = TunedThresholdRouterCV(
        filter_,
        target_recall=args.target_recall,
        confidence=args.confidence,
        cv="prefit",
        reference="stage2",
    )
    source = f"teacher scores {args.teacher_scores}" if Y is not None else "Stage 2 run here"
    return tuner, articles, Y, f"against Stage 2's verdicts ({source})"


def _calibrate_command(args):
    from ..calibration import TunedThresholdRouterCV
    from ..filters import calibration_record, record_calibration

    if args.teacher_scores is not None and args.reference != "stage2":
        raise CommandError("--teacher-scores needs --reference stage2")
    stage1_only = args.reference == "oracle"
    filter_ = load_filter_or_fail(
        args.filter, stage1_only=stage1_only, verbose=args.verbose, cache=args.cache,
        device=args.device,
    )
    spec = filter_.spec
    build = _oracle_calibration if args.reference == "oracle" else _stage2_calibration
    tuner, X, Y, how = build(args, filter_, TunedThresholdRouterCV)
    with warnings.catch_warnings(record=True) as caught, quiet_model_loading(not args.verbose):
        warnings.simplefilter("always", UserWarning)
        tuner.fit(X, Y)
    for warning in caught:
        logger.warning("%s", warning.message)
    record = calibration_record(tuner, data=args.data)
    try:
        record_calibration(args.filter, record)
    except (OSError, ValueError) as error:  # FilterError is a ValueError
        raise CommandError(f"cannot record the calibration in {args.filter}: {error}") from None
    print(f"calibrated {spec.name}/{spec.version} on {len(X)} articles, {how}")
    print_metrics({key: value for key, value in record.items() if key != "data"}, indent="  ")
    if spec.hybrid_inference["stage2"] is None:
        logger.info("this filter has no Stage 2 (stage2: null): the threshold routes nothing yet")
    print(f"wrote threshold {tuner.best_threshold_:.4f} to {Path(args.filter) / 'config.yaml'}")
    return 0


def add_parser(subparsers, parents=()):
    """Register ``calibrate`` on `subparsers`."""
    calibrate = subparsers.add_parser(
        "calibrate", parents=parents, help="choose a filter's threshold with a recall guarantee",
        formatter_class=HelpFormatter,
        description="Choose the threshold with TunedThresholdRouterCV and write threshold, "
        "target_recall and confidence into the filter's config.yaml, and the whole "
        "calibration (reference, n, n_medium_plus, lower bound) into its metadata.json.",
    )
    calibrate.add_argument("--filter", required=True, type=Path, help="filter folder to calibrate")
    calibrate.add_argument(
        "data", type=Path,
        help="with --reference oracle: a labelled folder (articles.jsonl + filter.yaml); "
        "with --reference stage2: a JSONL file of articles (no scores needed)",
    )
    calibrate.add_argument(
        "--reference", choices=("oracle", "stage2"), default="oracle",
        help="whose MEDIUM+ verdicts the recall guarantee is against: the labels (oracle) "
        "or the filter's Stage 2 on unlabelled articles (needs a Stage 2; prefit only)",
    )
    calibrate.add_argument(
        "--teacher-scores", type=Path,
        help="with --reference stage2: the output of `score --all-stage2` on the same file, "
        "so Stage 2 does not run again",
    )
    calibrate.add_argument(
        "--target-recall", type=share, default=0.95,
        help="share of MEDIUM+ articles Stage 2 must see",
    )
    calibrate.add_argument(
        "--confidence", type=share, default=0.9,
        help="probability that the realised recall meets --target-recall",
    )
    calibrate.add_argument(
        "--cv", type=cv_option, default="auto",
        help="'prefit' (data held out from training), a number of folds (refit the probe), "
        "or 'auto': prefit, unless data is the filter's training data: then "
        "as many folds as its metrics used",
    )
    calibrate.add_argument(
        "--random-state", type=int, default=0, help="seed of the shuffled, stratified folds"
    )
    add_cache_option(calibrate)
    add_device_option(calibrate)
    calibrate.set_defaults(handler=_calibrate_command)
    return calibrate
