import json
import pickle
import shutil

import numpy as np
import pytest
import skops.io as sio
import yaml
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline

from hybrid_estimators import ArticleText, E5Embedder, make_articles, make_probe
from hybrid_estimators.filters import (
    METADATA_FILE,
    PROBE_FILE,
    FilterError,
    FilterSpec,
    load_filter,
    save_filter,
)
from hybrid_estimators.prefilter import Prefilter
from hybrid_estimators.router import HybridRouterRegressor


@pytest.fixture(scope="module")
def data():
    return make_articles(80, random_state=0)


@pytest.fixture(scope="module")
def saved(minilm_path, data, tmp_path_factory):
    X, Y = data
    embedder = E5Embedder(minilm_path, prefix="", show_progress_bar=False)
    stage1 = make_pipeline(ArticleText(), embedder, make_probe())
    stage2 = make_pipeline(ArticleText(), embedder, KNeighborsRegressor())
    weights = {"energy_progress": 0.5, "health_benefit": 0.3, "economic_impact": 0.2}
    router = HybridRouterRegressor(stage1, stage2, weights, threshold=3.0).fit(X, Y)
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
    save_filter(router, folder, spec, training_data=(X, Y), metrics={"cv_mae": 0.5})
    return router, folder


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def test_round_trip_predicts_like_stage1(saved, data):
    router, folder = saved
    X, _ = data
    loaded = load_filter(folder)
    np.testing.assert_allclose(loaded.predict(X), router.predict_stage1(X), atol=1e-6)
    assert loaded.filter_spec_.name == "demo"
    assert loaded.metadata_["metrics"] == {"cv_mae": 0.5}
    assert loaded.metadata_["embedding_dim"] == 384
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
    assert prefilter.mask(articles).tolist() == [False, False, True, False, False, False]
