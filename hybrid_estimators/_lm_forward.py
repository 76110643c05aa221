"""Stage 2's forward passes: the head's output and the pooled hidden states it reads."""

import numpy as np
from tqdm.auto import tqdm

from ._lm_loading import autocast, head_module, hf_model
from ._lm_tokens import chunks, collate
from ._progress import progress_enabled

#: Texts that make a Stage 2 pass long enough for a progress bar (see `show_progress_bar`).
_LONG_STAGE2_WORK = 16


def logits(estimator, model, inputs):
    """The head's output for a collated batch."""
    if estimator._own_head():
        return model(**inputs).logits
    return head_module(model, wrapper=True)(pooled(estimator, model, inputs))


def pooled(estimator, model, inputs):
    """Pooled hidden states of `layers`, concatenated: (batch, n_features)."""
    import torch

    inner = hf_model(model)
    backbone = getattr(inner, inner.base_model_prefix)
    layers = estimator._resolved_layers(inner.config)
    outputs = backbone(**inputs, output_hidden_states=True)
    mask = inputs["attention_mask"]
    last = mask.sum(dim=1) - 1
    rows = torch.arange(len(last), device=last.device)
    weights = mask.unsqueeze(-1).float()
    parts = []
    for layer in layers:
        hidden = outputs.hidden_states[layer]
        for pooling in estimator.pooling.split("+"):
            if pooling == "last":
                parts.append(hidden[rows, last].float())
            else:
                parts.append((hidden.float() * weights).sum(dim=1) / weights.sum(dim=1))
    return torch.cat(parts, dim=-1)


def head_inputs(estimator, model, tokenizer, ids):
    """What the head reads for every text, in length-sorted batches."""
    import torch

    device, dtype = estimator._device_and_dtype()
    order = np.argsort([len(row) for row in ids], kind="stable")
    features = None
    own_head = estimator._own_head()
    if own_head:  # transformers' head: capture the last layer it reads
        head = head_module(model, wrapper=True)
        captured = []
        hook = head.register_forward_hook(
            lambda module, args, output: captured.append(args[0])
        )
    try:
        model.eval()
        with torch.inference_mode(), autocast(device, dtype):
            for batch in tqdm(
                chunks(order, estimator.batch_size),
                desc="features",
                disable=not progress_enabled(estimator.show_progress_bar, len(ids), _LONG_STAGE2_WORK),
            ):
                inputs = collate([ids[i] for i in batch], tokenizer.pad_token_id, device)
                if own_head:
                    captured.clear()
                    model(**inputs)
                    hidden = captured[0]
                    if hidden.ndim == 3:
                        last = inputs["attention_mask"].sum(dim=1) - 1
                        hidden = hidden[torch.arange(len(batch), device=device), last]
                else:
                    hidden = pooled(estimator, model, inputs)
                hidden = hidden.float().cpu().numpy()
                if features is None:
                    features = np.empty((len(ids), hidden.shape[1]), dtype=np.float64)
                features[batch] = hidden
    finally:
        if own_head:
            hook.remove()
    return features


def predict_ids(estimator, model, tokenizer, ids, *, desc="predicting"):
    """Forward passes over length-sorted batches, in the original order."""
    import torch

    num_labels = model.config.num_labels
    Y = np.empty((len(ids), num_labels), dtype=np.float64)
    order = np.argsort([len(row) for row in ids], kind="stable")
    batches = [
        order[start : start + estimator.batch_size]
        for start in range(0, len(order), estimator.batch_size)
    ]
    device, dtype = estimator._device_and_dtype()
    with torch.inference_mode(), autocast(device, dtype):
        shown = progress_enabled(estimator.show_progress_bar, len(ids), _LONG_STAGE2_WORK)
        for batch in tqdm(batches, desc=desc, disable=not shown):
            inputs = collate([ids[i] for i in batch], tokenizer.pad_token_id, device)
            Y[batch] = logits(estimator, model, inputs).float().cpu().numpy()
    return Y
