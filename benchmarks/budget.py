"""Stage 1 token budget: quality and time per article against tokens per article.

    python -m benchmarks --parts stage1-budget [--datasets NAME|DIR ...] [--budgets 128 192 ...]

For each labelled data set (both shared ones by default) and each budget
(``max_seq_length`` of :class:`E5Embedder`: 128, 192, 256, 384, 512 tokens,
special tokens and the ``passage: `` prefix included), two truncations:

- ``head``: the article's first tokens (E5Embedder's own truncation);
- ``head+tail``: :class:`ArticleText` ``head_tail=(h, t)`` counted with the
  model's own tokenizer, ``h`` and ``t`` half of what the budget leaves after
  the special tokens, the prefix and the ``[...]`` marker, so the model sees
  both ends of a long article and cuts nothing more itself.

Each (budget, truncation) is embedded once; the embeddings of every article
are then cross-validated with the shipped filter's probe (``probe`` in its
``probe/metadata.json``: ridge for both) on the SAME folds for every budget
(``KFold(5, shuffle=True, random_state=seed)`` for each of ``--seeds``):

- MAE of the weighted average, out of fold, averaged over the seeds, with a
  bootstrap 90% interval over articles, and the paired difference against the
  baseline (the largest budget, head only: 512) with its interval;
- ROC AUC of the routing score (the clipped weighted average of the probe's
  out-of-fold scores) for MEDIUM+ (true weighted average >= the MEDIUM tier),
  mean over the seeds, and its paired difference with its interval.

Time per article is Stage 1's text step (joining, and head+tail truncation
with a tokenizer loaded once, as a long scoring run has it) plus the
embedding, with ``cache=False`` so no pass reuses an embedding: the fastest of
``--repeats`` passes over all articles, every pass after a warm-up on OTHER
articles (``unlabelled_news``) at the same settings, passes interleaved over
the budgets so that a change of the machine's load touches them alike. The
load average (``os.getloadavg``) is recorded beside every row.

:func:`choose_budget` picks the smallest budget at iso-quality: MAE within 1%
of the baseline's and routing AUC within 0.005 of it (the issue's targets).
The table is printed; JSON goes to ``--budget-out`` and the plot to
``--budget-plot``.
"""

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from benchmarks._machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = (128, 192, 256, 384, 512)
TRUNCATIONS = ("head", "head+tail")
SEEDS = (0, 1, 2)
MAE_TOLERANCE = 0.01  # relative: MAE <= 1.01 x the baseline's
AUC_TOLERANCE = 0.005  # absolute: AUC >= the baseline's - 0.005
#: Tokens kept free beyond the specials, prefix and marker: re-tokenising the
#: joined head + marker + tail may merge differently at the seams.
HEAD_TAIL_MARGIN = 2
BUDGET_BACKENDS = ("torch", "openvino", "openvino-int8")
DEFAULT_MODEL = "intfloat/multilingual-e5-small"
logger = logging.getLogger("benchmarks.budget")


# --- data -----------------------------------------------------------------------


def resolve_datasets(names):
    """(name, folder) of each data set: a name under the shared data folder or a folder."""
    from hybrid_estimators.datasets import shared_data_dir

    shared = shared_data_dir()
    if not names:
        if shared is None:
            raise SystemExit("no shared data folder (../shared/data); pass --datasets DIR ...")
        names = ["seece_energy_tech", "ai_engineering_practice"]
    resolved = []
    for name in names:
        folder = Path(name)
        if not (folder / "articles.jsonl").exists() and shared is not None:
            folder = shared / name
        if not (folder / "articles.jsonl").exists():
            raise SystemExit(f"--datasets {name}: no articles.jsonl there or under the shared data folder")
        resolved.append((folder.name, folder))
    return resolved


