"""Stage 2 as the teacher on the shared data: distilled probe and a Stage-2-referenced threshold.

Reproduces the numbers of the issue "Learn from Stage 2 on unlabelled
traffic" for a shipped filter:

1. Stage 2's scores of every shared article (the filter's labelled folder
   plus ``unlabelled_news``), computed once and kept as a teacher file.
2. A seeded split of all articles into a training and a certification half
   (disjoint by text; duplicates stay together).
3. Two probes on the training half, same embedder, same folds: the oracle
   probe (oracle labels of the labelled articles only) and the distilled
   probe (oracle labels plus Stage 2's scores of the unlabelled articles).
4. On the certification half: the threshold certified against Stage 2
   (``reference="stage2"``) and, on its labelled articles, against the
   oracle, side by side; each probe's routing AUC against Stage 2's
   verdicts and against the oracle's.

Usage::

    python scripts/certify_against_stage2.py filters/seece_energy_tech/v1 \\
        --labelled ../shared/data/seece_energy_tech --unlabelled ../shared/data/unlabelled_news \\
        --out benchmarks/results/stage2_certification.json
"""

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import roc_auc_score

from hybrid_estimators._io import atomic_write
from hybrid_estimators.calibration import TunedThresholdRouterCV
from hybrid_estimators.datasets import load_articles
from hybrid_estimators.filters import Filter, load_filter
from hybrid_estimators.metrics import is_medium_plus
from hybrid_estimators.teacher import (
    disjoint_split,
    make_distillation_set,
    sample_weight_params,
    teacher_identity,
    teacher_scores,
)

logger = logging.getLogger("certify_against_stage2")


def _unlabelled(folder):
    rows = [json.loads(line) for line in (Path(folder) / "articles.jsonl").read_text().splitlines() if line.strip()]
    return pd.DataFrame(
        [{"id": r.get("id"), "title": r.get("title") or "", "content": r.get("content") or ""} for r in rows],
        dtype=object,
    )


def _teacher(filter_, articles, path):
    """Stage 2's scores, read from `path` when it was written for this filter and Stage 2."""
    identity = teacher_identity(filter_)
    if path.exists():
        stored = json.loads(path.read_text())
        if stored["identity"] == identity and stored["ids"] == articles["id"].tolist():
            logger.info("teacher scores from %s", path)
            return pd.DataFrame(stored["scores"], columns=filter_.dimension_names_)
    logger.info("running Stage 2 on %d articles", len(articles))
    scores = teacher_scores(filter_, articles).reset_index(drop=True)
    payload = {"identity": identity, "ids": articles["id"].tolist(), "scores": scores.to_numpy().tolist()}
    atomic_write(path, json.dumps(payload))
    return scores


def _stage2_medium_plus(filter_, scores):
    keep = scores.notna().all(axis=1).to_numpy()
    verdict = np.zeros(len(scores), dtype=bool)
    verdict[keep] = is_medium_plus(
        np.clip(scores.to_numpy()[keep], 0, 10), filter_.weights_, tiers=filter_.tiers_,
        gatekeepers=filter_.gatekeepers_,
    )
    return verdict, keep


def _probe_filter(filter_, X, Y, sample_weight=None):
    """The filter with its probe refitted on X, Y (same embedder, frozen Stage 2)."""
    stage1 = clone(filter_.stage1.estimator)
    params = {} if sample_weight is None else sample_weight_params(stage1, sample_weight)
    stage1.fit(X, Y, **params)
    return Filter.from_spec(filter_.spec, FrozenEstimator(stage1), filter_.stage2, metadata={}).fit()


