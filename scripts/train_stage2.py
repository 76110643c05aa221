"""Train the Stage 2 recipe chosen by ``scripts/stage2_candidates.py`` on all articles.

A frozen base read by :class:`~hybrid_estimators.qwen.QwenRegressor` with
``max_epochs=0``: the head is a ridge regression on the pooled hidden
states (`--pooling`, `--layers`) of every labelled article, the LoRA
matrices stay zero. The adapter folder (peft's files plus
``qwen_regressor.json``) is written to ``OUT``; the base is named in it by
its portable name (``resolve_stage2_base`` finds the offline file), and
``stage2.json`` beside it records the constructor call, the data and the
time taken. The script reloads the folder and checks that it predicts as
the fitted estimator.

Run (in the background: one forward pass per article on a CPU)::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/train_stage2.py \\
        /work/scratch/stage2_winner --base qwen25-coder --pooling mean --layers 6 12 18 24
"""

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from hybrid_estimators import models
from hybrid_estimators.datasets import load_articles, shared_data_dir
from hybrid_estimators.qwen import QwenRegressor

logger = logging.getLogger("train_stage2")
BASES = {
    "smollm2": (models.SMOLLM2_NAME, models.SMOLLM2_GGUF, "SMOLLM2_NAME", "SMOLLM2_GGUF"),
    "qwen25-coder": (
        models.QWEN25_CODER_NAME,
        models.QWEN25_CODER_GGUF,
        "QWEN25_CODER_NAME",
        "QWEN25_CODER_GGUF",
    ),
}


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    parser.add_argument("out", type=Path, help="adapter folder to write")
    parser.add_argument("--data", type=Path, default=None, help="labelled folder (default: shared seece_energy_tech)")
    parser.add_argument("--base", choices=sorted(BASES), default="smollm2")
    parser.add_argument("--pooling", choices=["last", "mean", "last+mean"], default="mean")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="hidden-state indices (default: the last layer)")
    parser.add_argument("--head-tail", type=int, nargs=2, default=(256, 256))
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    return parser.parse_args()


def portable_names(adapter, folder, name):
    """Name the base by its hub name in peft's files, not this machine's folder."""
    for file in ("adapter_config.json", "README.md"):
        path = Path(adapter) / file
        if path.exists():
            path.write_text(path.read_text().replace(folder, name))


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    data = args.data or shared_data_dir() / "seece_energy_tech"
    X, Y, spec = load_articles(data)
    name, gguf_file, name_constant, gguf_constant = BASES[args.base]
    folder = models.resolve_stage2_base(name, gguf_file)
    layers = None if args.layers is None else (args.layers[0] if len(args.layers) == 1 else list(args.layers))
    params = {
        "gguf_file": gguf_file,
        "head_tail": tuple(args.head_tail),
        "max_length": args.max_length,
        "pooling": args.pooling,
        "layers": layers,
        "max_epochs": 0,
        "batch_size": args.batch_size,
    }
    logger.info("%d articles; QwenRegressor(%r, %s)", len(X), name, params)
    began = time.perf_counter()
    model = QwenRegressor(folder, show_progress_bar=False, **params).fit(X, Y)
    fit_seconds = time.perf_counter() - began
    out = model.save_adapter(args.out)
    portable_names(out, folder, name)

    sample = X.iloc[:8]
    reloaded = QwenRegressor(folder, adapter=out, show_progress_bar=False, **params).predict(sample)
    difference = float(np.abs(reloaded - model.predict(sample)).max())
    if difference > 1e-4:
        raise RuntimeError(f"the saved adapter predicts differently (max |diff| {difference:.2e})")
    call = (
        f"QwenRegressor(resolve_stage2_base(models.{name_constant}, models.{gguf_constant}), "
        f"gguf_file=models.{gguf_constant}, adapter={str(out)!r}, "
        f"head_tail={tuple(args.head_tail)}, max_length={args.max_length}, "
        f"pooling={args.pooling!r}, layers={layers!r})"
    )
    record = {
        "base_model": name,
        "gguf_file": gguf_file,
        "params": {**params, "head_tail": list(args.head_tail)},
        "constructor": call,
        "head_layout": model.head_layout_,
        "data": str(data),
        "n_articles": len(X),
        "dimensions": list(Y.columns),
        "fit_seconds": round(fit_seconds, 1),
        "fit_seconds_per_article": round(fit_seconds / len(X), 3),
        "reload_max_abs_diff": difference,
    }
    (out / "stage2.json").write_text(json.dumps(record, indent=2) + "\n")
    logger.info("wrote %s in %.0f s (reload max |diff| %.1e)", out, fit_seconds, difference)
    print(call)


if __name__ == "__main__":
    main()