def warmup_articles(n, exclude_ids=()):
    """`n` articles none of the measured sets holds: ``unlabelled_news``, else generated ones."""
    import pandas as pd

    from hybrid_estimators.datasets import make_articles, shared_data_dir

    shared = shared_data_dir()
    path = None if shared is None else shared / "unlabelled_news" / "articles.jsonl"
    if path is not None and path.exists():
        X = pd.read_json(path, lines=True, dtype=False)
        X = X[~X["id"].isin(set(exclude_ids))][["title", "content"]].fillna("")
        if len(X) >= n:
            # Spread over the lengths, as the measured articles are.
            lengths = (X["title"].str.len() + X["content"].str.len()).to_numpy()
            order = np.argsort(lengths, kind="stable")
            picked = order[np.unique(np.linspace(0, len(order) - 1, n).astype(int))]
            return X.iloc[picked].reset_index(drop=True), "unlabelled_news"
    X, _ = make_articles(n, random_state=12345)
    return X[["title", "content"]], "make_articles"


def shipped_probe(dataset_name, filters_dir=ROOT / "filters"):
    """The probe kind ("ridge" or "mlp") of the shipped filter of a data set, and its folder."""
    candidates = sorted((Path(filters_dir) / dataset_name).glob("v*/probe/metadata.json"))
    if not candidates:
        return "ridge", None
    metadata = json.loads(candidates[-1].read_text(encoding="utf-8"))
    folder = candidates[-1].parents[1]
    name = str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder)
    return metadata.get("metrics", {}).get("probe", "ridge"), name


def _make_probe(kind):
    from hybrid_estimators import make_probe, make_ridge_probe

    if kind == "ridge":
        return make_ridge_probe()
    if kind == "mlp":
        return make_probe()
    raise ValueError(f"unknown probe kind {kind!r}")


# --- truncation and timing ----------------------------------------------------


def head_tail_split(budget, tokenizer, prefix, marker=" [...] "):
    """(head, tail) text tokens that fit `budget` model tokens with specials, prefix and marker."""
    from hybrid_estimators.text import special_tokens_around

    before, after = special_tokens_around(tokenizer)
    overhead = len(before) + len(after) + HEAD_TAIL_MARGIN
    overhead += len(tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else 0
    overhead += len(tokenizer(marker, add_special_tokens=False)["input_ids"])
    content = budget - overhead
    if content < 2:
        raise ValueError(f"budget {budget} leaves no room for head+tail ({overhead} tokens of overhead)")
    return (content + 1) // 2, content // 2


def stage1_texts(X, head_tail, tokenizer):
    """What ``ArticleText(head_tail=head_tail, tokenizer=...)`` returns, with a loaded tokenizer."""
    from hybrid_estimators.text import as_texts, token_spans, truncate_head_tail

    texts = as_texts(X)
    if head_tail is None:
        return texts
    spans = token_spans(texts, tokenizer)
    return [truncate_head_tail(text, *head_tail, spans=s) for text, s in zip(texts, spans)]


def tokens_fed(model_tokenizer, texts, prefix, max_length):
    """Tokens the model sees per text (specials and prefix included, after its truncation),
    and whether the model had to cut the text."""
    ids = model_tokenizer([prefix + text for text in texts], verbose=False)["input_ids"]
    lengths = np.asarray([len(i) for i in ids])
    return np.minimum(lengths, max_length), lengths > max_length


def time_pass(X, config, embedder, tokenizer):
    """Wall seconds of the text step and of the embedding, the process's CPU
    seconds for both (all threads: less disturbed by other processes than the
    wall clock), and the embeddings."""
    cpu_start = time.process_time()
    start = time.perf_counter()
    texts = stage1_texts(X, config["head_tail"], tokenizer)
    middle = time.perf_counter()
    embeddings = embedder.embed(texts)
    end = time.perf_counter()
    return middle - start, end - middle, time.process_time() - cpu_start, embeddings


# --- quality --------------------------------------------------------------------


def out_of_fold(embeddings, Y, probe_kind, seeds, applied_to=None):
    """Out-of-fold probe scores, shape (n_seeds, n_articles, n_dimensions); probes fitted on
    `embeddings` predict `applied_to` (another configuration's embeddings of the same articles)
    when given."""
    from sklearn.model_selection import KFold

    applied_to = embeddings if applied_to is None else applied_to
    Y = np.asarray(Y, dtype=float)
    predicted = np.empty((len(seeds),) + Y.shape)
    for s, seed in enumerate(seeds):
        for train, test in KFold(5, shuffle=True, random_state=seed).split(embeddings):
            probe = _make_probe(probe_kind).fit(embeddings[train], Y[train])
            predicted[s, test] = probe.predict(applied_to[test])
    return predicted


def auc_by_rank(scores, positive):
    """ROC AUC of each row of `scores` (Mann-Whitney, ties count half) against `positive` rows."""
    from scipy.stats import rankdata

    scores, positive = np.atleast_2d(scores), np.atleast_2d(positive)
    ranks = rankdata(scores, axis=1)
    n_pos = positive.sum(1)
    n_neg = positive.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * positive).sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def quality(predicted, Y, weights, tiers):
    """Per-article absolute errors (mean over seeds) and routing scores per seed."""
    from hybrid_estimators.tiers import weighted_average

    truth = weighted_average(np.asarray(Y, dtype=float), weights)
    averages = np.stack([weighted_average(p, weights) for p in predicted])
    errors = np.abs(averages - truth).mean(0)
    routing = np.clip(averages, 0, 10)
    return errors, routing


