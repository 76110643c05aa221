"""A filter's configuration (``config.yaml``): :class:`FilterSpec` and the
validation of every field, each error naming the field.
"""

import copy
import logging
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np

from ..prefilter import Prefilter
from ..qwen import POOLINGS
from ..text import check_head_tail
from ..tiers import DEFAULT_TIERS
from ._safe_io import (
    _CONTROL,
    _TEXT_CONTROL,
    MAX_CONFIG_BYTES,
    MAX_DIMENSIONS,
    MAX_NAME_LENGTH,
    MAX_TEXT_LENGTH,
    PROBE_FILE,
    _check_relative_path,
    _load_yaml,
    FilterError,
    read_regular_file,
)

logger = logging.getLogger("hybrid_estimators.filters")


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
        ``stage2_weight`` (default 1: see :class:`HybridRouterRegressor`),
        ``score_calibration`` (``{stage1: path, stage2: path}``, either
        null or absent: per-dimension calibration tables applied to each
        stage's scores, see :mod:`~hybrid_estimators.filters.score_maps`)
        and ``normalisation`` (path of the percentile table of the weighted
        average, or null).
    description : str

    See Also
    --------
    hybrid_estimators.filters.Filter : The filter it configures.
    hybrid_estimators.filters.load_filter : Reads it from ``config.yaml``, with the rest of the folder.
    hybrid_estimators.prefilter.Prefilter : Built from its ``prefilter`` section.

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
        "score_calibration": None,
        "normalisation": None,
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

    def with_routing(self, *, weights, tiers, gatekeepers, threshold, stage2_weight):
        """A new spec whose routing fields are these values (this one is unchanged).

        Parameters
        ----------
        weights : sequence of float
            One weight per dimension, in :attr:`dimension_names`' order.
        tiers : dict of str to float
        gatekeepers : dict of int to (float, float)
            Dimension index -> ``(threshold, max_score)``; dimensions absent
            are no gatekeepers.
        threshold, stage2_weight : float

        Returns
        -------
        spec : FilterSpec
            Validated as :meth:`from_dict` validates a config.
        """
        config = copy.deepcopy(self.to_dict())
        for index, (name, entry) in enumerate(config["dimensions"].items()):
            entry["weight"] = float(weights[index])
            for key in ("gatekeeper", "gatekeeper_threshold", "gatekeeper_max_score"):
                entry.pop(key, None)
            if index in gatekeepers:
                gate, max_score = gatekeepers[index]
                entry.update(gatekeeper=True, gatekeeper_threshold=float(gate),
                             gatekeeper_max_score=float(max_score))
        config["tiers"] = {str(tier): float(value) for tier, value in tiers.items()}
        config["hybrid_inference"].update(threshold=float(threshold), stage2_weight=float(stage2_weight))
        return type(self).from_dict(config)

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
    try:
        return list(check_head_tail(value, where))
    except ValueError as error:
        raise FilterError(str(error)) from None


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
    merged["score_calibration"] = _score_calibration(merged["score_calibration"], f"{where}.score_calibration")
    if merged["normalisation"] is not None:
        merged["normalisation"] = _check_relative_path(merged["normalisation"], f"{where}.normalisation")
    return merged


def _score_calibration(section, where):
    """``{stage1: path or null, stage2: path or null}``, or None when it names no table."""
    if section is None:
        return None
    if not isinstance(section, dict):
        raise FilterError(f"{where}: expected a mapping of stage1/stage2 to a path, or null.")
    unknown = set(section) - {"stage1", "stage2"}
    if unknown:
        raise FilterError(f"{where}: unknown keys {sorted(map(str, unknown))}.")
    checked = {
        stage: _check_relative_path(section[stage], f"{where}.{stage}")
        for stage in ("stage1", "stage2") if section.get(stage) is not None
    }
    return checked or None


def _stage2_section(stage2, where):
    if stage2 is None:
        return None
    if not isinstance(stage2, dict) or "base_model" not in stage2:
        raise FilterError(f"{where}: expected a mapping with 'base_model', or null.")
    unknown = set(stage2) - {
        "base_model", "gguf_file", "adapter", "head_tail", "max_length", "pooling", "layers",
        "qualified_dtypes",
    }
    if unknown:
        raise FilterError(f"{where}: unknown keys {sorted(map(str, unknown))}.")
    stage2 = dict(stage2)
    if stage2.pop("qualified_dtypes", None) is not None:  # written by earlier versions of the package
        logger.warning(
            "%s.qualified_dtypes is no longer read: Stage 2 precisions are recorded per kind of machine "
            "in the metadata (record_qualified_configurations); this filter runs Stage 2 in float32 "
            "unless one is recorded", where,
        )
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
