"""Speed of the cascade, measured side by side in one run, as the seed measured it.

    python -m benchmarks [--data DIR | --jsonl FILE] [--quick] [--out FILE]   (every part)
    python -m benchmarks --parts stage1 multi-filter stage2 cascade          (some of them)
    python -m benchmarks --parts stage1-budget [--datasets NAME|DIR ...]
    python -m benchmarks.run ...                     (the same)
    hybrid-estimators benchmark -- [same options]

On real articles (``../shared/data/seece_energy_tech`` by default) it times:

1. Stage 1, time per article for each backend of :class:`E5Embedder` next to
   a plain ``SentenceTransformer.encode`` of the same offline e5-small (fp32,
   512 tokens), with the cosine to that plain encoding and the change of the
   probe's cross-validated MAE and routing AUC (a ridge probe trained on fp32
   embeddings, applied to each backend's embeddings); then each backend at
   the filter's token budget (``max_seq_length``, ``embedding_head_tail``),
   its probe trained on torch embeddings at that budget, and which row is
   the fastest at iso-quality (MAE within 1%, AUC within 0.005);
2. several filters in one pass (:mod:`benchmarks.multi_filter`): Stage 1
   of one filter, of three sharing its embedder, and of the two shipped
   filters;
3. Stage 2, time per article: Qwen2.5-1.5B's architecture built from its
   config with RANDOM weights (no weights exist offline; speed does not
   depend on their values); and (``stage2-configurations``) the shipped
   Stage 2, Qwen2.5-Coder-0.5B with its real weights, per precision, token
   budget and layers read, beside each one's measured quality;
4. the cascade on 20% of the articles, Stage 1 refitted on the others,
   with the shipped filter's Stage 2 (Qwen2.5-Coder-0.5B with its real
   weights, blended with Stage 1 as the filter's ``stage2_weight`` says):
   standard (Stage 2 on every article) against hybrid at the filter's
   calibrated threshold, with the measured speedup, the ideal one at the
   measured skip rate, T2 / (T1 + (1 - s) T2), MAE and MEDIUM+ recall.
   That Stage 2 was trained on all the articles, so its MAE here is in
   sample: the filter's recorded evaluation (``hybrid-estimators info``)
   is the honest comparison. One row per ``--cascade-configurations``
   (``BACKEND/DTYPE``; ``auto/auto`` by default: what ``load_filter``
   runs on this machine), and with ``--before-filter DIR`` a row
   ``before``: an earlier filter folder at torch/float32 (the cascade as
   it was), with the speedups of ``auto/auto`` over it.

Every time follows a warm-up pass (the steady state of a long scoring
run); a Stage 1 time is the fastest of ``--repeats`` passes. Every
measurement runs in a fresh process, so "peak MB" is that process's peak
resident memory (interpreter and libraries included). It prints the seed's
table and writes everything as JSON (``--out``) and a plot of time per
article per stage (``--plot``).

``--parts stage1-budget`` (first, and the longest part: about an hour on 2
cores) measures Stage 1 quality and time against the token budget, head
only and head + tail, on both shared labelled data sets: see
:mod:`benchmarks.budget` (``--budget-out``, ``--budget-plot``,
``docs/token-budget.md``). The load average is recorded at the start and
the end of the run.
"""

import argparse
import json
import logging
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks._machine import describe_machine, runtime_choice

ROOT = Path(__file__).resolve().parents[1]
FOOTNOTE = (
    "\n\n* Qwen2.5-1.5B: architecture with RANDOM weights (speed does not depend on their values); "
    "its hybrid time is projected from the measured T1, skip rate and T2."
)
SEED = {
    "stage1_ms": 1.3, "stage2_ms": 37.9, "threshold": 4.5, "skip_rate": 0.56, "medium_plus_recall": 0.723,
    "hybrid_ms": 18.1, "speedup": 2.09, "ideal": 2.27,
}
BACKENDS = ("torch", "openvino", "openvino-fp32", "openvino-bf16", "openvino-int8", "onnx", "onnx-int8")
PARTS = ("stage1-budget", "stage1", "multi-filter", "stage2", "stage2-configurations", "cascade", "overhead")
MAX_LENGTH = 512
E5_SMALL = "intfloat/multilingual-e5-small"
logger = logging.getLogger("benchmarks")


# --- measurements, each in its own process ------------------------------------


