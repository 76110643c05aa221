"""benchmarks.stage1_qualify: configurations compared on the same folds, with generated features."""

import numpy as np
import pytest

from benchmarks.budget import out_of_fold
from benchmarks.stage1_qualify import (
    choose_budget_by_interval,
    compare,
    config_name,
    parse_config,
    qualifies,
)

SPEC = {"dimensions": {"a": 0.5, "b": 0.3, "c": 0.2}}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    Y = rng.uniform(0, 10, size=(150, 3))
    signal = np.hstack([Y, rng.normal(size=(150, 13))])
    return Y, signal, rng


@pytest.mark.parametrize("text", ["torch:512", "openvino-int8:128:60+59"])
def test_a_configuration_is_written_as_it_is_read(text):
    assert config_name(parse_config(text)) == text
    assert parse_config("openvino-bf16:256:124+123") == {
        "backend": "openvino-bf16", "max_seq_length": 256, "head_tail": [124, 123]}


def test_the_same_features_score_the_same_and_noise_costs_mae(data):
    Y, signal, rng = data
    noisy = signal + rng.normal(scale=3.0, size=signal.shape)
    configs = [parse_config("torch:512"), parse_config("torch:128:60+59"), parse_config("torch:256")]
    predictions = [out_of_fold(e, Y, "ridge", [0, 1]) for e in (signal, noisy, signal.copy())]
    rows = compare(configs, predictions, Y, SPEC, n_bootstrap=200)

    assert rows[0]["delta_mae"] == 0 and rows[0]["delta_mae_ci90"] == [0.0, 0.0]
    assert rows[2]["delta_mae"] == pytest.approx(0.0, abs=1e-9)  # same folds, same features
    assert rows[1]["delta_mae_relative"] > 0.05  # noise worsens the probe
    low, high = rows[1]["delta_mae_relative_ci90"]
    assert 0 < low <= rows[1]["delta_mae_relative"] <= high
    assert qualifies(rows[2]) and not qualifies(rows[1])
    # The smallest budget whose upper bound stays within +1%: 256, not the noisy 128.
    assert choose_budget_by_interval(rows)["configuration"]["max_seq_length"] == 256


def test_a_probe_is_applied_to_another_configurations_features(data):
    Y, signal, _ = data
    applied = out_of_fold(signal, Y, "ridge", [0], applied_to=signal * 0)
    own = out_of_fold(signal, Y, "ridge", [0])
    assert applied.shape == own.shape == (1,) + Y.shape
    # Features without signal: the probe trained on the reference's predicts one value per fold.
    assert len(np.unique(applied[0, :, 0].round(9))) == 5
    assert np.abs(own - Y).mean() < np.abs(applied - Y).mean()


def test_qualification_thresholds():
    assert qualifies({"delta_mae_relative": 0.0099, "delta_auc": -0.0049})
    assert not qualifies({"delta_mae_relative": 0.0101, "delta_auc": 0.0})
    assert not qualifies({"delta_mae_relative": -0.02, "delta_auc": -0.0051})
