"""Stage 1 configurations measured for iso-quality on the same folds.

    python -m benchmarks.stage1_qualify embed --dataset NAME --configs torch:512 torch:128:60+59 ...
    python -m benchmarks.stage1_qualify budget --dataset NAME [--budgets 128 192 256 384 512]
    python -m benchmarks.stage1_qualify qualify --dataset NAME [--backends ...]
"""

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path(os.environ.get("STAGE1_QUALIFY_CACHE", "/tmp/stage1_qualify"))
logger = logging.getLogger("benchmarks.stage1_qualify")


def parse_config(text):
    """``"openvino-int8:128:60+59"`` -> ``{"backend", "max_seq_length", "head_tail"}``."""
    parts = text.split(":")
    backend, budget = parts[0], int(parts[1])
    head_tail = None
    if len(parts) > 2 and parts[2]:
        head, tail = parts[2].split("+")
        head_tail = [int(head), int(tail)]
    return {"backend": backend, "max_seq_length": budget, "head_tail": head_tail}


def config_name(config):
    head_tail = config.get("head_tail")
    suffix = "" if not head_tail else f":{head_tail[0]}+{head_tail[1]}"
    return f"{config['backend']}:{config['max_seq_length']}{suffix}"


def embed_configuration(X, config, *, dataset, cache_dir=DEFAULT_CACHE, model="intfloat/multilingual-e5-small",
                        prefix="passage: ", batch_size=16, fit_X=None):
    """Embeddings of every article of `X` at `config`, computed once and kept as ``.npy``."""
    path = Path(cache_dir) / dataset / (config_name(config).replace(":", "_") + ".npy")
    if path.exists():
        return np.load(path)
    from hybrid_estimators import ArticleText, E5Embedder

    texts_of = ArticleText(head_tail=config["head_tail"], tokenizer=model if config["head_tail"] else None)
    texts = list(texts_of.fit_transform(X)[:, 0])
    embedder = E5Embedder(model, prefix=prefix, backend=config["backend"], batch_size=batch_size,
                          max_seq_length=config["max_seq_length"], cache=False, show_progress_bar=False)
    embedder.fit(texts if fit_X is None else fit_X)
    start = time.perf_counter()
    embeddings = embedder.embed(texts)
    logger.info("%s %s: %.1f ms/article (shared machine: not a benchmark)", dataset, config_name(config),
                1000 * (time.perf_counter() - start) / len(texts))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, embeddings)
    return embeddings


def _load(dataset):
    from hybrid_estimators.datasets import load_articles, shared_data_dir

    folder = Path(dataset)
    if not (folder / "articles.jsonl").exists():
        folder = shared_data_dir() / dataset
    return folder.name, load_articles(folder)


def _embed_command(args):
    name, (X, _, _) = _load(args.dataset)
    for text in args.configs:
        embed_configuration(X, parse_config(text), dataset=name, cache_dir=args.cache_dir)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stage1_qualify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("embed", "budget", "qualify"))
    parser.add_argument("--dataset", default="seece_energy_tech")
    parser.add_argument("--configs", nargs="+", default=[])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    return parser.parse_args(argv)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    {"embed": _embed_command}[args.command](args)


if __name__ == "__main__":
    main()
