"""The filters shipped in ``filters/`` load safely and score the real shared data."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from hybrid_estimators.filters import data_hash, load_filter
from hybrid_estimators.tiers import weighted_average

FILTERS = Path(__file__).resolve().parents[1] / "filters"
pytestmark = pytest.mark.slow


def _mae_ratio(predicted, Y, weights, Y_train):
    """Weighted-average MAE over that of predicting the training mean."""
    truth = weighted_average(Y, weights)
    estimate = np.clip(weighted_average(predicted, weights), 0, 10)
    baseline = weighted_average(Y_train, weights).mean()
    return np.abs(estimate - truth).mean() / np.abs(truth - baseline).mean()


@pytest.mark.parametrize("name, data", [("seece_energy_tech", "seece"), ("ai_engineering_practice", "ai_engineering")])
def test_shipped_filter_was_trained_on_the_shared_data_and_scores_it(name, data, request):
    X, Y, spec = request.getfixturevalue(data)
    router = load_filter(FILTERS / name / "v1", stage1_only=True)

    assert router.metadata_["training_data_sha256"] == data_hash(X, Y)
    assert router.filter_spec_.dimension_names == list(Y.columns)
    rows = X.iloc[::5]
    predicted = router.predict(rows)
    assert predicted.shape == (len(rows), Y.shape[1])
    # The probe saw these articles: it fits them better than the mean, and
    # better than the unseen articles of its recorded cross-validation.
    in_sample = _mae_ratio(predicted, Y.iloc[::5], spec["dimensions"], Y)
    assert in_sample < min(1.0, router.metadata_["metrics"]["cv5_mae_ratio"])


def test_shipped_seece_probe_cross_validates_well_below_the_mean():
    metrics = load_filter(FILTERS / "seece_energy_tech" / "v1", stage1_only=True).metadata_["metrics"]
    assert metrics["cv5_mae_ratio"] <= 0.5
    assert metrics["recall_lower_bound"] >= 0.95  # the target it was calibrated for


def test_shipped_seece_filter_runs_its_stage2_adapter_on_held_back_articles(seece):
    X, Y, spec = seece
    _, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.2, random_state=0)
    router = load_filter(FILTERS / "seece_energy_tech" / "v1")
    stage2 = router.stage2.estimator

    assert stage2.head_tail == (128, 128) and stage2.max_length == 256
    assert 0 < router.threshold < 10
    report = router.predict_report(X_test)
    routed = report["stage_used"] == "stage2"
    assert routed.sum() > 0 and (~routed).sum() > 0
    np.testing.assert_array_equal(routed, router.route(X_test))
    # Stage 2 never saw these articles (the adapter's own split): it must still
    # beat predicting the training mean by a wide margin.
    assert _mae_ratio(stage2.predict(X_test), Y_test, spec["dimensions"], Y_train) < 0.6