def _interval(values, level=0.90):
    low, high = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(low), float(high)]


def summarise(rows, per_row, truth_positive, baseline_key, n_bootstrap, random_state=0):
    """Fill each row's MAE, AUC and paired differences against the baseline, with intervals."""
    n = len(truth_positive)
    rng = np.random.default_rng(random_state)
    resamples = rng.integers(0, n, size=(n_bootstrap, n))  # the same for every row
    positive = truth_positive[resamples]
    base_errors, base_routing = per_row[baseline_key]
    base_auc_boot = np.mean([auc_by_rank(r[resamples], positive) for r in base_routing], axis=0)
    base_mae = float(base_errors.mean())
    base_auc = float(np.mean(auc_by_rank(base_routing, truth_positive[None, :])))
    for row in rows:
        errors, routing = per_row[row["key"]]
        auc_per_seed = auc_by_rank(routing, truth_positive[None, :])
        auc_boot = np.mean([auc_by_rank(r[resamples], positive) for r in routing], axis=0)
        difference = errors - base_errors
        row.update(
            mae=float(errors.mean()),
            mae_ci90=_interval(errors[resamples].mean(1)),
            delta_mae=float(difference.mean()),
            delta_mae_ci90=_interval(difference[resamples].mean(1)),
            delta_mae_relative=float(difference.mean() / base_mae),
            auc=float(auc_per_seed.mean()),
            auc_per_seed=[float(a) for a in auc_per_seed],
            auc_ci90=_interval(auc_boot),
            delta_auc=float(auc_per_seed.mean() - base_auc),
            delta_auc_ci90=_interval(auc_boot - base_auc_boot),
        )


# --- the choice -------------------------------------------------------------------


