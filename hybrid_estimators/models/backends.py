"""Stage 1 backends: OpenVINO and ONNX exports of an embedding model, made once.

:func:`export_model` writes each export under
:func:`~hybrid_estimators.models.home_dir` and reuses it afterwards;
:func:`backend_load_kwargs` says how ``SentenceTransformer`` loads it.
"""

import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

from .._io import atomic_folder
from .resolution import home_dir

logger = logging.getLogger(__name__)

#: ``E5Embedder(backend=...)`` values. The int8 variants are quantised
#: copies: OpenVINO's statically, calibrated on article texts; ONNX
#: Runtime's dynamically (no calibration). ``"openvino"`` runs in OpenVINO's
#: default precision for the CPU (bf16 where the CPU has bf16 instructions);
#: ``"openvino-fp32"`` and ``"openvino-bf16"`` run the same export with that
#: inference precision hint.
STAGE1_BACKENDS = (
    "torch", "openvino", "openvino-fp32", "openvino-bf16", "openvino-int8", "onnx", "onnx-int8",
)
#: Backends whose export is calibrated on texts (see :func:`export_model`).
CALIBRATED_BACKENDS = ("openvino-int8",)
#: Backends that run another backend's export with other runtime settings.
_SAME_EXPORT_AS = {"openvino-fp32": "openvino", "openvino-bf16": "openvino"}
#: OpenVINO's ``INFERENCE_PRECISION_HINT`` of a backend.
_PRECISION_HINTS = {"openvino-fp32": "f32", "openvino-bf16": "bf16"}
_BACKEND_FILES = {
    "openvino": "openvino/openvino_model.xml",
    "openvino-fp32": "openvino/openvino_model.xml",
    "openvino-bf16": "openvino/openvino_model.xml",
    "openvino-int8": "openvino/openvino_model_qint8_quantized.xml",
    "onnx": "onnx/model.onnx",
    "onnx-int8": "onnx/model_qint8_avx512_vnni.onnx",
}
_EXTRA_HINTS = {
    "openvino": 'pip install "hybrid_estimators[openvino]"',
    "onnx": (
        'pip install "sentence-transformers[onnx]" (optimum-onnx; it needs transformers < 4.58 '
        "and sentence-transformers 5.x, so it cannot share an environment with the openvino extra "
        "or the newest transformers)"
    ),
}


def export_model(model_path, backend, calibration_texts=None):
    """A sentence-transformers folder of `model_path` exported for `backend`.

    ``"torch"`` returns `model_path` unchanged. Other backends are exported
    once with sentence-transformers' own backends (and, for the int8
    variants, optimum's quantisers) into
    ``home_dir()/exports/<model>-<hash>/<backend>``, and reused afterwards;
    the folder appears atomically, so concurrent processes are safe.
    ``"openvino-int8"`` is statically quantised (OpenVINO/NNCF), calibrated
    on `calibration_texts` (about a hundred article texts suffice; their
    hash is part of the folder's name). Load the result with
    ``SentenceTransformer(folder, **backend_load_kwargs(backend))``.

    Parameters
    ----------
    model_path : str
        A resolved model folder (see :func:`resolve_model`) or hub name.
    backend : {"torch", "openvino", "openvino-fp32", "openvino-bf16", \
            "openvino-int8", "onnx", "onnx-int8"}
        The runtime to export for (``"openvino-fp32"`` and ``"openvino-bf16"``
        share ``"openvino"``'s export).
    calibration_texts : list of str or None, default=None
        Texts to calibrate ``"openvino-int8"`` on, as the model will see
        them (prefix included). Required for that backend, ignored by others.

    Returns
    -------
    folder : str

    Raises
    ------
    ImportError
        When the backend's optional packages are missing; the message says
        what to install.

    See Also
    --------
    backend_load_kwargs : How to load the exported model.
    hybrid_estimators.embedding.E5Embedder : Uses it for its ``backend``.

    Examples
    --------
    >>> from sentence_transformers import SentenceTransformer
    >>> folder = export_model(offline_e5_small(), "openvino")  # doctest: +SKIP
    >>> model = SentenceTransformer(folder, **backend_load_kwargs("openvino"))  # doctest: +SKIP
    """
    if backend not in STAGE1_BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {STAGE1_BACKENDS}.")
    if backend == "torch":
        return str(model_path)
    if backend in CALIBRATED_BACKENDS and not calibration_texts:
        raise ValueError(f"backend={backend!r} needs calibration texts to quantise with.")
    _require_backend(backend)
    backend = _SAME_EXPORT_AS.get(backend, backend)
    folder = (
        home_dir() / "exports" / _export_folder_name(model_path)
        / _backend_folder_name(backend, calibration_texts)
    )
    if not folder.is_dir():
        logger.info("Exporting %s for backend=%s into %s (once)", model_path, backend, folder)
        with atomic_folder(folder) as staging:
            _EXPORTERS[backend](str(model_path), staging, calibration_texts)
    return str(folder)


