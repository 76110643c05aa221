"""E5Embedder's fast backends: exported once, cached, close to torch.

The OpenVINO tests need the ``openvino`` extra (it pins transformers < 5.6,
so the default test environment leaves it out and they skip there); the
errors for a missing extra are tested where it is missing.
"""

import importlib.util
import logging

import numpy as np
import pytest

from hybrid_estimators import E5Embedder, make_articles
from hybrid_estimators.embedding import N_CALIBRATION_TEXTS
from hybrid_estimators.models import export_model


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


HAS_OPENVINO = _installed("optimum.intel")
HAS_ONNX = _installed("optimum.onnxruntime")
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason='needs pip install "hybrid_estimators[openvino]"')


@pytest.fixture(scope="module")
def texts():
    X, _ = make_articles(40, random_state=0)
    return (X["title"] + "\n\n" + X["content"]).tolist()


@pytest.fixture(scope="module")
def torch_embeddings(minilm_path, texts):
    return _embedder(minilm_path, "torch").fit(texts).transform(texts)


def _embedder(path, backend, **params):
    params = {"cache": False, **params}
    return E5Embedder(path, prefix="", backend=backend, show_progress_bar=False, **params)


@pytest.mark.skipif(HAS_OPENVINO, reason="the openvino extra is installed")
def test_missing_openvino_extra_is_named(minilm_path, texts):
    with pytest.raises(ImportError, match=r"hybrid_estimators\[openvino\]"):
        _embedder(minilm_path, "openvino").fit(texts)


@pytest.mark.skipif(HAS_ONNX, reason="optimum-onnx is installed")
def test_missing_onnx_extra_names_its_conflict(minilm_path, texts):
    with pytest.raises(ImportError, match=r"transformers < 4\.58"):
        _embedder(minilm_path, "onnx-int8").fit(texts)


def test_windows_need_the_torch_backend(minilm_path, texts):
    with pytest.raises(ValueError, match="backend='torch'"):
        _embedder(minilm_path, "openvino", long_text="windows").fit(texts)


def test_unknown_backend_is_refused(minilm_path, texts):
    with pytest.raises(ValueError, match="backend"):
        _embedder(minilm_path, "tensorrt").fit(texts)


def test_calibrated_export_needs_texts(minilm_path):
    with pytest.raises(ValueError, match="calibration texts"):
        export_model(minilm_path, "openvino-int8")


def test_torch_backend_runs_the_model_folder_itself(minilm_path, texts):
    embedder = _embedder(minilm_path, "torch").fit(texts)
    assert embedder.backend_path_ == embedder.model_path_ == minilm_path


