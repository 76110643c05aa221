"""Filters are data: a YAML config plus a skops probe, loaded safely.

A filter folder ``filters/{name}/{version}/`` holds::

    config.yaml                  dimensions, tiers, prefilter, hybrid_inference
    probe/embedding_probe.skops  the Stage 1 probe (StandardScaler + MLP)
    probe/metadata.json          embedder, dimensions, versions, sha256, metrics
    README.md                    model card (skops.card)
    model/                       Stage 2 LoRA adapter (optional)

:func:`load_filter` returns a ready :class:`Filter`; nothing
it reads can run code: the probe's types are checked against an explicit
allow-list before loading, and its sha256 against the metadata.
"""

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from numbers import Real

from sklearn.base import _fit_context
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_is_fitted

from .embedding import E5Embedder
from .models import CALIBRATED_BACKENDS, file_sha256, resolve_stage2_base
from .prefilter import Prefilter
from .qwen import QwenRegressor
from .router import HybridRouterRegressor
from .text import ArticleText, as_frame
from .tiers import DEFAULT_TIERS

logger = logging.getLogger(__name__)

PROBE_FILE = "probe/embedding_probe.skops"
METADATA_FILE = "probe/metadata.json"

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
        ``embedding_model``, ``embedding_prefix``, ``max_seq_length``,
        ``probe`` (path in the folder), ``threshold``, ``target_recall``,
        ``confidence``, and ``stage2`` (``base_model``, optional
        ``gguf_file``, ``adapter`` (path in the folder), ``head_tail``), or
        ``stage2: null`` for a Stage-1-only filter.
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
        "probe": PROBE_FILE,
        "threshold": 4.5,
        "target_recall": None,
        "confidence": None,
        "stage2": None,
    }

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
            raise FilterError(f"{source}: unknown keys {sorted(unknown)}.")
        for key in ("name", "version", "dimensions"):
            if key not in config:
                raise FilterError(f"{source}: missing key {key!r}.")
        spec = cls(
            name=_string(config["name"], f"{source}: name"),
            version=_string(str(config["version"]), f"{source}: version"),
            dimensions=_dimensions(config["dimensions"], f"{source}: dimensions"),
            tiers=_tiers(config.get("tiers") or dict(DEFAULT_TIERS), f"{source}: tiers"),
            prefilter=dict(config.get("prefilter") or {}),
            hybrid_inference=_hybrid(config.get("hybrid_inference") or {}, f"{source}: hybrid_inference"),
            description=str(config.get("description", "")),
        )
        try:
            Prefilter.from_config(spec.prefilter)
        except (TypeError, ValueError) as error:
            raise FilterError(f"{source}: prefilter: {error}") from None
        return spec

    @classmethod
    def from_yaml(cls, path):
        """Read and validate ``config.yaml``."""
        path = Path(path)
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise FilterError(f"{path}: not valid YAML: {error}") from None
        return cls.from_dict(config, source=str(path))

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


