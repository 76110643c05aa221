import json
import pickle
import re
import shutil
import warnings

import numpy as np
import pytest
import skops.io as sio
import pandas as pd
import yaml
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from hybrid_estimators import ArticleText, E5Embedder, make_articles, make_probe
from hybrid_estimators.cli import main
from hybrid_estimators.exceptions import FilterQualityWarning
from hybrid_estimators.evaluation import cascade_report
from hybrid_estimators.filters import (
    METADATA_FILE,
    PROBE_FILE,
    Filter,
    FilterError,
    FilterSpec,
    check_metrics,
    evaluation_staleness,
    load_filter,
    model_card,
    record_calibration,
    record_evaluation,
    save_filter,
)
from hybrid_estimators.qwen import QwenRegressor
from hybrid_estimators.prefilter import Prefilter
from hybrid_estimators.router import HybridRouterRegressor
from hybrid_estimators.text import text_hashes


@pytest.fixture(scope="module")
def data():
    return make_articles(80, random_state=0)


@pytest.fixture(scope="module")
def saved(minilm_path, data, tmp_path_factory):
    X, Y = data
    embedder = E5Embedder(minilm_path, prefix="", show_progress_bar=False)
    stage1 = make_pipeline(ArticleText(), embedder, make_probe())
    weights = {"energy_progress": 0.5, "health_benefit": 0.3, "economic_impact": 0.2}
    router = HybridRouterRegressor(stage1, None, weights, threshold=3.0).fit(X, Y)
    spec = FilterSpec.from_dict(
        {
            "name": "demo",
            "version": "v1",
            "dimensions": weights,
            "prefilter": {"min_length": 10, "block_keywords": {"sports": ["football"]}},
            "hybrid_inference": {"embedding_model": minilm_path, "stage2": None},
        }
    )
    folder = tmp_path_factory.mktemp("filters") / "demo" / "v1"
    save_filter(router, folder, spec, training_data=(X, Y), metrics={"cv_mae_weighted_average": 0.5})
    return router, folder


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def test_round_trip_predicts_like_stage1(saved, data):
    router, folder = saved
    X, _ = data
    loaded = load_filter(folder)
    np.testing.assert_allclose(loaded.predict(X), np.clip(router.predict_stage1(X), 0, 10), atol=1e-6)
    assert loaded.spec.name == "demo"
    assert loaded.metadata["metrics"] == {"cv_mae_weighted_average": 0.5}
    assert loaded.metadata["embedding_dim"] == 384
    assert (folder / "README.md").read_text().count("demo") >= 1
    report = loaded.predict_report(X.head(4))
    assert set(report["stage_used"]) == {"stage1"}  # stage2: null routes nothing


def test_a_calibrated_backend_needs_calibration_articles(saved, data):
    _, folder = saved
    for calibration in (None, []):
        with pytest.raises(ValueError, match=r"backend='openvino-int8' is quantised .* pass calibration="):
            load_filter(folder, backend="openvino-int8", calibration=calibration)
    X, _ = data
    torch_router = load_filter(folder, calibration=X.head(3))  # ignored by an uncalibrated backend
    assert torch_router.stage1.estimator[1].backend == "torch"


def test_prefilter_comes_from_the_config(saved):
    _, folder = saved
    prefilter = load_filter(folder).prefilter_
    assert prefilter.blocked_by([{"title": "Football", "content": "cup final tonight"}]) == ["keyword:sports"]