@needs_openvino
def test_openvino_matches_torch_and_is_exported_once(minilm_path, texts, torch_embeddings, caplog, tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRID_ESTIMATORS_HOME", str(tmp_path))
    caplog.set_level(logging.INFO, logger="hybrid_estimators")
    first = _embedder(minilm_path, "openvino").fit(texts)
    embeddings = first.transform(texts)
    second = _embedder(minilm_path, "openvino").fit(texts[:5])

    assert second.backend_path_ == first.backend_path_
    assert first.backend_path_.startswith(str(tmp_path / "exports"))
    exports = [r for r in caplog.records if r.name == "hybrid_estimators.models.backends" and "Exporting" in r.message]
    assert len(exports) == 1  # sentence-transformers' own "Exporting" warning is not ours
    cosines = (embeddings * torch_embeddings).sum(axis=1)
    assert cosines.min() > 0.999


@needs_openvino
def test_openvino_int8_is_calibrated_on_the_fit_texts(minilm_path, texts, torch_embeddings, tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRID_ESTIMATORS_HOME", str(tmp_path))
    embedder = _embedder(minilm_path, "openvino-int8").fit(texts)
    embeddings = embedder.transform(texts)

    assert "openvino-int8-calibrated-" in embedder.backend_path_
    assert len(embedder._calibration_texts(list(map(str, range(1000))))) == N_CALIBRATION_TEXTS
    cosines = (embeddings * torch_embeddings).sum(axis=1)
    assert cosines.min() > 0.98
    assert not np.allclose(embeddings, torch_embeddings, atol=1e-4)  # really quantised
    other = export_model(embedder.model_path_, "openvino-int8", ["another calibration text"])
    assert other != embedder.backend_path_


@needs_openvino
def test_embedding_cache_keeps_backends_apart(minilm_path, texts, tmp_path):
    cache = str(tmp_path / "cache")
    torch_cached = _embedder(minilm_path, "torch", cache=cache).fit(texts)
    openvino_cached = _embedder(minilm_path, "openvino", cache=cache).fit(texts)
    a = torch_cached.transform(texts[:3])
    b = openvino_cached.transform(texts[:3])
    assert not np.array_equal(a, b)  # a hit across backends would return the torch vectors
    np.testing.assert_array_equal(b, openvino_cached.transform(texts[:3]))


def test_auto_without_qualified_configurations_runs_the_reference(minilm_path, texts, caplog, monkeypatch):
    import hybrid_estimators.embedding as embedding

    monkeypatch.setattr(embedding, "_LOGGED_CHOICES", set())
    monkeypatch.setattr(embedding, "cpu_flags", lambda: ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"])
    caplog.set_level(logging.INFO, logger="hybrid_estimators.embedding")
    first = _embedder(minilm_path, "auto", device="cpu").fit(texts)
    _embedder(minilm_path, "auto", device="cpu").fit(texts)

    assert first.backend == "auto" and first.backend_ == "torch"
    assert "avx512_bf16" in first.backend_reason_ and "reference" in first.backend_reason_
    logged = [r for r in caplog.records if "backend='auto'" in r.message]
    assert len(logged) == 1  # once per process, not per fit
    assert first.backend_reason_ in logged[0].message


def test_auto_says_when_a_qualified_backend_is_not_installed(minilm_path, texts, torch_embeddings, monkeypatch):
    import hybrid_estimators.embedding as embedding

    monkeypatch.setattr(embedding, "cpu_flags", lambda: ["avx2"])
    monkeypatch.setattr(embedding, "installed_backends", lambda: ["torch"])
    qualified = {"avx2": [{"backend": "openvino-fp32"}, {"backend": "torch"}]}
    embedder = _embedder(minilm_path, "auto", device="cpu", qualified_configurations=qualified).fit(texts)
    assert embedder.backend_ == "torch"
    assert "not installed" in embedder.backend_reason_ and "openvino is not installed" in embedder.backend_reason_
    np.testing.assert_allclose(embedder.transform(texts), torch_embeddings, atol=1e-6)


def test_auto_with_windows_runs_torch(minilm_path, texts):
    qualified = {kind: [{"backend": "openvino-fp32"}] for kind in ("avx2", "avx512_bf16", "generic")}
    embedder = _embedder(minilm_path, "auto", long_text="windows", qualified_configurations=qualified).fit(texts)
    assert embedder.backend_ == "torch" and "windows" in embedder.backend_reason_


def test_explicit_backend_is_kept_and_said_so(minilm_path, texts):
    embedder = _embedder(minilm_path, "torch").fit(texts)
    assert (embedder.backend_, embedder.backend_reason_) == ("torch", "chosen explicitly")


def test_openvino_precision_backends_share_one_export_with_their_own_hint():
    from hybrid_estimators.models import backend_load_kwargs

    fp32, bf16, default = (backend_load_kwargs(b) for b in ("openvino-fp32", "openvino-bf16", "openvino"))
    assert fp32["backend"] == bf16["backend"] == "openvino"
    assert fp32["model_kwargs"]["file_name"] == bf16["model_kwargs"]["file_name"] == default["model_kwargs"]["file_name"]
    assert fp32["model_kwargs"]["ov_config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    assert bf16["model_kwargs"]["ov_config"] == {"INFERENCE_PRECISION_HINT": "bf16"}
    assert "ov_config" not in default["model_kwargs"]


@needs_openvino
def test_auto_picks_the_qualified_openvino_configuration(minilm_path, texts, torch_embeddings, tmp_path, monkeypatch):
    import hybrid_estimators.embedding as embedding

    monkeypatch.setenv("HYBRID_ESTIMATORS_HOME", str(tmp_path))
    monkeypatch.setattr(embedding, "cpu_flags", lambda: ["avx2"])
    qualified = {"avx2": [{"backend": "torch"}, {"backend": "openvino-fp32"}, {"backend": "openvino-int8"}]}
    cache = str(tmp_path / "cache")
    auto = _embedder(minilm_path, "auto", device="cpu", qualified_configurations=qualified, cache=cache).fit(texts)
    assert auto.backend_ == "openvino-fp32"  # int8 is never picked without VNNI, even when recorded
    assert auto.backend_path_ == export_model(minilm_path, "openvino")
    embeddings = auto.transform(texts)
    assert (embeddings * torch_embeddings).sum(axis=1).min() > 0.999  # fp32: as close as torch's
    # The cache keys the backend that ran, not "auto": a bf16 run does not see fp32 vectors.
    bf16 = _embedder(minilm_path, "openvino-bf16", device="cpu", cache=cache).fit(texts)
    assert bf16._cache_key(texts[0]) != auto._cache_key(texts[0])