def _number(value, where, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise FilterError(f"{where}: expected a number, got {value!r}.")
    if minimum is not None and value < minimum:
        raise FilterError(f"{where}: must be >= {minimum}, got {value!r}.")
    return float(value)


def _dimensions(dimensions, where):
    if not isinstance(dimensions, dict) or not dimensions:
        raise FilterError(f"{where}: expected a non-empty mapping of dimension -> weight.")
    checked = {}
    for name, entry in dimensions.items():
        entry = {"weight": entry} if not isinstance(entry, dict) else dict(entry)
        key = f"{where}.{name}"
        unknown = set(entry) - {
            "weight", "description", "gatekeeper", "gatekeeper_threshold", "gatekeeper_max_score",
        }
        if unknown:
            raise FilterError(f"{key}: unknown keys {sorted(unknown)}.")
        if "weight" not in entry:
            raise FilterError(f"{key}: missing key 'weight'.")
        entry["weight"] = _number(entry["weight"], f"{key}.weight", minimum=0)
        if entry.get("gatekeeper"):
            for gate_key in ("gatekeeper_threshold", "gatekeeper_max_score"):
                if gate_key not in entry:
                    raise FilterError(f"{key}: gatekeeper needs {gate_key!r}.")
                entry[gate_key] = _number(entry[gate_key], f"{key}.{gate_key}", minimum=0)
        checked[str(name)] = entry
    if sum(d["weight"] for d in checked.values()) <= 0:
        raise FilterError(f"{where}: the weights must not all be zero.")
    return checked


def _tiers(tiers, where):
    if not isinstance(tiers, dict) or len(tiers) < 2:
        raise FilterError(f"{where}: expected at least two tiers (name -> lower bound).")
    return {str(name): _number(bound, f"{where}.{name}") for name, bound in tiers.items()}


def _hybrid(section, where):
    if not isinstance(section, dict):
        raise FilterError(f"{where}: expected a mapping.")
    unknown = set(section) - set(FilterSpec._HYBRID_DEFAULTS)
    if unknown:
        raise FilterError(f"{where}: unknown keys {sorted(unknown)}.")
    merged = {**FilterSpec._HYBRID_DEFAULTS, **section}
    merged["threshold"] = _number(merged["threshold"], f"{where}.threshold")
    for key in ("target_recall", "confidence"):
        if merged[key] is not None:
            value = _number(merged[key], f"{where}.{key}")
            if not 0 < value < 1:
                raise FilterError(f"{where}.{key}: must lie in (0, 1), got {value!r}.")
    stage2 = merged["stage2"]
    if stage2 is not None:
        if not isinstance(stage2, dict) or "base_model" not in stage2:
            raise FilterError(f"{where}.stage2: expected a mapping with 'base_model', or null.")
        unknown = set(stage2) - {"base_model", "gguf_file", "adapter", "head_tail", "max_length"}
        if unknown:
            raise FilterError(f"{where}.stage2: unknown keys {sorted(unknown)}.")
    return merged


# --- save -------------------------------------------------------------------


def data_hash(X, Y):
    """sha256 of training articles and scores, to tell what a probe saw."""
    frame = pd.concat([pd.DataFrame(X).reset_index(drop=True), pd.DataFrame(Y).reset_index(drop=True)], axis=1)
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()


def _atomic_write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    os.replace(tmp, path)


def _stage1_parts(router):
    """The embedder and the probe of a router's Stage 1 pipeline."""
    stage1 = getattr(router, "stage1_", router.stage1)
    stage1 = getattr(stage1, "estimator", stage1)  # FrozenEstimator
    if not isinstance(stage1, Pipeline) or not isinstance(stage1.steps[-2][1], E5Embedder):
        raise FilterError(
            "save_filter needs a router whose Stage 1 is a Pipeline ending in "
            "E5Embedder + probe, e.g. make_pipeline(ArticleText(), E5Embedder(), make_probe())."
        )
    return stage1.steps[-2][1], stage1.steps[-1][1]


def save_filter(router, folder, spec, *, training_data=None, metrics=None):
    """Write a fitted router's Stage 1 probe, config, metadata and model card.

    Parameters
    ----------
    router : HybridRouterRegressor
        Fitted; its Stage 1 is ``make_pipeline(ArticleText(), E5Embedder(), probe)``.
    folder : str or path-like
        ``filters/{name}/{version}``.
    spec : FilterSpec
        The filter's config; its ``hybrid_inference.threshold`` is replaced
        by the router's, and its embedding settings by the embedder's.
    training_data : tuple of (X, Y), default=None
        Hashed into the metadata.
    metrics : dict, default=None
        Cross-validated metrics to record.

    Returns
    -------
    folder : Path
    """
    import sklearn
    import skops
    import skops.io as sio

    from . import __version__

    folder = Path(folder)
    embedder, probe = _stage1_parts(router)
    probe_path = folder / spec.hybrid_inference["probe"]
    _atomic_write(probe_path, sio.dumps(probe))

    spec.hybrid_inference.update(
        threshold=float(router.threshold),
        embedding_model=str(embedder.model_name_or_path),
        embedding_prefix=embedder.prefix,
        max_seq_length=embedder.max_seq_length,
    )
    _atomic_write(
        folder / "config.yaml",
        yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True).encode("utf-8"),
    )
    metadata = {
        "filter": f"{spec.name}/{spec.version}",
        "embedding_model": str(embedder.model_name_or_path),
        "embedding_dim": int(embedder.embedding_dim_),
        "dimension_names": spec.dimension_names,
        "weights": spec.weights,
        "probe_sha256": file_sha256(probe_path),
        "training_data_sha256": data_hash(*training_data) if training_data else None,
        "n_training_articles": len(training_data[0]) if training_data else None,
        "versions": {
            "hybrid_estimators": __version__,
            "scikit-learn": sklearn.__version__,
            "skops": skops.__version__,
        },
        "metrics": metrics or {},
    }
    _atomic_write(folder / METADATA_FILE, json.dumps(metadata, indent=2).encode("utf-8"))
    _write_model_card(folder, spec, probe, metadata)
    logger.info("Saved filter %s/%s to %s", spec.name, spec.version, folder)
    return folder


def _describe(probe):
    steps = probe.steps if isinstance(probe, Pipeline) else [(None, probe)]
    return " + ".join(type(step).__name__ for _, step in steps)


def _write_model_card(folder, spec, probe, metadata):
    from skops import card

    model_card = card.Card(probe, trusted=list(ALLOWED_PROBE_TYPES))
    model_card.add(
        **{
            "Model description": (
                f"Stage 1 probe of the `{spec.name}` filter, version {spec.version}: "
                f"{metadata['embedding_model']} embeddings -> {_describe(probe)}, "
                f"one output per dimension ({', '.join(spec.dimension_names)})."
            ),
            "Model description/Intended uses & limitations": (
                "Scores news articles 0-10 per dimension; articles whose weighted average "
                f"reaches {spec.hybrid_inference['threshold']} go to Stage 2."
            ),
        }
    )
    if metadata["metrics"]:
        model_card.add_metrics(**{k: round(v, 4) if isinstance(v, float) else v for k, v in metadata["metrics"].items()})
    model_card.save(folder / "README.md")


