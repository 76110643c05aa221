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


def save_tiny_qwen2_gguf(path, *, n_ranks=1000, num_hidden_layers=2):
    """Write a tiny Qwen2 as a float32 GGUF file at `path`, as llama.cpp names things.

    Qwen2.5's tokenizer cut to its first `n_ranks` BPE ranks (and their
    merges) plus its three special tokens: the full vocabulary takes the
    ``gguf`` reader about a minute to parse. Tensor names come from the
    ``gguf`` package's name map, so transformers loads the file with
    ``gguf_file=`` as it loads a published GGUF. Returns `path`.
    """
    import json

    import gguf
    import numpy as np
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from hybrid_estimators.models import QWEN_SPECIAL_TOKENS, offline_qwen_tokenizer

    tokenizer = json.loads((offline_qwen_tokenizer() / "tokenizer.json").read_text(encoding="utf-8"))
    ranks = {token: i for token, i in tokenizer["model"]["vocab"].items() if i < n_ranks}
    tokens = sorted(ranks, key=ranks.get) + list(QWEN_SPECIAL_TOKENS)
    merges = [
        merge if isinstance(merge, str) else " ".join(merge)
        for merge in tokenizer["model"]["merges"]
    ]
    merges = [m for m in merges if "".join(m.split(" ")) in ranks and all(p in ranks for p in m.split(" "))]
    eos = tokens.index("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tokens), hidden_size=32, intermediate_size=64,
        num_hidden_layers=num_hidden_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=eos, pad_token_id=eos,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_block_count(num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_embedding_length(config.hidden_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * n_ranks + [3] * len(QWEN_SPECIAL_TOKENS))
    writer.add_token_merges(merges)
    writer.add_eos_token_id(eos)
    writer.add_pad_token_id(eos)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":  # tied to the embeddings
            continue
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        writer.add_tensor(gguf_name, np.ascontiguousarray(tensor.numpy(), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
