"""The filters shipped in ``filters/`` load safely, score the real shared data and carry their evidence."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hybrid_estimators.filters import (
    CALIBRATION_KEYS,
    check_metrics,
    data_hash,
    evaluation_staleness,
    evaluation_summary,
    load_filter,
    read_metadata,
)
from hybrid_estimators.tiers import weighted_average

FILTERS = Path(__file__).resolve().parents[1] / "filters"
NAMES = ["seece_energy_tech", "ai_engineering_practice"]
pytestmark = pytest.mark.slow


def _mae_ratio(predicted, Y, weights, Y_train):
    """Weighted-average MAE over that of predicting the training mean."""
    truth = weighted_average(Y, weights)
    estimate = np.clip(weighted_average(predicted, weights), 0, 10)
    baseline = weighted_average(Y_train, weights).mean()
    return np.abs(estimate - truth).mean() / np.abs(truth - baseline).mean()


def _cv_ratio(metrics):
    return metrics["cv_mae_weighted_average"] / metrics["cv_mae_weighted_average_baseline"]


@pytest.mark.parametrize("name, data", [("seece_energy_tech", "seece"), ("ai_engineering_practice", "ai_engineering")])
def test_shipped_filter_was_trained_on_the_shared_data_and_scores_it(name, data, request):
    X, Y, spec = request.getfixturevalue(data)
    router = load_filter(FILTERS / name / "v1", stage1_only=True)

    assert router.metadata["training_data_sha256"] == data_hash(X, Y)
    assert router.spec.dimension_names == list(Y.columns)
    rows = X.iloc[::5]
    predicted = router.predict(rows)
    assert predicted.shape == (len(rows), Y.shape[1])
    # The probe saw these articles: it fits them better than the mean, and
    # better than the unseen articles of its recorded cross-validation.
    in_sample = _mae_ratio(predicted, Y.iloc[::5], spec["dimensions"], Y)
    assert in_sample < min(1.0, _cv_ratio(router.metadata["metrics"]))


@pytest.mark.parametrize("name", NAMES)
def test_shipped_metadata_follows_the_one_schema(name):
    folder = FILTERS / name / "v1"
    metadata = read_metadata(folder)
    spec_dimensions = metadata["dimension_names"]
    metrics = metadata["metrics"]
    assert metadata["schema_version"] == 2
    assert check_metrics(metrics, spec_dimensions) == metrics
    assert metrics["cv_folds"] == 5  # what calibrate --cv auto reads
    assert metrics["probe"] in ("ridge", "mlp")
    chosen = metrics[f"cv_mae_weighted_average_{metrics['probe']}"]
    assert chosen == min(metrics["cv_mae_weighted_average_ridge"], metrics["cv_mae_weighted_average_mlp"])
    assert metrics["cv_mae_weighted_average"] < metrics["cv_mae_weighted_average_baseline"]
    calibration = metadata["calibration"]
    assert set(calibration) <= set(CALIBRATION_KEYS)
    assert calibration["target_met"] and calibration["recall_lower_bound"] >= calibration["target_recall"]
    config = yaml.safe_load((folder / "config.yaml").read_text())["hybrid_inference"]
    assert config["threshold"] == calibration["threshold"]


@pytest.mark.parametrize("name", NAMES)
def test_shipped_filters_carry_an_honest_current_evaluation(name):
    folder = FILTERS / name / "v1"
    metadata = read_metadata(folder)
    summary = evaluation_summary(metadata)
    split = summary["split"]
    assert split["stage1"] == "out_of_fold"  # never Stage 1 on its own training articles
    assert summary["n"] == metadata["n_training_articles"] == split["n_articles"]
    # Stage 1's out-of-fold predictions are those of the recorded cross-validation
    # (or of its repetitions with other seeds, the first being the recorded one).
    seeds = split.get("cv_random_states", [metadata["metrics"]["cv_random_state"]])
    assert seeds[0] == metadata["metrics"]["cv_random_state"]
    if len(seeds) == 1:
        assert summary["mae"]["stage1"]["value"] == pytest.approx(metadata["metrics"]["cv_mae_weighted_average"])
    low, high = summary["mae"]["stage1"]["low"], summary["mae"]["stage1"]["high"]
    assert low < summary["mae"]["stage1"]["value"] < high
    from hybrid_estimators.filters import FilterSpec

    spec = FilterSpec.from_yaml(folder / "config.yaml")
    assert evaluation_staleness(folder, spec, metadata) == []  # measured with the stages shipped
    if spec.hybrid_inference["stage2"] is None:
        assert split["stage2"] == "none" and not summary["stage2_available"]
    else:
        assert split["stage2"] in ("out_of_fold", "held_out", "partly_in_sample", "in_sample")
        if split["stage2"] not in ("out_of_fold", "held_out"):  # then its unseen articles are reported apart
            assert summary["held_out"]["n"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_cards_are_plain_markdown(name):
    card = (FILTERS / name / "v1" / "README.md").read_text()
    assert "[More Information Needed]" not in card and "<style" not in card
    assert len(card) < 20_000
    for section in ("## What it scores", "## Stage 1 quality (cross-validated)", "## Routing threshold",
                    "## Does Stage 2 earn its place?", "## Intended use and limitations", "## How to use it"):
        assert section in card


def test_shipped_seece_probe_cross_validates_well_below_the_mean():
    metadata = json.loads((FILTERS / "seece_energy_tech" / "v1" / "probe" / "metadata.json").read_text())
    assert _cv_ratio(metadata["metrics"]) <= 0.5
    assert metadata["calibration"]["recall_lower_bound"] >= 0.95  # the target it was calibrated for


@pytest.mark.heavy
def test_shipped_seece_filter_blends_its_stage2_into_the_articles_it_routes(seece):
    X, Y, spec = seece
    rows = np.arange(0, len(X), 30)  # ten articles, low and high
    router = load_filter(FILTERS / "seece_energy_tech" / "v1")
    stage2 = router.stage2.estimator
    configured = router.spec.hybrid_inference["stage2"]

    assert list(stage2.head_tail) == configured["head_tail"] and stage2.max_length == configured["max_length"]
    assert (stage2.pooling, stage2.layers) == (configured["pooling"], configured["layers"])
    weight = router.stage2_weight
    assert weight == router.spec.hybrid_inference["stage2_weight"] and 0 < weight < 1
    report = router.predict_report(X.iloc[rows])
    routed = (report["stage_used"] == "stage2").to_numpy()
    assert routed.any() and (~routed).any()
    np.testing.assert_array_equal(routed, router.route(X.iloc[rows]))

    stage1 = router.predict_stage1(X.iloc[rows])
    blend = router.predict_stage2(X.iloc[rows])  # Stage 2's pass, through the router's cache
    raw = stage2.predict(X.iloc[rows[:1]])
    # each stage's calibration map (stored in the folder) applies after the blend, before clipping
    calibrated = router.stage2_calibrator.transform(weight * raw + (1 - weight) * stage1[:1])
    np.testing.assert_allclose(blend[0], np.clip(calibrated[0], 0, 10), atol=1e-4)
    expected = np.where(routed[:, None], blend, np.clip(router.stage1_calibrator.transform(stage1), 0, 10))
    np.testing.assert_allclose(report[router.dimension_names_].to_numpy(), expected, atol=1e-9)
    # Both stages were fitted on all 295 articles: in sample, they fit far better than the mean.
    assert _mae_ratio(blend, Y.iloc[rows], spec["dimensions"], Y) < 0.6


@pytest.mark.parametrize("name", NAMES)
def test_shipped_filters_read_the_budget_chosen_at_iso_quality(name):
    """The config's Stage 1 budget holds by repeated CV (benchmarks/results/stage1_budget_cv_NAME.json:
    the upper 90% bound of the MAE difference to 512 tokens within +1%), is no smaller than the smallest
    that holds, is the one both shipped filters read (one embedding pass for both), and the probe was
    trained at it."""
    folder = FILTERS / name / "v1"
    hybrid = yaml.safe_load((folder / "config.yaml").read_text())["hybrid_inference"]
    measured = json.loads((FILTERS.parent / f"benchmarks/results/stage1_budget_cv_{name}.json").read_text())
    (row,) = [row for row in measured["rows"] if row["configuration"]["max_seq_length"] == hybrid["max_seq_length"]]
    assert row["configuration"]["head_tail"] == hybrid["embedding_head_tail"]
    assert row["delta_mae_relative_ci90"][1] <= 0.01
    assert hybrid["max_seq_length"] >= measured["chosen"]["max_seq_length"]
    budgets = {json.dumps(yaml.safe_load((FILTERS / other / "v1" / "config.yaml").read_text())["hybrid_inference"]
                          ["embedding_head_tail"]) for other in NAMES}
    assert len(budgets) == 1
    assert read_metadata(folder)["embedding_budget"] == {
        "max_seq_length": hybrid["max_seq_length"], "head_tail": hybrid["embedding_head_tail"]}
    article_text = load_filter(folder, stage1_only=True).stage1_.estimator.steps[0][1]
    assert list(article_text.head_tail) == hybrid["embedding_head_tail"]
