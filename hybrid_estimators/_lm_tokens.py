"""Stage 2's token handling: the tokenizer, head + tail truncation, padded batches."""

import functools

from .text import special_tokens_around


def truncate_ids(ids, budget, head_tail, marker):
    """Cut a token id list to at most `budget` ids, head + `marker` + tail.

    With `head_tail` ``(head, tail)``, a list longer than ``head + tail``
    keeps its first `head` and last `tail` ids around `marker`; where that
    exceeds `budget` the head gives up the difference (then the tail). With
    `head_tail` None, a list longer than `budget` keeps its start.

    Examples
    --------
    >>> truncate_ids(list(range(10)), 512, (3, 2), [-1])
    [0, 1, 2, -1, 8, 9]
    >>> truncate_ids(list(range(10)), 5, (3, 2), [-1])
    [0, 1, -1, 8, 9]
    >>> truncate_ids(list(range(10)), 5, None, [-1])
    [0, 1, 2, 3, 4]
    """
    if head_tail is None:
        return list(ids[:budget])
    head, tail = head_tail
    if len(ids) <= min(head + tail, budget):
        return list(ids)
    room = budget - len(marker)
    tail = min(tail, room)
    head = min(head, room - tail)
    return list(ids[:head]) + list(marker) + list(ids[len(ids) - tail :])


@functools.lru_cache(maxsize=8)
def load_tokenizer(model_name_or_path, gguf_file):
    """The base model's tokenizer, with a pad token (eos when it has none)."""
    from transformers import AutoTokenizer

    kwargs = {} if gguf_file is None else {"gguf_file": gguf_file}
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, **kwargs)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"The tokenizer of {model_name_or_path!r} has neither a pad nor an "
                "eos token: batches cannot be padded."
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode(estimator, texts, tokenizer):
    """Token ids of every text, as `estimator` reads them: truncated head + tail,
    special tokens added."""
    before, after = special_tokens_around(tokenizer)
    budget = estimator.max_length - len(before) - len(after)
    marker = tokenizer(estimator.truncation_marker, add_special_tokens=False)["input_ids"]
    if budget < 1 or (estimator.head_tail is not None and budget <= len(marker)):
        raise ValueError(
            f"max_length={estimator.max_length} leaves no room for text once the "
            f"{len(before) + len(after)} special and {len(marker)} marker tokens "
            "are counted."
        )
    encoded = tokenizer(
        texts, add_special_tokens=False, split_special_tokens=True, verbose=False
    )["input_ids"]
    empty = [i for i, ids in enumerate(encoded) if not ids and not before + after]
    if empty:
        raise ValueError(f"Rows {empty} give no tokens: the model cannot score them.")
    return [
        before + truncate_ids(ids, budget, estimator.head_tail, marker) + after
        for ids in encoded
    ]


def collate(rows, pad_token_id, device):
    """Right-pad token id lists into ``input_ids`` and ``attention_mask`` tensors."""
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.as_tensor(row)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def chunks(indices, size):
    """`indices` in consecutive slices of `size`."""
    return [indices[start : start + size] for start in range(0, len(indices), size)]