def _isolated(function, *args):
    """Run ``function(*args)`` in a fresh process; add its peak memory to the result.

    The functions live in this module, not in ``__main__``, so that the
    spawned process can import them.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_with_peak_memory, function, *args).result()


def _with_peak_memory(function, *args):
    logging.basicConfig(level=logging.WARNING)
    result = function(*args)
    result["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def _timed(encode, texts, repeats):
    """Seconds of the fastest of `repeats` passes of `encode` over `texts`,
    after a warm-up pass; the fastest is the one the machine disturbed least.

    The warm-up pass meets every batch shape once, as a long scoring run
    does: OpenVINO and oneDNN prepare kernels per input shape, and the
    first pass pays for that (up to 1.3x for OpenVINO on this CPU).
    """
    embeddings = encode(texts)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        encode(texts)
        seconds.append(time.perf_counter() - start)
    return min(seconds), embeddings


def plain_encode(texts, repeats):
    """The reference: ``SentenceTransformer.encode`` of the offline e5-small in fp32,
    with its defaults (batch size 32, batches sorted by characters)."""
    from sentence_transformers import SentenceTransformer

    from hybrid_estimators.models import resolve_model

    model = SentenceTransformer(resolve_model(E5_SMALL), device="cpu")
    model.max_seq_length = MAX_LENGTH
    prefixed = ["passage: " + text for text in texts]
    seconds, embeddings = _timed(
        lambda batch: model.encode(batch, normalize_embeddings=True, show_progress_bar=False),
        prefixed,
        repeats,
    )
    return {"seconds": seconds, "embeddings": embeddings}


def backend_encode(backend, fit_texts, texts, batch_size, repeats, budget=None):
    """Stage 1's text step and E5Embedder with `backend`, fitted (int8: calibrated) on
    `fit_texts`, timed on `texts`; at a filter's token `budget` (its ``max_seq_length`` and
    ``embedding_head_tail``) when given, else 512 tokens, head only."""
    from hybrid_estimators import ArticleText, E5Embedder

    max_seq_length, head_tail = budget or (None, None)
    article_text = ArticleText(
        head_tail=None if head_tail is None else tuple(head_tail), tokenizer=E5_SMALL
    ).fit(["-"])  # loads the tokenizer once, as a scoring run does
    embedder = E5Embedder(
        E5_SMALL, backend=backend, max_seq_length=max_seq_length, batch_size=batch_size,
        cache=False, show_progress_bar=False,
    )
    start = time.perf_counter()
    embedder.fit(article_text.transform(fit_texts))
    fit_seconds = time.perf_counter() - start
    seconds, embeddings = _timed(lambda batch: embedder.transform(article_text.transform(batch)), texts, repeats)
    return {"seconds": seconds, "embeddings": embeddings, "fit_seconds": fit_seconds}


def stage2_random_qwen(dtype_name, n_articles):
    import torch

    from benchmarks.stage2_speed import QWEN25_15B, build_qwen25_15b, seconds_per_article

    model = build_qwen25_15b(getattr(torch, dtype_name))
    seconds, n = seconds_per_article(model, QWEN25_15B["vocab_size"], 1, n_articles)
    return {"seconds_per_article": seconds, "n_articles": n}


def cascade(filter_dir, backend, dtype, data, batch_size):
    """Standard vs hybrid on held-back articles; Stage 1 fitted on the rest.

    The filter is loaded with `backend` and `dtype` (``"auto"``: what it
    runs on this machine); its Stage 1 is refitted at the same backend.
    """
    from hybrid_estimators import make_ridge_probe
    from hybrid_estimators.filters import load_filter, stage1_pipeline
    from hybrid_estimators.metrics import is_medium_plus, weighted_average_mae
    from hybrid_estimators.router import HybridRouterRegressor

    X_train, Y_train, X_test, Y_test = data
    shipped = load_filter(filter_dir, backend=backend, dtype=dtype)
    spec = shipped.spec
    backend = shipped.stage1.estimator.named_steps["e5embedder"].backend  # "auto" resolved
    stage1 = stage1_pipeline(
        spec, make_ridge_probe(), backend=backend, batch_size=batch_size, cache=False, show_progress_bar=False
    ).fit(X_train, Y_train)
    stage2 = shipped.stage2
    stage2.estimator.set_params(show_progress_bar=False)
    router = HybridRouterRegressor(
        stage1, stage2, spec.weights, threshold=shipped.threshold, tiers=spec.tiers,
        gatekeepers=spec.gatekeepers or None, prefit=("stage1", "stage2"), cache=False,
        stage2_weight=shipped.stage2_weight,
    ).fit(X_train, Y_train)
    gatekeepers = router.gatekeepers_
    stage1.predict(X_test)  # warm-up pass, as in _timed
    router.predict(X_test[:2])  # warm-up: loads Stage 2
    timings, predictions = {}, {}
    for name, predict in (("stage1", stage1.predict), ("standard", stage2.predict), ("hybrid", router.predict)):
        start = time.perf_counter()
        predictions[name] = predict(X_test)
        timings[name] = (time.perf_counter() - start) / len(X_test)
    weight = router.stage2_weight  # what the filter returns for an article sent to Stage 2
    predictions["standard"] = weight * predictions["standard"] + (1 - weight) * predictions["stage1"]
    routed = router.route(X_test)
    truth_medium_plus = is_medium_plus(Y_test, spec.weights, tiers=spec.tiers, gatekeepers=gatekeepers)
    result = {
        "backend": backend,
        "dtype": stage2.estimator.dtype,
        "budget": [spec.hybrid_inference["max_seq_length"], spec.hybrid_inference["embedding_head_tail"]],
        "n_articles": len(X_test),
        "threshold": float(shipped.threshold),
        "stage2_weight": float(weight),
        "stage1_ms": 1000 * timings["stage1"],
        "stage2_ms": 1000 * timings["standard"],
        "hybrid_ms": 1000 * timings["hybrid"],
        "skip_rate": float(1 - routed.mean()),
        "medium_plus_routed_recall": float(routed[truth_medium_plus].mean()),
    }
    for name in ("stage1", "standard", "hybrid"):
        predicted_medium_plus = is_medium_plus(predictions[name], spec.weights, tiers=spec.tiers, gatekeepers=gatekeepers)
        result[f"{name}_mae"] = float(weighted_average_mae(Y_test, predictions[name], spec.weights))
        result[f"{name}_medium_plus_recall"] = float(predicted_medium_plus[truth_medium_plus].mean())
    t1, t2, skip = timings["stage1"], timings["standard"], result["skip_rate"]
    result["speedup"] = t2 / timings["hybrid"]
    result["ideal_speedup"] = t2 / (t1 + (1 - skip) * t2)
    result["speedup_to_ideal"] = result["speedup"] / result["ideal_speedup"]
    return result


# --- the run --------------------------------------------------------------------


def filter_budget(filter_dir):
    """The filter's Stage 1 token budget, ``(max_seq_length, embedding_head_tail)``;
    None when it is the plain 512 tokens, head only."""
    from hybrid_estimators.filters import FilterSpec

    hybrid = FilterSpec.from_yaml(Path(filter_dir) / "config.yaml").hybrid_inference
    head_tail = hybrid["embedding_head_tail"]
    budget = (hybrid["max_seq_length"], None if head_tail is None else tuple(head_tail))
    return None if budget == (MAX_LENGTH, None) else budget


def available_backends():
    import importlib.util

    def has(module):
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            return False

    runtimes = {"torch": True, "openvino": has("optimum.intel"), "onnx": has("optimum.onnxruntime")}
    return [backend for backend in BACKENDS if runtimes[backend.split("-")[0]]]


def load_data(args):
    from hybrid_estimators.datasets import load_articles, shared_data_dir

    if args.jsonl is not None:
        import pandas as pd

        X = pd.read_json(args.jsonl, lines=True)
        return X, None, None
    folder = args.data or shared_data_dir() / "seece_energy_tech"
    X, Y, spec = load_articles(folder)
    return X, Y, spec


def stage1_table(X, Y, spec, backends, batch_size, n_fit, repeats, budget=None):
    """Stage 1 per backend against the plain fp32 encode at 512 tokens; then, when
    `budget` (a filter's ``(max_seq_length, embedding_head_tail)``) is given, Stage 1
    at that budget per backend, its probe trained on the torch embeddings of that
    budget, as the filter's was."""
    from sklearn.model_selection import KFold

    from hybrid_estimators.text import as_texts

    texts = as_texts(X)
    reference = _isolated(plain_encode, texts, repeats)
    rows = [_stage1_row("SentenceTransformer.encode fp32, 512 tokens", reference, reference, len(texts))]
    folds = list(KFold(5, shuffle=True, random_state=0).split(texts)) if Y is not None else []
    if folds:
        rows[0].update(_probe_quality(folds, Y, spec, reference["embeddings"], reference["embeddings"]))
    configurations = [(backend, None) for backend in backends]
    if budget is not None:
        configurations += [(backend, budget) for backend in backends]
    trained_on = {None: reference["embeddings"]}
    for backend, at in configurations:
        label = f"E5Embedder(backend={backend!r})" + ("" if at is None else f" at {_budget_label(at)}")
        logger.info("Stage 1: %s", label)
        measured = _isolated(backend_encode, backend, texts[:n_fit], texts, batch_size, repeats, at)
        trained_on.setdefault(at, measured["embeddings"])  # the first backend: torch
        row = _stage1_row(label, measured, reference, len(texts))
        row.update(backend=backend, budget=None if at is None else list(at), fit_seconds=measured["fit_seconds"])
        unseen = measured["embeddings"][n_fit:] * reference["embeddings"][n_fit:]
        row["cosine_min_unseen"] = float(unseen.sum(1).min()) if len(unseen) else None
        if folds:
            row.update(_probe_quality(folds, Y, spec, trained_on[at], measured["embeddings"]))
            row["probe_mae_change"] = row["probe_mae"] / rows[0]["probe_mae"] - 1
            both = None not in (row["routing_auc"], rows[0]["routing_auc"])
            row["routing_auc_change"] = row["routing_auc"] - rows[0]["routing_auc"] if both else None
        rows.append(row)
    return rows


def _budget_label(budget):
    max_seq_length, head_tail = budget
    return f"{max_seq_length} tokens" + ("" if head_tail is None else f", head+tail {head_tail[0]}+{head_tail[1]}")


def _probe_quality(folds, Y, spec, train_embeddings, embeddings):
    """Out-of-fold MAE of the weighted average, and ROC AUC of the routing score for
    MEDIUM+, of a ridge probe trained on `train_embeddings` and applied to `embeddings`."""
    from sklearn.metrics import roc_auc_score

    from hybrid_estimators import make_ridge_probe
    from hybrid_estimators.metrics import is_medium_plus, weighted_average_mae
    from hybrid_estimators.tiers import weighted_average

    predicted = np.empty(Y.shape)
    for train, test in folds:
        probe = make_ridge_probe().fit(train_embeddings[train], Y.iloc[train])
        predicted[test] = probe.predict(embeddings[test])
    weights, tiers = spec["dimensions"], spec.get("tiers")
    routing_score = np.clip(weighted_average(predicted, weights), 0, 10)
    medium_plus = is_medium_plus(Y, weights, tiers=tiers)
    one_class = medium_plus.all() or not medium_plus.any()
    return {
        "probe_mae": float(weighted_average_mae(Y, predicted, weights)),
        "routing_auc": None if one_class else float(roc_auc_score(medium_plus, routing_score)),
    }


def _stage1_row(name, measured, reference, n):
    cosines = (measured["embeddings"] * reference["embeddings"]).sum(1)  # both unit length
    return {
        "stage1": name,
        "ms_per_article": 1000 * measured["seconds"] / n,
        "speedup_vs_plain": reference["seconds"] / measured["seconds"],
        "cosine_min": float(cosines.min()),
        "cosine_median": float(np.median(cosines)),
        "peak_mb": measured["peak_mb"],
    }


def stage2_table(n_articles):
    rows = []
    for dtype in ("float32", "bfloat16") if n_articles > 0 else ():
        logger.info("Stage 2: Qwen2.5-1.5B (random weights), %s", dtype)
        measured = _isolated(stage2_random_qwen, dtype, n_articles)
        rows.append(
            {
                "stage2": f"Qwen2.5-1.5B architecture, RANDOM weights, {dtype}, 512 tokens",
                "ms_per_article": 1000 * measured["seconds_per_article"],
                "n_articles": measured["n_articles"],
                "peak_mb": measured["peak_mb"],
            }
        )
    return rows


def stage2_configurations_table(n_articles):
    """The shipped Stage 2 (Qwen2.5-Coder-0.5B, real weights) per precision, token budget and depth.

    Times are ``scripts/stage2_configurations.py time`` (every
    configuration in one process, interleaved rounds, the fastest round),
    with this process's torch threads; quality is that script's recorded
    ``evaluate`` (``benchmarks/results/stage2_configurations.json``: the
    blend's MAE against the reference on the same folds, 90% interval).
    """
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "timing.json"
        command = [sys.executable, str(ROOT / "scripts" / "stage2_configurations.py"), "time",
                   "--articles", str(n_articles), "--threads", str(torch.get_num_threads()), "--out", str(out)]
        subprocess.run(command, check=True, cwd=ROOT)
        timing = json.loads(out.read_text())["timing"]
    quality = json.loads((ROOT / "benchmarks" / "results" / "stage2_configurations.json").read_text())
    by_key = {
        f"{row['dtype']}-{row['head_tail'][0]}+{row['head_tail'][1]}-L{row['layers_run']}": row
        for row in quality["configurations"]
    }
    rows = []
    for key, seconds in timing["seconds_per_article"].items():
        measured = by_key.get(key) or {}
        versus = measured.get("blend_vs_reference") or {}
        rows.append({
            "configuration": key, "ms_per_article": 1000 * seconds,
            "speedup_vs_reference": timing["speedup_vs_reference"][key],
            "blend_mae_relative": versus.get("relative"), "blend_mae_relative_ci90": versus.get("relative_ci90"),
            "qualifies": measured.get("qualifies"),
        })
    return {"rows": rows, "articles": n_articles, "threads": timing["threads"], "quality_folds": quality["folds"]}


def cascade_table(X, Y, configurations, batch_size):
    """One cascade row per ``(label, filter folder, backend, dtype)``, on the same held-back articles."""
    from sklearn.model_selection import train_test_split

    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.2, random_state=0)
    rows = []
    for label, filter_dir, backend, dtype in configurations:
        logger.info("Cascade %s: %s, backend %s, dtype %s", label, filter_dir, backend, dtype)
        row = _isolated(cascade, str(filter_dir), backend, dtype, (X_train, Y_train, X_test, Y_test), batch_size)
        rows.append({"label": label, "filter": str(filter_dir), **row})
    return rows


