"""``hybrid-estimators calibrate``: choose a filter's threshold with a recall guarantee."""

import logging
import warnings
from pathlib import Path

from ..exceptions import FilterQualityWarning
from ._common import (
    CommandError,
    HelpFormatter,
    add_cache_option,
    add_device_option,
    add_strict_option,
    cv_option,
    failed_verdicts,
    load_filter_or_fail,
    load_labelled,
    print_metrics,
    quiet_model_loading,
    read_article_lines,
    read_teacher_file,
    share,
    strict_status,
)

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


def _held_out_by_train_probe(filter_, articles, lines, args):
    """Only the lines ``train-probe`` held out for certification, when `args.data` is its file."""
    from ..models import file_sha256

    distillation = filter_.metadata.get("distillation") or {}
    if distillation.get("unlabelled_sha256") != file_sha256(args.data):
        return articles, lines
    held_out = set(distillation["certify_lines"])
    keep = [i for i, line in enumerate(lines) if line in held_out]
    logger.info(
        "%s is the file the probe was distilled on: certifying on the %d articles train-probe "
        "held out (random_state %s)", args.data, len(keep), distillation.get("random_state"),
    )
    return articles.iloc[keep].reset_index(drop=True), [lines[i] for i in keep]


def _check_not_trained_on(filter_, articles, args):
    """Refuse (or, with --allow-training-articles, warn about) articles the probe was trained on.

    Articles are compared by normalised text (:func:`~hybrid_estimators.text.recorded_articles`:
    NFKC, case folded, whitespace collapsed) with the filter's ``training_articles_sha256``.
    Returns how many of `articles` are training articles.
    """
    from ..exceptions import InSampleWarning
    from ..text import recorded_articles

    trained = filter_.metadata.get("training_articles_sha256")
    if not trained:
        logger.warning(
            "%s records no training articles: cannot check that %s is disjoint from them",
            args.filter, args.data,
        )
        return 0
    n_shared = int(recorded_articles(articles, trained).sum())
    if not n_shared:
        return 0
    message = (
        f"{n_shared} of the {len(articles)} articles of {args.data} are among the training articles "
        f"of {args.filter}'s probe (same text once normalised): a threshold certified on them with "
        "this probe is optimistic (in sample)"
    )
    if not args.allow_training_articles:
        raise CommandError(
            f"{message}. Certify on articles the probe was not trained on, refit the probe out of "
            "fold (--cv K, oracle reference), or pass --allow-training-articles to certify in sample"
        )
    warnings.warn(message, InSampleWarning)
    return n_shared


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
    n_in_sample = _check_not_trained_on(filter_, X, args) if mode == "prefit" else 0
    if mode == "prefit" and trained_on_it and not filter_.metadata.get("training_articles_sha256"):
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
    if n_in_sample:
        how = f"prefit, in sample: {n_in_sample} of them training articles"
    return tuner, X, Y, how


def _stage2_calibration(args, filter_, TunedThresholdRouterCV):
    if filter_.stage2_ is None:
        raise CommandError(f"{args.filter} has no Stage 2 (stage2: null): nothing to certify against")
    articles, lines, n_lines = read_article_lines(args.data)
    articles, lines = _held_out_by_train_probe(filter_, articles, lines, args)
    n_in_sample = _check_not_trained_on(filter_, articles, args)
    Y = None
    if args.teacher_scores is not None:
        Y = read_teacher_file(args.teacher_scores, filter_, args.data, lines, n_lines)
    tuner = TunedThresholdRouterCV(
        filter_,
        target_recall=args.target_recall,
        confidence=args.confidence,
        cv="prefit",
        reference="stage2",
    )
    source = f"teacher scores {args.teacher_scores}" if Y is not None else "Stage 2 run here"
    in_sample = f", in sample: {n_in_sample} of them training articles" if n_in_sample else ""
    return tuner, articles, Y, f"against Stage 2's verdicts ({source}){in_sample}"


def _calibrate_command(args):
    from ..calibration import TunedThresholdRouterCV
    from ..filters import calibration_record, record_calibration

    if args.teacher_scores is not None and args.reference != "stage2":
        raise CommandError("--teacher-scores needs --reference stage2")
    stage1_only = args.reference == "oracle"
    filter_ = load_filter_or_fail(
        args.filter, stage1_only=stage1_only, verbose=args.verbose, cache=args.cache,
        device=args.device, report_quality=False,  # reported at the end, with the new calibration
    )
    spec = filter_.spec
    build = _oracle_calibration if args.reference == "oracle" else _stage2_calibration
    with warnings.catch_warnings(record=True) as caught, quiet_model_loading(not args.verbose):
        warnings.simplefilter("always", UserWarning)
        tuner, X, Y, how = build(args, filter_, TunedThresholdRouterCV)
        tuner.fit(X, Y)
    evidence = [warning for warning in caught if issubclass(warning.category, FilterQualityWarning)]
    for warning in caught:
        logger.warning("%s", warning.message)
    record = calibration_record(tuner, data=args.data)
    try:
        record_calibration(args.filter, record, apply=not args.record_only)
    except (OSError, ValueError) as error:  # FilterError is a ValueError
        raise CommandError(f"cannot record the calibration in {args.filter}: {error}") from None
    print(f"calibrated {spec.qualified_name} on {len(X)} articles, {how}")
    print_metrics({key: value for key, value in record.items() if key != "data"}, indent="  ")
    if spec.hybrid_inference["stage2"] is None:
        logger.info("this filter has no Stage 2 (stage2: null): the threshold routes nothing yet")
    if args.record_only:
        print(f"recorded threshold {tuner.best_threshold_:.4f} beside the one in use "
              f"({spec.hybrid_inference['threshold']:.4f}) in {Path(args.filter)}")
    else:
        print(f"wrote threshold {tuner.best_threshold_:.4f} to {Path(args.filter) / 'config.yaml'}")
    failed = failed_verdicts(args.filter, stage1_only=stage1_only, report=True)
    return strict_status(args, failed + evidence, f"the calibration of {Path(args.filter)}")


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
    calibrate.add_argument(
        "--allow-training-articles", action="store_true",
        help="certify even when some articles are the probe's training articles (compared by "
        "normalised text), with a warning: the guarantee is then in sample, optimistic",
    )
    calibrate.add_argument(
        "--record-only", action="store_true",
        help="keep the threshold in use; record this calibration beside it (metadata, card)",
    )
    add_cache_option(calibrate)
    add_device_option(calibrate)
    add_strict_option(calibrate, "the calibration")
    calibrate.set_defaults(handler=_calibrate_command)
    return calibrate