def _certify(router, X, Y, reference, target, confidence):
    tuner = TunedThresholdRouterCV(
        router, target_recall=target, confidence=confidence, cv="prefit", reference=reference
    ).fit(X, Y)
    return {
        "reference": reference,
        "n": tuner.n_samples_,
        "n_medium_plus": tuner.n_medium_plus_,
        "threshold": tuner.best_threshold_,
        "recall_lower_bound": tuner.recall_lower_bound_,
        "skip_rate": tuner.expected_skip_rate_,
        "target_met": tuner.target_met_,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("filter", type=Path)
    parser.add_argument("--labelled", type=Path, required=True)
    parser.add_argument("--unlabelled", type=Path, required=True)
    parser.add_argument("--teacher-cache", type=Path, default=Path("/tmp/teacher_scores.json"))
    parser.add_argument("--embedding-cache", default=True)
    parser.add_argument("--teacher-weight", type=float, default=1.0)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stage2_certification.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    filter_ = load_filter(args.filter, cache=args.embedding_cache)
    X_lab, Y_lab, _ = load_articles(args.labelled)
    Y_lab = Y_lab[filter_.dimension_names_]
    X_lab = X_lab[["id", "title", "content"]].astype(object)
    X_unl = _unlabelled(args.unlabelled)
    articles = pd.concat([X_lab, X_unl], ignore_index=True)
    labelled = np.r_[np.ones(len(X_lab), bool), np.zeros(len(X_unl), bool)]
    teacher = _teacher(filter_, articles, args.teacher_cache)
    stage2_verdict, has_teacher = _stage2_medium_plus(filter_, teacher)

    train, certify = disjoint_split(articles, certify_size=0.5, random_state=args.random_state)
    train_lab = train[labelled[train]]
    train_unl = train[~labelled[train] & has_teacher[train]]
    oracle_probe = _probe_filter(filter_, articles.iloc[train_lab], Y_lab.iloc[train_lab])
    X_d, Y_d, weight, _ = make_distillation_set(
        articles.iloc[train_unl], teacher.iloc[train_unl], articles.iloc[train_lab], Y_lab.iloc[train_lab],
        teacher_weight=args.teacher_weight,
    )
    distilled_probe = _probe_filter(filter_, X_d, Y_d, sample_weight=weight)

    cert = certify[has_teacher[certify]]
    cert_lab = cert[labelled[cert]]
    oracle_verdict = is_medium_plus(Y_lab.to_numpy(), filter_.weights_, tiers=filter_.tiers_)
    results = {
        "filter": str(args.filter),
        "teacher": teacher_identity(filter_),
        "n_articles": len(articles),
        "n_labelled": int(labelled.sum()),
        "split": {"random_state": args.random_state, "n_train": len(train), "n_certify": len(certify)},
        "teacher_weight": args.teacher_weight,
        "target_recall": args.target_recall,
        "confidence": args.confidence,
        "probes": {},
    }
    for name, probe in (("oracle", oracle_probe), ("distilled", distilled_probe)):
        scores = probe.routing_scores(articles.iloc[cert])
        lab_scores = probe.routing_scores(articles.iloc[cert_lab])
        results["probes"][name] = {
            "routing_auc_vs_stage2": float(roc_auc_score(stage2_verdict[cert], scores)),
            "routing_auc_vs_oracle": float(roc_auc_score(oracle_verdict[cert_lab], lab_scores)),
            "certified_vs_stage2": _certify(
                probe, articles.iloc[cert], teacher.iloc[cert], "stage2", args.target_recall, args.confidence
            ),
            "certified_vs_oracle": _certify(
                probe, articles.iloc[cert_lab], Y_lab.iloc[cert_lab], "oracle", args.target_recall, args.confidence
            ),
        }
    atomic_write(args.out, json.dumps(results, indent=2) + "\n")
    for name, probe in results["probes"].items():
        for key in ("certified_vs_stage2", "certified_vs_oracle"):
            c = probe[key]
            logger.info(
                "%-9s %-19s n=%4d M+=%3d threshold %.2f bound %.3f skip %.3f | AUC vs Stage 2 %.3f, vs oracle %.3f",
                name, key, c["n"], c["n_medium_plus"], c["threshold"], c["recall_lower_bound"], c["skip_rate"],
                probe["routing_auc_vs_stage2"], probe["routing_auc_vs_oracle"],
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