def cascade_ratios(rows):
    """Stage 2's and the cascade's speedup of the ``auto/auto`` row over the ``before`` row (None without both)."""
    by_label = {row["label"]: row for row in rows}
    if "before" not in by_label or "auto/auto" not in by_label:
        return None
    before, auto = by_label["before"], by_label["auto/auto"]
    return {
        "stage2": before["stage2_ms"] / auto["stage2_ms"],
        "cascade": before["hybrid_ms"] / auto["hybrid_ms"],
        "stage1": before["stage1_ms"] / auto["stage1_ms"],
        "hybrid_mae_change": auto["hybrid_mae"] - before["hybrid_mae"],
    }


def format_tables(results):
    """The tables of a run, each part that was measured (and the footnote when Stage 2 is in)."""
    lines = [results["title"], _load_line(results)]
    if results["stage1"]:
        lines += ["", *_stage1_lines(results)]
    if results.get("multi_filter"):
        lines += ["", _multi_filter_line(results["multi_filter"])]
    if results["stage2"]:
        lines += ["", f"{'Stage 2':<66}{'ms/art':>9}{'n':>4}{'peak MB':>9}"]
        lines += [f"{row['stage2']:<66}{row['ms_per_article']:>9.1f}{row['n_articles']:>4}{row['peak_mb']:>9.0f}"
                  for row in results["stage2"]]
    if results.get("stage2_configurations"):
        lines += ["", *_stage2_configuration_lines(results["stage2_configurations"])]
    if results["cascade"]:
        lines += ["", *_cascade_lines(results)]
    text = "\n".join(lines)
    return text + FOOTNOTE if results["stage2"] or results["cascade"] else text


