import io
import pickle

import numpy as np
import pandas as pd
import pytest
from sentence_transformers import SentenceTransformer
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from hybrid_estimators import ArticleText, E5Embedder, make_articles, make_probe
from hybrid_estimators import embedding as embedding_module


@pytest.fixture
def embedder(minilm_path):
    return E5Embedder(minilm_path, prefix="", show_progress_bar=False)


@pytest.fixture(scope="module")
def articles():
    return make_articles(60, random_state=0)


def test_matches_sentence_transformers(minilm_path, embedder):
    texts = ["Solar output doubled.", "Der Windpark liefert Strom."]
    expected = SentenceTransformer(minilm_path).encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(embedder.fit_transform(texts), expected, atol=1e-5)


def test_prefix_is_prepended(minilm_path):
    direct = SentenceTransformer(minilm_path).encode(["passage: hello"])
    ours = E5Embedder(minilm_path, show_progress_bar=False).fit_transform(["hello"])
    np.testing.assert_allclose(ours, direct / np.linalg.norm(direct), atol=1e-5)


def test_feature_names_and_pandas_output(embedder):
    out = embedder.set_output(transform="pandas").fit_transform(["a", "b"])
    assert isinstance(out, pd.DataFrame)
    assert out.shape == (2, 384)
    assert out.columns[0] == "e5embedder0" and out.columns[-1] == "e5embedder383"


def test_folder_cache_hits_equal_fresh_and_settings_miss(minilm_path, tmp_path):
    texts = ["first article", "second article", "first article"]
    fresh = E5Embedder(minilm_path, prefix="", cache=False, show_progress_bar=False)
    expected = fresh.fit_transform(texts)

    cached = E5Embedder(minilm_path, prefix="", cache=str(tmp_path), show_progress_bar=False)
    np.testing.assert_array_equal(cached.fit_transform(texts), expected)
    entries = sorted(tmp_path.rglob("*.npy"))
    assert len(entries) == 2  # one per distinct text

    again = clone(cached).fit(texts)
    encode_calls = []
    again._encode = lambda batch: encode_calls.append(batch)  # must not be reached
    np.testing.assert_array_equal(again.transform(texts), expected)
    assert encode_calls == []

    for changed in ({"prefix": "passage: "}, {"max_seq_length": 64}, {"long_text": "windows"}):
        clone(cached).set_params(**changed).fit_transform(texts)
    assert len(list(tmp_path.rglob("*.npy"))) == 2 + 3 * 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_memory_cache_embeds_each_text_once(minilm_path, articles):
    X, Y = articles
    texts = ArticleText().fit_transform(X)[:, 0].tolist()
    embedding_module._MEMORY_CACHE._items.clear()
    stage1 = make_pipeline(ArticleText(), E5Embedder(minilm_path, prefix="", show_progress_bar=False), make_probe())
    stage1.fit(X, Y)
    assert len(embedding_module._MEMORY_CACHE._items) == len(set(texts))
    clone(stage1).fit(X, Y).predict(X)
    assert len(embedding_module._MEMORY_CACHE._items) == len(set(texts))


def test_pickled_pipeline_has_no_model_weights_and_predicts_the_same(minilm_path, articles):
    X, Y = articles
    stage1 = make_pipeline(ArticleText(), E5Embedder(minilm_path, prefix="", show_progress_bar=False), make_probe())
    expected = stage1.fit(X, Y).predict(X)
    payload = pickle.dumps(stage1)
    assert not {m for m in _pickled_modules(payload) if m.split(".")[0] in {"torch", "sentence_transformers", "transformers"}}
    assert len(payload) < 5_000_000  # the MLP only; MiniLM alone is ~90 MB
    embedding_module._LOADED_MODELS.clear()
    np.testing.assert_allclose(pickle.loads(payload).predict(X), expected, atol=1e-6)
    np.testing.assert_allclose(clone(stage1).fit(X, Y).predict(X), expected, atol=1e-6)


def _pickled_modules(payload):
    modules = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            modules.add(module)
            return super().find_class(module, name)

    Recorder(io.BytesIO(payload)).load()
    return modules


def test_windows_equal_truncation_for_short_texts_and_cover_long_ones(minilm_path):
    short, long = "a short text", "energy " * 10 + "hospital " * 200
    truncate = E5Embedder(minilm_path, prefix="", max_seq_length=64, show_progress_bar=False).fit([short])
    windows = clone(truncate).set_params(long_text="windows").fit([short])
    np.testing.assert_allclose(windows.transform([short]), truncate.transform([short]), atol=1e-5)
    # the long text's tail is all "hospital": windows see it, truncation does not
    hospital = truncate.transform(["hospital " * 60])
    assert (windows.transform([long]) @ hospital.T) > (truncate.transform([long]) @ hospital.T)


