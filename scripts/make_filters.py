"""Re-create the shipped filters from the real labelled data, with their evidence.

    python scripts/make_filters.py [--data ../shared/data] [--only NAME] [--embedding-cache DIR]
    python scripts/make_filters.py --evaluate seece_energy_tech [--stage2-split ...]
    python scripts/make_filters.py --install-stage2 seece_energy_tech ADAPTER_DIR --stage2-weight 0.5

For each data set (read from its folder, never copied): choose Stage 1's
probe (the ridge, :func:`make_ridge_probe`, or the seed's MLP,
:func:`make_probe`, on the offline multilingual-e5-small embeddings) by the
lower 5-fold cross-validated weighted-average MAE on the same folds; choose
the routing threshold with TunedThresholdRouterCV (MEDIUM+ recall >= 0.95 at
90% confidence); record Stage 1's cross-validated metrics at that threshold
(:func:`~hybrid_estimators.metrics.cross_validated_stage1_metrics`, the one
schema every filter uses) and the calibration; refit on every article and
write ``filters/{name}/v1``. Then evaluate it (:func:`cascade_report` with
Stage 1's out-of-fold predictions, so Stage 1 is never scored on articles it
was trained on) and record the report in its metadata and model card.

A filter's Stage 2 section (and ``stage2_weight``) is kept from its existing
``config.yaml`` (its adapter stays in ``model/``); a new seece_energy_tech
filter gets the section of the Stage 2 chosen by
``scripts/stage2_candidates.py`` (Qwen2.5-Coder-0.5B, frozen, a ridge head
on the mean-pooled hidden states of layers 6, 12, 18 and 24 of the first
128 and last 128 tokens, the budget ``scripts/stage2_configurations.py``
found at iso-quality with 256 + 256, blended half and half with Stage 1).
``--install-stage2 NAME DIR`` puts an adapter
folder written by ``scripts/train_stage2.py`` in the filter (its
``stage2.json`` gives the config section) with ``--stage2-weight``.
``--evaluate NAME`` only re-runs and records the evaluation, e.g. after its
Stage 2 was replaced; ``--stage2-split`` says how that Stage 2 relates to
these articles: ``out_of_fold`` with ``--stage2-oof NPZ`` (the recipe's
out-of-fold predictions on the same folds as Stage 1, written by
``scripts/stage2_candidates.py --save-oof``), or a
``train_test_split(test_size=0.2, random_state=0)`` of them, as
the earlier LoRA recipe split them (partly in sample, and the
held-back articles are evaluated on their own too).

Embedding 642 articles with e5-small takes minutes on a busy CPU: pass
``--embedding-cache DIR`` so that reruns reuse the embeddings.
"""

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from hybrid_estimators import load_articles, make_probe, make_ridge_probe
from hybrid_estimators.calibration import TunedThresholdRouterCV
from hybrid_estimators.datasets import shared_data_dir
from hybrid_estimators.evaluation import cascade_report
from hybrid_estimators.filters import (
    FilterError,
    FilterSpec,
    calibration_record,
    data_hash,
    load_filter,
    record_evaluation,
    report_summary,
    save_filter,
    stage1_pipeline,
)
from hybrid_estimators.metrics import cross_validated_stage1_metrics
from hybrid_estimators import filters
from hybrid_estimators._io import atomic_folder
from hybrid_estimators.models import QWEN25_CODER_GGUF, QWEN25_CODER_NAME
from hybrid_estimators.router import HybridRouterRegressor

logger = logging.getLogger("make_filters")
ROOT = Path(__file__).resolve().parents[1]
TARGET_RECALL, CONFIDENCE = 0.95, 0.9
CV_FOLDS, SEED = 5, 0

