"""Choose the Stage 2 by cross-validation on the shared seece articles.

Every candidate is scored on the SAME folds (``KFold(n_folds, shuffle=True,
random_state=seed)`` for each seed of ``--seeds``), against Stage 1 out of
fold on those folds:

* ``stage1``: ``ArticleText() + E5Embedder()`` (multilingual-e5-small, offline)
  + :func:`~hybrid_estimators.probe.make_ridge_probe`, the shipped recipe.
* ``smollm2``, ``qwen25-coder``: a frozen decoder LM read by
  :class:`~hybrid_estimators.qwen.QwenRegressor` (head + tail 256 + 256 at
  512 tokens) with a ridge head fitted inside each training fold, for
  several ``pooling``/``layers`` recipes. The hidden states of every layer
  (last token and mean pool) come from ONE forward pass per article,
  ``QwenRegressor(..., layers="all", pooling="last+mean").hidden_features``,
  cached under ``--cache``; each recipe is a column slice of them, and its
  head is :func:`~hybrid_estimators.qwen.fit_ridge_head` (what
  ``QwenRegressor(..., max_epochs=0).fit`` fits), except ``last@L own
  head``, the default ``QwenRegressor`` ridge (no intercept, raw features).

Errors are those of the weighted average (dimension scores clipped to
0-10 first, as the router does); each article's error is averaged over the
seeds before 2,000 bootstrap resamples of the articles give 90% intervals,
of a candidate's MAE and of its paired difference with Stage 1 (negative:
the candidate is better). ``selected by inner CV`` is the honest estimate
of picking the best recipe: in every outer training fold the recipe is
chosen by an inner 5-fold CV there, then scored on the outer test fold.

Run (in the background: it takes a while on a CPU)::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/stage2_candidates.py \\
        --candidates stage1 smollm2 qwen25-coder --folds 5 --seeds 0 1 2

It logs to stderr and writes ``benchmarks/results/stage2_candidates.json``.
``--extract-only`` computes (and caches) the features of the named bases
and stops; run one base per process to use two cores.
"""

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold

from hybrid_estimators.datasets import load_articles
from hybrid_estimators.qwen import _RIDGE_ALPHAS, QwenRegressor, fit_ridge_head
from hybrid_estimators.tiers import medium_threshold, weighted_average

logger = logging.getLogger("stage2_candidates")
ROOT = Path(__file__).resolve().parents[1]
HEAD_TAIL, MAX_LENGTH = (256, 256), 512
CHUNK = 16  # articles per cached feature file (an interrupted run resumes)


