"""Two-stage scoring: :class:`HybridRouterRegressor`.

Stage 1 (cheap) scores every article; only articles whose routing score
(by default Stage 1's weighted average, clipped to 0-10) reaches
``threshold`` go on to Stage 2 (expensive). Fitted stages and their
predictions are kept in bounded process-wide caches keyed by content
(:mod:`hybrid_estimators._cache`: the unfitted stage's parameters and its
training data for a fit, each router getting its own copy; a fingerprint
of the fitted stage's state and of the row for a prediction), so that
``GridSearchCV`` over ``threshold`` neither re-fits nor re-runs a stage for
each candidate, and a stage refitted in place is always seen.
"""

import logging
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import (
    BaseEstimator,
    MetaEstimatorMixin,
    RegressorMixin,
    _fit_context,
    clone,
    is_classifier,
)
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils import _safe_indexing, check_array, get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metadata_routing import (
    MetadataRouter,
    MethodMapping,
    _raise_for_params,
    _routing_enabled,
    process_routing,
)
from sklearn.utils.validation import check_consistent_length, check_is_fitted

from ._cache import (
    MAX_CACHED_FITS,
    MAX_CACHED_ROWS,
    as_2d,
    cache_info,
    cached_fit,
    clear_cache,
    fingerprints_of,
    fit_key,
    fitted_state_fingerprint,
    measured_seconds_per_row,
    predict_rows,
    row_keys,
    store_fit,
)
from .tiers import (
    DEFAULT_TIERS,
    SCORE_MAX,
    SCORE_MIN,
    apply_gatekeepers,
    medium_threshold,
    normalize_weights,
    tier_of,
    weighted_average,
)

__all__ = [
    "HybridRouterRegressor",
    "MAX_CACHED_FITS",
    "MAX_CACHED_ROWS",
    "cache_info",
    "clear_cache",
    "fitted_state_fingerprint",
    "measured_seconds_per_row",
    "unwrap_frozen",
]

logger = logging.getLogger(__name__)

STAGE_NAMES = ("stage1", "stage2", "routing_score")


def _indexable_rows(X):
    """`X` in a form whose rows `_safe_indexing` can select by position."""
    if sparse.issparse(X):
        return X.tocsr()
    if hasattr(X, "iloc") or hasattr(X, "__getitem__"):
        return X
    return np.asarray(X)


def unwrap_frozen(estimator):
    """`estimator` itself, or the estimator a :class:`~sklearn.frozen.FrozenEstimator` wraps.

    The package's one way to reach a prefit stage through its wrapper.

    See Also
    --------
    HybridRouterRegressor : Keeps prefit stages in ``FrozenEstimator``.

    Examples
    --------
    >>> from sklearn.dummy import DummyRegressor
    >>> from sklearn.frozen import FrozenEstimator
    >>> regressor = DummyRegressor().fit([[0]], [1])
    >>> unwrap_frozen(FrozenEstimator(regressor)) is regressor, unwrap_frozen(None)
    (True, None)
    """
    if isinstance(estimator, FrozenEstimator):
        return estimator.estimator
    return estimator


def _is_prefit(stage, name, prefit):
    return isinstance(stage, FrozenEstimator) or name in prefit


def _check_gatekeeper_value(dimension, value):
    if isinstance(value, Mapping):
        if set(value) != {"threshold", "max_score"}:
            raise ValueError(
                f"gatekeepers[{dimension!r}] must have the keys 'threshold' and "
                f"'max_score'; got {sorted(value)}."
            )
        value = (value["threshold"], value["max_score"])
    try:
        threshold, max_score = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"gatekeepers[{dimension!r}] must be (threshold, max_score) or "
            f"{{'threshold': ..., 'max_score': ...}} of numbers; got {value!r}."
        ) from None
    return threshold, max_score


def max_dimension(stage1_predictions, X):
    """Routing score: an article's highest Stage-1 dimension score."""
    return np.max(stage1_predictions, axis=1)