DESCRIPTIONS = {
    "seece_energy_tech": "Sustainable energy and climate technology: how credible, "
    "deployable and impactful the reported technology is.",
    "ai_engineering_practice": "Engineering practice with AI: how concretely an article "
    "shows workflows, validation and lessons practitioners can reuse.",
}
# For a new seece_energy_tech folder: the recipe scripts/train_stage2.py trains.
DEFAULT_STAGE2 = {
    "seece_energy_tech": {
        "base_model": QWEN25_CODER_NAME,
        "gguf_file": QWEN25_CODER_GGUF,
        "adapter": "model",
        "head_tail": [128, 128],  # iso-quality with 256 + 256: scripts/stage2_configurations.py
        "max_length": 256,
        "pooling": "mean",
        "layers": [6, 12, 18, 24],
    },
}
DEFAULT_STAGE2_WEIGHT = {"seece_energy_tech": 0.5}
# Stage 1's token budget (max_seq_length, [head, tail] in e5 tokens): the
# smallest that both filters hold at, so that `score --filter A --filter B`
# embeds each article once. "Holds" is repeated CV (5 folds x 5 seeds, the
# same folds for every budget): the upper 90% bound of the weighted-average
# MAE difference to 512 tokens within +1% (seece from 192 tokens on,
# ai_engineering_practice from 256); `python -m benchmarks.stage1_qualify
# budget`, benchmarks/results/stage1_budget_cv_*.json, docs/token-budget.md.
STAGE1_BUDGET = {
    "seece_energy_tech": (256, [124, 123]),
    "ai_engineering_practice": (256, [124, 123]),
}
PROBES = {"ridge": make_ridge_probe, "mlp": make_probe}


def filter_folder(name):
    return ROOT / "filters" / name / "v1"


def stage1_candidate(spec, probe, cache):
    """Stage 1 at the spec's embedding model, prefix and token budget, with the probe named `probe`."""
    return stage1_pipeline(
        spec, PROBES[probe](), cache=True if cache is None else str(cache), show_progress_bar=False
    )


def candidates(spec, cache, kinds=tuple(PROBES)):
    return {kind: stage1_candidate(spec, kind, cache) for kind in kinds}


def existing_stage2(name):
    """The Stage 2 section and weight of the filter's current config (kept), else the defaults."""
    config = filter_folder(name) / "config.yaml"
    if config.exists():
        try:
            hybrid = FilterSpec.from_yaml(config).hybrid_inference
            return hybrid["stage2"], hybrid["stage2_weight"]
        except FilterError as error:
            logger.warning("%s: cannot keep its Stage 2 section: %s", config, error)
    return DEFAULT_STAGE2.get(name), DEFAULT_STAGE2_WEIGHT.get(name, 1.0)


def install_stage2(name, adapter, stage2_weight):
    """Put an adapter folder of scripts/train_stage2.py in the filter, with its config section."""
    adapter = Path(adapter)
    trained = json.loads((adapter / "stage2.json").read_text())
    params = trained["params"]
    folder = filter_folder(name)
    spec = FilterSpec.from_yaml(folder / "config.yaml")
    section = {
        "base_model": trained["base_model"],
        "gguf_file": trained.get("gguf_file"),
        "adapter": "model",
        "head_tail": params["head_tail"],
        "max_length": params["max_length"],
        "pooling": params["pooling"],
        "layers": params["layers"],
    }
    with atomic_folder(folder / "model", replace=True) as staging:
        for path in sorted(adapter.iterdir()):
            if path.name != "stage2.json":
                shutil.copyfile(path, staging / path.name)
        provenance = {key: trained[key] for key in ("base_model", "params", "data", "n_articles",
                                                    "dimensions", "fit_seconds", "head_layout")}
        provenance["data"] = Path(provenance["data"]).name  # not this machine's path
        (staging / "training.json").write_text(json.dumps(provenance, indent=2) + "\n")
    spec.hybrid_inference.update(stage2=filters._stage2_section(section, "stage2"), stage2_weight=stage2_weight)
    filters._write_config(folder, spec)
    logger.info("%s: Stage 2 from %s installed, stage2_weight %g; re-run --evaluate", folder, adapter, stage2_weight)


def filter_spec(name, data_spec):
    stage2, stage2_weight = existing_stage2(name)
    max_seq_length, head_tail = STAGE1_BUDGET[name]
    return FilterSpec.from_dict(
        {
            "name": name,
            "version": "v1",
            "description": DESCRIPTIONS[name],
            "dimensions": data_spec["dimensions"],
            "tiers": data_spec["tiers"],
            "prefilter": {"min_length": 20},
            "hybrid_inference": {
                "max_seq_length": max_seq_length,
                "embedding_head_tail": head_tail,
                "target_recall": TARGET_RECALL,
                "confidence": CONFIDENCE,
                "stage2": stage2,
                "stage2_weight": stage2_weight,
            },
        }
    )


def stage1_cv(spec, X, Y, cache, threshold, kinds=tuple(PROBES), cv=CV_FOLDS, random_state=SEED):
    """Stage 1's metrics and out-of-fold predictions (the candidates on the same folds)."""
    return cross_validated_stage1_metrics(
        candidates(spec, cache, kinds), X, Y, spec.weights, threshold=threshold, tiers=spec.tiers,
        gatekeepers=spec.gatekeepers, cv=cv, random_state=random_state, return_predictions=True,
    )