def bases():
    from hybrid_estimators import models

    return {
        "smollm2": (models.SMOLLM2_NAME, models.SMOLLM2_GGUF, models.smollm2_gguf),
        "qwen25-coder": (
            models.QWEN25_CODER_NAME,
            models.QWEN25_CODER_GGUF,
            models.qwen25_coder_gguf,
        ),
    }


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    parser.add_argument("--data", type=Path, default=None, help="labelled folder (default: shared seece_energy_tech)")
    parser.add_argument("--candidates", nargs="+", default=["stage1", "smollm2", "qwen25-coder"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stage2_candidates.json")
    parser.add_argument("--cache", type=Path, default=Path("/work/scratch/stage2"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--threshold", type=float, default=None,
                        help="routing threshold of the 'routed' rows (default: the shipped filter's)")
    parser.add_argument("--extract-only", action="store_true")
    parser.add_argument("--save-oof", nargs=2, metavar=("CANDIDATE", "NPZ"), default=None,
                        help="write CANDIDATE's out-of-fold predictions of every seed (ids, dimensions, "
                             "seeds, scores) to NPZ, for scripts/make_filters.py --stage2-oof")
    parser.add_argument("--stage2-weight", type=float, nargs="*", default=[0.5],
                        help="also score each recipe as the router's stage2_weight blend with Stage 1 "
                             "(w * Stage 2 + (1 - w) * Stage 1), and the hybrid that uses it on routed rows")
    parser.add_argument("--holdout", type=float, default=0.3,
                        help="share of articles held out for the LoRA candidate (smollm2-lora)")
    parser.add_argument("--lora-pooling", default="mean")
    parser.add_argument("--lora-layers", type=int, nargs="+", default=None)
    parser.add_argument("--lora-epochs", type=int, default=1)
    parser.add_argument("--lora-head-tail", type=int, nargs=2, default=HEAD_TAIL)
    return parser.parse_args()


# --- features ------------------------------------------------------------------


def _ids_key(X):
    return hashlib.sha256("\n".join(X["id"]).encode()).hexdigest()[:12]


def lm_features(name, X, cache, batch_size):
    """Hidden states of every layer (last token, mean) of base `name`, cached in chunks."""
    hub_name, gguf_file, locate = bases()[name]
    folder, _ = locate()
    key = f"{name}-ht{HEAD_TAIL[0]}+{HEAD_TAIL[1]}-L{MAX_LENGTH}-{_ids_key(X)}"
    where = cache / "features" / key
    where.mkdir(parents=True, exist_ok=True)
    model = QwenRegressor(
        folder,
        gguf_file=gguf_file,
        head_tail=HEAD_TAIL,
        max_length=MAX_LENGTH,
        batch_size=batch_size,
        layers="all",
        pooling="last+mean",
        show_progress_bar=False,
    )
    chunks, seconds, later = [], 0.0, 0.0
    for start in range(0, len(X), CHUNK):
        path = where / f"chunk{start:04d}.npy"
        timing = where / f"chunk{start:04d}.json"
        if path.exists() and timing.exists():
            chunks.append(np.load(path))
            took = json.loads(timing.read_text())["seconds"]
            seconds += took
            later += took if start else 0.0
            continue
        began = time.perf_counter()
        features = model.hidden_features(X.iloc[start : start + CHUNK]).astype(np.float32)
        took = time.perf_counter() - began
        np.save(path, features)
        timing.write_text(json.dumps({"seconds": took, "n": len(features)}))
        chunks.append(features)
        seconds += took
        later += took if start else 0.0
        logger.info("%s: %d/%d articles, %.2f s/article in this chunk", name, start + len(features), len(X), took / len(features))
    features = np.concatenate(chunks).astype(np.float64)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, gguf_file=gguf_file)
    info = {
        "base": hub_name,
        "gguf_file": gguf_file,
        "n_hidden_layers": int(config.num_hidden_layers),
        "hidden_size": int(config.hidden_size),
        # The first chunk includes loading the model: an upper bound.
        "extraction_seconds_per_article": seconds / len(X),
        # Without the first chunk, which loads the model.
        "forward_seconds_per_article": later / max(1, len(X) - CHUNK),
        "features": str(where),
    }
    return features, info


def columns(info, layers, pooling):
    """Column indices of `layers` x `pooling` in the layers="all", "last+mean" features."""
    h = info["hidden_size"]
    out = []
    for layer in layers:
        for p in pooling.split("+"):
            offset = (layer * 2 + (0 if p == "last" else 1)) * h
            out.extend(range(offset, offset + h))
    return np.array(out)


def recipes(info):
    """Named (layers, pooling) of the candidates of one base (resolved indices)."""
    L = info["n_hidden_layers"]
    half, two_thirds, quarter, three_quarters = round(L / 2), round(2 * L / 3), round(L / 4), round(3 * L / 4)
    return {
        "last@L": ([L], "last"),
        "mean@L": ([L], "mean"),
        f"last@{half}": ([half], "last"),
        f"mean@{half}": ([half], "mean"),
        f"last@{two_thirds}": ([two_thirds], "last"),
        f"mean@{two_thirds}": ([two_thirds], "mean"),
        f"mean@[{half},{two_thirds},L]": ([half, two_thirds, L], "mean"),
        f"mean@[{quarter},{half},{three_quarters},L]": ([quarter, half, three_quarters, L], "mean"),
        f"last+mean@{two_thirds}": ([two_thirds], "last+mean"),
        "mean@all": (list(range(L + 1)), "mean"),
    }


def e5_features(X, cache):
    from hybrid_estimators.embedding import E5Embedder
    from hybrid_estimators.text import ArticleText

    path = cache / "features" / f"e5-small-{_ids_key(X)}.npy"
    timing = path.with_suffix(".json")
    if path.exists() and timing.exists():
        return np.load(path), json.loads(timing.read_text())
    texts = ArticleText().fit_transform(X)
    began = time.perf_counter()
    embedder = E5Embedder(show_progress_bar=False, cache=False)
    features = embedder.fit_transform(texts)
    took = time.perf_counter() - began
    features = np.asarray(features, dtype=np.float64)
    info = {"base": "intfloat/multilingual-e5-small (offline)", "extraction_seconds_per_article": took / len(X)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, features)
    timing.write_text(json.dumps(info))
    return features, info


# --- heads ---------------------------------------------------------------------


def ridge_head_predict(F_train, Y_train, F_test):
    weight, bias, alpha = fit_ridge_head(F_train, Y_train)
    return F_test @ weight.T + bias


def own_head_predict(F_train, Y_train, F_test):
    # QwenRegressor's default head (pooling="last", layers=None): RidgeCV without
    # intercept on the raw last-token states (QwenRegressor._fit_head_by_ridge).
    ridge = RidgeCV(alphas=_RIDGE_ALPHAS, fit_intercept=False).fit(F_train, Y_train)
    return ridge.predict(F_test)


def stage1_predict(F_train, Y_train, F_test):
    from hybrid_estimators.probe import make_ridge_probe

    return make_ridge_probe().fit(F_train, Y_train).predict(F_test)


def out_of_fold(predict, F, Y, folds):
    predicted = np.empty_like(Y)
    for train, test in folds:
        predicted[test] = predict(F[train], Y[train], F[test])
    return predicted


def inner_selection(candidates, Y, folds, weights, seed, n_folds):
    """Outer CV of 'pick the recipe by inner CV on the training fold'."""
    predicted = np.empty_like(Y)
    picks = []
    for train, test in folds:
        inner = list(KFold(n_folds, shuffle=True, random_state=seed).split(train))
        scores = {}
        for name, (F, predict) in candidates.items():
            inner_pred = out_of_fold(predict, F[train], Y[train], inner)
            scores[name] = np.abs(wa(inner_pred, weights) - weighted_average(Y[train], weights)).mean()
        best = min(scores, key=scores.get)
        picks.append(best)
        F, predict = candidates[best]
        predicted[test] = predict(F[train], Y[train], F[test])
    return predicted, picks


# --- metrics -------------------------------------------------------------------


def wa(Y, weights):
    return weighted_average(np.clip(Y, 0, 10), weights)


def interval(values, n_boot, rng_seed=0):
    rng = np.random.RandomState(rng_seed)
    n = len(values)
    means = values[rng.randint(0, n, size=(n_boot, n))].mean(axis=1)
    low, high = np.percentile(means, [5, 95])
    return {"mean": float(values.mean()), "ci90": [float(low), float(high)]}


def report(per_seed, Y, stage1_per_seed, weights, X, medium, routed, n_boot, dims):
    """Metrics of a candidate from its out-of-fold predictions, one array per seed."""
    truth = weighted_average(Y, weights)
    errors = np.mean([np.abs(wa(P, weights) - truth) for P in per_seed], axis=0)
    stage1_errors = np.mean([np.abs(wa(P, weights) - truth) for P in stage1_per_seed], axis=0)
    difference = errors - stage1_errors
    positives = truth >= medium
    recall = [float((wa(P, weights)[positives] >= medium).mean()) for P in per_seed]
    languages = X["language"].where(X["language"].isin(["en", "nl"]), "other").to_numpy()
    return {
        "weighted_average_mae": interval(errors, n_boot),
        "weighted_average_mae_per_seed": [float(np.abs(wa(P, weights) - truth).mean()) for P in per_seed],
        "difference_vs_stage1": interval(difference, n_boot),
        "share_of_articles_better_than_stage1": float((difference < 0).mean()),
        "dimension_mae": dict(zip(dims, np.mean([np.abs(np.clip(P, 0, 10) - Y).mean(axis=0) for P in per_seed], axis=0).round(4).tolist())),
        "mean_dimension_mae": float(np.mean([np.abs(np.clip(P, 0, 10) - Y).mean() for P in per_seed])),
        "per_language": {
            lang: {"n": int((languages == lang).sum()), "weighted_average_mae": float(errors[languages == lang].mean()),
                   "difference_vs_stage1": float(difference[languages == lang].mean())}
            for lang in ("en", "nl", "other") if (languages == lang).any()
        },
        "medium_plus_recall": {"n_medium_plus": int(positives.sum()), "mean": float(np.mean(recall)), "per_seed": recall},
        "routed_rows": {
            "n": int(routed.sum()),
            "weighted_average_mae": interval(errors[routed], n_boot),
            "difference_vs_stage1": interval(difference[routed], n_boot),
        },
    }


def save_oof(args, candidate, per_seed, X, dims):
    """Write `candidate`'s out-of-fold predictions (one set per seed) if --save-oof names it."""
    if args.save_oof is None or args.save_oof[0] != candidate:
        return
    path = Path(args.save_oof[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    description = (f"{candidate}: out-of-fold predictions of KFold({args.folds}, shuffle=True, "
                   f"random_state=seed) for seeds {args.seeds}, the head refitted without each fold")
    np.savez(path, ids=np.array(X["id"].astype(str).tolist(), dtype=str), dimensions=np.array(dims),
             predictions=np.stack(per_seed), seeds=np.array(args.seeds), folds=np.array(args.folds),
             description=np.array(description))
    logger.info("wrote the out-of-fold predictions of %s to %s", candidate, path)


def blended_rows(row, per_seed, stage1_per_seed, stage2_weights, common):
    """Rows for a candidate used as ``HybridRouterRegressor(stage2_weight=w)`` uses it.

    ``blend w``: every article scored ``w * Stage 2 + (1 - w) * Stage 1``
    (what ``score --all-stage2`` returns); ``hybrid blend w``: the routed
    articles (the shipped threshold on Stage 1 out of fold) get the blend,
    the others Stage 1 (what ``score`` returns).
    """
    routed = common["routed"][:, None]
    rows = []
    for w in stage2_weights:
        blended = [w * P + (1 - w) * S for P, S in zip(per_seed, stage1_per_seed)]
        hybrid = [np.where(routed, B, S) for B, S in zip(blended, stage1_per_seed)]
        for label, predictions in ((f"blend {w:g}", blended), (f"hybrid blend {w:g}", hybrid)):
            extra = {"candidate": f"{row['candidate']} + Stage 1, {label}", "base": row["base"],
                     "recipe": f"{row['recipe']}; stage2_weight={w:g}" + (", routed rows only" if "hybrid" in label else ""),
                     "stage2_weight": w, "extraction_seconds_per_article": row["extraction_seconds_per_article"]}
            extra.update(report(predictions, **common))
            rows.append(extra)
            logger.info("%s: MAE %.3f, vs Stage 1 %+.3f %s", extra["candidate"], extra["weighted_average_mae"]["mean"],
                        extra["difference_vs_stage1"]["mean"], extra["difference_vs_stage1"]["ci90"])
    return rows


def holdout_lora(args, X, Y, E, features, weights, medium, dims):
    """LoRA fine-tuning of SmolLM2 vs its frozen head vs Stage 1 on one held-out split.

    Fine-tuning costs about three forward passes per article and epoch, too
    much for cross-validation on a CPU: one split, the same for every row
    (``train_test_split(test_size=holdout, random_state=0)``), Stage 1 and
    the frozen heads refitted on its training part only.
    """
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(X)), test_size=args.holdout, random_state=0)
    truth = weighted_average(Y[test], weights)
    rows = {"Stage 1 (e5-small + ridge probe)": stage1_predict(E[train], Y[train], E[test])}
    F_all, info = features["smollm2"]
    layers = args.lora_layers or [info["n_hidden_layers"]]
    layers = [layer % (info["n_hidden_layers"] + 1) for layer in layers]
    F = F_all[:, columns(info, layers, args.lora_pooling)]
    rows[f"SmolLM2 frozen, ridge head ({args.lora_pooling}@{layers})"] = ridge_head_predict(F[train], Y[train], F[test])

    hub_name, gguf_file, locate = bases()["smollm2"]
    folder, _ = locate()
    head, tail = args.lora_head_tail
    model = QwenRegressor(
        folder, gguf_file=gguf_file, head_tail=(head, tail), max_length=head + tail,
        batch_size=args.batch_size, pooling=args.lora_pooling,
        layers=layers[0] if len(layers) == 1 else layers,
        max_epochs=args.lora_epochs, random_state=0, show_progress_bar=False,
    )
    began = time.perf_counter()
    model.fit(X.iloc[train], Y[train])
    fit_seconds = time.perf_counter() - began
    began = time.perf_counter()
    name = f"SmolLM2 + LoRA ({args.lora_pooling}@{layers}, {head}+{tail}, {args.lora_epochs} epoch)"
    rows[name] = model.predict(X.iloc[test])
    predict_seconds = time.perf_counter() - began
    stage1_errors = np.abs(wa(rows["Stage 1 (e5-small + ridge probe)"], weights) - truth)
    result = {
        "split": f"train_test_split(test_size={args.holdout}, random_state=0)",
        "n_train": len(train), "n_test": len(test),
        "lora": {"params": {k: v for k, v in model.get_params().items() if k not in ("model_name_or_path",)},
                 "fit_seconds": fit_seconds, "fit_seconds_per_article_epoch": fit_seconds / len(train) / max(1, model.n_epochs_),
                 "predict_seconds_per_article": predict_seconds / len(test),
                 "n_epochs": model.n_epochs_, "validation_loss_curve": model.validation_loss_curve_},
        "rows": {},
    }
    for label, P in rows.items():
        errors = np.abs(wa(P, weights) - truth)
        result["rows"][label] = {
            "weighted_average_mae": interval(errors, args.bootstrap),
            "difference_vs_stage1": interval(errors - stage1_errors, args.bootstrap),
            "mean_dimension_mae": float(np.abs(np.clip(P, 0, 10) - Y[test]).mean()),
            "medium_plus_recall": float((wa(P, weights)[truth >= medium] >= medium).mean()),
        }
        logger.info("holdout %s: MAE %.3f, vs Stage 1 %+.3f %s", label, errors.mean(),
                    result["rows"][label]["difference_vs_stage1"]["mean"], result["rows"][label]["difference_vs_stage1"]["ci90"])
    return result


def markdown_table(results):
    """The candidates as a Markdown table (docs/stage2.md)."""
    def ci(metric):
        low, high = metric["ci90"]
        return f"{metric['mean']:+.3f} [{low:+.3f}, {high:+.3f}]" if metric is not None else ""

    lines = [
        "| candidate | features | CV MAE [90% CI] | − Stage 1 [90% CI] | − Stage 1, en / nl | routed rows − Stage 1 | MEDIUM+ recall | s/article |",
        "|---|---:|---|---|---|---|---:|---:|",
    ]
    for row in results["candidates"]:
        mae = row["weighted_average_mae"]
        low, high = mae["ci90"]
        languages = row["per_language"]
        lines.append(
            f"| {row['candidate']} | {row.get('n_features', '')} | {mae['mean']:.3f} [{low:.3f}, {high:.3f}] "
            f"| {ci(row['difference_vs_stage1']) if row['candidate'] != 'stage1' else '—'} "
            f"| {languages['en']['difference_vs_stage1']:+.3f} / {languages['nl']['difference_vs_stage1']:+.3f} "
            f"| {ci(row['routed_rows']['difference_vs_stage1']) if row['candidate'] != 'stage1' else '—'} "
            f"| {row['medium_plus_recall']['mean']:.3f} | {row['extraction_seconds_per_article']:.2f} |"
        )
    return "\n".join(lines)


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    from hybrid_estimators.datasets import shared_data_dir

    data = args.data or shared_data_dir() / "seece_energy_tech"
    X, Y_frame, spec = load_articles(data)
    dims = list(Y_frame.columns)
    Y = Y_frame.to_numpy()
    weights = np.array([spec["dimensions"][d] for d in dims])
    medium = medium_threshold(spec["tiers"])
    logger.info("%d articles, %d dimensions, candidates %s", len(X), len(dims), args.candidates)

    features = {}
    for name in args.candidates:
        if name in ("stage1", "smollm2-lora"):
            continue
        began = time.perf_counter()
        features[name] = lm_features(name, X, args.cache, args.batch_size)
        logger.info("%s features %s in %.0f s", name, features[name][0].shape, time.perf_counter() - began)
    if args.extract_only:
        return

    threshold = args.threshold
    if threshold is None:
        import yaml

        config = yaml.safe_load((ROOT / "filters" / "seece_energy_tech" / "v1" / "config.yaml").read_text())
        threshold = float(config["hybrid_inference"]["threshold"])

    began = time.perf_counter()
    E, e5_info = e5_features(X, args.cache)
    logger.info("e5 features %s in %.0f s", E.shape, time.perf_counter() - began)
    seeds = {seed: list(KFold(args.folds, shuffle=True, random_state=seed).split(X)) for seed in args.seeds}
    stage1 = [out_of_fold(stage1_predict, E, Y, seeds[s]) for s in args.seeds]
    # Rows the shipped threshold would route to Stage 2 (Stage 1 out of fold, first seed).
    routed = wa(stage1[0], weights) >= threshold
    common = dict(Y=Y, stage1_per_seed=stage1, weights=weights, X=X, medium=medium, routed=routed, n_boot=args.bootstrap, dims=dims)
    results = {
        "data": str(data),
        "n_articles": len(X),
        "folds": f"KFold({args.folds}, shuffle=True, random_state=seed)",
        "seeds": args.seeds,
        "head_tail": list(HEAD_TAIL),
        "max_length": MAX_LENGTH,
        "routing_threshold": threshold,
        "bootstrap": f"{args.bootstrap} resamples of the articles, each article's error averaged over the seeds; 90% percentile intervals",
        "candidates": [],
    }
    row = {"candidate": "stage1", "base": e5_info["base"], "recipe": "ArticleText + E5Embedder() + make_ridge_probe()",
           "extraction_seconds_per_article": e5_info["extraction_seconds_per_article"]}
    row.update(report(stage1, **common))
    results["candidates"].append(row)
    logger.info("stage1: CV weighted-average MAE %.3f", row["weighted_average_mae"]["mean"])

    if "smollm2-lora" in args.candidates:
        if "smollm2" not in features:
            features["smollm2"] = lm_features("smollm2", X, args.cache, args.batch_size)
        results["holdout_lora"] = holdout_lora(args, X, Y, E, features, weights, medium, dims)
        if set(args.candidates) == {"stage1", "smollm2-lora"}:
            features = {}
            args.out = args.out.with_name(args.out.stem + "_lora.json")

    for name, (F_all, info) in features.items():
        everything = {}
        for recipe, (layers, pooling) in recipes(info).items():
            F = F_all[:, columns(info, layers, pooling)]
            everything[recipe] = (F, ridge_head_predict)
        everything["last@L own head"] = (F_all[:, columns(info, [info["n_hidden_layers"]], "last")], own_head_predict)
        for recipe, (F, predict) in everything.items():
            began = time.perf_counter()
            per_seed = [out_of_fold(predict, F, Y, seeds[s]) for s in args.seeds]
            row = {"candidate": f"{name} {recipe}", "base": info["base"], "gguf_file": info["gguf_file"],
                   "recipe": recipe, "n_features": int(F.shape[1]),
                   "extraction_seconds_per_article": info["extraction_seconds_per_article"],
                   "forward_seconds_per_article": info["forward_seconds_per_article"],
                   "head_fit_seconds": (time.perf_counter() - began) / (len(args.seeds) * args.folds)}
            row.update(report(per_seed, **common))
            results["candidates"].append(row)
            save_oof(args, row["candidate"], per_seed, X, dims)
            logger.info("%s %s: MAE %.3f, vs Stage 1 %+.3f %s", name, recipe, row["weighted_average_mae"]["mean"],
                        row["difference_vs_stage1"]["mean"], row["difference_vs_stage1"]["ci90"])
            results["candidates"].extend(blended_rows(row, per_seed, stage1, args.stage2_weight, common))
        picks_per_seed, per_seed = [], []
        for s in args.seeds:
            predicted, picks = inner_selection(everything, Y, seeds[s], weights, s, args.folds)
            per_seed.append(predicted)
            picks_per_seed.append(picks)
        row = {"candidate": f"{name} selected by inner CV", "base": info["base"],
               "recipe": "per outer fold, the recipe with the best inner 5-fold CV MAE", "picks_per_seed": picks_per_seed,
               "extraction_seconds_per_article": info["extraction_seconds_per_article"]}
        row.update(report(per_seed, **common))
        results["candidates"].append(row)
        results["candidates"].extend(blended_rows(row, per_seed, stage1, args.stage2_weight, common))
        logger.info("%s selected by inner CV: MAE %.3f, vs Stage 1 %+.3f %s (picks %s)", name,
                    row["weighted_average_mae"]["mean"], row["difference_vs_stage1"]["mean"],
                    row["difference_vs_stage1"]["ci90"], picks_per_seed)

    truth = weighted_average(Y, weights)
    results["mean_of_training_scores_mae"] = float(np.mean([
        np.abs(np.concatenate([np.full(len(t), truth[tr].mean()) for tr, t in seeds[s]]) - truth[np.concatenate([t for _, t in seeds[s]])]).mean()
        for s in args.seeds
    ]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    logger.info("wrote %s", args.out)
    print(markdown_table(results))


if __name__ == "__main__":
    main()
