"""``hybrid-estimators evaluate``: Stage 1 vs Stage 2 vs the cascade of a filter.

Measures a filter on a labelled folder with
:func:`~hybrid_estimators.evaluation.cascade_report`, prints the tables,
and optionally writes the report as JSON (``-o``) and the cost/accuracy
frontier as an image (``--plot``).

Examples
--------
::

    hybrid-estimators evaluate --filter filters/seece_energy_tech/v1 held_out_folder
    hybrid-estimators evaluate --filter F training_folder --cv 5 -o report.json --plot frontier.png

Articles a stage that scores them was trained on (the filter's
``training_articles_sha256``) are left out, with their count said:
``--allow-training-articles`` keeps them and marks every number "in
sample". ``--cv K`` refits the probe on K-1 folds: each must hold at least
:data:`MIN_TRAINING_ARTICLES_PER_FOLD` articles.
"""

import io
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ..exceptions import InSampleWarning
from ._common import (
    EXIT_FATAL,
    PROG,
    CommandError,
    HelpFormatter,
    add_cache_option,
    add_device_option,
    folds,
    load_filter_or_fail,
    load_labelled,
    share,
)

logger = logging.getLogger("hybrid_estimators.cli")

#: Fewest articles ``--cv`` may refit the probe on: with fewer, the MLP
#: probe's early-stopping split holds under 2 articles and the ridge probe
#: chooses its penalty from under 20 leave-one-out residuals, so the refitted
#: probe is not the filter's (fitted on hundreds) and its errors say nothing
#: of it.
MIN_TRAINING_ARTICLES_PER_FOLD = 20


def _non_negative_int(text):
    import argparse

    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value

def add_parser(subparsers, parents=()):
    """Register the ``evaluate`` command on `subparsers`.

    Parameters
    ----------
    subparsers : argparse subparsers action
        What ``ArgumentParser.add_subparsers()`` returned.
    parents : sequence of ArgumentParser, default=()
        Parsers of options shared by every command.

    Returns
    -------
    parser : ArgumentParser
        The command's parser; its ``func`` default is :func:`run`.
    """
    parser = subparsers.add_parser(
        "evaluate",
        parents=list(parents),
        help="measure Stage 1, Stage 2 and the cascade of a filter on labelled articles",
        description="Run the filter's Stage 1 and Stage 2 once over every article of a "
        "labelled folder and report Stage 1 alone, Stage 2 alone and the cascade (at "
        "the filter's threshold and over a grid of thresholds): MAE, tier accuracy, "
        "MEDIUM+ recall/precision, skip rate and time per article, with bootstrap "
        "intervals, per true tier and language, the predicted against the true weighted "
        "averages (spread, 90th percentile, KS, HIGH recall), and whether Stage 2 beats "
        "Stage 1 on the articles it is given (inconclusive below 30 routed articles or when "
        "the interval includes zero). Articles a stage was trained on are left out unless "
        "--allow-training-articles.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--filter",
        required=True,
        type=Path,
        metavar="F",
        help="filter folder (config.yaml, probe/)",
    )
    parser.add_argument(
        "data",
        type=Path,
        metavar="LABELLED_DIR",
        help="labelled folder (articles.jsonl + filter.yaml) with the filter's dimensions",
    )
    parser.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write the report as JSON to this file"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="write the MAE / time-per-article frontier to this image (.png, .svg, .pdf; "
        "needs matplotlib and a filter with a Stage 2)",
    )
    parser.add_argument(
        "--cv",
        type=folds,
        default=None,
        metavar="K",
        help="score Stage 1 out of fold: refit the filter's Stage 1 probe on K-1 folds of "
        "LABELLED_DIR and predict the K-th (use when LABELLED_DIR is the probe's "
        "training data); without it the filter's probe scores every article. Each "
        f"K-1 folds must hold at least {MIN_TRAINING_ARTICLES_PER_FOLD} articles",
    )
    parser.add_argument(
        "--allow-training-articles",
        action="store_true",
        help="keep the articles a stage that scores them was trained on (the filter's "
        "training_articles_sha256) and mark every number 'in sample'; by default they are "
        "left out",
    )
    parser.add_argument(
        "--refit-stage2",
        action="store_true",
        help="also refit Stage 2 out of fold (not supported yet)",
    )
    parser.add_argument(
        "--random-state",
        type=int,
        metavar="N",
        default=0,
        help="seed of the folds and the resamples",
    )
    parser.add_argument(
        "--n-bootstraps",
        type=_non_negative_int,
        metavar="N",
        default=1000,
        help="bootstrap resamples of the articles (0: no intervals)",
    )
    parser.add_argument(
        "--confidence",
        type=share,
        metavar="C",
        default=0.9,
        help="coverage of the bootstrap intervals",
    )
    add_cache_option(parser)
    add_device_option(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args):
    """Run ``evaluate`` with parsed `args`.

    Parameters
    ----------
    args : argparse.Namespace
        As parsed by the parser of :func:`add_parser`.

    Returns
    -------
    status : int
        0 on success, 2 on a fatal error (reported as one line on stderr).
    """
    try:
        _evaluate(args)
    except CommandError as error:
        sys.stderr.write(f"{PROG}: error: {error}\n")
        return EXIT_FATAL
    return 0


