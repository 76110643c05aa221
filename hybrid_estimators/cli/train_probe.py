"""``hybrid-estimators train-probe``: fit Stage 1 on a labelled folder, save a filter.

The probe is chosen by cross-validation (``--probe auto``: the ridge or the
MLP, whichever has the lower out-of-fold MAE on the same folds); the
metrics go into the filter's metadata in the one schema every filter
uses (:func:`hybrid_estimators.metrics.cross_validated_stage1_metrics`).
A probe that does not beat predicting the mean is saved with a warning,
and marked so by ``info`` and the model card. ``--stage2 BASE --adapter
DIR`` copies a trained LoRA adapter into the filter (``model/``) and
writes the config's ``stage2`` section: a complete filter, no YAML to edit.

``--teacher-scores T --unlabelled U --filter F`` distils: the probe learns
Stage 2's scores of unlabelled articles (``T``, written by ``score --filter
F --all-stage2 U``), together with the oracle-labelled folder if one is
given, each source with its sample weight. The unlabelled articles are
split (seeded, duplicates kept together) into those the probe learns from
and those held out for ``calibrate --reference stage2``: the split is
recorded in the metadata, and ``calibrate`` on ``U`` then certifies on the
held-out part only. The new filter keeps ``F``'s Stage 2.
"""

import logging
import stat
from pathlib import Path

from ._common import (
    CommandError,
    HelpFormatter,
    add_cache_option,
    add_strict_option,
    failed_verdicts,
    folds,
    layer_sizes,
    load_filter_or_fail,
    load_labelled,
    nonnegative_int,
    positive_int,
    print_metrics,
    quiet_model_loading,
    read_article_lines,
    read_teacher_file,
    share,
    strict_status,
)

logger = logging.getLogger("hybrid_estimators.cli")

PROBE_CHOICES = ("auto", "ridge", "mlp")


def _filter_spec(data_spec, args, teacher=None):
    from ..filters import FilterError, FilterSpec

    keys = ("name", "description", "dimensions", "tiers", "prefilter")
    config = {key: data_spec[key] for key in keys if key in data_spec}
    config["version"] = args.version
    config["hybrid_inference"] = {
        "embedding_model": args.embedding_model,
        "embedding_prefix": args.prefix,
        "max_seq_length": args.max_seq_length,
        "embedding_head_tail": args.head_tail,
        "threshold": args.threshold,
        "stage2": None,
    }
    if teacher is not None:  # the distilled filter keeps its teacher's Stage 2
        hybrid = teacher.spec.hybrid_inference
        config["hybrid_inference"].update(stage2=hybrid["stage2"], stage2_weight=hybrid["stage2_weight"])
    try:
        return FilterSpec.from_dict(config, source="filter.yaml")
    except FilterError as error:
        raise CommandError(str(error)) from None


def _candidates(args, spec):
    """The Stage 1 pipelines to cross-validate, by probe name."""
    from sklearn.pipeline import make_pipeline

    from ..embedding import E5Embedder
    from ..filters import stage1_article_text
    from ..probe import make_probe, make_ridge_probe

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
    return {name: make_pipeline(stage1_article_text(spec), embedder, probes[name]()) for name in names}


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


def _teacher(args):
    """The filter whose Stage 2 wrote --teacher-scores, or None without distillation."""
    given = [args.teacher_scores is not None, args.unlabelled is not None, args.filter is not None]
    if not any(given):
        if args.data is None:
            raise CommandError("give a labelled folder, or --teacher-scores with --unlabelled and --filter")
        return None
    if not all(given):
        raise CommandError("--teacher-scores, --unlabelled and --filter go together (Stage 2's scores "
                           "of the unlabelled articles, and the filter whose Stage 2 wrote them)")
    if args.stage2 is not None or args.adapter is not None:
        raise CommandError("a distilled filter keeps --filter's Stage 2: leave out --stage2 and --adapter")
    return load_filter_or_fail(args.filter, verbose=args.verbose, cache=args.cache)


