"""Re-create the shipped filters from the real labelled data.

    python scripts/make_filters.py [--data ../shared/data] [--only NAME]

For each data set (read from its folder, never copied): fit Stage 1
(ArticleText + offline multilingual-e5-small + make_probe) on every article,
choose its probe (the seed's MLP, :func:`make_probe`, or a ridge,
:func:`make_ridge_probe`) by 5-fold cross-validated weighted-average MAE and
record that quality, choose the routing threshold with
TunedThresholdRouterCV (MEDIUM+ recall >= 0.95 at 90% confidence), and write
``filters/{name}/v1``. Stage 2 of seece_energy_tech is the SmolLM2 LoRA
adapter that ``scripts/train_stage2_adapter.py`` writes to
``filters/seece_energy_tech/v1/model``; ai_engineering_practice ships
without one (Stage 1 only).
"""

import argparse
import logging
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from hybrid_estimators import ArticleText, E5Embedder, load_articles, make_probe, make_ridge_probe
from hybrid_estimators.calibration import TunedThresholdRouterCV
from hybrid_estimators.datasets import shared_data_dir
from hybrid_estimators.filters import FilterSpec, save_filter
from hybrid_estimators.models import SMOLLM2_GGUF, SMOLLM2_NAME
from hybrid_estimators.router import HybridRouterRegressor
from hybrid_estimators.tiers import medium_threshold, tier_of, weighted_average

logger = logging.getLogger("make_filters")
ROOT = Path(__file__).resolve().parents[1]
TARGET_RECALL, CONFIDENCE = 0.95, 0.9

DESCRIPTIONS = {
    "seece_energy_tech": "Sustainable energy and climate technology: how credible, "
    "deployable and impactful the reported technology is.",
    "ai_engineering_practice": "Engineering practice with AI: how concretely an article "
    "shows workflows, validation and lessons practitioners can reuse.",
}
# The adapter was trained on 128 + 128 tokens (scripts/train_stage2_adapter.py).
SEECE_STAGE2 = {
    "base_model": SMOLLM2_NAME,
    "gguf_file": SMOLLM2_GGUF,
    "adapter": "model",
    "head_tail": [128, 128],
    "max_length": 256,
}


PROBES = {"mlp": make_probe, "ridge": make_ridge_probe}


def stage1_pipeline(probe):
    return make_pipeline(ArticleText(), E5Embedder(show_progress_bar=False), PROBES[probe]())


def cv_metrics(X, Y, weights, tiers, probe):
    predicted = cross_val_predict(stage1_pipeline(probe), X, Y, cv=KFold(5, shuffle=True, random_state=0))
    truth = weighted_average(Y, weights)
    estimate = np.clip(weighted_average(predicted, weights), 0, 10)
    mae = float(np.abs(estimate - truth).mean())
    baseline = float(np.abs(truth - truth.mean()).mean())
    return {
        "probe": probe,
        "cv5_weighted_average_mae": mae,
        "cv5_mean_baseline_mae": baseline,
        "cv5_mae_ratio": mae / baseline,
        "cv5_dimension_mae": float(np.abs(predicted - Y.to_numpy()).mean()),
        "cv5_tier_accuracy": float((tier_of(estimate, tiers) == tier_of(truth, tiers)).mean()),
        "share_medium_plus": float((truth >= medium_threshold(tiers)).mean()),
    }


def make_filter(name, data_root, stage2_config):
    X, Y, data_spec = load_articles(data_root / name)
    weights, tiers = data_spec["dimensions"], data_spec["tiers"]
    candidates = [cv_metrics(X, Y, weights, tiers, probe) for probe in PROBES]
    for candidate in candidates:
        logger.info("%s: %s probe, CV MAE ratio %.3f", name, candidate["probe"], candidate["cv5_mae_ratio"])
    metrics = min(candidates, key=lambda candidate: candidate["cv5_weighted_average_mae"])
    stage1 = stage1_pipeline(metrics["probe"])
    # Stage 2 never runs while calibrating (only out-of-fold Stage 1 scores
    # are used); a Stage-1 copy stands in where no adapter ships.
    router = HybridRouterRegressor(stage1, clone(stage1), weights, tiers=tiers)
    tuner = TunedThresholdRouterCV(router, target_recall=TARGET_RECALL, confidence=CONFIDENCE, cv=5).fit(X, Y)
    metrics.update(
        threshold=float(tuner.threshold_),
        recall_lower_bound=float(tuner.recall_lower_bound_),
        expected_skip_rate=float(tuner.expected_skip_rate_),
        n_medium_plus=int(tuner.n_medium_plus_),
    )
    spec = FilterSpec.from_dict(
        {
            "name": name,
            "version": "v1",
            "description": DESCRIPTIONS[name],
            "dimensions": weights,
            "tiers": tiers,
            "prefilter": {"min_length": 20},
            "hybrid_inference": {
                "target_recall": TARGET_RECALL,
                "confidence": CONFIDENCE,
                "stage2": stage2_config,
            },
        }
    )
    folder = save_filter(tuner.best_estimator_, ROOT / "filters" / name / "v1", spec, training_data=(X, Y), metrics=metrics)
    logger.info("%s: %s", folder, {k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()})
    return metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=shared_data_dir())
    parser.add_argument("--only", choices=sorted(DESCRIPTIONS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.data is None:
        parser.error("no labelled data: pass --data or put ../shared/data beside the checkout")
    for name in [args.only] if args.only else sorted(DESCRIPTIONS):
        stage2 = SEECE_STAGE2 if name == "seece_energy_tech" else None
        make_filter(name, args.data, stage2)


if __name__ == "__main__":
    main()
