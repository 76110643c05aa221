"""``hybrid-estimators calibrate``: choose a filter's threshold with a recall guarantee."""

import logging
import warnings
from pathlib import Path

from .._io import atomic_write
from ._common import CommandError, HelpFormatter, cv_option, load_filter_or_fail, load_labelled, print_metrics, quiet_model_loading, share

logger = logging.getLogger("hybrid_estimators.cli")


def _calibration_router(filter_, spec, mode):
    """The loaded filter (``prefit``) or an unfitted router of the same Stage 1 (CV)."""
    if mode == "prefit":
        return filter_
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline

    from ..embedding import E5Embedder
    from ..router import HybridRouterRegressor
    from ..text import ArticleText

    hybrid = spec.hybrid_inference
    probe = filter_.stage1.estimator[-1]  # load_filter: FrozenEstimator(Pipeline)
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
        stage1, None, spec.weights, gatekeepers=spec.gatekeepers or None, tiers=spec.tiers
    )


def _write_config(folder, spec):
    import yaml

    text = yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True)
    try:
        atomic_write(Path(folder) / "config.yaml", text)
    except OSError as error:
        raise CommandError(f"cannot write {Path(folder) / 'config.yaml'}: {error}") from None


def _calibrate_command(args):
    try:
        from ..calibration import TunedThresholdRouterCV
    except ImportError as error:
        raise CommandError(f"calibrate needs hybrid_estimators.calibration: {error}") from None
    from ..filters import data_hash

    filter_ = load_filter_or_fail(args.filter, stage1_only=True, verbose=args.verbose)
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
    else:  # as many folds as train-probe used for the filter's metrics
        n_splits = int(filter_.metadata.get("metrics", {}).get("cv_folds", 5))
    cv = "prefit" if mode == "prefit" else n_splits  # folds: shuffled, stratified by tier
    tuner = TunedThresholdRouterCV(
        _calibration_router(filter_, spec, mode),
        target_recall=args.target_recall,
        confidence=args.confidence,
        cv=cv,
        refit=False,
        random_state=args.random_state,
    )
    with warnings.catch_warnings(record=True) as caught, quiet_model_loading(not args.verbose):
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
    print_metrics(
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


def add_parser(subparsers, parents=()):
    """Register ``calibrate`` on `subparsers`."""
    calibrate = subparsers.add_parser(
        "calibrate", parents=parents, help="choose a filter's threshold with a recall guarantee",
        formatter_class=HelpFormatter,
        description="Choose the threshold with TunedThresholdRouterCV and write threshold, "
        "target_recall and confidence into the filter's config.yaml.",
    )
    calibrate.add_argument("--filter", required=True, type=Path, help="filter folder to calibrate")
    calibrate.add_argument("data", type=Path, help="labelled folder (articles.jsonl + filter.yaml)")
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
    calibrate.set_defaults(handler=_calibrate_command)
    return calibrate
