"""GGUF base models de-quantised once, kept in the cache keyed by the file's content.

Loading a GGUF file with transformers de-quantises every tensor (15-18 s for
Qwen2.5-Coder-0.5B), in every new process. :func:`dequantized_gguf` does it
once per GGUF content (its sha256, not its path) and keeps the result, a
standard Hugging Face folder (config, float32 safetensors, tokenizer), under
:func:`~hybrid_estimators.models.home_dir`; every file of it is checked
against its recorded sha256 before use, and an entry that fails the check is
rebuilt, never trusted.
"""

import json
import logging
import time
from pathlib import Path

from .._io import atomic_folder
from .resolution import file_sha256, home_dir

logger = logging.getLogger(__name__)

#: The file, in a de-quantised folder, recording what it was made from and
#: every other file's size and sha256.
MANIFEST = "dequantized.json"


def dequantized_gguf(gguf_path):
    """Folder of a GGUF model de-quantised to float32, converted once and reused.

    The folder is ``home_dir() / "dequantized" / <name>-<sha256>``, keyed by
    the GGUF file's sha256: a file moved or copied elsewhere reuses it, a
    changed file gets its own. It holds the backbone's weights (float32, as
    transformers de-quantises them: loading from the folder gives the very
    weights that loading the GGUF file gives), its config and its tokenizer,
    plus :data:`MANIFEST`. On every use each file's size and sha256 are
    checked against the manifest; a folder that fails (truncated, corrupt,
    incomplete) is rebuilt. The folder is written atomically, so concurrent
    processes never see a half-written one. Which one was used is logged.

    Parameters
    ----------
    gguf_path : str or path-like
        A GGUF file that transformers loads (``gguf_file=``).

    Returns
    -------
    folder : Path
        A folder that ``AutoModel*.from_pretrained`` and
        ``AutoTokenizer.from_pretrained`` load without ``gguf_file``.

    See Also
    --------
    hybrid_estimators.models.smollm2_gguf : A GGUF base to de-quantise.
    hybrid_estimators.qwen.QwenRegressor : Loads GGUF bases through it.
    """
    gguf_path = Path(gguf_path)
    sha256 = file_sha256(gguf_path)
    folder = home_dir() / "dequantized" / f"{gguf_path.stem}-{sha256[:16]}"
    problem = _check_folder(folder, sha256)
    if problem is None:
        logger.info("GGUF %s: using the de-quantised copy %s (sha256 checked)", gguf_path.name, folder)
        return folder
    if folder.exists():
        logger.warning("GGUF %s: rebuilding the de-quantised copy %s: %s", gguf_path.name, folder, problem)
    started = time.perf_counter()
    with atomic_folder(folder, replace=folder.exists()) as staging:
        _convert(gguf_path, staging)
        _write_manifest(staging, gguf_path, sha256)
    logger.info(
        "GGUF %s: de-quantised into %s in %.1f s", gguf_path.name, folder, time.perf_counter() - started
    )
    return folder


def _convert(gguf_path, folder):
    """De-quantise the GGUF's backbone and tokenizer into `folder` (float32)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    source, name = str(gguf_path.parent), gguf_path.name
    model = AutoModel.from_pretrained(source, gguf_file=name, dtype=torch.float32)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source, gguf_file=name).save_pretrained(folder)


def _write_manifest(folder, gguf_path, sha256):
    files = {
        path.name: {"size": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(Path(folder).iterdir())
        if path.is_file()
    }
    manifest = {"gguf_file": gguf_path.name, "gguf_sha256": sha256, "files": files}
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _check_folder(folder, sha256):
    """None when `folder` is a complete de-quantised copy of the GGUF `sha256`, else why not."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except FileNotFoundError:
        return "no manifest" if folder.exists() else "absent"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"unreadable manifest ({error})"
    if manifest.get("gguf_sha256") != sha256:
        return "its manifest names another GGUF"
    if not files:
        return "its manifest lists no file"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != expected.get("size"):
            return f"{name} is missing or has another size"
        if file_sha256(path) != expected.get("sha256"):
            return f"{name} does not match its sha256"
    return None