def _stage1_lines(results):
    lines = [
        f"{'Stage 1':<66}{'ms/art':>8}{'speedup':>9}{'cos min':>9}{'cos unseen':>11}{'probe MAE':>10}"
        f"{'ΔMAE':>8}{'AUC':>8}{'ΔAUC':>8}{'peak MB':>9}"
    ]
    for row in results["stage1"]:
        change, auc_change = row.get("probe_mae_change"), row.get("routing_auc_change")
        lines.append(
            f"{row['stage1']:<66}{row['ms_per_article']:>8.1f}{row['speedup_vs_plain']:>8.2f}×"
            f"{row['cosine_min']:>9.5f}{_num(row.get('cosine_min_unseen'), 11, '.5f')}"
            f"{_num(row.get('probe_mae'), 10, '.4f')}{_num(None if change is None else 100 * change, 7, '+.2f')}"
            f"{'%' if change is not None else ' '}{_num(row.get('routing_auc'), 8, '.4f')}"
            f"{_num(auc_change, 8, '+.4f')}{row['peak_mb']:>9.0f}"
        )
    if results.get("stage1_budget"):
        lines.append(_iso_quality_line(results["stage1"]))
    return lines


def _stage2_configuration_lines(table):
    lines = [
        f"Shipped Stage 2 (Qwen2.5-Coder-0.5B, REAL weights) per configuration: {table['articles']} articles, "
        f"{table['threads']} torch threads; blend MAE vs float32-256+256-L24 on the same folds "
        f"({table['quality_folds']}), qualifies when the upper 90% bound is within +1%",
        f"{'configuration':<26}{'ms/art':>9}{'speedup':>9}{'ΔMAE % [90% CI]':>26}{'qualifies':>11}",
    ]
    for row in table["rows"]:
        change, interval = row["blend_mae_relative"], row["blend_mae_relative_ci90"]
        quality = "-" if change is None else (
            f"{100 * change:+.2f}% [{100 * interval[0]:+.2f}, {100 * interval[1]:+.2f}]")
        qualifies = "-" if row["qualifies"] is None else ("yes" if row["qualifies"] else "no")
        lines.append(f"{row['configuration']:<26}{row['ms_per_article']:>9.0f}{row['speedup_vs_reference']:>8.2f}×"
                     f"{quality:>26}{qualifies:>11}")
    return lines