def choose_budget(rows, *, baseline=None, mae_tolerance=MAE_TOLERANCE, auc_tolerance=AUC_TOLERANCE):
    """The smallest budget at iso-quality with the baseline.

    A row qualifies when its MAE is at most ``(1 + mae_tolerance)`` times the
    baseline's and its routing AUC at least the baseline's minus
    `auc_tolerance` (point estimates). Among those, the smallest budget wins
    (``max_seq_length``: the knob), then the fewest tokens per article, then
    the fastest. It is *certified* when the intervals say so too: the upper
    end of the ΔMAE interval within the MAE tolerance and the lower end of
    the ΔAUC interval within the AUC tolerance.

    Parameters
    ----------
    rows : list of dict
        With ``budget``, ``truncation``, ``tokens_per_article``, ``mae`` and
        ``auc`` (and optionally ``ms_per_article``, ``speedup``,
        ``head_tail``, ``delta_mae_ci90``, ``delta_auc_ci90``).
    baseline : (int, str) or None, default=None
        (budget, truncation) of the baseline; None: the largest budget, head only.

    Returns
    -------
    choice : dict
        ``choice`` (the row's budget, truncation, head_tail, tokens, ms,
        speedup, MAE, AUC), ``qualifying`` (every qualifying (budget,
        truncation)), ``any_below_baseline`` (whether a smaller budget than
        the baseline's qualifies), ``certified`` and the criteria.
    """
    if baseline is None:
        baseline = (max(row["budget"] for row in rows), "head")
    (base,) = [row for row in rows if (row["budget"], row["truncation"]) == tuple(baseline)]
    mae_limit = base["mae"] * (1 + mae_tolerance)
    auc_limit = base["auc"] - auc_tolerance
    qualifying = [row for row in rows if row["mae"] <= mae_limit and row["auc"] >= auc_limit]
    best = min(
        qualifying,
        key=lambda row: (row["budget"], row["tokens_per_article"], row.get("ms_per_article", 0.0)),
    )
    certified = None
    if "delta_mae_ci90" in best and "delta_auc_ci90" in best:
        certified = bool(
            best["delta_mae_ci90"][1] <= mae_tolerance * base["mae"] and best["delta_auc_ci90"][0] >= -auc_tolerance
        )
    keys = ("budget", "truncation", "head_tail", "tokens_per_article", "ms_per_article", "speedup", "mae", "auc")
    return {
        "criteria": {
            "baseline": {"budget": base["budget"], "truncation": base["truncation"]},
            "mae_at_most": mae_limit,
            "auc_at_least": auc_limit,
            "mae_tolerance_relative": mae_tolerance,
            "auc_tolerance": auc_tolerance,
        },
        "choice": {key: best.get(key) for key in keys},
        "max_seq_length": best["budget"],
        "head_tail": best.get("head_tail"),
        "qualifying": [[row["budget"], row["truncation"]] for row in qualifying],
        "any_below_baseline": best["budget"] < base["budget"],
        "certified": certified,
    }


# --- the run ----------------------------------------------------------------------


def configurations(budgets, tokenizer, prefix):
    configs = []
    for budget in budgets:
        for truncation in TRUNCATIONS:
            head_tail = head_tail_split(budget, tokenizer, prefix) if truncation == "head+tail" else None
            configs.append({"budget": budget, "truncation": truncation, "head_tail": head_tail})
    return configs


