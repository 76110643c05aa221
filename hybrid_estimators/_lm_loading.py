"""Stage 2's loading: the base model, its head and LoRA adapter, device and precision."""

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np

from ._lm_tokens import load_tokenizer
from ._progress import loading_bars
from .models import dequantized_gguf, resolve_device, resolve_stage2_base
from .models._stage2_precision import auto_dtype, log_choice_once, machine_cpu_flags

logger = logging.getLogger("hybrid_estimators.qwen")

#: LoRA target modules by ``config.model_type``; other architectures get
#: peft's defaults for their type.
DEFAULT_TARGET_MODULES = {
    model_type: ["q_proj", "k_proj", "v_proj", "o_proj"]
    for model_type in ("qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2")
}
#: Attribute names of the regression head in transformers' sequence classifiers.
HEAD_NAMES = ("score", "classifier")


def load_for_prediction(estimator):
    from peft import PeftConfig, PeftModel, get_peft_model, set_peft_model_state_dict

    if hasattr(estimator, "adapter_state_"):
        model, tokenizer = load_base(estimator, estimator.num_labels_)
        fitted = getattr(estimator, "head_layout_", None)
        if fitted is not None and fitted != estimator._head_layout(model.config):
            raise ValueError(
                f"This estimator was fitted with pooling={fitted['pooling']!r}, "
                f"layers={fitted['layers']!r}; its pooling or layers changed "
                "since: fit it again."
            )
        config = PeftConfig.from_peft_type(**estimator.adapter_config_)
        model = get_peft_model(model, config)
        set_peft_model_state_dict(model, state_tensors(estimator.adapter_state_))
    else:
        model, tokenizer = load_base(estimator, estimator._adapter_num_labels())
        estimator._check_saved_layout(model.config)
        model = PeftModel.from_pretrained(model, str(estimator.adapter))
    return model.eval(), tokenizer


def load_trainable(estimator, num_labels):
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    model, tokenizer = load_base(estimator, num_labels)
    if estimator.adapter is not None:
        estimator._check_saved_layout(model.config)
        model = PeftModel.from_pretrained(model, str(estimator.adapter), is_trainable=True)
    else:
        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=estimator.lora_r,
            lora_alpha=estimator.lora_alpha,
            lora_dropout=estimator.lora_dropout,
            target_modules=target_modules(estimator, model),
            modules_to_save=[head_name(model)],
        )
        model = get_peft_model(model, config)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return model, tokenizer


def target_modules(estimator, model):
    if estimator.target_modules is not None:
        return (
            estimator.target_modules
            if isinstance(estimator.target_modules, str)
            else list(estimator.target_modules)
        )
    return DEFAULT_TARGET_MODULES.get(model.config.model_type)


def load_base(estimator, num_labels):
    from transformers import AutoModelForSequenceClassification

    device, dtype = estimator._device_and_dtype()
    kwargs = {
        "num_labels": num_labels,
        "problem_type": "regression",
        "dtype": dtype,
        # A checkpoint's own head of another size is replaced, not an error.
        "ignore_mismatched_sizes": True,
    }
    logger.info(
        "Loading %s%s (%s on %s)",
        estimator.model_name_or_path,
        f" / {estimator.gguf_file}" if estimator.gguf_file else "",
        dtype,
        device,
    )
    source = resolve_stage2_base(estimator.model_name_or_path, estimator.gguf_file)
    if estimator.gguf_file is not None:
        source = str(dequantized_gguf(local_gguf(source, estimator.gguf_file)))
    tokenizer = load_tokenizer(source, None)
    model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    if not estimator._own_head():
        # A linear head with bias over the pooled features replaces the
        # model's own (which reads the last layer's last token only).
        import torch

        layout = estimator._head_layout(model.config)
        setattr(
            model,
            head_name(model),
            torch.nn.Linear(layout["n_features"], num_labels, bias=True, dtype=dtype),
        )
        stop_after_layer(model, max(layout["layers"]))
    return model.to(device), tokenizer


def local_gguf(source, gguf_file):
    """Path of `gguf_file` in a resolved model folder, or downloaded from the hub."""
    if Path(source).is_dir():
        return Path(source) / gguf_file
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(source, gguf_file))