def _cascade_lines(results):
    lines = [
        "Cascade (shipped seece_energy_tech/v1: Stage 2 = Qwen2.5-Coder-0.5B, REAL weights, "
        "blended with Stage 1; Stage 1 refitted without the 20% timed; Stage 2 saw them: "
        "MAE std/hyb in sample)",
        f"{'row':<12}{'tokens':>8}{'Stage 1':>15}{'Stage 2':>10}{'n':>4}{'T1 ms':>8}{'T2 ms':>8}{'skip':>7}{'hybrid ms':>11}{'speedup':>9}"
        f"{'ideal':>8}{'ratio':>7}{'MAE S1':>8}{'MAE std':>9}{'MAE hyb':>9}{'recall':>8}{'peak MB':>9}",
    ]
    for row in results["cascade"]:
        lines.append(
            f"{row.get('label', row['backend']):<12}{_budget_text(row.get('budget')):>8}{row['backend']:>15}"
            f"{row.get('dtype') or '-':>10}{row['n_articles']:>4}{row['stage1_ms']:>8.1f}{row['stage2_ms']:>8.1f}"
            f"{100 * row['skip_rate']:>6.1f}%{row['hybrid_ms']:>11.1f}{row['speedup']:>8.2f}×"
            f"{row['ideal_speedup']:>7.2f}×{row['speedup_to_ideal']:>7.2f}{row['stage1_mae']:>8.3f}{row['standard_mae']:>9.3f}"
            f"{row['hybrid_mae']:>9.3f}{row['medium_plus_routed_recall']:>8.3f}{row['peak_mb']:>9.0f}"
        )
    ratios = results.get("cascade_ratios")
    if ratios:
        lines.append(
            f"auto/auto against before (same articles, same run): Stage 2 {ratios['stage2']:.2f}× faster "
            f"(target >= 4×), cascade {ratios['cascade']:.2f}× faster (target >= 2.5×), Stage 1 "
            f"{ratios['stage1']:.2f}×; hybrid MAE {ratios['hybrid_mae_change']:+.3f} (in sample)"
        )
    lines += ["", "The seed's table (RTX 4080, 5K articles) next to this run:"]
    lines.append(f"{'':<34}{'seed':>14}{'here':>16}")
    for label, seed, here in results["seed_comparison"]:
        lines.append(f"{label:<34}{seed:>14}{here:>16}")
    return lines


