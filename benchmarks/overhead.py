"""The filter's own cost per call: ``Filter.predict`` on one short article beyond Stage 1's.

What a long scoring run pays on every call besides the stages: the
prefilter, the router's caches (row keys, the fitted stages' fingerprints),
routing and reporting. It loads the filter Stage-1-only and times
``filter.predict`` on one short article per call, and inside that call
Stage 1's own ``predict`` (its pipeline's); every article is new (its title
marked), so no cache of the filter or of the embedder has seen it and Stage
1 runs in full. The overhead of a call is the difference of the two, timed
in the same call, so that the load of a shared machine (which moves Stage
1's time by seconds) does not enter it; the table gives medians over many
calls, in wall-clock time and in CPU time of the process (which the other
programs of a loaded machine inflate less). It also times
``filter.predict`` on an article it has scored already (served by the
router's prediction cache: the fixed cost alone).

Usage::

    python -m benchmarks.overhead [--filter filters/seece_energy_tech/v1] [--calls 100]
    python -m benchmarks --parts overhead

Run the same script against another checkout's package (for a before/after
comparison in one time window) with ``PYTHONPATH=/path/to/checkout python
benchmarks/overhead.py --out /tmp/before.json``.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script against another checkout's package
    sys.path.append(str(ROOT))

from benchmarks._machine import describe_machine  # noqa: E402

logger = logging.getLogger("benchmarks.overhead")

FILTER = ROOT / "filters" / "seece_energy_tech" / "v1"
#: Characters of content kept: one short article.
SHORT = 400


def short_articles(n, marker, random_state=0):
    """`n` short generated articles, each title marked so that no cache has seen it."""
    from hybrid_estimators.datasets import make_articles

    X, _ = make_articles(n, random_state=random_state)
    X = X[["title", "content"]].astype(object).copy()
    X["title"] = [f"{title} [{marker} {i}]" for i, title in enumerate(X["title"])]
    X["content"] = [content[:SHORT] for content in X["content"]]
    return X


class _Stage1Clock:
    """Times `stage1`'s own ``predict`` inside each call of the filter.

    Patched on the class (``Pipeline.predict``), not on the object, so that
    the stage's state, and so its fingerprint, is what the filter loaded.
    """

    def __init__(self, stage1):
        self.stage1, self.seconds, self.cpu_seconds = stage1, [], []

    def __enter__(self):
        from sklearn.pipeline import Pipeline

        original = Pipeline.__dict__["predict"]
        clock = self

        def predict(self, X, **params):
            bound = original.__get__(self, Pipeline)
            if self is not clock.stage1:
                return bound(X, **params)
            started, cpu_started = time.perf_counter(), time.process_time()
            try:
                return bound(X, **params)
            finally:
                clock.seconds.append(time.perf_counter() - started)
                clock.cpu_seconds.append(time.process_time() - cpu_started)

        self._restore = lambda: setattr(Pipeline, "predict", original)
        Pipeline.predict = predict
        return self

    def __exit__(self, *exc_info):
        self._restore()


def measure(folder=FILTER, calls=100, warmup=5):
    """Milliseconds per call of the filter and of its Stage 1 inside it, one new short article each."""
    import hybrid_estimators
    from hybrid_estimators.filters import load_filter

    scorer = load_filter(folder, stage1_only=True)
    stage1 = scorer.stage1_
    stage1 = getattr(stage1, "estimator", stage1)  # FrozenEstimator
    articles = short_articles(calls + warmup, "overhead")
    one = [articles.iloc[[i]] for i in range(len(articles))]
    for article in one[:warmup]:
        scorer.predict(article)
    filter_ms, filter_cpu_ms = [], []
    with _Stage1Clock(stage1) as clock:
        for article in one[warmup:]:
            started, cpu_started = time.perf_counter(), time.process_time()
            scorer.predict(article)
            filter_ms.append(1000 * (time.perf_counter() - started))
            filter_cpu_ms.append(1000 * (time.process_time() - cpu_started))
            if len(clock.seconds) != len(filter_ms):
                raise RuntimeError("Stage 1 did not run exactly once in a call of the filter.")
        stage1_ms = [1000 * seconds for seconds in clock.seconds]
        stage1_cpu_ms = [1000 * seconds for seconds in clock.cpu_seconds]
        repeated, repeated_cpu = [], []
        for _ in range(calls):  # an article scored already: served by the router's cache
            started, cpu_started = time.perf_counter(), time.process_time()
            scorer.predict(one[0])
            repeated.append(1000 * (time.perf_counter() - started))
            repeated_cpu.append(1000 * (time.process_time() - cpu_started))
    overhead = np.array(filter_ms) - np.array(stage1_ms)
    overhead_cpu = np.array(filter_cpu_ms) - np.array(stage1_cpu_ms)
    return {
        "kind": "overhead",
        "filter": str(folder),
        "package": str(Path(hybrid_estimators.__file__).parent),
        "machine": describe_machine(),
        "calls": calls,
        "article_characters": SHORT,
        "filter_predict_ms_median": float(np.median(filter_ms)),
        "stage1_predict_ms_median": float(np.median(stage1_ms)),
        "overhead_ms_median": float(np.median(overhead)),
        "overhead_ms_quartiles": [float(q) for q in np.percentile(overhead, [25, 75])],
        "cached_article_ms_median": float(np.median(repeated)),
        # CPU time of this process: what the calls computed, whatever else the machine ran
        "overhead_cpu_ms_median": float(np.median(overhead_cpu)),
        "cached_article_cpu_ms_median": float(np.median(repeated_cpu)),
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }


def format_result(result):
    low, high = result["overhead_ms_quartiles"]
    return (
        f"Filter overhead per call, one short article ({result['calls']} calls each, medians; "
        f"load {result['load_average'][0]:.1f} on {result['cpu_count']} CPUs)\n"
        f"  {result['machine']}\n"
        f"  package {result['package']}\n"
        f"  filter.predict (new article)        {result['filter_predict_ms_median']:7.2f} ms\n"
        f"  Stage 1's own predict, in that call {result['stage1_predict_ms_median']:7.2f} ms\n"
        f"  overhead (the difference, per call) {result['overhead_ms_median']:7.2f} ms"
        f"   (quartiles {low:.2f} to {high:.2f}; target < 5)\n"
        f"  the same in CPU time of the process {result['overhead_cpu_ms_median']:7.2f} ms\n"
        f"  filter.predict (article seen)       {result['cached_article_ms_median']:7.2f} ms"
        f"   ({result['cached_article_cpu_ms_median']:.2f} ms CPU)"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filter", type=Path, default=FILTER, help="filter folder")
    parser.add_argument("--calls", type=int, default=100, help="timed calls")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "overhead.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    result = measure(args.filter, args.calls)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(format_result(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