def test_changed_probe_is_refused(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    probe = folder / PROBE_FILE
    probe.write_bytes(probe.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(FilterError, match=r"embedding_probe.skops: sha256 .* does not match"):
        load_filter(folder)


def test_truncated_probe_is_refused(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    probe = folder / PROBE_FILE
    probe.write_bytes(probe.read_bytes()[:100])
    with pytest.raises(FilterError, match="does not match"):
        load_filter(folder)


def test_pickle_is_refused(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    (folder / PROBE_FILE).write_bytes(pickle.dumps({"any": "object"}))
    with pytest.raises(FilterError, match="is a pickle"):
        load_filter(folder)


def _replace_probe(folder, probe):
    path = folder / PROBE_FILE
    sio.dump(probe, path)
    metadata = json.loads((folder / METADATA_FILE).read_text())
    import hashlib

    metadata["probe_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / METADATA_FILE).write_text(json.dumps(metadata))


def test_types_outside_the_allow_list_are_refused(saved, tmp_path, data):
    folder = _copy(saved[1], tmp_path)
    _replace_probe(folder, make_pipeline(Ridge()).fit(np.zeros((3, 384)), np.zeros((3, 3))))
    with pytest.raises(FilterError, match=r"outside the allow-list: \['sklearn.linear_model._ridge.Ridge'\]"):
        load_filter(folder)


def test_probe_of_another_embedder_is_refused(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    _replace_probe(folder, make_probe(hidden_layer_sizes=(4,), max_iter=5).fit(np.random.rand(30, 16), np.random.rand(30, 3)))
    with pytest.raises(FilterError, match="the probe takes 16 inputs but .* embeds in 384 dimensions"):
        load_filter(folder)


def test_config_naming_other_dimensions_is_refused(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["dimensions"] = {"a": 1.0, "b": 1.0, "c": 1.0}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(FilterError, match=r"trained for dimensions \['energy_progress'"):
        load_filter(folder)


def test_config_naming_another_embedder_is_refused(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["hybrid_inference"]["embedding_model"] = "intfloat/multilingual-e5-small"
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(FilterError, match="trained on embeddings of .* but config.yaml names 'intfloat/multilingual-e5-small'"):
        load_filter(folder)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dimensions": {"a": "heavy"}}, r"dimensions.a.weight: expected a number"),
        ({"dimensions": {"a": -1}}, r"dimensions.a.weight: must be >= 0"),
        ({"dimensions": {"a": {"weight": 1, "gatekeeper": True}}}, r"dimensions.a: gatekeeper needs 'gatekeeper_threshold'"),
        ({"hybrid_inference": {"threshold": "high"}}, r"hybrid_inference.threshold: expected a number"),
        ({"hybrid_inference": {"target_recall": 1.5}}, r"hybrid_inference.target_recall: must lie in \(0, 1\)"),
        ({"hybrid_inference": {"stage2": {"adapter": "model"}}}, r"hybrid_inference.stage2: expected a mapping with 'base_model'"),
        ({"prefilter": {"block_patterns": {"bad": "("}}}, r"prefilter: prefilter.block_patterns\['bad'\]: invalid regular expression"),
        ({"colour": "blue"}, r"unknown keys \['colour'\]"),
        ({"hybrid_inference": {"embedding_head_tail": [60]}}, r"hybrid_inference.embedding_head_tail must be two non-negative token counts.*\[60\]"),
        ({"hybrid_inference": {"embedding_head_tail": [0, 0]}}, r"hybrid_inference.embedding_head_tail must be two non-negative token counts, not both 0.*\[0, 0\]"),
        ({"hybrid_inference": {"embedding_head_tail": [-1, 5]}}, r"hybrid_inference.embedding_head_tail must be two non-negative token counts.*got \[-1, 5\]"),
    ],
)
def test_spec_errors_name_the_key(change, message):
    config = {"name": "x", "version": "v1", "dimensions": {"a": 1.0}, **change}
    with pytest.raises(FilterError, match=message):
        FilterSpec.from_dict(config)


def test_missing_key_is_named():
    with pytest.raises(FilterError, match="missing key 'dimensions'"):
        FilterSpec.from_dict({"name": "x", "version": "v1"})


def test_prefilter_reports_reasons_in_order():
    prefilter = Prefilter(
        block_keywords={"sports": ["football", "tennis match"]},
        block_patterns={"ad": r"(?i)buy now"},
        languages=["en", "nl"],
        min_length=12,
        rules=[lambda a: "no-digits" if not any(c.isdigit() for c in a["content"]) else None],
    )
    articles = [
        {"title": "Tennis match", "content": "Final set 7-6", "language": "en"},
        {"title": "Offer", "content": "BUY NOW 50% off", "language": "en"},
        {"title": "Windpark", "content": "Opent in 2027 aan de kust", "language": "nl"},
        {"title": "Solar", "content": "Record output in 2025", "language": "de"},
        {"title": "Tiny", "content": "", "language": "en"},
        {"title": "Grid", "content": "A new battery plant", "language": None},
    ]
    assert prefilter.blocked_by(articles) == [
        "keyword:sports", "pattern:ad", None, "language:de", "min_length:12", "no-digits"
    ]
    assert [reason is None for reason in prefilter.blocked_by(articles)] == [False, False, True, False, False, False]


# --- one metadata schema ---------------------------------------------------------------


def test_metadata_follows_the_one_schema(saved, data):
    _, folder = saved
    metadata = json.loads((folder / METADATA_FILE).read_text())
    assert metadata["schema_version"] == 2
    assert set(metadata) == {
        "schema_version", "filter", "embedding_model", "embedding_dim", "embedding_budget", "dimension_names",
        "weights", "probe_sha256", "training_data_sha256", "n_training_articles",
        "training_articles_sha256", "versions", "metrics", "calibration", "evaluation",
        "evaluation_split",
    }
    assert metadata["calibration"] is None and metadata["evaluation"] is None
    assert metadata["embedding_budget"] == {"max_seq_length": 512, "head_tail": None}
    assert metadata["training_articles_sha256"] == sorted(set(text_hashes(data[0])))


def test_cross_validated_metrics_are_the_schema_and_pick_the_better_probe(minilm_path, data):
    from hybrid_estimators.metrics import cross_validated_stage1_metrics
    from hybrid_estimators.probe import make_ridge_probe

    X, Y = data
    embedder = E5Embedder(minilm_path, prefix="", show_progress_bar=False)
    candidates = {
        "ridge": make_pipeline(ArticleText(), embedder, make_ridge_probe()),
        "mlp": make_pipeline(ArticleText(), embedder, make_probe((16,), max_iter=50)),
    }
    weights = dict.fromkeys(Y.columns, 1.0)
    metrics, oof = cross_validated_stage1_metrics(
        candidates, X, Y, weights, threshold=4.0, cv=3, return_predictions=True
    )
    assert check_metrics(metrics, list(Y.columns)) == metrics  # the schema, in order
    assert metrics["cv_folds"] == 3 and metrics["n_articles"] == len(X)
    chosen = metrics["probe"]
    assert metrics["cv_mae_weighted_average"] == metrics[f"cv_mae_weighted_average_{chosen}"]
    assert metrics["cv_mae_weighted_average"] == min(
        metrics["cv_mae_weighted_average_ridge"], metrics["cv_mae_weighted_average_mlp"]
    )
    assert oof.shape == Y.shape and oof.min() >= 0 and oof.max() <= 10


@pytest.mark.parametrize(
    "options, message",
    [
        ({"metrics": {"cv5_mae_ratio": 0.4}}, r"keys outside the schema \['cv5_mae_ratio'\]"),
        ({"metrics": {"cv_tier_accuracy": "high"}}, r"metrics.cv_tier_accuracy: expected a finite number"),
        ({"calibration": {"threshold": 9.0, "target_recall": 0.9, "confidence": 0.9}},
         r"calibration: threshold 9.0 is not the router's 3.0"),
        ({"calibration": {"threshold": 3.0}}, r"calibration: .* missing \['target_recall', 'confidence'\]"),
        ({"evaluation": {"n": 1}}, r"evaluation: expected cascade_report"),
    ],
)
def test_save_filter_refuses_records_outside_the_schema(saved, tmp_path, options, message):
    router, folder = saved
    spec = FilterSpec.from_yaml(folder / "config.yaml")
    with pytest.raises(FilterError, match=message):
        save_filter(router, tmp_path / "f", spec, **options)


def test_an_evaluation_needs_its_split(saved, data, tmp_path):
    router, folder = saved
    X, Y = data
    report = cascade_report(router, X, Y, n_bootstraps=10, random_state=0)
    spec = FilterSpec.from_yaml(folder / "config.yaml")
    with pytest.raises(FilterError, match="evaluation_split: say how the evaluation was measured"):
        save_filter(router, tmp_path / "f", spec, evaluation=report)
    with pytest.raises(FilterError, match=r"evaluation_split.stage1: expected one of"):
        save_filter(router, tmp_path / "f", spec, evaluation=report, evaluation_split={
            "description": "d", "n_articles": 80, "stage1": "trust me", "stage2": "none"})


# --- Stage 2 in the filter, its evidence and the warning -------------------------------------


def fake_adapter(folder, n_labels=3, fill=0.0):
    """A peft-like adapter folder: config and a regression head of `n_labels` outputs."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    head = np.full((n_labels, 8), fill, dtype=np.float32)
    save_file({"base_model.model.score.weight": head}, str(folder / "adapter_model.safetensors"))
    return folder


class ConstantScores(BaseEstimator, RegressorMixin):
    """A fitted 'Stage 2' that always predicts the same scores."""

    def __init__(self, value=0.0):
        self.value = value

    def fit(self, X, Y):
        self.n_outputs_ = np.shape(Y)[1]
        return self

    def predict(self, X):
        return np.full((len(X), self.n_outputs_), self.value)


class KnownScores(BaseEstimator, RegressorMixin):
    """A fitted 'Stage 2' that knows the true scores of the articles it was fitted on."""

    def fit(self, X, Y):
        self.table_ = {(a, b): row for a, b, row in zip(X["title"], X["content"], np.asarray(Y, dtype=float))}
        return self

    def predict(self, X):
        return np.array([self.table_[(a, b)] for a, b in zip(X["title"], X["content"])])


@pytest.fixture(scope="module")
def two_stage(saved, data, tmp_path_factory):
    """A filter saved from a router whose Stage 2 is a prefit QwenRegressor (fake adapter)."""
    router, folder = saved
    X, Y = data
    root = tmp_path_factory.mktemp("two_stage")
    adapter = fake_adapter(root / "trained_adapter")
    stage2 = QwenRegressor("org/base-model", adapter=str(adapter), head_tail=(64, 64),
                           max_length=128, num_labels=3)
    spec = FilterSpec.from_yaml(folder / "config.yaml")
    # A Filter runs no stage when fitted (a router would load Stage 2 to check its width).
    complete = Filter.from_spec(spec, FrozenEstimator(router.stage1_), FrozenEstimator(stage2)).fit()
    out = save_filter(complete, root / "demo" / "v1", spec, training_data=(X, Y))
    return out, adapter


def test_save_filter_copies_a_prefit_stage2_adapter_and_writes_its_section(two_stage):
    folder, adapter = two_stage
    stage2 = yaml.safe_load((folder / "config.yaml").read_text())["hybrid_inference"]["stage2"]
    assert stage2 == {"base_model": "org/base-model", "adapter": "model", "head_tail": [64, 64],
                      "max_length": 128}
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (folder / "model" / name).read_bytes() == (adapter / name).read_bytes()
    loaded = load_filter(folder)  # Stage 2 is not loaded, let alone run
    assert loaded.stage2.estimator.adapter == str((folder / "model").resolve())
    assert loaded.stage2.estimator.head_tail == (64, 64)


def test_saving_again_replaces_the_adapter_whole(saved, data, tmp_path):
    router, folder = saved
    X, Y = data
    spec = FilterSpec.from_yaml(folder / "config.yaml")
    target = tmp_path / "f"
    for i, extra in enumerate(("first.txt", "second.txt")):
        adapter = fake_adapter(tmp_path / f"adapter{i}")
        (adapter / extra).write_text(extra)
        stage2 = QwenRegressor("org/base", adapter=str(adapter), num_labels=3)
        spec = FilterSpec.from_yaml(folder / "config.yaml")
        complete = Filter.from_spec(spec, FrozenEstimator(router.stage1_), FrozenEstimator(stage2)).fit()
        save_filter(complete, target, spec)
    assert sorted(p.name for p in (target / "model").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "second.txt"]
    assert [p.name for p in target.iterdir() if p.name.startswith(".")] == []


def test_an_adapter_for_other_dimensions_is_refused(saved, data, tmp_path):
    router, folder = saved
    X, Y = data
    stage2 = QwenRegressor("org/base", adapter=str(fake_adapter(tmp_path / "a", n_labels=2)))
    spec = FilterSpec.from_yaml(folder / "config.yaml")
    complete = Filter.from_spec(spec, FrozenEstimator(router.stage1_), FrozenEstimator(stage2)).fit()
    with pytest.raises(FilterError, match="has 2 labels|gives 2 labels"):
        save_filter(complete, tmp_path / "f", spec)


def test_a_stage2_fitted_in_memory_is_saved_into_the_filter(saved, data, tiny_qwen2_path, tmp_path):
    pytest.importorskip("peft")
    router, folder = saved
    X, Y = data
    stage2 = QwenRegressor(
        tiny_qwen2_path, head_tail=(24, 24), max_length=48, batch_size=8,
        max_epochs=1, early_stopping=False, random_state=0, show_progress_bar=False,
    ).fit(X[:24], Y[:24])
    spec = FilterSpec.from_yaml(folder / "config.yaml")
    complete = Filter.from_spec(spec, FrozenEstimator(router.stage1_), FrozenEstimator(stage2), threshold=0.0).fit()
    out = save_filter(complete, tmp_path / "filter", spec)

    assert (out / "model" / "adapter_config.json").is_file()
    section = yaml.safe_load((out / "config.yaml").read_text())["hybrid_inference"]["stage2"]
    assert section["adapter"] == "model" and section["head_tail"] == [24, 24]
    loaded = load_filter(out)
    np.testing.assert_allclose(loaded.predict(X[:4]), np.clip(stage2.predict(X[:4]), 0, 10), atol=1e-4)
    assert set(loaded.predict_report(X[:4])["stage_used"]) == {"stage2"}  # threshold 0


def _evaluate(router, X, Y, stage2):
    """A cascade report of the filter's Stage 1 with a given Stage 2, on held-back articles."""
    evaluated = HybridRouterRegressor(
        FrozenEstimator(router.stage1_), FrozenEstimator(stage2), router.weights, threshold=3.0
    ).fit(X, Y)
    return cascade_report(evaluated, X, Y, n_bootstraps=200, random_state=0)


SPLIT = {"description": "20 synthetic articles neither stage saw", "n_articles": 20,
         "stage1": "held_out", "stage2": "held_out"}


def _warnings(caplog):
    return [r for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("hybrid_estimators.filters")]


def test_a_filter_whose_record_doubts_stage2_warns_once_on_load(saved, two_stage, caplog, capsys):
    router, _ = saved
    folder, _ = two_stage
    X_test, Y_test = make_articles(20, random_state=7)
    useless = ConstantScores(0.0).fit(X_test, Y_test)  # far worse than Stage 1
    record_evaluation(folder, _evaluate(router, X_test, Y_test, useless), SPLIT)

    metadata = json.loads((folder / METADATA_FILE).read_text())
    assert metadata["evaluation"]["stage2_better"] is False
    assert metadata["evaluation_split"]["stage2"] == "held_out"
    caplog.clear()
    with pytest.warns(FilterQualityWarning) as caught:
        load_filter(folder)
    assert _warnings(caplog) == []  # one message, the verdict's, not a log line beside it
    (message,) = [str(w.message) for w in caught if "Stage 2" in str(w.message)]
    assert "filter demo/v1" in message and "Stage 2 is not shown to be better than Stage 1" in message
    assert re.search(r"Stage 2's weighted-average MAE is \d\.\d{3} \[.*\] against Stage 1's \d\.\d{3}", message)
    assert "stage1_only=True (score --stage1-only) skips it" in message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_filter(folder, stage1_only=True)
    assert not [w for w in caught if "Stage 2" in str(w.message)] and _warnings(caplog) == []

    assert main(["info", "--filter", str(folder)]) == 0
    out = capsys.readouterr().out
    for expected in ("evaluation  20 articles at threshold 3.000", "MAE stage1", "MAE stage2",
                     "MAE hybrid", "stage2_better False", "WARNING: Stage 2 is not shown to be better"):
        assert expected in out, expected
    card = (folder / "README.md").read_text()
    assert "**Stage 2 is not shown to be better**" in card


def test_a_better_stage2_does_not_warn_and_a_changed_one_is_stale(saved, two_stage, caplog, capsys):
    router, _ = saved
    folder, _ = two_stage
    X_test, Y_test = make_articles(20, random_state=7)
    oracle = KnownScores().fit(X_test, Y_test)  # exact: surely better than Stage 1
    record_evaluation(folder, _evaluate(router, X_test, Y_test, oracle), SPLIT)
    caplog.clear()
    load_filter(folder)
    assert _warnings(caplog) == []
    assert main(["info", "--filter", str(folder)]) == 0
    assert "stage2_better True" in capsys.readouterr().out
    reweighted = FilterSpec.from_yaml(folder / "config.yaml")
    reweighted.hybrid_inference["stage2_weight"] = 0.5
    metadata = json.loads((folder / METADATA_FILE).read_text())
    assert evaluation_staleness(folder, reweighted, metadata) == [
        "stage2_weight changed since (evaluated at 1, the config has 0.5)"
    ]

    (folder / "model" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    caplog.clear()
    load_filter(folder)
    [warning] = _warnings(caplog)
    assert "stale" in warning.getMessage() and "Stage 2 adapter changed" in warning.getMessage()


# --- the model card ----------------------------------------------------------------------


def test_the_model_card_is_plain_markdown_filled_from_the_metadata(two_stage):
    folder, _ = two_stage
    card = (folder / "README.md").read_text()
    assert len(card) < 20_000
    for absent in ("[More Information Needed]", "<style", "<div", "<table", "{{", "TODO"):
        assert absent not in card, absent
    assert not re.search(r"<[a-zA-Z/]", card)  # no raw HTML at all
    for expected in (
        "# demo v1", "## What it scores", "| energy_progress | 0.5 |", "## How it scores",
        "`org/base-model`", "reading the first 64 and last 64 tokens", "## Stage 1 quality",
        "## Routing threshold", "## Does Stage 2 earn its place?", "## Training data and versions",
        "fitted on 80 labelled articles", "## Intended use and limitations", "## How to use it",
        f'load_filter("{folder.as_posix()}")',  # the folder it was saved to (issue 22)
    ):
        assert expected in card, expected


def test_the_card_marks_a_probe_that_does_not_beat_the_mean():
    spec = FilterSpec.from_dict({"name": "x", "version": "v1", "dimensions": {"a": 1.0}})
    metadata = {"metrics": {"cv_folds": 5, "probe": "mlp", "cv_mae_weighted_average": 0.79,
                            "cv_mae_weighted_average_baseline": 0.63}}
    card = model_card(spec, metadata)
    assert "**Warning: this probe does not beat predicting the mean.**" in card
    assert "Threshold 4.500, set by hand" in card and "No evaluation is recorded" in card


# --- train-probe: the new user's path -------------------------------------------------------


def _labelled(folder, X, Y):
    folder.mkdir(parents=True)
    lines = [json.dumps({**article, "scores": scores})
             for article, scores in zip(X.to_dict("records"), Y.to_dict("records"))]
    (folder / "articles.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "filter.yaml").write_text(yaml.safe_dump({"name": "demo", "dimensions": dict.fromkeys(Y.columns, 1.0)}))
    return folder


def test_train_probe_makes_a_complete_two_stage_filter(minilm_path, data, tmp_path, capsys):
    X, Y = data
    adapter = fake_adapter(tmp_path / "adapter")
    out = tmp_path / "filters" / "demo" / "v1"
    status = main(["train-probe", str(_labelled(tmp_path / "data", X, Y)), "-o", str(out),
                   "--embedding-model", minilm_path, "--prefix", "", "--hidden-layer-sizes", "16",
                   "--cv", "3", "--stage2", "org/base", "--adapter", str(adapter),
                   "--stage2-head-tail", "32", "32", "--no-progress"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "(chosen by 3-fold CV MAE)" in printed
    loaded = load_filter(out)
    metrics = loaded.metadata["metrics"]
    assert metrics["probe"] in ("ridge", "mlp") and metrics["cv_folds"] == 3
    assert {"cv_mae_weighted_average_ridge", "cv_mae_weighted_average_mlp"} <= set(metrics)
    assert loaded.spec.hybrid_inference["stage2"] == {
        "base_model": "org/base", "adapter": "model", "head_tail": [32, 32], "max_length": 64}
    assert (out / "model" / "adapter_model.safetensors").is_file()
    assert main(["info", "--filter", str(out)]) == 0
    assert "adapter=model" in capsys.readouterr().out


def test_train_probe_warns_when_the_probe_does_not_beat_the_mean(minilm_path, data, tmp_path, capsys):
    X, _ = data
    noise = pd.DataFrame(np.random.RandomState(0).uniform(0, 10, (len(X), 2)), columns=["a", "b"])
    out = tmp_path / "noise"
    status = main(["train-probe", str(_labelled(tmp_path / "data", X, noise)), "-o", str(out),
                   "--embedding-model", minilm_path, "--prefix", "", "--probe", "mlp",
                   "--hidden-layer-sizes", "64", "--cv", "3", "--no-progress"])
    assert status == 0
    assert "does not beat predicting the mean" in capsys.readouterr().err
    assert main(["info", "--filter", str(out)]) == 0
    assert "WARNING: the probe does not beat predicting the mean" in capsys.readouterr().out
    assert "does not beat predicting the mean" in (out / "README.md").read_text()


def test_train_probe_needs_both_stage2_options(tmp_path, data, capsys):
    X, Y = data
    status = main(["train-probe", str(_labelled(tmp_path / "data", X, Y)), "-o", str(tmp_path / "o"),
                   "--stage2", "org/base"])
    assert status == 2 and "--stage2 BASE and --adapter DIR go together" in capsys.readouterr().err


# --- train-probe --teacher-scores: a probe distilled from Stage 2 ------------------------------


def _teacher_file(path, teacher, X, scores, unlabelled):
    """What `score --filter F --all-stage2 unlabelled -o path` writes for articles X with these scores."""
    from _teacher_files import write_teacher_file

    return write_teacher_file(path, teacher, X["id"], scores, unlabelled)


def test_train_probe_distils_stage2_and_calibrate_certifies_on_the_held_out_half(
    minilm_path, two_stage, data, tmp_path, capsys
):
    folder, _ = two_stage
    teacher = load_filter(folder)
    X, Y = make_articles(60, random_state=3)
    X["id"] = [f"u{i}" for i in range(len(X))]
    unlabelled = tmp_path / "unlabelled.jsonl"
    unlabelled.write_text("".join(json.dumps(row) + "\n" for row in X[["id", "title", "content"]].to_dict("records")))
    scores = _teacher_file(tmp_path / "teacher.jsonl", teacher, X, Y[teacher.dimension_names_].to_numpy(), unlabelled)
    out = tmp_path / "distilled"
    labelled = _labelled(tmp_path / "data", *data)

    status = main(["train-probe", str(labelled), "--teacher-scores", str(scores), "--unlabelled",
                   str(unlabelled), "--filter", str(folder), "--teacher-weight", "2", "-o", str(out),
                   "--embedding-model", minilm_path, "--prefix", "", "--probe", "ridge", "--cv", "3",
                   "--random-state", "1", "--no-progress"])
    assert status == 0
    assert "distilled from 30 Stage 2 scores and 80 labels; 30 articles of" in capsys.readouterr().out
    distilled = load_filter(out)
    record = distilled.metadata["distillation"]
    assert record["teacher"]["filter"] == "demo/v1" and record["random_state"] == 1
    assert (record["n_teacher"], record["n_oracle"], len(record["certify_lines"])) == (30, 80, 30)
    # The probe never saw the held-out articles, and it learnt from the rest of them.
    trained = set(distilled.metadata["training_articles_sha256"])
    held_out = X.iloc[[line - 1 for line in record["certify_lines"]]]
    assert not trained & set(text_hashes(held_out))
    assert set(text_hashes(X)) - set(text_hashes(held_out)) <= trained
    assert distilled.spec.hybrid_inference["stage2"] == teacher.spec.hybrid_inference["stage2"]
    assert (out / "model" / "adapter_model.safetensors").is_file()

    # calibrate on the same file certifies on the held-out half only, from the teacher file;
    # --record-only keeps the threshold in use and shows the certificate beside it.
    rescored = _teacher_file(tmp_path / "teacher2.jsonl", distilled, X, Y[teacher.dimension_names_].to_numpy(),
                             unlabelled)
    calibrate = ["calibrate", "--filter", str(out), "--reference", "stage2", str(unlabelled),
                 "--teacher-scores", str(rescored), "--target-recall", "0.5", "--confidence", "0.5"]
    assert main([*calibrate, "--record-only"]) == 0
    assert "recorded threshold" in capsys.readouterr().out
    recorded = load_filter(out)
    assert recorded.threshold == distilled.threshold and recorded.metadata["calibration"] is None
    [certificate] = recorded.metadata["calibrations"]
    assert certificate["reference"] == "stage2" and certificate["n"] == 30
    assert "Also certified against Stage 2's verdicts, not in use" in (out / "README.md").read_text()

    assert main(calibrate) == 0
    assert "calibrated demo/v1 on 30 articles, against Stage 2's verdicts" in capsys.readouterr().out
    calibrated = load_filter(out)
    assert calibrated.metadata["calibration"]["n"] == 30
    assert calibrated.threshold == pytest.approx(certificate["threshold"])


def test_train_probe_refuses_half_a_distillation(two_stage, tmp_path, capsys):
    folder, _ = two_stage
    status = main(["train-probe", "--teacher-scores", str(tmp_path / "t.jsonl"), "--filter", str(folder),
                   "-o", str(tmp_path / "o")])
    assert status == 2 and "--teacher-scores, --unlabelled and --filter go together" in capsys.readouterr().err
    status = main(["train-probe", "-o", str(tmp_path / "o")])
    assert status == 2 and "give a labelled folder" in capsys.readouterr().err


# --- Stage 1's token budget: recorded in the config, rebuilt on load -------------


def _budget_filter(minilm_path, data, folder, article_text, max_seq_length=32):
    X, Y = data
    embedder = E5Embedder(minilm_path, prefix="", max_seq_length=max_seq_length, show_progress_bar=False)
    stage1 = make_pipeline(article_text, embedder, make_probe())
    weights = dict.fromkeys(Y.columns, 1.0)
    router = HybridRouterRegressor(stage1, None, weights, threshold=3.0).fit(X, Y)
    spec = FilterSpec.from_dict({"name": "budget", "version": "v1", "dimensions": weights,
                                 "hybrid_inference": {"embedding_model": minilm_path, "stage2": None}})
    return router, save_filter(router, folder, spec, training_data=(X, Y))


def test_a_head_tail_budget_is_written_to_the_config_and_rebuilt_on_load(minilm_path, data, tmp_path):
    X, _ = data
    article_text = ArticleText(head_tail=(12, 8), tokenizer=minilm_path)
    router, folder = _budget_filter(minilm_path, data, tmp_path / "f", article_text)
    hybrid = yaml.safe_load((folder / "config.yaml").read_text())["hybrid_inference"]
    assert (hybrid["max_seq_length"], hybrid["embedding_head_tail"]) == (32, [12, 8])
    loaded = load_filter(folder)
    rebuilt = loaded.stage1_.estimator.steps[0][1]
    assert (rebuilt.head_tail, rebuilt.tokenizer) == ((12, 8), minilm_path)
    long = X.assign(content=X["content"] + " and more words" * 40)
    # head+tail changes what is embedded: the rebuilt filter predicts as the router did
    np.testing.assert_allclose(loaded.predict(long), np.clip(router.predict_stage1(long), 0, 10), atol=1e-5)
    head_only = make_pipeline(ArticleText().fit(X), router.stage1_.steps[1][1], router.stage1_.steps[2][1])
    assert not np.allclose(loaded.predict(long), np.clip(head_only.predict(long), 0, 10), atol=1e-3)
    assert "first 12 and last 8 tokens" in (folder / "README.md").read_text()


def test_a_config_whose_budget_changed_after_training_is_refused(minilm_path, data, tmp_path):
    _, folder = _budget_filter(minilm_path, data, tmp_path / "f", ArticleText(), max_seq_length=64)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["hybrid_inference"]["max_seq_length"] = 128
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(FilterError, match=r"trained on embeddings of \{'max_seq_length': 64, 'head_tail': None\} "
                       r"but config.yaml reads \{'max_seq_length': 128"):
        load_filter(folder)


@pytest.mark.parametrize("article_text", [
    ArticleText(head_tail=(12, 8)),  # counts words, not the embedder's tokens
    ArticleText(head_tail=(12, 8), tokenizer="sentence-transformers/all-MiniLM-L6-v2", truncation_marker=" ... "),
])
def test_a_head_tail_a_config_cannot_say_is_refused(minilm_path, data, tmp_path, article_text):
    with pytest.raises(FilterError, match="cannot be written in a config"):
        _budget_filter(minilm_path, data, tmp_path / "f", article_text)


def test_save_filter_leaves_the_callers_spec_as_it_was(saved, tmp_path):
    router, folder = saved
    loaded = load_filter(folder)
    spec = loaded.spec
    before = json.dumps(spec.to_dict(), sort_keys=True)
    assert spec.hybrid_inference["threshold"] == 3.0
    changed = loaded.set_params(threshold=6.5).fit()
    save_filter(changed, tmp_path / "again", spec)
    assert json.dumps(spec.to_dict(), sort_keys=True) == before
    save_filter(changed, tmp_path / "from_spec_")  # None: the filter's spec_, at its parameters
    assert load_filter(tmp_path / "from_spec_").threshold == 6.5
    assert load_filter(tmp_path / "again").threshold == 6.5  # the router's threshold is written


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_record_calibration_changes_every_file_or_none(saved, tmp_path, monkeypatch):
    from hybrid_estimators.filters import save as save_module

    _, folder = saved
    folder = _copy(folder, tmp_path)
    before = _files(folder)
    calibration = {"threshold": 2.25, "target_recall": 0.9, "confidence": 0.9, "reference": "oracle"}

    def broken_card(*args, **kwargs):
        raise OSError("disk full while writing the card")

    monkeypatch.setattr(save_module, "model_card", broken_card)
    with pytest.raises(OSError, match="disk full"):
        record_calibration(folder, calibration)
    assert _files(folder) == before
    monkeypatch.undo()

    real_write = save_module.atomic_write

    def failing_on_the_card(path, data, **kwargs):  # config and metadata were already replaced
        if path.name == "README.md":
            raise OSError("disk full while writing the card")
        return real_write(path, data, **kwargs)

    monkeypatch.setattr(save_module, "atomic_write", failing_on_the_card)
    with pytest.raises(OSError, match="disk full"):
        record_calibration(folder, calibration)
    assert _files(folder) == before  # put back, no backup left behind
    monkeypatch.undo()

    record_calibration(folder, calibration)
    after = _files(folder)
    assert set(after) == set(before)
    assert yaml.safe_load(after["config.yaml"])["hybrid_inference"]["threshold"] == 2.25
    assert json.loads(after["probe/metadata.json"])["calibration"]["threshold"] == 2.25
    assert after["README.md"] != before["README.md"]


def test_the_card_names_the_folder_it_was_saved_to(saved):
    _, folder = saved
    card = (folder / "README.md").read_text()
    assert f'load_filter("{folder.as_posix()}")' in card
    assert f"hybrid-estimators info --filter {folder.as_posix()}" in card


def test_a_near_constant_filter_is_flagged_once_on_load_and_by_info_and_card(saved, tmp_path, capsys):
    from hybrid_estimators.exceptions import FilterQualityWarning
    from hybrid_estimators.filters import quality_verdicts

    _, folder = saved
    folder = _copy(folder, tmp_path)
    metadata = json.loads((folder / METADATA_FILE).read_text())
    names = metadata["dimension_names"]
    metadata["metrics"] = {
        "cv_threshold": 4.5, "cv_mae_weighted_average": 0.619, "cv_mae_weighted_average_baseline": 0.632,
        "cv_tier_accuracy": 0.968, "cv_tier_accuracy_baseline": 0.968, "cv_routing_score_std": 0.058,
        "cv_skip_rate_at_threshold": 0.5,
        **{f"cv_mae_{n}": 1.0 for n in names}, f"cv_mae_{names[0]}_baseline": 0.9,
        **{f"cv_mae_{n}_baseline": 2.0 for n in names[1:]},
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata))
    failed = {v.check: v.message for v in quality_verdicts(metadata) if not v.passed}
    assert set(failed) == {"probe_vs_mean", "dimension_vs_mean", "routing_score_spread", "tier_accuracy_vs_majority"}
    assert failed["probe_vs_mean"].startswith("Stage 1 barely beats predicting the mean: weighted-average MAE 0.619")
    assert failed["dimension_vs_mean"] == f"{names[0]}: Stage 1 is no better than predicting the mean (MAE 1.000 against 0.900)."
    with pytest.warns(FilterQualityWarning) as caught:
        load_filter(folder)
    messages = [str(w.message) for w in caught if w.category is FilterQualityWarning]
    assert len(messages) == 4 and len(set(messages)) == 4  # each verdict once
    assert any("barely beats predicting the mean" in m for m in messages)
    assert main(["info", "--filter", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "WARNING: tier accuracy 96.8% against 96.8% for always predicting the largest tier" in out
    assert "at an earlier threshold 4.500 (the filter now routes at 3):" in out
    assert f"cv_mae_{names[1]}" in out and "(predicting the mean: 2.0" in out
    card = model_card(FilterSpec.from_yaml(folder / "config.yaml"), metadata)
    assert "tier accuracy | 96.8% (always the largest tier: 96.8%) |" in card
    assert "**Warning**: the routing score's standard deviation is 0.058" in card
