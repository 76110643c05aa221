"""The Stage 2 numbers of the tests, printed: fine-tuning and adapter round trips.

On the tiny Qwen2 of ``tests/test_qwen.py`` (random weights, the real
Qwen2.5 tokenizer, saved and loaded by path) and 120 synthetic articles
(90 to fit, 30 held out), it prints the held-out MSE before and after
``QwenRegressor.fit``, next to predicting the training mean, and the
largest difference between the fitted model's predictions and those of its
saved adapter reloaded three ways: ``QwenRegressor(base, adapter=path)``,
``peft.PeftModel.from_pretrained`` and a pickle round trip.

Run from the repository root::

    python scripts/stage2_checks.py
"""

import logging
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/_tiny_qwen.py
from tests.test_qwen import TINY, _save_tiny_qwen2  # noqa: E402  (one tiny-model builder)

from hybrid_estimators.datasets import make_articles  # noqa: E402
from hybrid_estimators.qwen import QwenRegressor  # noqa: E402

logger = logging.getLogger("stage2_checks")


def mse(predicted, Y):
    return float(np.mean((np.asarray(predicted) - np.asarray(Y)) ** 2))


def peft_predictions(base_path, adapter_dir, texts, num_labels):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = AutoModelForSequenceClassification.from_pretrained(
        base_path, num_labels=num_labels, problem_type="regression"
    )
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    with torch.inference_mode():
        return np.concatenate([model(**tokenizer(text, return_tensors="pt")).logits.numpy() for text in texts])


def main():
    import torch

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)  # as in the tests; other thread counts change float32 sums by ~1e-5
    X, Y = make_articles(120, random_state=0)
    X_fit, Y_fit, X_test, Y_test = X[:90], Y[:90], X[90:], Y[90:]
    with tempfile.TemporaryDirectory() as folder:
        base = _save_tiny_qwen2(Path(folder) / "tiny-qwen2")
        untrained = QwenRegressor(base, max_epochs=0, head_init="random", **TINY).fit(X_fit, Y_fit)
        fitted = QwenRegressor(base, max_epochs=2, early_stopping=False, **TINY).fit(X_fit, Y_fit)
        expected = fitted.predict(X_test)
        adapter = fitted.save_adapter(Path(folder) / "adapter")
        reloaded = QwenRegressor(base, adapter=adapter, **TINY).predict(X_test)
        texts = ["Solar panels and battery storage.", "The hospital hired doctors."]
        by_peft = peft_predictions(base, adapter, texts, Y.shape[1])
        unpickled = pickle.loads(pickle.dumps(fitted)).predict(X_test)
        rows = [
            ("held-out MSE, untrained (random head)", mse(untrained.predict(X_test), Y_test)),
            ("held-out MSE, predicting the training mean", mse(np.tile(Y_fit.mean(), (len(Y_test), 1)), Y_test)),
            ("held-out MSE, after fit (2 epochs, LoRA + head)", mse(expected, Y_test)),
            ("max |difference|, QwenRegressor(base, adapter=path)", np.abs(reloaded - expected).max()),
            ("max |difference|, PeftModel.from_pretrained", np.abs(by_peft - fitted.predict(texts)).max()),
            ("max |difference|, pickle round trip", np.abs(unpickled - expected).max()),
        ]
    print("\n".join(f"{label:<54}{value:>10.3g}" for label, value in rows))


if __name__ == "__main__":
    main()