def test_bad_rows_are_named_and_odd_text_is_embedded(embedder):
    with pytest.raises(ValueError, match=r"row 1 \(id='b'\)"):
        embedder.fit([{"id": "a", "title": "t", "content": "c"}, {"id": "b", "title": None, "content": "c"}])
    odd = ["\x00\x07 control", "lone surrogate \ud800", "中文 العربية Ελληνικά mixed", "😀" * 50]
    out = embedder.fit_transform(odd)
    assert out.shape == (4, 384) and np.isfinite(out).all()


def test_a_megabyte_article_is_truncated(embedder):
    out = embedder.fit_transform(["word " * 200_000])
    np.testing.assert_allclose(out, embedder.transform(["word " * 300]), atol=1e-5)


def test_parameters_are_validated_in_fit(minilm_path):
    with pytest.raises(ValueError, match="long_text"):
        E5Embedder(minilm_path, long_text="middle").fit(["a"])
    with pytest.raises(ValueError, match="batch_size"):
        E5Embedder(minilm_path, batch_size=0).fit(["a"])


def test_stage1_learns_the_synthetic_scores(minilm_path):
    from sklearn.model_selection import cross_val_predict

    X, Y = make_articles(300, random_state=0)
    stage1 = make_pipeline(ArticleText(), E5Embedder(minilm_path, prefix="", show_progress_bar=False), make_probe())
    predicted = cross_val_predict(stage1, X, Y, cv=3)
    mae = np.abs(predicted - Y.to_numpy()).mean()
    baseline = np.abs(Y.to_numpy() - Y.to_numpy().mean(axis=0)).mean()
    assert mae < 0.5 * baseline


# --- the folder cache verifies what it reads (issue 21 item 13) -------------------------------


def _entries(folder):
    return sorted(folder.rglob("*.npy"))


def _cached_run(minilm_path, folder, texts):
    return E5Embedder(minilm_path, prefix="", cache=str(folder), show_progress_bar=False).fit_transform(texts)


def test_a_planted_vector_with_a_wrong_checksum_is_embedded_again_and_rewritten(minilm_path, tmp_path):
    texts = ["Solar output doubled.", "A wind farm opened."]
    expected = E5Embedder(minilm_path, prefix="", cache=False, show_progress_bar=False).fit_transform(texts)
    np.testing.assert_array_equal(_cached_run(minilm_path, tmp_path, texts), expected)
    first = _entries(tmp_path)[0]
    entry = np.load(first)
    entry["vector"] = np.full(entry["vector"].shape, 0.05, dtype=np.float32)  # right shape, dtype
    np.save(first, entry)
    # Embedded again (alone: a batch of one pads differently, hence the float tolerance).
    recomputed = _cached_run(minilm_path, tmp_path, texts)
    np.testing.assert_allclose(recomputed, expected, atol=1e-6)
    repaired = np.load(first)
    assert not np.allclose(repaired["vector"], 0.05)  # rewritten with the computed vector
    np.testing.assert_array_equal(_cached_run(minilm_path, tmp_path, texts), recomputed)


def test_a_wrong_shape_or_an_old_entry_is_a_miss_not_an_error(minilm_path, tmp_path):
    texts = ["Solar output doubled.", "A wind farm opened."]
    expected = _cached_run(minilm_path, tmp_path, texts)
    first, second = _entries(tmp_path)
    np.save(first, np.ones(17, dtype=np.float32))  # another width
    np.save(second, expected[1])  # a plain vector without checksum (the cache's old format)
    np.testing.assert_array_equal(_cached_run(minilm_path, tmp_path, texts), expected)
    assert [np.load(path).dtype.names for path in (first, second)] == [("sha256", "vector")] * 2


def test_a_fifo_or_a_link_in_the_cache_is_a_miss_and_never_blocks(minilm_path, tmp_path):
    import os
    import signal

    texts = ["Solar output doubled.", "A wind farm opened."]
    expected = _cached_run(minilm_path, tmp_path, texts)
    first, second = _entries(tmp_path)
    first.unlink()
    os.mkfifo(first)
    second.unlink()
    second.symlink_to("/dev/zero")

    def hung(*_):
        raise TimeoutError("reading the cache blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        np.testing.assert_array_equal(_cached_run(minilm_path, tmp_path, texts), expected)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert first.is_file() and not second.is_symlink()  # both replaced by checked entries


def test_a_world_writable_cache_folder_is_named_in_a_warning(minilm_path, tmp_path, caplog):
    import os

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with caplog.at_level("WARNING", logger="hybrid_estimators.embedding"):
        _cached_run(minilm_path, shared, ["Solar output doubled."])
    assert f"The embedding cache {shared} is writable by others" in caplog.text


def test_embedding_leaves_the_shared_model_as_it_was(minilm_path):
    """E5Embedder sets its sequence length only while it encodes: the process-wide model
    (shared with every other estimator of the same model) is left as loaded."""
    from hybrid_estimators.embedding import load_sentence_transformer

    model = load_sentence_transformer(minilm_path)
    before = model.max_seq_length
    E5Embedder(minilm_path, prefix="", max_seq_length=16, cache=False).fit(["x"]).transform(["a b c"])
    assert model.max_seq_length == before != 16
