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
# Scoring on Ray Data

`score_dataset` scores articles with a filter on a Ray cluster: a pool
of Ray actors each loads the filter's models once and scores batch after
batch (the prefilter, Stage 1, then Stage 2 on the routed rows of the
batch only). Its rows are those of `hybrid-estimators score`: one per
input line, bad lines as error rows, each with its `line` number.

Here: the shipped Stage-1-only filter `filters/ai_engineering_practice/v1`
(multilingual-e5-small, offline) scores `examples/articles.jsonl` on a
local Ray with 2 CPUs. On a cluster, pass `address="ray://head:10001"`
(or start Ray there and set `RAY_ADDRESS`); the filter folder and the
input must then be readable by the workers (a shared disk, or `s3://`
for the input).

The same from the command line:

    hybrid-estimators score --filter filters/ai_engineering_practice/v1 \\
        examples/articles.jsonl -o scores.jsonl --ray --concurrency 2

Run it with `python examples/score_on_ray.py`, or open it as a notebook
(`jupytext --to notebook examples/score_on_ray.py`); it takes well under
a minute.
"""

# %%
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from hybrid_estimators import load_filter, score_dataset

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
FILTER = HERE.parent / "filters" / "ai_engineering_practice" / "v1"
ARTICLES = HERE / "articles.jsonl"

# %% [markdown]
# ## A local Ray
#
# `score_dataset` starts a local Ray itself when none is running; starting
# it here sets its size. Each actor takes one CPU.

# %%
if not ray.is_initialized():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False

# %% [markdown]
# ## Score the file
#
# `score_dataset` reads the JSONL file as the command does and returns a
# lazy `ray.data.Dataset`; `to_pandas()` runs it. Rows come in no
# particular order: sort by `line` to restore the file's. Four articles a
# batch gives the two actors three batches to share.

# %%
started = time.perf_counter()
scored = score_dataset(FILTER, ARTICLES, batch_size=4, concurrency=2)
rows = scored.to_pandas().sort_values("line", ignore_index=True)
logging.info("scored %d lines on Ray in %.1f s", len(rows), time.perf_counter() - started)

# %% [markdown]
# ## The same scores as on one machine
#
# `load_filter` gives the same router the actors use; its `predict` on the
# valid articles matches the rows (which hold 4 decimals, like the
# command's output).

# %%
router = load_filter(FILTER)
valid = rows[rows["error"].isna() & rows["blocked_by"].isna()]
X = pd.read_json(ARTICLES, lines=True).iloc[valid["line"].to_numpy() - 1]
local = router.predict(X[["title", "content"]])
on_ray = np.array([list(scores.values()) for scores in valid["scores"]])
largest_difference = np.abs(on_ray - local).max()
logging.info("largest difference to router.predict: %.1e", largest_difference)
assert largest_difference < 1e-3, largest_difference

# %%
ray.shutdown()

# %% [markdown]
# ## The rows

# %%
table = rows[["line", "id", "tier", "weighted_average", "stage_used", "blocked_by", "error"]]
if "ipykernel" not in sys.modules:
    print(table.to_string(index=False))
table