def make_filter(name, data_root, cache):
    """Fit, calibrate and save one filter; returns its metrics and out-of-fold predictions."""
    X, Y, data_spec = load_articles(data_root / name)
    spec = filter_spec(name, data_spec)
    Y = Y[spec.dimension_names]
    chosen, _ = stage1_cv(spec, X, Y, cache, spec.hybrid_inference["threshold"])
    logger.info("%s: probe %s chosen (%s)", name, chosen["probe"], _candidate_maes(chosen))
    router = HybridRouterRegressor(
        stage1_candidate(spec, chosen["probe"], cache), None, spec.weights,
        gatekeepers=spec.gatekeepers or None, tiers=spec.tiers,
    )
    tuner = TunedThresholdRouterCV(
        router, target_recall=TARGET_RECALL, confidence=CONFIDENCE, cv=CV_FOLDS, random_state=SEED
    ).fit(X, Y)
    metrics, oof = stage1_cv(spec, X, Y, cache, tuner.threshold_)
    if metrics["probe"] != chosen["probe"]:
        raise RuntimeError(f"{name}: the probe chosen changed between two identical CV runs")
    folder = save_filter(
        tuner.best_estimator_, filter_folder(name), spec, training_data=(X, Y), metrics=metrics,
        calibration=calibration_record(tuner),
    )
    logger.info("%s: %s", folder, {k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()})
    return np.asarray(oof)[np.newaxis]


def _candidate_maes(metrics):
    prefix = "cv_mae_weighted_average_"
    return ", ".join(
        f"{key[len(prefix):]} {value:.3f}" for key, value in metrics.items()
        if key.startswith(prefix) and key != prefix + "baseline"
    )


def stage2_oof(args, X, dimension_names):
    """Stage 2's out-of-fold predictions from --stage2-oof (one set per seed), checked."""
    saved = np.load(args.stage2_oof)
    if list(saved["ids"]) != list(X["id"].astype(str)) or list(saved["dimensions"]) != list(dimension_names):
        raise SystemExit(f"{args.stage2_oof}: its articles or dimensions are not these")
    return saved["predictions"], [int(seed) for seed in saved["seeds"]], int(saved["folds"]), str(saved["description"])


def stage2_seconds(scorer, X, n_articles):
    """Stage 2's seconds per article on the first `n_articles` (after one untimed article)."""
    scorer.stage2_.predict(X.iloc[:1])
    began = time.perf_counter()
    scorer.stage2_.predict(X.iloc[1:1 + n_articles])
    return (time.perf_counter() - began) / n_articles


def stage2_split(args, X, has_stage2):
    """How Stage 2 relates to these articles: the split's kind, words and held-back rows."""
    if not has_stage2:
        return "none", "The filter has no Stage 2.", None
    if args.stage2_split == "out_of_fold":
        return "out_of_fold", "Stage 2: its recipe's out-of-fold predictions on the same folds.", None
    if args.stage2_split == "none":
        return "held_out", "Stage 2 was trained on none of these articles.", None
    if args.stage2_split == "all":
        return "in_sample", "Stage 2 was trained on all of these articles: its numbers are in sample.", None
    how = f"train_test_split(test_size={args.stage2_test_size}, random_state={args.stage2_seed})"
    _, held_back = train_test_split(
        list(range(len(X))), test_size=args.stage2_test_size, random_state=args.stage2_seed
    )
    words = (
        f"Stage 2 (the adapter in the filter) was trained on {len(X) - len(held_back)} of these "
        f"{len(X)} articles ({how}, as scripts/train_stage2_adapter.py splits them): its numbers "
        f"are partly in sample and favour it; the {len(held_back)} articles it never saw are "
        "reported on their own (held_out)."
    )
    return "partly_in_sample", words, sorted(held_back)


