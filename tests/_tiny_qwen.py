"""The one tiny Qwen2 of the tests: random weights, the real Qwen2.5 tokenizer.

Its matrices are small (hidden size 32), so a test fits and predicts in
seconds; the tokenizer is Qwen2.5's real one (converted offline), so token
counts and truncation are the real ones.
"""


def save_tiny_qwen2(folder, *, with_pad_token=True, num_hidden_layers=2):
    """Save a tiny Qwen2 causal LM (seeded random weights) and its tokenizer into `folder`.

    Returns the folder as a string, which ``QwenRegressor`` loads as a base model.
    """
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from hybrid_estimators.models import offline_qwen_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(offline_qwen_tokenizer())
    if not with_pad_token:
        tokenizer.pad_token = None
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if with_pad_token else None,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def save_tiny_qwen2_gguf(folder, path):
    """Write the tiny Qwen2 saved in `folder` as a float32 GGUF file at `path`.

    The tensors and tokenizer as llama.cpp names them (the ``gguf``
    package's name map), so that transformers loads it with ``gguf_file=``
    as it loads a published GGUF. Returns `path`.
    """
    import json
    from pathlib import Path

    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((Path(folder) / "config.json").read_text())
    tokenizer = json.loads((Path(folder) / "tokenizer.json").read_text())
    n_blocks = config["num_hidden_layers"]
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_block_count(n_blocks)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config.get("rope_theta") or config["rope_parameters"]["rope_theta"])
    vocab = dict(tokenizer["model"]["vocab"])
    for added in tokenizer["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = {added["id"] for added in tokenizer["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special else 1 for i in range(len(tokens))])
    merges = tokenizer["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["eos_token_id"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, n_blocks)
    for name, tensor in load_file(str(Path(folder) / "model.safetensors")).items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        writer.add_tensor(gguf_name, np.ascontiguousarray(tensor, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