def stop_after_layer(model, last_read):
    """Drop the decoder layers after hidden state `last_read`: they never run.

    ``hidden_states[i]`` (``0 < i < num_hidden_layers``) is decoder layer
    ``i``'s output, before the final norm, which only the last hidden state
    gets. A head reading up to `last_read` < ``num_hidden_layers`` needs
    layers ``1..last_read`` and no norm: the layers after it are removed
    and the norm becomes the identity, so the backbone's last hidden state
    is exactly ``hidden_states[last_read]`` of the whole model. The config
    keeps the model's layer count (the head's layout is unchanged).
    Architectures whose decoder is not a ``layers`` list with a ``norm``
    are left whole.
    """
    import torch

    n_layers = model.config.num_hidden_layers
    backbone = getattr(model, model.base_model_prefix)
    layers, norm = getattr(backbone, "layers", None), getattr(backbone, "norm", None)
    if last_read >= n_layers:
        return
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) != n_layers or norm is None:
        logger.info("%s: every layer runs (no layers list to cut)", type(backbone).__name__)
        return
    backbone.layers = layers[:last_read]
    backbone.norm = torch.nn.Identity()
    logger.info("Stage 2 runs %d of %d layers: its head reads none after", last_read, n_layers)


def device_and_dtype(device, dtype):
    """The torch device and dtype of a QwenRegressor's `device` and `dtype`."""
    import torch

    device = torch.device(resolve_device(device))
    if dtype == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        cpu_flags = machine_cpu_flags() if device.type == "cpu" else frozenset()
        dtype, reason = auto_dtype(device.type, cpu_flags, cuda_bf16)
        log_choice_once(dtype, reason, device.type)
    if dtype is not None:
        return device, getattr(torch, dtype)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return device, torch.bfloat16
    return device, torch.float32


@contextlib.contextmanager
def quiet_loading(show_progress_bar):
    """Silence transformers' load report while a base model gets its head.

    The report always lists the regression head as "MISSING": it is created
    here on purpose, then fitted or restored from the adapter, so the warning
    would only mislead. Errors still raise. The bars of loading (weights,
    downloads, GGUF de-quantisation) show only with ``show_progress_bar=True``
    (:func:`~hybrid_estimators._progress.loading_bars`).
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), loading_bars(bool(show_progress_bar)):
            # peft still asks for the renamed ``is_gradient_checkpointing``.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)


def saved_head_size(adapter):
    """Number of labels of the head saved in a peft adapter folder, or None."""
    from safetensors import safe_open

    path = Path(adapter) / "adapter_model.safetensors"
    if not path.exists():
        raise ValueError(f"adapter {str(adapter)!r} has no adapter_model.safetensors.")
    with safe_open(str(path), framework="pt") as weights:
        for key in weights.keys():
            parts = key.split(".")
            if parts[-1] == "weight" and (
                parts[-2] in HEAD_NAMES or parts[-3:-1] == ["classifier", "out_proj"]
            ):
                return int(weights.get_slice(key).get_shape()[0])
    return None


def hf_model(model):
    """The transformers model under a peft wrapper (LoRA layers in place)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def head_module(model, *, wrapper=False):
    """The regression head; peft's trainable copy of it unless `wrapper`."""
    inner = hf_model(model)
    head = getattr(inner, head_name(inner))
    if not wrapper and hasattr(head, "modules_to_save"):
        head = head.modules_to_save["default"]
    return head


def head_name(model):
    for name in HEAD_NAMES:
        if hasattr(model, name):
            return name
    raise ValueError(
        f"{type(model).__name__} has no regression head named {' or '.join(HEAD_NAMES)}."
    )


def adapter_config_dict(model):
    config = model.peft_config["default"].to_dict()
    return {
        key: sorted(value) if isinstance(value, set) else value
        for key, value in config.items()
    }


def adapter_state_numpy(model):
    from peft import get_peft_model_state_dict

    return {
        name: tensor.detach().float().cpu().numpy()
        for name, tensor in get_peft_model_state_dict(model).items()
    }


def state_tensors(state):
    import torch

    return {name: torch.from_numpy(np.array(array)) for name, array in state.items()}


def autocast(device, dtype):
    import torch

    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