def evaluate(name, data_root, cache, args, oof=None):
    """Measure Stage 1 vs Stage 2 vs the hybrid, record it in the filter (metadata, card)."""
    folder = filter_folder(name)
    X, Y, _ = load_articles(data_root / name)
    scorer = load_filter(folder)
    Y = Y[scorer.spec.dimension_names]
    metrics = scorer.metadata["metrics"]
    folds, seeds = metrics["cv_folds"], [metrics["cv_random_state"]]
    kind, stage2_words, held_back = stage2_split(args, X, scorer.stage2_ is not None)
    options = dict(n_bootstraps=args.n_bootstraps, confidence=CONFIDENCE, random_state=SEED)
    if kind == "out_of_fold":  # both stages out of fold, on the same folds, for each seed
        oof2, seeds, folds, stage2_words = stage2_oof(args, X, scorer.spec.dimension_names)
        stage2_words = f"Stage 2: {stage2_words}."
        options["stage2_predictions"] = oof2
        options["seconds_per_article"] = {"stage2": stage2_seconds(scorer, X, args.timing_articles)}
        oof = None
    if oof is None:
        oof = np.stack([
            stage1_cv(scorer.spec, X, Y, cache, scorer.threshold, kinds=(metrics["probe"],),
                      cv=folds, random_state=seed)[1]
            for seed in seeds
        ])
    report = cascade_report(scorer, X, Y, stage1_predictions=oof, **options)
    states = f"random_state {seeds[0]}" if len(seeds) == 1 else (
        f"repeated for random_state {seeds}, every metric pooled over the repetitions")
    split = {
        "description": (
            f"Stage 1: {folds}-fold out-of-fold predictions (shuffled KFold, {states}), the "
            f"probe refitted without each article, as in the metrics. {stage2_words}"
        ),
        "n_articles": len(X),
        "data_sha256": data_hash(X, Y),
        "stage1": "out_of_fold",
        "stage2": kind,
        "cv_folds": folds,
        "cv_random_states": seeds,
    }
    if held_back is not None:
        rows = X.iloc[held_back]
        held = cascade_report(scorer, rows, Y.iloc[held_back], stage1_predictions=oof[:, held_back], **options)
        split["held_out"] = {
            "description": f"the {len(held_back)} articles Stage 2 was not trained on; Stage 1 "
            "out of fold",
            **report_summary(held),
        }
    record_evaluation(folder, report, split)
    logger.info("%s: %s", folder, report_summary(report))
    return report


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=shared_data_dir())
    parser.add_argument("--only", choices=sorted(DESCRIPTIONS), help="re-create only this filter")
    parser.add_argument(
        "--evaluate", choices=sorted(DESCRIPTIONS), metavar="NAME",
        help="only re-run and record the evaluation of this filter (e.g. after a Stage 2 swap)",
    )
    parser.add_argument("--embedding-cache", type=Path, metavar="DIR", help="persistent embedding cache")
    parser.add_argument("--n-bootstraps", type=int, default=1000, help="resamples of the evaluation")
    parser.add_argument(
        "--stage2-split", choices=("out_of_fold", "train_test_split", "none", "all"),
        default="train_test_split",
        help="how Stage 2's scores relate to the articles: out of fold (--stage2-oof), a "
        "train_test_split of them (as the earlier LoRA recipe), none, or all",
    )
    parser.add_argument("--stage2-oof", type=Path, metavar="NPZ",
                        help="Stage 2's out-of-fold predictions (scripts/stage2_candidates.py --save-oof)")
    parser.add_argument("--timing-articles", type=int, default=8,
                        help="with --stage2-oof: articles Stage 2 is timed on")
    parser.add_argument("--install-stage2", nargs=2, metavar=("NAME", "ADAPTER_DIR"),
                        help="put the adapter folder written by scripts/train_stage2.py in filter NAME")
    parser.add_argument("--stage2-weight", type=float, default=1.0,
                        help="with --install-stage2: the filter's stage2_weight")
    parser.add_argument("--stage2-test-size", type=float, default=0.2)
    parser.add_argument("--stage2-seed", type=int, default=0)
    args = parser.parse_args()
    if args.stage2_split == "out_of_fold" and args.stage2_oof is None:
        parser.error("--stage2-split out_of_fold needs --stage2-oof NPZ")
    if args.data is None:
        parser.error("no labelled data: pass --data or put ../shared/data beside the checkout")
    return args


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.install_stage2:
        install_stage2(*args.install_stage2, args.stage2_weight)
        return
    if args.evaluate:
        evaluate(args.evaluate, args.data, args.embedding_cache, args)
        return
    for name in [args.only] if args.only else sorted(DESCRIPTIONS):
        oof = make_filter(name, args.data, args.embedding_cache)
        evaluate(name, args.data, args.embedding_cache, args, oof=oof)


if __name__ == "__main__":
    main()
