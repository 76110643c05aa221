"""Several filters in one pass: Stage 1 time of three filters against one.

Filters that share an embedder (same model, prefix, token budget and
backend) embed each article once between them (``score --filter A --filter
B ...``, :func:`hybrid_estimators.scoring.score_lines_multi`). This measures,
side by side in one process, Stage 1 (the filters are loaded Stage-1-only)
of one filter and of three on the same articles. Every timed pass sees
texts no cache has seen (each pass marks its texts), and the machine's load
is recorded beside the result.

Usage::

    python -m benchmarks.multi_filter [--data ../shared/data/seece_energy_tech] [--repeats 2]
"""

import argparse
import json
import logging
import os
import time
from pathlib import Path

from hybrid_estimators._io import atomic_write
from hybrid_estimators.datasets import load_articles, shared_data_dir
from hybrid_estimators.filters import load_filter
from hybrid_estimators.scoring import read_chunks, score_lines_multi

logger = logging.getLogger("benchmarks.multi_filter")

ROOT = Path(__file__).resolve().parents[1]
FILTERS = ("seece_energy_tech/v1", "ai_engineering_practice/v1")
BATCH = 64


def _lines(X, marker):
    """JSONL lines of the articles, each title marked so that no cache has seen it."""
    rows = X[["title", "content"]].astype(object).to_dict("records")
    return [json.dumps({**row, "title": f"{row['title']} [{marker}]"}).encode() for row in rows]


def _time(scorers, lines):
    started = time.perf_counter()
    for chunk in read_chunks(lines, BATCH):
        score_lines_multi(scorers, chunk)
    return time.perf_counter() - started


def measure(X, repeats=2):
    """Stage 1 time of one filter, of three that share its embedder, and of the two shipped
    filters (each at its own token budget: they share the pass only at the same one), on the articles `X`."""
    def loaded(name):
        return load_filter(ROOT / "filters" / name, stage1_only=True)

    groups = {
        "one": {"seece_energy_tech/v1": loaded(FILTERS[0])},
        # copies of one filter: what three filters at one embedder, prefix and budget cost
        "three_sharing": {f"seece_energy_tech/v1 ({n})": loaded(FILTERS[0]) for n in ("a", "b", "c")},
        "shipped_pair": {name: loaded(name) for name in FILTERS},  # one pass when they share a budget
    }
    for group in groups.values():
        _time(group, _lines(X.head(16), "warm-up"))
    runs = [
        {name: _time(group, _lines(X, f"{name}-{repeat}")) for name, group in groups.items()}
        for repeat in range(repeats)
    ]
    best = {name: min(run[name] for run in runs) for name in groups}
    budgets = {name: _budget(scorer) for name, scorer in groups["shipped_pair"].items()}
    return {
        "n_articles": len(X),
        "filters": list(groups["three_sharing"]),
        "ms_per_article_one_filter": 1000 * best["one"] / len(X),
        "ms_per_article_three_filters": 1000 * best["three_sharing"] / len(X),
        "ratio_three_to_one": best["three_sharing"] / best["one"],
        "shipped_pair_budgets": budgets,
        "ms_per_article_shipped_pair": 1000 * best["shipped_pair"] / len(X),
        "ratio_shipped_pair_to_one": best["shipped_pair"] / best["one"],
        "runs": runs,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }


def _budget(scorer):
    hybrid = scorer.spec.hybrid_inference
    return {"max_seq_length": hybrid["max_seq_length"], "head_tail": hybrid["embedding_head_tail"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="labelled folder (default: seece)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes; the fastest counts")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "multi_filter.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    X, _, _ = load_articles(args.data or shared_data_dir() / "seece_energy_tech")
    result = measure(X, args.repeats)
    atomic_write(args.out, json.dumps(result, indent=2) + "\n")
    print(format_result(result))
    return 0


def format_result(result):
    budgets = result["shipped_pair_budgets"]
    pair = ", ".join(f"{name} at {budget}" for name, budget in budgets.items())
    passes = "one budget, one pass" if len({json.dumps(b) for b in budgets.values()}) == 1 else (
        "two budgets, two passes")
    return (
        f"Stage 1 of {result['n_articles']} articles (fastest of {len(result['runs'])}, load "
        f"{result['load_average'][0]:.1f} on {result['cpu_count']} CPUs)\n"
        f"  one filter                     {result['ms_per_article_one_filter']:7.1f} ms/article\n"
        f"  three sharing its embedder     {result['ms_per_article_three_filters']:7.1f} ms/article   "
        f"ratio {result['ratio_three_to_one']:.2f}x (target <= 1.3x)\n"
        f"  the two shipped filters        {result['ms_per_article_shipped_pair']:7.1f} ms/article   "
        f"ratio {result['ratio_shipped_pair_to_one']:.2f}x (target <= 1.2x; {pair}: {passes})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