def _row_name(row):
    return f"{row.get('label', '')}: {row['backend']} / {row.get('dtype') or '-'}"


def _budget_text(budget):
    return "-" if not budget else str(budget[0])


def _load_line(results):
    start, end = results.get("load_average_start"), results.get("load_average_end")
    if start is None or end is None:
        return "load average: not recorded"
    return (f"load average (1, 5, 15 min) on {results.get('cpu_count')} CPUs: start "
            f"{'/'.join(f'{v:.2f}' for v in start)}, end {'/'.join(f'{v:.2f}' for v in end)}")


def _iso_quality_line(rows):
    """The fastest Stage 1 row within the issue's iso-quality limits of the plain encode."""
    reference = rows[0]
    qualifying = [
        row for row in rows[1:]
        if row.get("probe_mae_change") is not None and row["probe_mae_change"] <= 0.01
        and row.get("routing_auc_change") is not None and row["routing_auc_change"] >= -0.005
    ]
    if not qualifying:
        return "iso-quality (MAE within 1%, AUC within 0.005 of the plain encode): no row qualifies"
    best = max(qualifying, key=lambda row: row["speedup_vs_plain"])
    return (
        f"iso-quality (MAE within 1%, AUC within 0.005 of the plain encode, MAE {reference['probe_mae']:.4f}, "
        f"AUC {reference['routing_auc']:.4f}): fastest is {best['stage1']}, {best['speedup_vs_plain']:.2f}× "
        f"(target >= 8×)"
    )


def _multi_filter_line(result):
    from benchmarks.multi_filter import format_result

    return "Several filters in one pass (`score --filter A --filter B ...`), Stage 1 only:\n" + format_result(result)


def _num(value, width, spec):
    return (format(value, spec) if value is not None else "-").rjust(width)