def measure(datasets, *, model=DEFAULT_MODEL, prefix="passage: ", budgets=BUDGETS, backends=("torch",),
            seeds=SEEDS, repeats=3, batch_size=16, n_bootstrap=2000, n_warmup=16, n=None,
            save_embeddings=None, on_round=None):
    """Measure every data set; returns the JSON-ready result dict.

    `datasets` is a list of (name, (X, Y, spec), probe kind, filter folder or
    None). Every round times every (data set, backend, budget, truncation)
    once, in that order; the first round's embeddings are the ones the probes
    are cross-validated on. After each round ``on_round(result)`` gets the
    result so far (times: the fastest of the rounds done).
    """
    from transformers import AutoTokenizer

    from hybrid_estimators import ArticleText, E5Embedder
    from hybrid_estimators.metrics import is_medium_plus
    from hybrid_estimators.models import resolve_model

    budgets = sorted(set(int(b) for b in budgets))
    model_path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    start = time.perf_counter()
    ArticleText(head_tail=(1, 1), tokenizer=str(model_path)).fit_transform(["a b c"])
    articletext_call_seconds = time.perf_counter() - start
    configs = configurations(budgets, tokenizer, prefix)
    all_ids = [i for _, (X, _, _), _, _ in datasets for i in X.get("id", [])]
    warm_X, warm_source = warmup_articles(n_warmup * repeats, exclude_ids=all_ids)
    machine = describe_machine()
    result = {
        "kind": "stage1-budget",
        "title": f"Stage 1 token budget: {Path(str(model)).name}, {machine}",
        "machine": machine,
        "model": str(model),
        "prefix": prefix,
        "budgets": budgets,
        "truncations": list(TRUNCATIONS),
        "seeds": list(seeds),
        "folds": "KFold(5, shuffle=True, random_state=seed), the same for every budget",
        "repeats": repeats,
        "rounds_done": 0,
        "batch_size": batch_size,
        "n_bootstrap": n_bootstrap,
        "warmup": f"{n_warmup} {warm_source} articles at the same settings before every timed pass",
        "articletext_tokenizer_load_seconds": articletext_call_seconds,
        "loadavg_start": list(os.getloadavg()),
        "datasets": {},
    }
    embedders = {}
    for backend in backends:
        for budget in budgets:
            embedder = E5Embedder(
                model, prefix=prefix, backend=backend, batch_size=batch_size, max_seq_length=budget,
                cache=False, show_progress_bar=False,
            )
            embedders[backend, budget] = embedder.fit(warm_X.iloc[: max(n_warmup, 1)])
    row_keys = [(backend, c["budget"], c["truncation"]) for backend in backends for c in configs]
    config_of = {(backend, c["budget"], c["truncation"]): c for backend in backends for c in configs}
    states = []
    for name, (X, Y, spec), probe_kind, filter_dir in datasets:
        if n is not None:
            X, Y = X.iloc[:n], Y.iloc[:n]
        positive = is_medium_plus(Y, spec["dimensions"], tiers=spec.get("tiers"))
        logger.info("%s: %d articles, %d MEDIUM+; probe %s", name, len(X), positive.sum(), probe_kind)
        states.append({"name": name, "X": X, "Y": Y, "spec": spec, "probe": probe_kind, "filter": filter_dir,
                       "positive": positive, "timings": {}, "embeddings": {}, "quality": {}})
    for repeat in range(repeats):
        for state in states:
            X = state["X"]
            for key in row_keys:
                backend, budget, _ = key
                config, embedder = config_of[key], embedders[backend, budget]
                warm = warm_X.iloc[repeat::repeats]  # other articles each pass, short to long
                embedder.embed(stage1_texts(warm, config["head_tail"], tokenizer))
                load = os.getloadavg()[0]
                text_s, embed_s, cpu_s, vectors = time_pass(X, config, embedder, tokenizer)
                state["timings"].setdefault(key, []).append((text_s + embed_s, text_s, embed_s, cpu_s, load))
                state["embeddings"].setdefault(key, vectors)
                logger.info("%s pass %d/%d %s: %.1f ms/article, CPU %.1f ms (load %.2f)", state["name"], repeat + 1,
                            repeats, key, 1000 * (text_s + embed_s) / len(X), 1000 * cpu_s / len(X), load)
            if repeat == 0:
                _first_round_quality(state, row_keys, config_of, embedders, tokenizer, prefix, model_path, seeds,
                                     save_embeddings)
            result["datasets"][state["name"]] = _dataset_result(state, row_keys, backends, budgets, n_bootstrap)
        result["rounds_done"] = repeat + 1
        result["loadavg_end"] = list(os.getloadavg())
        if on_round is not None:
            on_round(result)
    return result


def _first_round_quality(state, row_keys, config_of, embedders, tokenizer, prefix, model_path, seeds,
                         save_embeddings):
    """Tokens fed and out-of-fold quality of each row, from the first round's embeddings."""
    from hybrid_estimators import ArticleText

    X, Y, name = state["X"], state["Y"], state["name"]
    if save_embeddings is not None:
        Path(save_embeddings).mkdir(parents=True, exist_ok=True)
        np.savez(Path(save_embeddings) / f"{name}.npz",
                 **{"|".join(map(str, k)): v for k, v in state["embeddings"].items()})
    for key in row_keys:
        backend, budget, _ = key
        config = config_of[key]
        texts = stage1_texts(X, config["head_tail"], tokenizer)
        if config["head_tail"] is not None:
            via_articletext = ArticleText(head_tail=config["head_tail"], tokenizer=str(model_path)).fit_transform(X)
            if list(via_articletext[:, 0]) != texts:
                raise AssertionError(f"{key}: the timed truncation differs from ArticleText's")
        embedder = embedders[backend, budget]
        max_length = embedder._max_length(embedder._model())
        fed, cut = tokens_fed(tokenizer, texts, prefix, max_length)
        predicted = out_of_fold(state["embeddings"][key], Y, state["probe"], seeds)
        state["quality"][key] = {
            "head_tail": None if config["head_tail"] is None else list(config["head_tail"]),
            "max_length": max_length,
            "tokens_per_article": float(fed.mean()),
            "share_cut_by_model": float(cut.mean()),
            "per_article": quality(predicted, Y, state["spec"]["dimensions"], state["spec"].get("tiers")),
        }
    lengths, _ = tokens_fed(tokenizer, as_texts_of(X), prefix, 10**9)
    state["tokens_untruncated"] = {
        "mean": float(lengths.mean()), "median": float(np.median(lengths)),
        "share_over_256": float((lengths > 256).mean()), "share_over_512": float((lengths > 512).mean()),
    }


