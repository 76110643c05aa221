"""``hybrid-estimators train-probe``: fit Stage 1 on a labelled folder, save a filter."""

import logging
from pathlib import Path

from ._common import CommandError, HelpFormatter, folds, layer_sizes, load_labelled, positive_int, print_metrics, quiet_model_loading

logger = logging.getLogger("hybrid_estimators.cli")


def _filter_spec(data_spec, args):
    from ..filters import FilterError, FilterSpec

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

    from ..metrics import medium_plus_recall, skip_rate, tier_accuracy, weighted_average_mae
    from ..tiers import weighted_average

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

    from ..embedding import E5Embedder
    from ..filters import save_filter
    from ..probe import make_probe
    from ..router import HybridRouterRegressor
    from ..text import ArticleText

    X, Y, data_spec = load_labelled(args.data)
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
    with quiet_model_loading(not args.verbose):
        metrics = cross_validated_metrics(
            stage1, X, Y, spec, threshold=args.threshold, cv=args.cv, random_state=args.random_state
        )
        fitted = FrozenEstimator(clone(stage1).fit(X, Y))
    router = HybridRouterRegressor(
        fitted,
        None,  # a Stage-1-only filter (stage2: null)
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
    print_metrics(metrics)
    return 0




def add_parser(subparsers, parents=()):
    """Register ``train-probe`` on `subparsers`."""
    train = subparsers.add_parser(
        "train-probe", parents=parents, help="fit Stage 1 on a labelled folder, save a filter",
        formatter_class=HelpFormatter,
        description="Fit ArticleText + E5Embedder + make_probe on a labelled folder "
        "(articles.jsonl + filter.yaml) and save a Stage-1-only filter folder.",
    )
    train.add_argument("data", type=Path, help="labelled folder (articles.jsonl + filter.yaml)")
    train.add_argument("-o", "--output", required=True, type=Path, help="filter folder to write")
    train.add_argument("--version", default="v1", help="filter version")
    train.add_argument(
        "--embedding-model", default="intfloat/multilingual-e5-small",
        help="Stage 1 embedder: a hub name or a local sentence-transformers folder",
    )
    train.add_argument("--prefix", default="passage: ", help="text put before every article")
    train.add_argument(
        "--max-seq-length", type=positive_int, default=512,
        help="most tokens the embedder reads per article (its token budget)",
    )
    train.add_argument(
        "--hidden-layer-sizes", type=layer_sizes, default=[256, 128],
        help="the MLP probe's hidden layers, e.g. 256,128",
    )
    train.add_argument("--threshold", type=float, default=4.5, help="Stage 2 threshold")
    train.add_argument("--cv", type=folds, default=5, help="folds for the metrics (>= 2)")
    train.add_argument("--batch-size", type=positive_int, default=32, help="embedding batch size")
    train.add_argument(
        "--random-state", type=int, default=0, help="seed of the folds and of the probe"
    )
    train.set_defaults(handler=_train_probe_command)
    return train