def _distillation_set(args, teacher, labelled):
    """Training articles, targets and sample weights, plus the distillation record."""
    from ..models import file_sha256
    from ..teacher import check_disjoint, disjoint_split, make_distillation_set, teacher_identity

    articles, lines, n_lines = read_article_lines(args.unlabelled)
    scores = read_teacher_file(args.teacher_scores, teacher, args.unlabelled, lines, n_lines, allow_missing=True)
    train, certify = disjoint_split(articles, certify_size=args.certify_size, random_state=args.random_state)
    X_oracle, Y_oracle = labelled if labelled is not None else (None, None)
    if X_oracle is not None:
        try:
            check_disjoint(X_oracle, articles.iloc[certify])
        except ValueError as error:
            raise CommandError(f"{args.data} and the held-out part of {args.unlabelled}: {error}") from None
    X, Y, weight, source = make_distillation_set(
        articles.iloc[train], scores.iloc[train], X_oracle, Y_oracle,
        teacher_weight=args.teacher_weight, oracle_weight=args.oracle_weight,
    )
    record = {
        "teacher": teacher_identity(teacher),
        "teacher_scores": str(args.teacher_scores),
        "unlabelled": str(args.unlabelled),
        "unlabelled_sha256": file_sha256(args.unlabelled),
        "random_state": args.random_state,
        "certify_size": args.certify_size,
        "n_teacher": int((source == "teacher").sum()),
        "n_oracle": int((source == "oracle").sum()),
        "teacher_weight": args.teacher_weight,
        "oracle_weight": args.oracle_weight,
        "certify_lines": [lines[i] for i in certify],
        "metrics_targets": "the cross-validated metrics compare with each article's training target: "
                           "Stage 2's scores for the unlabelled articles, the labels for the others",
    }
    logger.info(
        "Distilling: %d articles with Stage 2's scores, %d labelled; %d unlabelled held out for "
        "calibrate --reference stage2", record["n_teacher"], record["n_oracle"], len(certify),
    )
    return X, Y, weight, record


def _training_data(args):
    """(X, Y, sample_weight, spec, teacher, distillation record) from the arguments."""
    import numpy as np

    teacher = _teacher(args)
    labelled, data_spec = None, None
    if args.data is not None:
        X, Y, data_spec = load_labelled(args.data)
        labelled = (X, Y)
    if teacher is not None:
        if data_spec is not None and sorted(data_spec["dimensions"]) != sorted(teacher.spec.dimension_names):
            raise CommandError(f"{args.data} and {args.filter} score other dimensions")
        # The teacher's dimensions and weights: they define Stage 2's verdicts.
        data_spec = {**(data_spec or teacher.spec.to_dict()), "dimensions": teacher.spec.dimensions}
    spec = _filter_spec(data_spec, args, teacher)
    if labelled is not None:
        labelled = (labelled[0], labelled[1][spec.dimension_names])
    if teacher is None:
        X, Y = labelled
        return X, Y, np.ones(len(X)), spec, None, None
    X, Y, weight, record = _distillation_set(args, teacher, labelled)
    return X, Y, weight, spec, teacher, record


def _check_output(args):
    """Refuse an existing -o (a filter would be lost) unless --force; never a file or a link."""
    output = args.output
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise CommandError(f"-o {output} exists and is not a folder: give a folder to write the filter to")
    if output.is_dir() and any(output.iterdir()) and not args.force:
        raise CommandError(
            f"-o {output} already exists and is not empty: its probe, calibrated threshold and Stage 2 "
            "would be replaced; pass --force to replace the whole folder, or choose another -o"
        )


def _folder_mode(output):
    """Permissions of the folder written: those of the one replaced, else what mkdir gives."""
    from .._io import _current_umask

    try:
        return stat.S_IMODE(output.stat().st_mode)
    except FileNotFoundError:
        return 0o777 & ~_current_umask()


def _train_probe_command(args):
    from sklearn.base import clone
    from sklearn.frozen import FrozenEstimator

    from .._io import atomic_folder
    from ..filters import Filter, FilterError, FilterSpec, save_filter
    from ..metrics import cross_validated_stage1_metrics
    from ..teacher import sample_weight_params

    _check_output(args)
    X, Y, sample_weight, spec, teacher, distillation = _training_data(args)
    source = args.data if teacher is None else f"{args.unlabelled} (+ {args.data})" if args.data else args.unlabelled
    if len(X) < 2 * args.cv:
        raise CommandError(f"{source} gives {len(X)} articles: too few for --cv {args.cv}")
    stage2 = _stage2(args, spec) if teacher is None else teacher.stage2
    candidates = _candidates(args, spec)
    logger.info(
        "Cross-validating Stage 1 (%s) on %d articles (%d folds)",
        ", ".join(candidates), len(X), args.cv,
    )
    with quiet_model_loading(not args.verbose):
        metrics = cross_validated_stage1_metrics(
            candidates, X, Y, spec.weights, threshold=args.threshold, tiers=spec.tiers,
            gatekeepers=spec.gatekeepers, cv=args.cv, random_state=args.random_state,
        )
        chosen = clone(candidates[metrics["probe"]])
        fitted = FrozenEstimator(chosen.fit(X, Y, **sample_weight_params(chosen, sample_weight)))
    # A Filter runs no stage when fitted: Stage 2 is copied, never loaded.
    if stage2 is not None and not isinstance(stage2, FrozenEstimator):
        stage2 = FrozenEstimator(stage2)
    scorer = Filter.from_spec(spec, fitted, stage2, threshold=args.threshold).fit()
    try:
        # Built aside and published whole: a failed run leaves -o as it was, and
        # --force leaves nothing of the folder it replaces (no orphan model/).
        with atomic_folder(args.output, mode=_folder_mode(args.output), replace=args.force) as staging:
            save_filter(scorer, staging, spec, training_data=(X, Y), metrics=metrics, distillation=distillation)
    except FilterError as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(f"cannot write {args.output}: {error}") from None
    folder = Path(args.output)
    spec = FilterSpec.from_yaml(folder / "config.yaml")  # as saved (save_filter leaves its argument)
    print(f"saved filter {spec.qualified_name} to {folder}")
    print(f"probe {metrics['probe']} (chosen by {args.cv}-fold CV MAE)" if args.probe == "auto"
          else f"probe {metrics['probe']}")
    if stage2 is not None:
        print(f"stage2 {spec.hybrid_inference['stage2']['base_model']} with the adapter copied to "
              f"{folder / spec.hybrid_inference['stage2'].get('adapter', 'model')}")
    if distillation is not None:
        print(f"distilled from {distillation['n_teacher']} Stage 2 scores and {distillation['n_oracle']} "
              f"labels; {len(distillation['certify_lines'])} articles of {args.unlabelled} held out: "
              f"hybrid-estimators calibrate --filter {folder} --reference stage2 {args.unlabelled} "
              f"--teacher-scores {args.teacher_scores}")
    print_metrics(with_baselines(metrics))
    failed = failed_verdicts(folder, report=True)
    return strict_status(args, failed, f"the filter {folder}")