def _dataset_result(state, row_keys, backends, budgets, n_bootstrap):
    n_articles = len(state["X"])
    rows = []
    for key in row_keys:
        backend, budget, truncation = key
        timings, measured = state["timings"][key], state["quality"][key]
        best = min(timings)
        rows.append({
            "key": key,
            "backend": backend,
            "budget": budget,
            "max_seq_length": measured["max_length"],
            "truncation": truncation,
            "head_tail": measured["head_tail"],
            "tokens_per_article": measured["tokens_per_article"],
            "share_cut_by_model": measured["share_cut_by_model"],
            "ms_per_article": 1000 * best[0] / n_articles,
            "text_ms_per_article": 1000 * best[1] / n_articles,
            "embed_ms_per_article": 1000 * best[2] / n_articles,
            "cpu_ms_per_article": 1000 * min(t[3] for t in timings) / n_articles,
            "pass_ms_per_article": [1000 * t[0] / n_articles for t in timings],
            "pass_cpu_ms_per_article": [1000 * t[3] / n_articles for t in timings],
            "loadavg_1min_at_passes": [t[4] for t in timings],
        })
    per_row = {key: state["quality"][key]["per_article"] for key in row_keys}
    baseline_budget = max(budgets)
    base_key = ("torch" if "torch" in backends else backends[0], baseline_budget, "head")
    base = next(row for row in rows if row["key"] == base_key)
    for row in rows:
        row["speedup"] = base["ms_per_article"] / row["ms_per_article"]
        row["cpu_speedup"] = base["cpu_ms_per_article"] / row["cpu_ms_per_article"]
    summarise(rows, per_row, state["positive"], base_key, n_bootstrap)
    choices = {}
    for backend in backends:
        backend_rows = [row for row in rows if row["backend"] == backend]
        choices[backend] = choose_budget(backend_rows, baseline=(baseline_budget, "head"))
    for row in rows:
        row["key"] = list(row["key"])
    return {
        "n_articles": n_articles,
        "n_medium_plus": int(state["positive"].sum()),
        "dimensions": len(state["spec"]["dimensions"]),
        "probe": state["probe"],
        "filter": state["filter"],
        "tokens_untruncated": state["tokens_untruncated"],
        "rows": rows,
        "iso_quality": choices,
    }


def as_texts_of(X):
    from hybrid_estimators.text import as_texts

    return as_texts(X)


# --- output -----------------------------------------------------------------------


