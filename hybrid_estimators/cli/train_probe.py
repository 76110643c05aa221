"""``hybrid-estimators train-probe``: fit Stage 1 on a labelled folder, save a filter.

The probe is chosen by cross-validation (``--probe auto``: the ridge or the
MLP, whichever has the lower out-of-fold MAE on the same folds); the
metrics go into the filter's metadata in the one schema every filter
uses (:func:`hybrid_estimators.metrics.cross_validated_stage1_metrics`).
A probe that does not beat predicting the mean is saved with a warning,
and marked so by ``info`` and the model card. ``--stage2 BASE --adapter
DIR`` copies a trained LoRA adapter into the filter (``model/``) and
writes the config's ``stage2`` section: a complete filter, no YAML to edit.
"""

import logging
from pathlib import Path

from ._common import (
    add_cache_option,
    CommandError,
    HelpFormatter,
    folds,
    layer_sizes,
    load_labelled,
    positive_int,
    print_metrics,
    quiet_model_loading,
)

logger = logging.getLogger("hybrid_estimators.cli")

PROBE_CHOICES = ("auto", "ridge", "mlp")


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


def _candidates(args):
    """The Stage 1 pipelines to cross-validate, by probe name."""
    from sklearn.pipeline import make_pipeline

    from ..embedding import E5Embedder
    from ..probe import make_probe, make_ridge_probe
    from ..text import ArticleText

    probes = {
        "ridge": make_ridge_probe,
        "mlp": lambda: make_probe(tuple(args.hidden_layer_sizes), random_state=args.random_state),
    }
    names = list(probes) if args.probe == "auto" else [args.probe]
    embedder = E5Embedder(
        args.embedding_model,
        prefix=args.prefix,
        max_seq_length=args.max_seq_length,
        batch_size=args.batch_size,
        cache=True if args.cache is None else str(args.cache),
        show_progress_bar=not args.no_progress,
    )
    return {name: make_pipeline(ArticleText(), embedder, probes[name]()) for name in names}


def _stage2(args, spec):
    """A prefit QwenRegressor of ``--stage2``/``--adapter``, or None."""
    if args.stage2 is None and args.adapter is None:
        return None
    if args.stage2 is None or args.adapter is None:
        raise CommandError("--stage2 BASE and --adapter DIR go together (a Stage 2 is a base model and its adapter)")
    if not (args.adapter / "adapter_config.json").is_file():
        raise CommandError(f"--adapter {args.adapter} is not a peft adapter folder (no adapter_config.json)")
    from ..qwen import QwenRegressor

    head, tail = args.stage2_head_tail
    return QwenRegressor(
        args.stage2,
        adapter=str(args.adapter),
        gguf_file=args.gguf_file,
        head_tail=(head, tail),
        max_length=args.stage2_max_length or head + tail,
        num_labels=len(spec.dimension_names),
        show_progress_bar=False,
    )


def _train_probe_command(args):
    from sklearn.base import clone
    from sklearn.frozen import FrozenEstimator

    from ..filters import Filter, FilterError, save_filter
    from ..metrics import cross_validated_stage1_metrics

    X, Y, data_spec = load_labelled(args.data)
    spec = _filter_spec(data_spec, args)
    Y = Y[spec.dimension_names]
    if len(X) < 2 * args.cv:
        raise CommandError(f"{args.data} has {len(X)} articles: too few for --cv {args.cv}")
    stage2 = _stage2(args, spec)
    candidates = _candidates(args)
    logger.info(
        "Cross-validating Stage 1 (%s) on %d articles (%d folds)",
        ", ".join(candidates), len(X), args.cv,
    )
    with quiet_model_loading(not args.verbose):
        metrics = cross_validated_stage1_metrics(
            candidates, X, Y, spec.weights, threshold=args.threshold, tiers=spec.tiers,
            gatekeepers=spec.gatekeepers, cv=args.cv, random_state=args.random_state,
        )
        fitted = FrozenEstimator(clone(candidates[metrics["probe"]]).fit(X, Y))
    # A Filter runs no stage when fitted: Stage 2 is copied, never loaded.
    scorer = Filter(
        spec, fitted, None if stage2 is None else FrozenEstimator(stage2), threshold=args.threshold
    ).fit()
    try:
        folder = save_filter(scorer, args.output, spec, training_data=(X, Y), metrics=metrics)
    except FilterError as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(f"cannot write {args.output}: {error}") from None
    print(f"saved filter {spec.name}/{spec.version} to {folder}")
    print(f"probe {metrics['probe']} (chosen by {args.cv}-fold CV MAE)" if args.probe == "auto"
          else f"probe {metrics['probe']}")
    if stage2 is not None:
        print(f"stage2 {args.stage2} with the adapter copied to {folder / 'model'}")
    print_metrics(metrics)
    return 0


def add_parser(subparsers, parents=()):
    """Register ``train-probe`` on `subparsers`."""
    train = subparsers.add_parser(
        "train-probe", parents=parents, help="fit Stage 1 on a labelled folder, save a filter",
        formatter_class=HelpFormatter,
        description="Fit ArticleText + E5Embedder + a probe (ridge or MLP, chosen by "
        "cross-validation) on a labelled folder (articles.jsonl + filter.yaml) and save a "
        "filter folder; with --stage2 and --adapter, a complete two-stage filter.",
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
        "--probe", choices=PROBE_CHOICES, default="auto",
        help="the probe: auto picks ridge or mlp by the lower cross-validated MAE (same folds)",
    )
    train.add_argument(
        "--hidden-layer-sizes", type=layer_sizes, default=[256, 128],
        help="the MLP probe's hidden layers, e.g. 256,128",
    )
    train.add_argument("--threshold", type=float, default=4.5, help="Stage 2 threshold")
    train.add_argument("--cv", type=folds, default=5, help="folds for the metrics (>= 2)")
    train.add_argument("--batch-size", type=positive_int, default=32, help="embedding batch size")
    add_cache_option(train)
    train.add_argument(
        "--random-state", type=int, default=0, help="seed of the folds and of the probe"
    )
    stage2 = train.add_argument_group("Stage 2 (optional)")
    stage2.add_argument(
        "--stage2", metavar="BASE",
        help="Stage 2 base model: a hub name (e.g. HuggingFaceTB/SmolLM2-135M-Instruct) or folder",
    )
    stage2.add_argument(
        "--adapter", type=Path, metavar="DIR",
        help="trained LoRA adapter folder (QwenRegressor.save_adapter); copied into the filter",
    )
    stage2.add_argument("--gguf-file", metavar="F", help="GGUF file of the base model, if any")
    stage2.add_argument(
        "--stage2-head-tail", type=int, nargs=2, default=[256, 256], metavar=("HEAD", "TAIL"),
        help="tokens Stage 2 reads from the start and the end of an article",
    )
    stage2.add_argument(
        "--stage2-max-length", type=positive_int, metavar="N",
        help="most tokens Stage 2 reads (default: HEAD + TAIL)",
    )
    train.set_defaults(handler=_train_probe_command)
    return train
