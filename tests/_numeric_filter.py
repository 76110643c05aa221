"""A small real filter whose articles carry their score in the title (for exact answers)."""

import numpy as np
import pandas as pd
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from hybrid_estimators.filters import Filter, FilterSpec
from hybrid_estimators.text import ArticleText


def title_value(texts):
    """The number an article's text starts with, as the only feature."""
    return np.array([[float(str(text).split()[0])] for text in np.asarray(texts).ravel()])


def articles(values, start=0):
    return pd.DataFrame(
        {
            "id": [f"a{start + i}" for i in range(len(values))],
            "title": [f"{v:.4f} energy" for v in values],
            "content": ["A long enough article body."] * len(values),
        },
        dtype=object,
    )


def numeric_filter(noise=1.0, threshold=4.0, random_state=0, min_length=10, stage2_weight=1.0):
    """Stage 2 is exact (score = title value); Stage 1 is fitted on noisy scores."""
    rng = np.random.RandomState(random_state)
    values = rng.uniform(0, 10, 300)
    X = articles(values)
    Y = np.c_[values, values]
    stage1 = make_pipeline(ArticleText(), FunctionTransformer(title_value), Ridge())
    stage1.fit(X, Y + rng.normal(0, noise, Y.shape))
    stage2 = make_pipeline(ArticleText(), FunctionTransformer(title_value), Ridge(alpha=1e-9))
    stage2.fit(X, Y)
    spec = FilterSpec.from_dict(
        {
            "name": "numeric",
            "version": "v1",
            "dimensions": {"a": 0.5, "b": 0.5},
            "prefilter": {"min_length": min_length},
            "hybrid_inference": {"threshold": threshold, "target_recall": 0.9, "confidence": 0.9,
                                 "stage2_weight": stage2_weight},
        }
    )
    return Filter.from_spec(spec, FrozenEstimator(stage1), FrozenEstimator(stage2), metadata={}).fit()