def format_table(result):
    lines = [result["title"]]
    lines.append(
        f"load average (1, 5, 15 min): start {_load(result['loadavg_start'])}, end {_load(result['loadavg_end'])}; "
        f"time: fastest of {result['rounds_done']} passes; {len(result['seeds'])} CV seeds; "
        f"{result['n_bootstrap']} bootstrap resamples"
    )
    for name, data in result["datasets"].items():
        base = max(result["budgets"])
        untruncated = data["tokens_untruncated"]
        lines += [
            "",
            f"{name}: {data['n_articles']} articles ({data['n_medium_plus']} MEDIUM+), probe {data['probe']}; "
            f"untruncated tokens/article mean {untruncated['mean']:.0f}, median {untruncated['median']:.0f}, "
            f"{100 * untruncated['share_over_256']:.0f}% > 256, {100 * untruncated['share_over_512']:.0f}% > 512",
            f"{'budget':>6} {'truncation':<16}{'tok/art':>8}{'ms/art':>8}{f'vs {base}':>8}{'CPU ms':>8}{f'vs {base}':>8}"
            f"{'MAE [90% CI]':>25}{f'ΔMAE vs {base} [90% CI]':>34}{'AUC':>8}{'ΔAUC [90% CI]':>27}",
        ]
        for row in data["rows"]:
            truncation = row["truncation"] if row["head_tail"] is None else f"{row['truncation']} {row['head_tail'][0]}+{row['head_tail'][1]}"
            if row["backend"] != "torch":
                truncation = f"{row['backend']} {truncation}"
            mae = f"{row['mae']:.4f} [{row['mae_ci90'][0]:.3f}, {row['mae_ci90'][1]:.3f}]"
            delta = (
                f"{row['delta_mae']:+.4f} ({100 * row['delta_mae_relative']:+.1f}%) "
                f"[{row['delta_mae_ci90'][0]:+.3f}, {row['delta_mae_ci90'][1]:+.3f}]"
            )
            delta_auc = f"{row['delta_auc']:+.4f} [{row['delta_auc_ci90'][0]:+.3f}, {row['delta_auc_ci90'][1]:+.3f}]"
            lines.append(
                f"{row['budget']:>6} {truncation:<16}{row['tokens_per_article']:>8.1f}{row['ms_per_article']:>8.1f}"
                f"{row['speedup']:>7.2f}×{row['cpu_ms_per_article']:>8.1f}{row['cpu_speedup']:>7.2f}×{mae:>25}{delta:>34}{row['auc']:>8.4f}{delta_auc:>27}"
            )
        for backend, choice in data["iso_quality"].items():
            picked = choice["choice"]
            criteria = choice["criteria"]
            verdict = (
                f"max_seq_length={picked['budget']}, {picked['truncation']}"
                + (f" {picked['head_tail'][0]}+{picked['head_tail'][1]}" if picked["head_tail"] else "")
                + f": {picked['speedup']:.2f}× faster than {base} head"
                if choice["any_below_baseline"]
                else f"no budget below {base} qualifies: keep max_seq_length={base}, head"
            )
            certified = {True: "; certified by the intervals", False: "; NOT certified by the intervals (point estimates only)", None: ""}
            lines.append(
                f"iso-quality ({backend}; MAE <= {criteria['mae_at_most']:.4f}, AUC >= {criteria['auc_at_least']:.4f}): "
                f"{verdict}{certified[choice['certified']] if choice['any_below_baseline'] else ''}"
            )
    return "\n".join(lines)