class HybridRouterRegressor(MetaEstimatorMixin, RegressorMixin, BaseEstimator):
    """Score with a cheap Stage 1 and send only promising rows to Stage 2.

    ``predict`` runs Stage 1 on every row and computes a routing score (by
    default the Stage-1 weighted average of the dimension scores, clipped to
    0-10). Rows whose routing score is ``>= threshold`` are predicted again,
    in one batch, by Stage 2, whose scores replace Stage 1's; the other rows
    keep Stage 1's scores.

    Final scores are clipped to the 0-10 scale; ``predict_report`` keeps
    Stage 1's raw weighted average in ``stage1_estimate``.

    Fitted stages and predictions are cached process-wide (bounded, see
    :data:`MAX_CACHED_FITS` and :data:`MAX_CACHED_ROWS`; never pickled): a
    stage is fitted once per distinct (parameters, training rows), and
    every router gets its own copy of it (no two routers share a fitted
    object); it is run once per distinct (fitted state, row), the fitted
    state being fingerprinted by content (:func:`fitted_state_fingerprint`),
    never by object identity. The fingerprint is taken once, when the
    router is fitted (or first predicts, after unpickling), and taken again
    whenever the stage holds other objects than when it was taken: a stage
    refitted in place or changed with ``set_params`` (a prefit one, or the
    estimator inside a ``FrozenEstimator``, included) is always run again.
    A change written into an object the stage already holds (an array
    changed in place, ``partial_fit`` updating arrays in place) is not
    seen: as in scikit-learn, refit the router after changing its stages
    (``fit`` fingerprints them again), or use ``cache=False``.
    Tuning ``threshold`` with ``GridSearchCV`` therefore fits and runs each
    stage once per fold, whatever the number of candidates. The caches live
    in one process: with ``n_jobs > 1`` give the embedder a persistent
    cache folder (``E5Embedder(cache=...)``) so that workers share
    embeddings.

    Parameters
    ----------
    stage1 : estimator
        Cheap multi-output regressor that sees every row, e.g.
        ``make_pipeline(ArticleText(), E5Embedder(), make_probe())``.
    stage2 : estimator or None, default=None
        Expensive multi-output regressor that sees only routed rows, e.g. a
        ``QwenRegressor``. It is fitted on all training rows, not only the
        routed ones: that way it does not depend on ``threshold`` (tuning
        never refits it) and learns the whole score range. None makes a
        Stage-1-only router: :meth:`route` is False for every row and
        ``threshold`` keeps its value (it still says which rows a Stage 2
        would get, through :meth:`routing_scores`).
    weights : array-like of shape (n_dimensions,), dict or None, default=None
        Non-negative weight per dimension (normalised to sum to 1); a dict
        maps dimension names (the columns of a DataFrame ``Y``) to weights.
        None weighs the dimensions equally.
    threshold : float, default=4.5
        Rows whose routing score is ``>= threshold`` go to Stage 2; routing
        scores lie in [0, 10], so ``threshold <= 0`` routes every row and
        ``threshold > 10`` none. 4.5 is the seed's hand-picked value; see
        :class:`~hybrid_estimators.calibration.TunedThresholdRouterCV` for
        one with a recall guarantee.
    gatekeepers : dict or None, default=None
        Dimension name or index -> ``(threshold, max_score)`` or
        ``{"threshold": ..., "max_score": ...}``: a final score below
        ``threshold`` on that dimension caps the weighted average at
        ``max_score`` (reported by :meth:`predict_report`).
    tiers : dict of str to float or None, default=None
        Tier name -> lower bound of its weighted average;
        :data:`~hybrid_estimators.tiers.DEFAULT_TIERS` when None.
    routing_score : None, {"weighted_average", "max_dimension"}, callable \
            or estimator, default=None
        How rows are scored for routing, on the 0-10 scale (results are
        clipped to it):

        - None or ``"weighted_average"``: Stage 1's weighted average;
        - ``"max_dimension"``: Stage 1's highest dimension score;
        - callable ``f(stage1_predictions, X) -> (n_samples,)``;
        - a classifier (with ``predict_proba``), fitted on whether the true
          weighted average reaches the MEDIUM tier; its probability of
          MEDIUM+ times 10 is the score;
        - a regressor, fitted on the true weighted average; its clipped
          prediction is the score.
    prefit : list of {"stage1", "stage2", "routing_score"}, default=()
        Stages that are already fitted and must be used as they are (they
        must pass :func:`~sklearn.utils.validation.check_is_fitted`, which
        honours ``__sklearn_is_fitted__``). A stage wrapped in
        :class:`~sklearn.frozen.FrozenEstimator` is always used as it is.
        Any other stage is cloned and fitted, as scikit-learn does.
    cache : bool, default=True
        Reuse fitted stages and predictions through the process-wide caches.
        False fits and predicts every time.
    stage2_weight : float in [0, 1], default=1.0
        Share of Stage 2 in the scores of a routed row:
        ``stage2_weight * stage2 + (1 - stage2_weight) * stage1``. 1 uses
        Stage 2's scores alone; below 1 the two stages are averaged, which
        costs nothing (Stage 1 has scored every row already) and helps when
        Stage 2 is no more precise than Stage 1 alone but errs differently.
        Choose it by cross-validation, like any hyper-parameter.
    stage1_calibrator : transformer or None, default=None
        A fitted per-dimension map (e.g.
        :class:`~hybrid_estimators.isotonic_calibrator.IsotonicCalibrator`,
        fitted on Stage 1's out-of-fold predictions) applied, through its
        ``transform``, to the scores of the rows that stay on Stage 1,
        before clipping. Used as it is, never fitted or copied: wrap it in
        :class:`~sklearn.frozen.FrozenEstimator` so that ``clone`` (and
        ``GridSearchCV``) keep it fitted. Routing keeps using Stage 1's
        uncalibrated scores: `threshold` is certified on them.
    stage2_calibrator : transformer or None, default=None
        The same for routed rows: applied to their final (blended, see
        `stage2_weight`) scores, before clipping.

    Attributes
    ----------
    stage1_ : estimator
        Fitted Stage 1 (this router's own: a cached fit is copied).
    stage2_ : estimator or None
        Fitted Stage 2; None for a Stage-1-only router.
    routing_score_ : estimator or None
        Fitted routing estimator, when `routing_score` is one.
    weights_ : ndarray of shape (n_dimensions,)
        Normalised weights, in the order of the dimensions.
    dimension_names_ : list of str
        Names of the dimensions: ``Y``'s columns, else the keys of a dict
        `weights`, else ``"dim_0"``, ``"dim_1"``, ...
    gatekeepers_ : dict of int to (float, float)
        Gatekeepers by dimension index.
    tiers_ : dict of str to float
        Tiers in use.
    n_features_in_ : int
        Number of features seen by Stage 1 in ``fit``, when it records them.
    feature_names_in_ : ndarray of str
        Feature names seen by Stage 1 in ``fit``, when it records them.

    See Also
    --------
    hybrid_estimators.calibration.TunedThresholdRouterCV : Chooses
        `threshold` with a finite-sample guarantee on MEDIUM+ recall.
    hybrid_estimators.metrics.ROUTING_SCORERS : Scorers for ``GridSearchCV``.
    hybrid_estimators.evaluation.cascade_report : Stage 1, Stage 2 and the
        cascade measured on labelled articles.
    hybrid_estimators.filters.load_filter : A saved router (a filter), ready
        to score.
    hybrid_estimators.qwen.QwenRegressor : The usual Stage 2.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.neighbors import KNeighborsRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(0, 10, size=(60, 2))
    >>> Y = np.c_[X[:, 0], X.mean(axis=1)]
    >>> router = HybridRouterRegressor(Ridge(), KNeighborsRegressor(), [0.5, 0.5],
    ...                                threshold=5.0).fit(X, Y)
    >>> router.predict(X[:3]).shape
    (3, 2)
    >>> router.route(X[:3]).tolist()
    [True, True, False]
    >>> router.predict_report(X[:3])["stage_used"].tolist()
    ['stage2', 'stage2', 'stage1']
    """

    _parameter_constraints: dict = {
        "stage1": [HasMethods(["fit", "predict"])],
        "stage2": [HasMethods(["fit", "predict"]), None],
        "weights": ["array-like", dict, None],
        "threshold": [Interval(Real, None, None, closed="neither")],
        "gatekeepers": [dict, None],
        "tiers": [dict, None],
        "routing_score": [
            None,
            StrOptions({"weighted_average", "max_dimension"}),
            callable,
            HasMethods(["fit", "predict"]),
        ],
        "prefit": [list, tuple],
        "cache": ["boolean"],
        "stage2_weight": [Interval(Real, 0, 1, closed="both")],
        "stage1_calibrator": [HasMethods(["transform"]), None],
        "stage2_calibrator": [HasMethods(["transform"]), None],
    }

    def __init__(
        self,
        stage1,
        stage2=None,
        weights=None,
        *,
        threshold=4.5,
        gatekeepers=None,
        tiers=None,
        routing_score=None,
        prefit=(),
        cache=True,
        stage2_weight=1.0,
        stage1_calibrator=None,
        stage2_calibrator=None,
    ):
        self.stage1 = stage1
        self.stage2 = stage2
        self.weights = weights
        self.threshold = threshold
        self.gatekeepers = gatekeepers
        self.tiers = tiers
        self.routing_score = routing_score
        self.prefit = prefit
        self.cache = cache
        self.stage2_weight = stage2_weight
        self.stage1_calibrator = stage1_calibrator
        self.stage2_calibrator = stage2_calibrator

    # --- fit -----------------------------------------------------------------

    @_fit_context(
        # stage1 / stage2 / routing_score are not validated yet
        prefer_skip_nested_validation=False
    )
    def fit(self, X, Y, **fit_params):
        """Fit Stage 1 and Stage 2 (and a routing estimator) on all rows.

        Parameters
        ----------
        X : DataFrame, list of dict, list of str or array-like
            Training rows, in any form the stages accept.
        Y : array-like or DataFrame of shape (n_samples, n_dimensions) or \
                (n_samples,)
            Scores (0-10) per dimension; a DataFrame's columns name the
            dimensions.
        **fit_params : dict
            Only with metadata routing enabled: routed to the stages' ``fit``
            as they request.

        Returns
        -------
        self : object
            Fitted router.
        """
        if Y is None:
            raise ValueError(
                f"This {type(self).__name__} estimator requires y to be passed, "
                "but the target y is None."
            )
        if _routing_enabled():
            routed = process_routing(self, "fit", **fit_params)
        else:
            _raise_for_params(fit_params, self, "fit")
            routed = None
        names = [str(c) for c in Y.columns] if hasattr(Y, "columns") else None
        Y = check_array(
            Y, input_name="y", ensure_2d=False, dtype="numeric", ensure_all_finite=True
        )
        check_consistent_length(X, Y)
        self._training_dim = Y.ndim
        n_dimensions = 1 if Y.ndim == 1 else Y.shape[1]
        self.dimension_names_ = self._dimension_names(names, n_dimensions)
        self.weights_ = self._check_weights(n_dimensions)
        self.tiers_ = self._check_tiers()
        self.gatekeepers_ = self._check_gatekeepers()
        self._check_prefit()
        self._check_calibrators(n_dimensions)

        fingerprints_of(self, reset=True)
        self.stage1_ = self._fit_stage("stage1", X, Y, routed)
        self.stage2_ = None if self.stage2 is None else self._fit_stage("stage2", X, Y, routed)
        self.routing_score_ = self._fit_routing_estimator(X, Y)
        self._check_output_widths(X, n_dimensions)
        for attribute in ("n_features_in_", "feature_names_in_"):
            if hasattr(self.stage1_, attribute):
                setattr(self, attribute, getattr(self.stage1_, attribute))
        return self

    def _dimension_names(self, names, n_dimensions):
        if names is not None:
            return names
        if isinstance(self.weights, Mapping) and len(self.weights) == n_dimensions:
            return [str(name) for name in self.weights]
        return [f"dim_{i}" for i in range(n_dimensions)]

    def _check_weights(self, n_dimensions):
        weights = self.weights
        if weights is None:
            return np.full(n_dimensions, 1.0 / n_dimensions)
        if isinstance(weights, Mapping):
            given = [str(name) for name in weights]
            if sorted(given) != sorted(self.dimension_names_):
                raise ValueError(
                    f"weights names {given} do not match the dimensions of Y "
                    f"{self.dimension_names_}."
                )
            weights = [dict(zip(given, weights.values()))[n] for n in self.dimension_names_]
        try:
            return normalize_weights(weights, n_dimensions)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Invalid weights: {error}") from None

    def _check_tiers(self):
        tiers = dict(DEFAULT_TIERS if self.tiers is None else self.tiers)
        try:
            medium_threshold(tiers)
            tier_of([0.0], tiers)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Invalid tiers {self.tiers!r}: {error}") from None
        return tiers

    def _check_gatekeepers(self):
        resolved = {}
        for dimension, value in (self.gatekeepers or {}).items():
            if isinstance(dimension, str):
                if dimension not in self.dimension_names_:
                    raise ValueError(
                        f"gatekeepers names the dimension {dimension!r}, which is not "
                        f"one of {self.dimension_names_}."
                    )
                index = self.dimension_names_.index(dimension)
            elif isinstance(dimension, Integral) and not isinstance(dimension, bool):
                index = int(dimension)
                if not 0 <= index < len(self.dimension_names_):
                    raise ValueError(
                        f"gatekeepers names the dimension index {index}; Y has "
                        f"{len(self.dimension_names_)} dimensions."
                    )
            else:
                raise ValueError(
                    f"gatekeepers keys must be dimension names or indices; got "
                    f"{dimension!r}."
                )
            resolved[index] = _check_gatekeeper_value(dimension, value)
        return resolved

    def _check_prefit(self):
        unknown = set(self.prefit) - set(STAGE_NAMES)
        if unknown:
            raise ValueError(
                f"prefit may only name {list(STAGE_NAMES)}; got {sorted(unknown)}."
            )

    def _check_calibrators(self, n_dimensions):
        """Each calibrator is fitted and maps `n_dimensions` columns (it is never fitted here)."""
        for name in ("stage1_calibrator", "stage2_calibrator"):
            calibrator = getattr(self, name)
            if calibrator is None:
                continue
            try:
                check_is_fitted(calibrator)
            except NotFittedError:
                raise NotFittedError(
                    f"{name} must be fitted (it is applied as it is; wrap it in "
                    "FrozenEstimator so that clone keeps it fitted)."
                ) from None
            width = getattr(unwrap_frozen(calibrator), "n_features_in_", n_dimensions)
            if width != n_dimensions:
                raise ValueError(
                    f"{name} maps {width} dimensions but the router scores {n_dimensions}."
                )

    def _calibrated(self, name, scores):
        """`scores` through the calibrator `name` (``"stage1_calibrator"`` or ``"stage2_calibrator"``), if any.

        Routing never sees these: it keeps Stage 1's uncalibrated scores,
        on which `threshold` was chosen and certified.
        """
        calibrator = getattr(self, name)
        if calibrator is None or not len(scores):
            return scores
        if hasattr(unwrap_frozen(calibrator), "feature_names_in_"):
            scores = pd.DataFrame(scores, columns=self.dimension_names_)
        return np.asarray(calibrator.transform(scores), dtype=float)

    def _fit_stage(self, name, X, y, routed):
        stage = getattr(self, name)
        if _is_prefit(stage, name, self.prefit):
            try:
                check_is_fitted(stage)
            except NotFittedError as error:
                raise NotFittedError(
                    f"{name} is marked prefit (or frozen) but is not fitted: {error}"
                ) from None
            if self.cache:
                fingerprints_of(self).set(stage, fitted_state_fingerprint(stage))
            return stage
        params = {} if routed is None else dict(getattr(routed, name, {}).get("fit", {}))
        key = fit_key(stage, X, y, params) if self.cache else None
        cached = cached_fit(key)
        if cached is not None:
            logger.debug("reusing a copy of the cached fit of %s", name)
            fitted, fingerprint = cached
        else:
            logger.info("fitting %s (%s) on %d rows", name, type(stage).__name__, len(y))
            fitted = clone(stage).fit(X, y, **params)
            fingerprint = store_fit(key, fitted) if self.cache else None
        if fingerprint is not None:
            fingerprints_of(self).set(fitted, fingerprint)
        return fitted

    def _fit_routing_estimator(self, X, Y):
        if not hasattr(self.routing_score, "fit"):
            return None
        averages = weighted_average(as_2d(Y), self.weights_)
        if is_classifier(self.routing_score):
            target = (averages >= medium_threshold(self.tiers_)).astype(int)
        else:
            target = averages
        return self._fit_stage("routing_score", X, target, None)

    def _check_output_widths(self, X, n_dimensions):
        for name in ("stage1", "stage2"):
            stage = getattr(self, f"{name}_")
            if stage is None or not _is_prefit(getattr(self, name), name, self.prefit):
                continue  # fitted here on Y: its width is Y's
            width = getattr(stage, "n_outputs_", None)
            if width is None:  # one row, through the cache: later predictions reuse it
                row = _indexable_rows(_safe_indexing(X, [0]))
                namespace, keys = row_keys(row) if self.cache else (None, None)
                width = self._predict_stage(stage, row, keys, namespace).shape[1]
            if width != n_dimensions:
                raise ValueError(
                    f"{name} predicts {width} dimensions but Y has {n_dimensions}: "
                    "both stages must output one score per dimension."
                )

    # --- predict -------------------------------------------------------------

    def _predict_stage(self, stage, X, keys=None, namespace=None, predict=None):
        predict = stage.predict if predict is None else predict
        fingerprint = self._fingerprint(stage) if self.cache and keys is not None else None
        return predict_rows(predict, stage, fingerprint, X, keys, namespace)

    def _fingerprint(self, stage):
        """`stage`'s fingerprint, computed once per fitted state (see :mod:`._cache`)."""
        return fingerprints_of(self).get(stage)

    def _stage1_and_scores(self, X):
        check_is_fitted(self)
        namespace, keys = row_keys(X) if self.cache else (None, None)
        X = _indexable_rows(X)
        stage1 = self._predict_stage(self.stage1_, X, keys, namespace)
        self._check_width("stage1", stage1)
        scores = self._routing_scores(stage1, X, keys, namespace)
        return stage1, scores, (namespace, keys)

    def _routing_scores(self, stage1, X, keys, namespace):
        rule = self.routing_score
        if self.routing_score_ is not None:
            if is_classifier(self.routing_score_):
                positive = list(self.routing_score_.classes_).index(1)
                probability = self._predict_stage(
                    self.routing_score_,
                    X,
                    keys,
                    namespace,
                    predict=self.routing_score_.predict_proba,
                )[:, positive]
                scores = SCORE_MAX * probability
            else:
                scores = self._predict_stage(self.routing_score_, X, keys, namespace)
                scores = scores[:, 0]
        elif rule is None or rule == "weighted_average":
            scores = weighted_average(stage1, self.weights_)
        elif rule == "max_dimension":
            scores = max_dimension(stage1, X)
        else:
            scores = np.asarray(rule(stage1, X), dtype=float).reshape(-1)
            if scores.shape[0] != stage1.shape[0]:
                raise ValueError(
                    f"routing_score returned {scores.shape[0]} scores for "
                    f"{stage1.shape[0]} rows."
                )
        return np.clip(scores, SCORE_MIN, SCORE_MAX)

    def _check_width(self, name, predictions):
        if predictions.shape[1] != len(self.weights_):
            raise ValueError(
                f"{name} predicted {predictions.shape[1]} dimensions; the router "
                f"was fitted on {len(self.weights_)}."
            )

    def _final_scores(self, X):
        """Final scores, routing mask, Stage-1 scores and routing scores."""
        stage1, scores, (namespace, keys) = self._stage1_and_scores(X)
        X = _indexable_rows(X)
        routed = self._routed(scores)
        final = stage1.copy()
        kept = np.flatnonzero(~routed)
        if kept.size and self.stage1_calibrator is not None:
            final[kept] = self._calibrated("stage1_calibrator", stage1[kept])
        if routed.any():
            rows = np.flatnonzero(routed)
            logger.debug("Stage 2 scores %d of %d rows", rows.size, routed.size)
            stage2 = self._predict_stage(
                self.stage2_,
                _safe_indexing(X, rows),
                None if keys is None else [keys[i] for i in rows],
                namespace,
            )
            self._check_width("stage2", stage2)
            final[rows] = self._calibrated("stage2_calibrator", self._blend(stage2, stage1[rows]))
        return np.clip(final, SCORE_MIN, SCORE_MAX), routed, stage1, scores

    def _blend(self, stage2, stage1):
        """Scores of routed rows: Stage 2's, averaged with Stage 1's by `stage2_weight`."""
        weight = self.stage2_weight
        return stage2 if weight == 1 else weight * stage2 + (1 - weight) * stage1

    def _routed(self, scores):
        if self.stage2_ is None:
            return np.zeros(scores.shape, dtype=bool)
        return scores >= self._routing_threshold()

    def _routing_threshold(self):
        return self.threshold

    def _shaped(self, scores):
        return scores[:, 0] if self._training_dim == 1 else scores

    def predict(self, X):
        """Scores of each row: Stage 2's where routed (see `stage2_weight`), else Stage 1's.

        Parameters
        ----------
        X : DataFrame, list of dict, list of str or array-like
            Rows, in any form the stages accept.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_dimensions)
            Or (n_samples,) when ``Y`` was 1-D in ``fit``; clipped to 0-10.
        """
        return self._shaped(self._final_scores(X)[0])

    def route(self, X):
        """Which rows go to Stage 2.

        Parameters
        ----------
        X : DataFrame, list of dict, list of str or array-like
            Rows.

        Returns
        -------
        routed : ndarray of bool, shape (n_samples,)
            True where the routing score is ``>= threshold`` (never for a
            router without Stage 2).
        """
        return self._routed(self.routing_scores(X))

    def routing_scores(self, X):
        """Routing score (0-10) of each row; rows ``>= threshold`` go to Stage 2.

        Parameters
        ----------
        X : DataFrame, list of dict, list of str or array-like
            Rows.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        return self._stage1_and_scores(X)[1]

    def predict_stage1(self, X):
        """Stage 1's raw scores of every row (a skipped row gets them clipped).

        Parameters
        ----------
        X : DataFrame, list of dict, list of str or array-like
            Rows.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_dimensions)
        """
        return self._shaped(self._stage1_and_scores(X)[0])

    def predict_stage2(self, X):
        """Scores of every row as if it were routed (Stage 2's, blended by `stage2_weight`).

        What :meth:`predict` returns for a routed row, for all rows: the
        reference of a threshold certified against Stage 2 and of a recall
        audit, and the teacher scores of a distilled probe.

        Parameters
        ----------
        X : DataFrame, list of dict, list of str or array-like
            Rows.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_dimensions)
            Or (n_samples,) when ``Y`` was 1-D in ``fit``; clipped to 0-10.

        Raises
        ------
        ValueError
            For a router without Stage 2.
        """
        stage1, _, (namespace, keys) = self._stage1_and_scores(X)
        if self.stage2_ is None:
            raise ValueError("This router has no Stage 2 (stage2=None).")
        stage2 = self._predict_stage(self.stage2_, _indexable_rows(X), keys, namespace)
        self._check_width("stage2", stage2)
        blended = self._calibrated("stage2_calibrator", self._blend(stage2, stage1))
        return self._shaped(np.clip(blended, SCORE_MIN, SCORE_MAX))

    def predict_report(self, X):
        """One row per input row: scores, weighted average, tier, stage used.

        Parameters
        ----------
        X : DataFrame, list of dict, list of str or array-like
            Rows.

        Returns
        -------
        report : DataFrame
            One column per dimension (``dimension_names_``, clipped to
            0-10), then ``weighted_average`` (gatekeepers applied), ``tier``,
            ``stage_used`` (``"stage1"`` or ``"stage2"``),
            ``stage1_estimate`` (Stage 1's raw, unclipped weighted average),
            ``routing_score`` and ``gatekeeper_applied``. A DataFrame `X`
            keeps its index.
        """
        final, routed, stage1, scores = self._final_scores(X)
        averages, gated = apply_gatekeepers(
            final, weighted_average(final, self.weights_), self.gatekeepers_
        )
        report = pd.DataFrame(final, columns=self.dimension_names_)
        report["weighted_average"] = averages
        report["tier"] = tier_of(averages, self.tiers_)
        report["stage_used"] = np.where(routed, "stage2", "stage1")
        report["stage1_estimate"] = weighted_average(stage1, self.weights_)
        report["routing_score"] = scores
        report["gatekeeper_applied"] = gated
        if isinstance(X, pd.DataFrame):
            report.index = X.index
        return report

    # --- scikit-learn protocol -----------------------------------------------

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        stage1 = get_tags(self.stage1)
        stage2 = stage1 if self.stage2 is None else get_tags(self.stage2)
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = stage1.input_tags.sparse and stage2.input_tags.sparse
        tags.input_tags.allow_nan = (
            stage1.input_tags.allow_nan and stage2.input_tags.allow_nan
        )
        tags.input_tags.string = stage1.input_tags.string
        tags.input_tags.categorical = stage1.input_tags.categorical
        tags.regressor_tags.poor_score = True
        return tags

    def get_metadata_routing(self):
        """Metadata routing of this object: ``fit`` params go to the stages' ``fit``.

        Returns
        -------
        routing : MetadataRouter
        """
        router = MetadataRouter(owner=self)
        for name in ("stage1", "stage2"):
            if getattr(self, name) is None:
                continue
            router.add(
                **{name: getattr(self, name)},
                method_mapping=MethodMapping().add(caller="fit", callee="fit"),
            )
        return router

