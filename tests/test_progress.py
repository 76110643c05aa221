"""Progress bars: on only for long work on a terminal, unless asked."""

import io
from pathlib import Path

import pytest

from hybrid_estimators._progress import progress_enabled
from hybrid_estimators.embedding import E5Embedder
from hybrid_estimators.qwen import QwenRegressor


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(("stderr", "n_items", "expected"), [
    (Terminal(), 1000, True), (Terminal(), 10, False), (io.StringIO(), 1000, False),
])
def test_auto_shows_bars_only_for_long_work_on_a_terminal(monkeypatch, stderr, n_items, expected):
    monkeypatch.setattr("sys.stderr", stderr)
    assert progress_enabled(None, n_items) is expected
    assert progress_enabled(True, 1) and not progress_enabled(False, 10**6)


def test_the_stages_default_to_auto():
    assert E5Embedder().show_progress_bar is None
    assert QwenRegressor().show_progress_bar is None


def test_an_unavailable_device_is_refused_clearly_by_both_stages():
    import torch

    from hybrid_estimators.models import resolve_device

    assert resolve_device("cpu") == "cpu"
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="device='cuda' is not available here"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu-please")
    with pytest.raises(ValueError, match="device='cuda' is not available here"):
        QwenRegressor(device="cuda")._device_and_dtype()
    with pytest.raises(ValueError, match="device='cuda' is not available here"):
        E5Embedder(device="cuda").fit(["a text"])


def test_an_unknown_stage2_base_fails_fast_saying_what_was_tried(monkeypatch, tmp_path):
    from hybrid_estimators.models import SMOLLM2_GGUF, SMOLLM2_NAME, resolve_stage2_base

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="Tried a local path: none exists; the Hugging Face cache"):
        resolve_stage2_base("Qwen/Qwen2.5-1.5B")
    assert resolve_stage2_base(tmp_path) == str(tmp_path)  # a local folder is used as is
    assert Path(resolve_stage2_base(SMOLLM2_NAME, SMOLLM2_GGUF), SMOLLM2_GGUF).is_file()


def test_loading_bars_hide_every_loading_bar_and_put_them_back(capsys):
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers import modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as hf_logging

    from hybrid_estimators._progress import loading_bars

    original = gguf_loading.tqdm
    before = hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()
    with loading_bars(False):
        assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
        list(gguf_loading.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    assert "de-quantizing" not in capsys.readouterr().err
    assert gguf_loading.tqdm is original
    assert (hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()) == before
    with loading_bars(True):
        list(gguf_loading.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    assert "de-quantizing" in capsys.readouterr().err
