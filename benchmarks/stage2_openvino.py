"""Would OpenVINO run the shipped Stage 2's feature extractor faster than torch? (an experiment)

    python -m benchmarks.stage2_openvino [--articles 8] [--tokens 256] [--out FILE]

The shipped Stage 2 reads the mean pools of hidden states 6, 12, 18 and 24
of Qwen2.5-Coder-0.5B (real weights, de-quantised from its GGUF file). This
times that extractor, as one module, on the same articles: torch float32 and
bfloat16, and the module exported with ``torch.export`` and converted by
``openvino.convert_model`` (``jit.trace`` fails on transformers' mask code),
compiled with an f32 or bf16 inference precision, with and without int8
weights (``nncf.compress_weights``, no calibration data). Each row's
features are compared with torch float32's (lowest cosine). Rows are timed
in one process, the fastest of two passes after a warm-up; the articles are
cut to their first `--tokens` tokens. Not part of the product: it measures
whether building an OpenVINO Stage 2 would pay, and it does not measure
quality on the folds (that is ``scripts/stage2_configurations.py``).
"""

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from benchmarks._machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (6, 12, 18, 24)
logger = logging.getLogger("benchmarks.stage2_openvino")


def _extractor(source, dtype):
    import torch
    from transformers import AutoModel

    class MeanPools(torch.nn.Module):
        """The concatenated mean pools of `LAYERS`, as the shipped head reads them."""

        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

        def forward(self, input_ids, attention_mask):
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                   output_hidden_states=True, use_cache=False).hidden_states
            weights = attention_mask.unsqueeze(-1).to(torch.float32)
            return torch.cat([(hidden[layer].float() * weights).sum(1) / weights.sum(1) for layer in LAYERS], -1)

    return MeanPools(AutoModel.from_pretrained(source, dtype=dtype)).eval()


def _timed(predict, batches, n_articles):
    predict(batches[0])  # warm-up: kernels prepared per shape
    best, features = float("inf"), None
    for _ in range(2):
        started = time.perf_counter()
        features = np.concatenate([predict(batch) for batch in batches])
        best = min(best, time.perf_counter() - started)
    return best / n_articles, features


def measure(n_articles=8, tokens=256, threads=2):
    import nncf
    import openvino as ov
    import torch
    from transformers import AutoTokenizer

    from hybrid_estimators import models
    from hybrid_estimators._lm_loading import local_gguf
    from hybrid_estimators.datasets import load_articles, shared_data_dir
    from hybrid_estimators.text import as_texts

    torch.set_num_threads(threads)
    base = models.resolve_stage2_base(models.QWEN25_CODER_NAME, models.QWEN25_CODER_GGUF)
    source = str(models.dequantized_gguf(local_gguf(base, models.QWEN25_CODER_GGUF)))
    tokenizer = AutoTokenizer.from_pretrained(source)
    X, _, _ = load_articles(shared_data_dir() / "seece_energy_tech")
    texts = list(as_texts(X.sample(n_articles, random_state=0)))
    batches = [tokenizer(texts[i:i + 4], truncation=True, max_length=tokens, padding=True, return_tensors="pt")
               for i in range(0, len(texts), 4)]

    def torch_predict(module):
        def predict(batch):
            with torch.no_grad():
                return module(batch["input_ids"], batch["attention_mask"]).numpy()
        return predict

    rows = {}
    float32 = _extractor(source, torch.float32)
    rows["torch float32"] = _timed(torch_predict(float32), batches, n_articles)
    rows["torch bfloat16"] = _timed(torch_predict(_extractor(source, torch.bfloat16)), batches, n_articles)
    length = torch.export.Dim("length", min=2, max=tokens)
    batch_dim = torch.export.Dim("batch", min=1, max=64)
    example = batches[0]
    exported = torch.export.export(float32, (example["input_ids"], example["attention_mask"]),
                                   dynamic_shapes=({0: batch_dim, 1: length}, {0: batch_dim, 1: length}))
    core = ov.Core()
    for name, compress, hint in (
        ("openvino f32", False, "f32"), ("openvino bf16", False, "bf16"), ("openvino int8 weights, bf16", True, "bf16"),
    ):
        model = ov.convert_model(exported)  # a fresh one each time: compress_weights changes its model in place
        if compress:
            model = nncf.compress_weights(model)
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads})
        rows[name] = _timed(
            lambda batch: compiled({"input_ids": batch["input_ids"].numpy(),
                                    "attention_mask": batch["attention_mask"].numpy()})[0],
            batches, n_articles,
        )
    reference_seconds, reference = rows["torch float32"]
    return {
        "machine": describe_machine(),
        "articles": n_articles, "tokens": tokens, "threads": threads, "layers": list(LAYERS),
        "rows": [
            {"configuration": name, "seconds_per_article": seconds,
             "speedup_vs_torch_float32": reference_seconds / seconds,
             "cosine_min_to_torch_float32": float(np.min(
                 (features * reference).sum(1) / np.linalg.norm(features, axis=1) / np.linalg.norm(reference, axis=1)))}
            for name, (seconds, features) in rows.items()
        ],
    }


def format_result(result):
    lines = [f"Stage 2 feature extractor (Qwen2.5-Coder-0.5B, layers {result['layers']}), {result['articles']} "
             f"articles at {result['tokens']} tokens, {result['threads']} threads; {result['machine']}",
             f"{'configuration':<30}{'s/article':>11}{'speedup':>9}{'min cos':>10}"]
    for row in result["rows"]:
        lines.append(f"{row['configuration']:<30}{row['seconds_per_article']:>11.3f}"
                     f"{row['speedup_vs_torch_float32']:>8.2f}×{row['cosine_min_to_torch_float32']:>10.5f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stage2_openvino", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stage2_openvino.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = measure(args.articles, args.tokens, args.threads)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(format_result(result))


if __name__ == "__main__":
    main()