def _evaluate(args):
    from hybrid_estimators._io import atomic_write
    from hybrid_estimators.evaluation import cascade_report, format_report

    if args.refit_stage2:
        raise CommandError(
            "--refit-stage2 is not supported yet: Stage 2 is evaluated as the filter "
            "ships it (use a LABELLED_DIR Stage 2 was not trained on)"
        )
    if args.plot is not None:
        _check_plotting()
    router = load_filter_or_fail(
        args.filter, verbose=args.verbose, cache=args.cache, device=args.device
    )
    if args.plot is not None and getattr(router, "stage2_", None) is None:
        raise CommandError("--plot needs a filter with a Stage 2: this one has none")
    X, Y = _load_labelled(args.data, router)
    logger.info("evaluating %s on %d articles of %s", args.filter, len(X), args.data)

    _refuse_only_training_articles(router, X, args)
    options = {"allow_training_articles": args.allow_training_articles}
    if args.cv is not None:
        _check_folds(args.cv, len(X))
        predictions, seconds = out_of_fold_stage1(
            router, X, Y, cv=args.cv, random_state=args.random_state
        )
        options.update(stage1_predictions=predictions, seconds_per_article={"stage1": seconds})
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InSampleWarning)
            report = cascade_report(
                router,
                X,
                Y,
                n_bootstraps=args.n_bootstraps,
                confidence=args.confidence,
                random_state=args.random_state,
                **options,
            )
    except ValueError as error:
        raise CommandError(str(error)) from None
    for warning in caught:  # one line on stderr, as every warning of the CLI
        if issubclass(warning.category, InSampleWarning):
            logger.warning("%s", warning.message)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)

    sys.stdout.write(format_report(report))
    if args.output is not None:
        import json

        atomic_write(args.output, json.dumps(report.to_dict(), indent=2) + "\n")
        logger.info("wrote the report to %s", args.output)
    if args.plot is not None:
        spec = getattr(router, "spec", None)
        _write_plot(report, args.plot, getattr(spec, "qualified_name", None))
        logger.info("wrote the frontier plot to %s", args.plot)


def _refuse_only_training_articles(router, X, args):
    """No verdict on articles that are all training articles, before any stage runs."""
    from ..evaluation import in_sample_articles
    from ..evaluation._training_articles import training_hash_sets

    stages = ["stage2"] if args.cv is not None else ["stage1", "stage2"]  # --cv: Stage 1 out of fold
    trained_on = in_sample_articles(router, X, stages=stages)
    stages = [stage for stage, hashes in training_hash_sets(router).items()
              if stage in stages and hashes is not None]
    if trained_on is None:
        logger.warning(
            "%s records no training articles: cannot check that %s is held out", args.filter, args.data
        )
    elif trained_on.all() and not args.allow_training_articles:
        raise CommandError(
            f"no verdict: all {len(X)} articles of {args.data} are among the training articles "
            f"the filter records for "
            f"{' and '.join(stage.replace('stage', 'Stage ') for stage in stages)}; evaluate "
            "on held-out articles, or pass --allow-training-articles to measure in sample"
        )