# --- load -------------------------------------------------------------------


def _check_probe_file(path, metadata):
    if not path.exists():
        raise FilterError(f"{path}: probe file is missing.")
    with open(path, "rb") as file:
        head = file.read(4)
    if head[:1] == b"\x80" or path.suffix in {".pkl", ".pickle", ".joblib"}:
        raise FilterError(f"{path}: is a pickle; filters load only skops probes (nothing may run code).")
    if head != b"PK\x03\x04":
        raise FilterError(f"{path}: not a skops file (truncated or corrupted).")
    actual = file_sha256(path)
    if actual != metadata.get("probe_sha256"):
        raise FilterError(
            f"{path}: sha256 {actual[:12]}... does not match {METADATA_FILE} "
            f"({str(metadata.get('probe_sha256'))[:12]}...): the probe was changed or truncated."
        )


def probe_types(path):
    """Every type a skops file holds, as ``module.Class``, read from its schema.

    ``skops.io.get_untrusted_types`` lists only the types skops does not
    trust by default (it trusts every scikit-learn estimator); the allow-list
    must see them all.
    """
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
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
    """Load a skops probe after checking its hash and every type it holds."""
    import skops.io as sio

    path = Path(path)
    _check_probe_file(path, metadata)
    try:
        types = probe_types(path) | set(sio.get_untrusted_types(file=path))
    except Exception as error:  # a corrupt archive raises several types
        raise FilterError(f"{path}: cannot be read as a skops file: {error}") from None
    refused = sorted(types - ALLOWED_PROBE_TYPES)
    if refused:
        raise FilterError(f"{path}: refused, it holds types outside the allow-list: {refused}.")
    return sio.load(path, trusted=sorted(types))


def _read_metadata(folder):
    path = folder / METADATA_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FilterError(f"{path}: metadata is missing.") from None
    except json.JSONDecodeError as error:
        raise FilterError(f"{path}: not valid JSON: {error}") from None


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


def _stage2(spec, folder):
    stage2 = spec.hybrid_inference["stage2"]
    if stage2 is None:
        return None
    adapter = stage2.get("adapter")
    return QwenRegressor(
        resolve_stage2_base(stage2["base_model"], stage2.get("gguf_file")),
        adapter=str(folder / adapter) if adapter else None,
        gguf_file=stage2.get("gguf_file"),
        head_tail=tuple(stage2.get("head_tail", (256, 256))),
        max_length=stage2.get("max_length", 512),
        num_labels=len(spec.dimension_names),
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

    def _routed(self, scores):
        if self.stage2_ is None:
            return np.zeros(scores.shape, dtype=bool)
        return scores >= self.threshold_

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
        frame, _, passing = self._passing(X)
        scores = np.full((len(frame), len(self.dimension_names_)), np.nan)
        if passing.size:
            scores[passing] = super().predict(frame.iloc[passing])
        return scores

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
        frame, _, passing = self._passing(X)
        routed = np.zeros(len(frame), dtype=bool)
        if passing.size:
            routed[passing] = super().route(frame.iloc[passing])
        return routed

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


def load_filter(folder, *, stage1_only=False, backend="torch", calibration=None, show_progress_bar=False):
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
    show_progress_bar : bool, default=False
        Progress bars of the embedder.

    Returns
    -------
    filter : Filter
        Fitted and ready to predict; it owns the spec, prefilter and
        metadata.

    Raises
    ------
    FilterError
        Naming the file and what is wrong: an invalid config, a missing,
        truncated or changed probe (sha256), a pickle, types outside
        :data:`ALLOWED_PROBE_TYPES`, or a probe whose embedder or dimensions
        differ from the config.
    """
    folder = Path(folder)
    spec = FilterSpec.from_yaml(folder / "config.yaml")
    metadata = _read_metadata(folder)
    probe = load_probe(folder / spec.hybrid_inference["probe"], metadata)
    hybrid = spec.hybrid_inference
    embedder = E5Embedder(
        hybrid["embedding_model"],
        prefix=hybrid["embedding_prefix"],
        max_seq_length=hybrid["max_seq_length"],
        backend=backend,
        show_progress_bar=show_progress_bar,
    )
    article_text = ArticleText().fit(_TEMPLATE_ARTICLE)  # stateless: records the columns
    embedder.fit(article_text.transform(_embedder_fit_articles(backend, calibration)))
    _check_consistency(spec, metadata, probe, embedder, folder)
    stage1 = Pipeline([("articletext", article_text), ("e5embedder", embedder), ("probe", probe)])
    stage2 = None if stage1_only else _stage2(spec, folder)
    return Filter(
        spec,
        FrozenEstimator(stage1),
        None if stage2 is None else FrozenEstimator(stage2),
        metadata=metadata,
    ).fit()