def _load(values):
    return "/".join(f"{v:.2f}" for v in values)


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"])
    figure, axes = plt.subplots(len(names), 2, figsize=(11, 3.6 * len(names) + 0.8), squeeze=False)
    styles = {"head": ("tab:blue", "o"), "head+tail": ("tab:orange", "s")}
    for i, name in enumerate(names):
        data = result["datasets"][name]
        rows = [row for row in data["rows"] if row["backend"] == "torch"] or data["rows"]
        choice = data["iso_quality"].get("torch") or next(iter(data["iso_quality"].values()))
        for j, (metric, label, limit) in enumerate(
            (("mae", "MAE of the weighted average", choice["criteria"]["mae_at_most"]),
             ("auc", "routing ROC AUC (MEDIUM+)", choice["criteria"]["auc_at_least"]))
        ):
            axis, timing = axes[i, j], axes[i, j].twinx()
            for truncation, (colour, marker) in styles.items():
                picked = sorted((r for r in rows if r["truncation"] == truncation), key=lambda r: r["tokens_per_article"])
                x = [r["tokens_per_article"] for r in picked]
                y = np.array([r[metric] for r in picked])
                # The paired interval (the same articles at the baseline): the marginal
                # one is mostly the articles' own spread, which every budget shares.
                delta = np.array([r[f"delta_{metric}"] for r in picked])
                ci = np.array([r[f"delta_{metric}_ci90"] for r in picked]).T
                axis.errorbar(x, y, yerr=[np.maximum(delta - ci[0], 0), np.maximum(ci[1] - delta, 0)], color=colour,
                              marker=marker, capsize=3, label=f"{truncation} {metric.upper()} (90% CI of Δ vs baseline)")
                for r in picked:
                    axis.annotate(str(r["budget"]), (r["tokens_per_article"], r[metric]), fontsize=7,
                                  textcoords="offset points", xytext=(3, 4), color=colour)
                timing.plot(x, [r["ms_per_article"] for r in picked], color=colour, marker=marker, linestyle=":",
                            alpha=0.6, label=f"{truncation} ms/article (wall)")
                timing.plot(x, [r["cpu_ms_per_article"] for r in picked], color=colour, linestyle="--", linewidth=0.8,
                            alpha=0.6, label=f"{truncation} CPU ms/article")
            axis.axhline(limit, color="grey", linestyle="--", linewidth=1, label="iso-quality limit")
            axis.set_xlabel("tokens per article fed to the model (mean); labels: max_seq_length")
            axis.set_ylabel(label)
            timing.set_ylabel("Stage 1 ms/article (dotted: wall, dashed: CPU)")
            timing.set_ylim(bottom=0)
            axis.set_title(f"{name} ({data['n_articles']} articles, probe {data['probe']})", fontsize=10)
            if i == 0 and j == 0:
                handles = axis.get_legend_handles_labels()[0] + timing.get_legend_handles_labels()[0]
                labels = axis.get_legend_handles_labels()[1] + timing.get_legend_handles_labels()[1]
    figure.suptitle(
        f"Stage 1 token budget — {result['machine']}\nload average {_load(result['loadavg_start'])} at the start, "
        f"{_load(result['loadavg_end'])} at the end; time: fastest of {result['rounds_done']} passes", fontsize=9
    )
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0.17 / len(names), 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def run(args):
    """The ``stage1-budget`` part of ``python -m benchmarks``."""
    from benchmarks.run import available_backends
    from hybrid_estimators.datasets import load_articles

    installed = available_backends()
    wanted = [b for b in (args.backends or BUDGET_BACKENDS) if b in BUDGET_BACKENDS]
    backends = [b for b in wanted if b in installed]
    skipped = {
        b: "not installed (the optional extra: pip install -e '.[openvino]')" for b in wanted if b not in installed
    }
    for backend, why in skipped.items():
        logger.warning("stage1-budget: backend %s skipped: %s", backend, why)
    if not backends:
        raise SystemExit("stage1-budget: none of the requested backends is installed")
    datasets = []
    for name, folder in resolve_datasets(args.datasets):
        probe_kind, filter_dir = shipped_probe(name)
        datasets.append((name, load_articles(folder), probe_kind, filter_dir))
    quick = args.quick
    extra = {"skipped_backends": skipped, "command": "python -m benchmarks --parts stage1-budget"}

    def write(result):
        result.update(extra)
        args.budget_out.parent.mkdir(parents=True, exist_ok=True)
        args.budget_out.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
        logger.info("round %d/%d done: wrote %s", result["rounds_done"], result["repeats"], args.budget_out)

    result = measure(
        datasets,
        model=args.model,
        prefix=args.prefix if args.prefix is not None else ("passage: " if args.model == DEFAULT_MODEL else ""),
        budgets=args.budgets,
        backends=backends,
        seeds=args.seeds[:1] if quick else args.seeds,
        repeats=1 if quick else args.repeats,
        batch_size=args.batch_size,
        n_bootstrap=200 if quick else args.bootstrap,
        n=24 if quick else args.n,
        save_embeddings=os.environ.get("BUDGET_SAVE_EMBEDDINGS"),
        on_round=write,
    )
    print(format_table(result))
    if args.budget_plot:
        plot(result, args.budget_plot)
        logger.info("wrote %s", args.budget_plot)
    return result
