"""Store the shipped filters' score maps: per-stage calibration and normalisation tables.

    python scripts/make_score_maps.py [--data ../shared/data] [--embedding-cache DIR] \
        [--stage1-oof-dir DIR] [--distribution-weight 0.5]

For each shipped filter (probe, threshold and evaluation record unchanged):

* **Calibration**, only where ``benchmarks/results/calibration_evidence.json``
  says it qualifies (its MAE not worse beyond the paired interval):
  ``seece_energy_tech`` gets one :class:`IsotonicCalibrator` per stage,
  fitted on *out-of-fold* predictions with the folds of its evaluation
  (``KFold(cv_folds, shuffle=True, random_state=seed)``, seeds 0, 1, 2,
  the three repetitions pooled): Stage 1's map on the probe refitted
  without each fold (as ``scripts/calibration_evidence.py`` makes them),
  Stage 2's map on the routed rows' output, the recipe's out-of-fold
  Stage 2 predictions (``benchmarks/results/seece_stage2_oof.npz``)
  blended with Stage 1 by ``stage2_weight`` as the router blends them.
  ``ai_engineering_practice`` gets none: calibration makes its MAE worse.
* **Normalisation** of every filter: its Stage 1 weighted average (its
  calibration applied) on the reference traffic
  ``../shared/data/unlabelled_news/articles.jsonl``, as ``hybrid-estimators
  normalise`` fits it (Stage 1 because that is what every article gets, and
  Stage 2 is not run on thousands of articles to build a scale), the
  traffic's size and sha256 recorded.

The evidence (MAE, std ratio, KS, tier accuracy, HIGH recall, 90th
percentile, with and without the maps, with paired intervals) is copied
into each filter's metadata (``score_maps.evidence``), shown by ``info``
and the model card.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from calibration_evidence import stage1_oof, stage2_oof  # the evidence's own out-of-fold predictions
from hybrid_estimators import load_articles
from hybrid_estimators.cli._common import read_article_lines
from hybrid_estimators.cli.normalise import normalisation_table
from hybrid_estimators.filters import load_filter, record_score_maps
from hybrid_estimators.isotonic_calibrator import IsotonicCalibrator
from hybrid_estimators.models import file_sha256
from hybrid_estimators.percentile_normalizer import PercentileNormalizer
from hybrid_estimators.tiers import SCORE_MAX, SCORE_MIN

logger = logging.getLogger("make_score_maps")
ROOT = Path(__file__).resolve().parents[1]
EVIDENCE = ROOT / "benchmarks" / "results" / "calibration_evidence.json"
METRICS = ("mae", "std_ratio", "ks", "tier_accuracy", "high_recall", "p90")
#: distribution_weight -> the evidence's system-name suffix.
SUFFIXES = {0.0: "", 0.5: "_half_quantile", 1.0: "_quantile_map"}


def comparison(evidence, calibrated, uncalibrated):
    """One calibrated system against its uncalibrated one: each metric's [mean, low, high]."""
    systems = evidence["systems"]
    return {
        "system": calibrated,
        "baseline": uncalibrated,
        "without": {m: systems[uncalibrated][m] for m in METRICS},
        "with": {m: systems[calibrated][m] for m in METRICS},
        "difference": {m: evidence["calibrated_minus_uncalibrated"][calibrated][m] for m in METRICS},
        "verdict": evidence["verdicts"][calibrated],
    }


def evidence_record(name, distribution_weight, applied):
    """What the metadata keeps of the measured evidence for this filter."""
    document = json.loads(EVIDENCE.read_text())
    evidence = document["filters"][name]
    suffix = SUFFIXES[distribution_weight]
    record = {
        "source": str(EVIDENCE.relative_to(ROOT)),
        "data_sha256": evidence["data_sha256"],
        "folds": evidence["folds"],
        "seeds": evidence["seeds"],
        "confidence": document["confidence"],
        "n_bootstraps": document["n_bootstraps"],
        "oracle": evidence["oracle"],
        "calibration_applied": applied,
        "distribution_weight": distribution_weight,
        "stage1": comparison(evidence, f"stage1_calibrated{suffix}", "stage1"),
    }
    if "hybrid" in evidence["systems"]:
        record["cascade"] = comparison(evidence, f"hybrid_calibrated{suffix}_per_stage", "hybrid")
    return record