def _check_folds(cv, n_articles):
    """Refuse --cv K when it cannot run, or refits the probe on too few articles."""
    if cv > n_articles:
        raise CommandError(f"--cv {cv} needs at least {cv} articles; got {n_articles}")
    smallest = n_articles - -(-n_articles // cv)  # KFold's largest test fold is ceil(n / K)
    if smallest < MIN_TRAINING_ARTICLES_PER_FOLD:
        needed = next(
            n for n in range(cv, 100 * cv)
            if n - -(-n // cv) >= MIN_TRAINING_ARTICLES_PER_FOLD
        )
        raise CommandError(
            f"--cv {cv} on {n_articles} articles refits the probe on {smallest} articles per fold; "
            f"it needs at least {MIN_TRAINING_ARTICLES_PER_FOLD} training articles per fold "
            f"(at least {needed} labelled articles for --cv {cv})"
        )


def _load_labelled(folder, router):
    """X and Y of a labelled folder, Y's columns in the order of the filter's dimensions."""
    X, Y, _ = load_labelled(folder)
    names = [str(name) for name in router.dimension_names_]
    if sorted(map(str, Y.columns)) != sorted(names):
        raise CommandError(
            f"{folder} scores the dimensions {list(Y.columns)} but the filter scores "
            f"{names}: evaluate a filter on articles labelled for it"
        )
    if len(X) == 0:
        raise CommandError(f"{folder}/articles.jsonl holds no article")
    return X, Y[names]


def out_of_fold_stage1(router, X, Y, *, cv, random_state=None):
    """Out-of-fold Stage 1 scores from refits of a filter's Stage 1 probe.

    When Stage 1 is a :class:`~sklearn.pipeline.Pipeline` (text, embedder,
    probe), the articles are embedded once by its fitted first steps
    (pretrained, not refitted) and a clone of its last step, the probe, is
    refitted on each training fold (``cross_val_predict`` over
    ``KFold(cv, shuffle=True)``); any other Stage 1 is cloned and refitted
    whole.

    Parameters
    ----------
    router : HybridRouterRegressor
        Fitted; its ``stage1_`` may be wrapped in a ``FrozenEstimator``.
    X : DataFrame
        Articles.
    Y : DataFrame or array-like of shape (n_samples, n_dimensions)
        True scores.
    cv : int
        Number of folds (>= 2).
    random_state : int or None, default=None
        Seed of the fold shuffle.

    Returns
    -------
    predictions : ndarray of shape (n_samples, n_dimensions)
    seconds_per_article : float
        Time of the filter's own Stage 1 (features and probe) per article;
        NaN when Stage 1 is not a pipeline.
    """
    from sklearn.base import clone
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import Pipeline

    from ..router import unwrap_frozen

    stage1 = unwrap_frozen(router.stage1_)
    folds = KFold(cv, shuffle=True, random_state=random_state)
    Y = np.asarray(Y, dtype=float)
    if not isinstance(stage1, Pipeline) or len(stage1.steps) < 2:
        logger.info("refitting Stage 1 (%s) on %d folds", type(stage1).__name__, cv)
        return cross_val_predict(clone(stage1), X, Y, cv=folds), np.nan
    features_of, probe = stage1[:-1], stage1[-1]
    started = time.perf_counter()
    features = features_of.transform(X)
    probe.predict(features)
    seconds = (time.perf_counter() - started) / len(X)
    logger.info("refitting the Stage 1 probe (%s) on %d folds", type(probe).__name__, cv)
    return cross_val_predict(clone(probe), features, Y, cv=folds), seconds


def _check_plotting():
    try:
        import matplotlib  # noqa: F401  (only whether it is installed)
    except ImportError:
        raise CommandError(
            "--plot needs matplotlib: pip install 'hybrid_estimators[test]' or "
            "pip install matplotlib"
        ) from None


def _write_plot(report, path, name=None):
    from matplotlib.figure import Figure

    from hybrid_estimators._io import atomic_write
    from hybrid_estimators.evaluation import CascadeFrontierDisplay

    if not report.grid:
        raise CommandError("--plot needs a filter with a Stage 2: this one has none")
    figure = Figure(figsize=(8, 5), layout="constrained")
    CascadeFrontierDisplay.from_report(report, ax=figure.subplots(), name=name)
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format=Path(path).suffix.lstrip(".").lower() or "png")
    except ValueError as error:  # an unknown image format
        raise CommandError(f"cannot write the plot {path}: {error}") from None
    atomic_write(path, buffer.getvalue())