def seed_comparison(stage1_rows, stage2_rows, cascade_rows):
    best = min(cascade_rows, key=lambda row: row["hybrid_ms"])
    qwen = min((row["ms_per_article"] for row in stage2_rows), default=float("nan"))
    t1, skip = best["stage1_ms"], best["skip_rate"]
    projected = t1 + (1 - skip) * qwen
    return [
        ("Stage 1 ms/article", f"{SEED['stage1_ms']}", f"{t1:.1f}"),
        ("Stage 2 ms/article (shipped: Qwen-Coder-0.5B)", "-", f"{best['stage2_ms']:.1f}"),
        ("Stage 2 ms/article (Qwen 1.5B)", f"{SEED['stage2_ms']}", f"{qwen:.1f}*"),
        ("threshold", f"{SEED['threshold']}", f"{best['threshold']:.2f}"),
        ("skipped", f"{100 * SEED['skip_rate']:.0f}%", f"{100 * skip:.1f}%"),
        ("MEDIUM+ sent to Stage 2 (recall)", f"{100 * SEED['medium_plus_recall']:.1f}%",
         f"{100 * best['medium_plus_routed_recall']:.1f}%"),
        ("hybrid ms/article (shipped)", "-", f"{best['hybrid_ms']:.1f}"),
        ("speedup (shipped, measured)", "-", f"{best['speedup']:.2f}×"),
        ("ideal at that skip rate", f"{SEED['ideal']}×", f"{best['ideal_speedup']:.2f}×"),
        ("speedup / ideal", f"{SEED['speedup'] / SEED['ideal']:.2f}", f"{best['speedup_to_ideal']:.2f}"),
        ("hybrid ms/article (Qwen 1.5B)", f"{SEED['hybrid_ms']}", f"{projected:.1f}*"),
        ("speedup (Qwen 1.5B)", f"{SEED['speedup']}×", f"{qwen / projected:.2f}×*"),
        ("Stage 1 of the fastest cascade", "torch (GPU)", best["backend"]),
    ]


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row["stage1"].replace("(backend=", " ").replace(")", "").replace("'", "") for row in results["stage1"]]
    labels += [f"Qwen2.5-1.5B* {row['stage2'].split(', ')[2]}" for row in results["stage2"]]
    labels += [f"hybrid, {_row_name(row)}" for row in results["cascade"]]
    labels += [f"shipped Stage 2, {_row_name(row)}" for row in results["cascade"]]
    times = [row["ms_per_article"] for row in results["stage1"]]
    times += [row["ms_per_article"] for row in results["stage2"]]
    times += [row["hybrid_ms"] for row in results["cascade"]] + [row["stage2_ms"] for row in results["cascade"]]
    colours = (["tab:blue"] * len(results["stage1"]) + ["tab:red"] * len(results["stage2"])
               + ["tab:green"] * len(results["cascade"]) + ["tab:orange"] * len(results["cascade"]))
    figure, axes = plt.subplots(figsize=(8, 0.38 * len(labels) + 1.2))
    axes.barh(labels[::-1], times[::-1], color=colours[::-1])
    axes.set_xscale("log")
    axes.set_xlabel("ms per article (log scale)")
    machine = results["machine"].split("; backend=")[0]  # without the long reasons of auto's choice
    footnote = "; *random weights" if results["stage2"] else ""
    axes.set_title(f"Time per article per stage\n{machine}{footnote}", fontsize=9, wrap=True)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")  # the long machine line stays whole
    plt.close(figure)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="labelled folder (articles.jsonl + filter.yaml)")
    parser.add_argument("--jsonl", type=Path, help="unlabelled JSONL: Stage 1 timings only")
    parser.add_argument("--filter", type=Path, default=ROOT / "filters" / "seece_energy_tech" / "v1")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, help="default: every installed one")
    parser.add_argument("--cascade-configurations", nargs="+", default=["auto/auto"], metavar="BACKEND/DTYPE",
                        help="Stage 1 backend and Stage 2 dtype of each cascade row (default: auto/auto, "
                        "what the filter runs here)")
    parser.add_argument("--before-filter", type=Path, metavar="DIR",
                        help="add a cascade row 'before': this earlier filter folder at torch/float32 (e.g. "
                        "the seece filter of commit 5ad068d), and the speedups of 'auto/auto' over it")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="E5Embedder's batch size (the plain encode keeps its 32)"
    )
    parser.add_argument("--n", type=int, help="use the first N articles")
    parser.add_argument("--qwen-articles", type=int, default=3, help="articles per Qwen2.5-1.5B dtype")
    parser.add_argument("--repeats", type=int, default=3, help="timed Stage 1 passes; the fastest counts")
    parser.add_argument("--stage2-articles", type=int, default=6,
                        help="articles per configuration of the shipped Stage 2 (stage2-configurations)")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS),
        help=f"which tables to measure (default: {' '.join(PARTS)})",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 24 articles, 1 Qwen article, 1 pass")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "benchmark.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "images" / "time_per_stage.png")
    parser.add_argument("--print", dest="print_json", type=Path, help="print the tables of an earlier run's JSON")
    budget = parser.add_argument_group("stage1-budget (see benchmarks/budget.py)")
    budget.add_argument(
        "--datasets", nargs="+", help="labelled data sets: names under the shared data folder or folders "
        "(default: seece_energy_tech ai_engineering_practice)",
    )
    budget.add_argument("--budgets", nargs="+", type=int, default=[128, 192, 256, 384, 512],
                        help="max_seq_length values; the largest, head only, is the baseline")
    budget.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="KFold(5) shuffle seeds")
    budget.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the articles")
    budget.add_argument("--model", default="intfloat/multilingual-e5-small", help="Stage 1 embedding model")
    budget.add_argument("--prefix", help="put before every text (default: 'passage: ' for e5-small, else '')")
    budget.add_argument("--budget-out", type=Path, default=ROOT / "benchmarks" / "results" / "budget.json")
    budget.add_argument("--budget-plot", type=Path, default=ROOT / "docs" / "images" / "token_budget.png")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.print_json is not None:
        printed = json.loads(args.print_json.read_text(encoding="utf-8"))
        if printed.get("kind") == "stage1-budget":
            from benchmarks.budget import format_table

            print(format_table(printed))
        else:
            print(format_tables(printed))
        return
    if "stage1-budget" in args.parts:
        from benchmarks.budget import run as run_budget

        run_budget(args)
        if set(args.parts) == {"stage1-budget"}:
            return

    X, Y, spec = load_data(args)
    n = 24 if args.quick else args.n
    if n is not None:
        X, Y = X.iloc[:n], None if Y is None else Y.iloc[:n]
    backends = args.backends or available_backends()
    runtime = runtime_choice(args.filter)
    machine = describe_machine(runtime)
    results = {
        "title": f"hybrid_estimators benchmark: {len(X)} real articles, {machine}",
        "machine": machine,
        "runtime_auto": runtime,
        "n_articles": len(X),
        "backends": backends,
        "seed": SEED,
    }
    repeats = 1 if args.quick else args.repeats
    results.update(load_average_start=os.getloadavg(), cpu_count=os.cpu_count())
    budget = filter_budget(args.filter)
    results["stage1_budget"] = None if budget is None else list(budget)
    results["stage1"] = (
        stage1_table(X, Y, spec, backends, args.batch_size, int(0.8 * len(X)), repeats, budget)
        if "stage1" in args.parts else []
    )
    if "multi-filter" in args.parts and Y is not None:
        from benchmarks.multi_filter import measure as measure_multi_filter

        logger.info("Several filters, one pass")
        results["multi_filter"] = measure_multi_filter(X, repeats=max(repeats, 2))
    if "overhead" in args.parts:
        from benchmarks.overhead import measure as measure_overhead

        results["overhead"] = measure_overhead(args.filter, calls=10 if args.quick else 100)
    results["stage2"] = stage2_table(1 if args.quick else args.qwen_articles) if "stage2" in args.parts else []
    if "stage2-configurations" in args.parts:
        logger.info("Stage 2 per configuration (the shipped Qwen2.5-Coder-0.5B)")
        results["stage2_configurations"] = stage2_configurations_table(1 if args.quick else args.stage2_articles)
    measure_cascade = Y is not None and "cascade" in args.parts
    configurations = [("before", args.before_filter, "torch", "float32")] if args.before_filter else []
    configurations += [(text, args.filter, *text.split("/")) for text in args.cascade_configurations]
    results["cascade"] = cascade_table(X, Y, configurations, args.batch_size) if measure_cascade else []
    results["cascade_ratios"] = cascade_ratios(results["cascade"])
    results["load_average_end"] = os.getloadavg()
    if results["cascade"]:
        results["seed_comparison"] = seed_comparison(results["stage1"], results["stage2"], results["cascade"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
    logger.info("wrote %s", args.out)
    print(format_tables(results))
    if results.get("overhead"):
        from benchmarks.overhead import format_result

        print(format_result(results["overhead"]))
    if args.plot and results["cascade"]:
        plot(results, args.plot)
        logger.info("wrote %s", args.plot)


if __name__ == "__main__":
    main()