def out_of_fold_calibrators(name, folder, data, args):
    """Stage 1's and Stage 2's calibrators, fitted on the pooled out-of-fold predictions."""
    filter_ = load_filter(folder, stage1_only=True)
    X, Y, _ = load_articles(data / name)
    Y = Y[filter_.spec.dimension_names]
    folds = int(filter_.metadata["metrics"]["cv_folds"])
    stage1 = np.clip(stage1_oof(filter_, X, Y, folds, args.embedding_cache, args.stage1_oof_dir),
                     SCORE_MIN, SCORE_MAX)
    stage2, _ = stage2_oof(name, X, filter_.spec.dimension_names, folds)
    if stage2 is None:
        raise SystemExit(f"{name}: no Stage 2 out-of-fold predictions recorded (calibration_evidence.STAGE2_OOF)")
    width = len(filter_.spec.dimension_names)
    truth = np.tile(Y.to_numpy(dtype=float), (stage1.shape[0], 1))
    weight = float(filter_.spec.hybrid_inference["stage2_weight"])
    blended = np.clip(weight * stage2 + (1 - weight) * stage1, SCORE_MIN, SCORE_MAX)
    fitted = [
        IsotonicCalibrator(distribution_weight=args.distribution_weight).fit(scores.reshape(-1, width), truth)
        for scores in (stage1, blended)
    ]
    logger.info("%s: calibrators fitted on %d out-of-fold rows per stage", name, truth.shape[0])
    return fitted


def normaliser_of(folder, traffic_path, cache):
    """The filter's (calibrated) Stage 1 percentile scale on the traffic, and the traffic's record."""
    filter_ = load_filter(folder, stage1_only=True, cache=cache)
    articles, _, n_lines = read_article_lines(traffic_path)
    traffic = {"file": traffic_path.name, "sha256": file_sha256(traffic_path), "n_lines": n_lines}
    table, averages = normalisation_table(filter_, articles, stage="stage1", max_breakpoints=1001, traffic=traffic)
    logger.info("%s: weighted average 10/50/90th percentiles on the traffic %s", folder,
                np.round(np.percentile(averages, [10, 50, 90]), 3))
    record = {**table["traffic"], "scores": table["scores"], "meaning": table["meaning"],
              "calibrated": filter_.stage1_calibrator is not None}
    return PercentileNormalizer.from_table(table["normaliser"]), record


def make(name, args):
    folder = Path("filters") / name / "v1"  # relative (run from the root): the card shows this path
    document = json.loads(EVIDENCE.read_text())["filters"][name]
    suffix = SUFFIXES[args.distribution_weight]
    systems = ("hybrid" if "hybrid" in document["systems"] else "stage1")
    key = f"hybrid_calibrated{suffix}_per_stage" if systems == "hybrid" else f"stage1_calibrated{suffix}"
    qualifies = bool(document["verdicts"][key]["qualifies"])
    calibrators = {}
    if qualifies:
        stage1, stage2 = out_of_fold_calibrators(name, folder, args.data, args)
        calibrators = {"stage1_calibrator": stage1, "stage2_calibrator": stage2}
    # a calibration not applied is shown by its best-placed form, the isotonic map alone
    evidence = evidence_record(name, args.distribution_weight if qualifies else 0.0, qualifies)
    record_score_maps(folder, **calibrators, evidence=evidence)  # the scale is fitted on calibrated scores
    normaliser, traffic = normaliser_of(folder, args.traffic, args.embedding_cache or True)
    record_score_maps(folder, **calibrators, normaliser=normaliser, traffic=traffic, evidence=evidence)
    logger.info("%s: calibration %s, normalisation on %d articles", name,
                "applied" if qualifies else "not applied (does not qualify)", traffic["n_scored"])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")  # made absolute below
    parser.add_argument("--traffic", type=Path, default=None,
                        help="reference traffic (default: DATA/unlabelled_news/articles.jsonl)")
    parser.add_argument("--embedding-cache", type=Path, default=None)
    parser.add_argument("--stage1-oof-dir", type=Path, default=None)
    parser.add_argument("--distribution-weight", type=float, default=0.5, choices=sorted(SUFFIXES))
    parser.add_argument("--only", choices=("seece_energy_tech", "ai_engineering_practice"))
    args = parser.parse_args()
    args.data = args.data.resolve()
    if args.traffic is None:
        args.traffic = args.data / "unlabelled_news" / "articles.jsonl"
    args.traffic = args.traffic.resolve()
    if args.embedding_cache is not None:
        args.embedding_cache = str(args.embedding_cache.resolve())
    if args.stage1_oof_dir is not None:
        args.stage1_oof_dir = args.stage1_oof_dir.resolve()
    return args


def main():
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    args = parse_args()
    os.chdir(ROOT)
    for name in ([args.only] if args.only else ["seece_energy_tech", "ai_engineering_practice"]):
        make(name, args)


if __name__ == "__main__":
    main()