def with_baselines(metrics):
    """`metrics` for display: each number that has a ``*_baseline`` shown beside it.

    Tier accuracy beside the majority-class share, each MAE beside the
    mean's, so a number is never read without what a constant achieves.

    Examples
    --------
    >>> with_baselines({"cv_tier_accuracy": 0.968, "cv_tier_accuracy_baseline": 0.968, "cv_folds": 5})
    {'cv_tier_accuracy': '0.9680 (majority tier 0.9680)', 'cv_folds': 5}
    >>> with_baselines({"cv_mae_x": 2.031, "cv_mae_x_baseline": 2.002})
    {'cv_mae_x': '2.0310 (mean 2.0020: no better)'}
    """
    shown = {}
    for name, value in metrics.items():
        baseline = metrics.get(f"{name}_baseline")
        if name.endswith("_baseline") and name[: -len("_baseline")] in metrics:
            continue
        if not isinstance(value, float) or not isinstance(baseline, float):
            shown[name] = value
            continue
        if name == "cv_tier_accuracy":
            shown[name] = f"{value:.4f} (majority tier {baseline:.4f})"
        else:
            shown[name] = f"{value:.4f} (mean {baseline:.4f}{': no better' if value >= baseline else ''})"
    return shown


def add_parser(subparsers, parents=()):
    """Register ``train-probe`` on `subparsers`."""
    train = subparsers.add_parser(
        "train-probe", parents=parents, help="fit Stage 1 on a labelled folder, save a filter",
        formatter_class=HelpFormatter,
        description="Fit ArticleText + E5Embedder + a probe (ridge or MLP, chosen by "
        "cross-validation) on a labelled folder (articles.jsonl + filter.yaml) and save a "
        "filter folder; with --stage2 and --adapter, a complete two-stage filter.",
    )
    train.add_argument(
        "data", type=Path, nargs="?",
        help="labelled folder (articles.jsonl + filter.yaml); optional when distilling",
    )
    train.add_argument("-o", "--output", required=True, type=Path, help="filter folder to write")
    train.add_argument(
        "--force", action="store_true",
        help="replace an existing -o folder whole (its calibration and Stage 2 are lost)",
    )
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
        "--head-tail", type=nonnegative_int, nargs=2, metavar=("HEAD", "TAIL"),
        help="Stage 1 reads the first HEAD and last TAIL tokens (the embedding model's) of a "
        "longer article instead of its first --max-seq-length; e.g. --max-seq-length 128 "
        "--head-tail 60 59 (docs/token-budget.md)",
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
    teach = train.add_argument_group("distillation: Stage 2 as the teacher (optional)")
    teach.add_argument(
        "--teacher-scores", type=Path, metavar="T",
        help="`score --filter F --all-stage2 U -o T`: Stage 2's scores of the unlabelled articles",
    )
    teach.add_argument("--unlabelled", type=Path, metavar="U", help="JSONL of the unlabelled articles")
    teach.add_argument(
        "--filter", type=Path, metavar="F",
        help="the filter whose Stage 2 wrote T (its Stage 2 is kept in the new filter)",
    )
    teach.add_argument("--teacher-weight", type=float, default=1.0, help="sample weight of a Stage 2 score")
    teach.add_argument("--oracle-weight", type=float, default=1.0, help="sample weight of a label")
    teach.add_argument(
        "--certify-size", type=share, default=0.5,
        help="share of U held out (never trained on) for calibrate --reference stage2",
    )
    add_strict_option(train, "the filter")
    train.set_defaults(handler=_train_probe_command)
    return train