def backend_load_kwargs(backend):
    """``SentenceTransformer`` keyword arguments that load an :func:`export_model` folder."""
    if backend == "torch":
        return {"backend": "torch"}
    model_kwargs = {"file_name": _BACKEND_FILES[backend]}
    if backend in _PRECISION_HINTS:
        model_kwargs["ov_config"] = {"INFERENCE_PRECISION_HINT": _PRECISION_HINTS[backend]}
    if backend.startswith("onnx"):
        # The first provider onnxruntime lists may be a remote one (Azure).
        model_kwargs["provider"] = "CPUExecutionProvider"
    return {"backend": backend.split("-")[0], "model_kwargs": model_kwargs}


def installed_backends():
    """The :data:`STAGE1_BACKENDS` whose runtime packages are installed here."""
    return [backend for backend in STAGE1_BACKENDS if backend == "torch" or not _runtime_missing(backend)]


def _runtime_missing(backend):
    module = "optimum.intel" if backend.startswith("openvino") else "optimum.onnxruntime"
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True


def _require_backend(backend):
    runtime = backend.split("-")[0]
    module = "optimum.intel" if runtime == "openvino" else "optimum.onnxruntime"
    try:
        missing = importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        missing = True
    if missing:
        raise ImportError(f"backend={backend!r} needs {module}: {_EXTRA_HINTS[runtime]}")


def _export_folder_name(model_path):
    digest = hashlib.sha256(os.fspath(model_path).encode("utf-8")).hexdigest()
    return f"{Path(os.fspath(model_path)).name}-{digest[:12]}"


def _backend_folder_name(backend, calibration_texts):
    if backend not in CALIBRATED_BACKENDS:
        return backend
    digest = hashlib.sha256()
    for text in calibration_texts:
        digest.update(text.encode("utf-8", errors="surrogatepass") + b"\x00")
    return f"{backend}-calibrated-{digest.hexdigest()[:12]}"


def _load_for_export(model_path, backend):
    from sentence_transformers import SentenceTransformer

    kwargs = {"model_kwargs": {"provider": "CPUExecutionProvider"}} if backend == "onnx" else {}
    return SentenceTransformer(model_path, device="cpu", backend=backend, **kwargs)


def _export_openvino(model_path, staging, _calibration_texts=None):
    _load_for_export(model_path, "openvino").save(str(staging))


def _export_openvino_int8(model_path, staging, calibration_texts):
    """OpenVINO export, statically quantised to int8 on local texts.

    sentence-transformers' ``export_static_quantized_openvino_model`` always
    downloads its calibration set from the hub, so optimum-intel's quantiser
    is called directly, on a fresh export (it rewrites the model it gets).
    """
    from datasets import Dataset
    from optimum.intel import OVConfig, OVQuantizationConfig, OVQuantizer

    _export_openvino(model_path, staging)
    model = _load_for_export(str(staging), "openvino")
    tokens = model.tokenizer(
        list(calibration_texts), padding="max_length", truncation=True, max_length=model.max_seq_length
    )
    quantizer = OVQuantizer.from_pretrained(model[0].auto_model)
    config = OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(calibration_texts)))
    quantizer.quantize(Dataset.from_dict(dict(tokens)), save_directory=staging / "int8", ov_config=config)
    # sentence-transformers' loader makes the model save into an "openvino" subfolder.
    quantized = next((staging / "int8").rglob("openvino_model.xml"))
    target = Path(staging, _BACKEND_FILES["openvino-int8"])
    for suffix in (".xml", ".bin"):
        os.replace(quantized.with_suffix(suffix), target.with_suffix(suffix))
    shutil.rmtree(staging / "int8")


def _export_onnx(model_path, staging, _calibration_texts=None):
    _load_for_export(model_path, "onnx").save(str(staging))


def _export_onnx_int8(model_path, staging, _calibration_texts=None):
    from sentence_transformers import export_dynamic_quantized_onnx_model

    _export_onnx(model_path, staging)
    export_dynamic_quantized_onnx_model(_load_for_export(str(staging), "onnx"), "avx512_vnni", str(staging))


_EXPORTERS = {
    "openvino": _export_openvino,
    "openvino-int8": _export_openvino_int8,
    "onnx": _export_onnx,
    "onnx-int8": _export_onnx_int8,
}
