"""A routing threshold with a stated recall guarantee: :class:`TunedThresholdRouterCV`."""

import copy
import logging
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.stats import beta, binom
from sklearn.base import BaseEstimator, MetaEstimatorMixin, RegressorMixin, _fit_context, clone
from sklearn.dummy import DummyRegressor
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import StratifiedKFold, check_cv
from sklearn.utils import _safe_indexing, check_array, get_tags
from sklearn.utils._optional_dependencies import check_matplotlib_support
from sklearn.utils._plotting import _validate_style_kwargs
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_consistent_length, check_is_fitted, indexable

from .metrics import is_medium_plus
from .router import _indexable_rows
from .tiers import SCORE_MAX, SCORE_MIN

__all__ = ["TunedThresholdRouterCV", "ThresholdCertificateDisplay", "clopper_pearson_upper"]

logger = logging.getLogger(__name__)

#: Out-of-fold routing scores (0-10) with a standard deviation below this have no useful spread.
MIN_ROUTING_SCORE_STD = 0.25
#: A calibration set with at least this share of MEDIUM+ articles certifies little.
MAX_MEDIUM_PLUS_SHARE = 0.95


def clopper_pearson_upper(n_missed, n_total, confidence):
    """Exact one-sided upper confidence bound on a binomial proportion.

    Parameters
    ----------
    n_missed : int or array-like of int
        Failures observed.
    n_total : int
        Trials.
    confidence : float
        Probability that the true proportion lies below the bound.

    Returns
    -------
    upper : float or ndarray

    See Also
    --------
    TunedThresholdRouterCV : Uses it to bound the missed MEDIUM+ share.
    ThresholdCertificateDisplay : Plots the bound against the threshold.

    Examples
    --------
    >>> round(float(clopper_pearson_upper(0, 45, 0.9)), 4)  # 1 - 0.1 ** (1 / 45)
    0.0499
    """
    n_missed = np.asarray(n_missed, dtype=float)
    if n_total == 0:
        return np.ones_like(n_missed)
    upper = beta.ppf(confidence, n_missed + 1, np.maximum(n_total - n_missed, 1))
    return np.where(n_missed >= n_total, 1.0, upper)


def _candidate_thresholds(thresholds, medium_plus_scores):
    if isinstance(thresholds, str):  # "auto": every point where a miss is added
        grid = np.linspace(SCORE_MIN, SCORE_MAX, 101)
        candidates = np.concatenate([grid, medium_plus_scores])
    elif isinstance(thresholds, Integral):
        candidates = np.linspace(SCORE_MIN, SCORE_MAX, thresholds)
    else:
        candidates = check_array(
            thresholds, ensure_2d=False, input_name="thresholds"
        ).ravel()
    return np.unique(np.concatenate([[SCORE_MIN], candidates]))


def _prefit_at_threshold(router, threshold):
    """The prefit `router` itself at `threshold`, nothing fitted left at another value.

    As scikit-learn's prefit tuners use the estimator itself: a shallow copy
    (the fitted stages are the router's, nothing is trained) with the
    parameter set. A router whose ``fit`` needs no data (its tags say no
    target is required, e.g. a ``Filter``) derives its fitted attributes
    from its parameters alone, so it is fitted again; a
    ``HybridRouterRegressor`` reads `threshold` when it routes.
    """
    best = copy.copy(router).set_params(threshold=threshold)
    if not get_tags(best).target_tags.required:
        best.fit()
    return best


class TunedThresholdRouterCV(MetaEstimatorMixin, RegressorMixin, BaseEstimator):
    """Choose a router's threshold so that Stage 2 sees enough MEDIUM+ articles.

    The guarantee: with probability at least `confidence`, the share of
    MEDIUM+ articles (true weighted average at or above the MEDIUM tier)
    routed to Stage 2 is at least `target_recall`. Among the thresholds
    that keep that guarantee, the largest one (the one that skips Stage 2
    most) is chosen.

    Procedure (Learn-then-Test with fixed-sequence testing):

    1. One pass of out-of-fold routing scores: for each split of `cv`, the
       router's Stage 1 (and routing estimator, if any) is fitted on the
       training part and scores the held-out part. Stage 2 is never fitted
       or run here.
    2. For each candidate threshold ``t``, ``k(t)`` of the ``n`` MEDIUM+
       articles are missed (routing score ``< t``). The null hypothesis
       "miss rate ``> 1 - target_recall``" is rejected when the exact
       binomial (Clopper-Pearson) upper bound on the miss rate at
       `confidence` is ``<= 1 - target_recall``, i.e. when the binomial
       p-value ``P(Binom(n, 1 - target_recall) <= k(t))`` is
       ``<= 1 - confidence``.
    3. Fixed-sequence testing: thresholds are tested from the lowest (fewest
       misses, most likely to hold) upwards, each at level
       ``1 - confidence``, stopping at the first that fails; this controls
       the family-wise error at ``1 - confidence``, so the last one that
       passed carries the guarantee. ``k(t)`` is non-decreasing in ``t``,
       so this is also the largest threshold whose bound meets the target.
       A threshold ``<= 0`` routes every row and meets any target
       deterministically.

    When no threshold above 0 meets the target (too few MEDIUM+ articles:
    with 0 misses, ``n`` must reach ``log(1 - confidence) /
    log(target_recall)``, 45 for 0.95 at 0.9), a warning says so,
    ``target_met_`` is False and the threshold is 0: everything is routed.

    What the guarantee rests on: the calibration articles are exchangeable
    with future ones, and the out-of-fold Stage-1 models stand for the
    refitted one (as in cross-conformal prediction; the refitted Stage 1
    sees more data, which usually helps but is not proven to). For the
    exact finite-sample statement, fit the router on other data and pass
    ``cv="prefit"`` with a held-out calibration set.

    Two references say what "MEDIUM+" means:

    - ``reference="oracle"`` (default): the true scores ``Y``.
    - ``reference="stage2"``: Stage 2's verdicts (its weighted average,
      gatekeepers applied, at or above the MEDIUM tier), so unlabelled
      traffic can calibrate: ``fit(X)`` runs the router's Stage 2 on every
      article, or ``fit(X, Y)`` takes ``Y`` as Stage 2's scores computed
      beforehand (a teacher-scores file). The recall guaranteed is then
      the share of the articles *Stage 2 would call MEDIUM+* that Stage 2
      sees. It needs ``cv="prefit"``: a router fitted on other articles;
      the guarantee is then exact under exchangeability of the calibration
      articles with future ones. Folds are refused, because refitting
      Stage 1 on part of unlabelled traffic has no target to fit.

    Parameters
    ----------
    router : HybridRouterRegressor
        The router to tune (fitted when ``cv="prefit"``). Only its public
        API is used: ``set_params(stage2=None)`` + ``fit`` for the
        out-of-fold Stage 1, ``routing_scores``, ``stage2_``, ``weights_``,
        ``tiers_`` and ``gatekeepers_``.
    target_recall : float, default=0.95
        Share of MEDIUM+ articles Stage 2 must see.
    confidence : float, default=0.9
        Probability that the realised recall meets `target_recall`.
    cv : int, cross-validation generator, iterable or "prefit", default=5
        Splits for the out-of-fold routing scores. An int is a shuffled
        ``StratifiedKFold`` over the articles' true tiers (seeded by
        `random_state`), so every fold holds MEDIUM+ articles; any
        scikit-learn splitter or iterable of (train, test) works too.
        ``"prefit"``: `router` is fitted; ``X, Y`` are a held-out
        calibration set.
    thresholds : "auto", int or array-like, default="auto"
        Candidates: ``"auto"`` is a 0.1 grid over 0-10 plus every MEDIUM+
        article's routing score (the points where the miss count changes);
        an int is that many evenly spaced points over 0-10. 0 is always a
        candidate.
    refit : bool, default=True
        Refit the router with the chosen threshold on all of ``X, Y``
        (``cv="prefit"`` copies the fitted router instead).
    reference : {"oracle", "stage2"}, default="oracle"
        Whose MEDIUM+ verdicts the recall is measured against (see above).
    store_cv_results : bool, default=True
        Keep the table of every candidate threshold in `cv_results_` (what
        :class:`ThresholdCertificateDisplay` draws). It is small, so the
        default keeps it, unlike scikit-learn's tuners.
    n_jobs : int or None, default=None
        Folds fitted in parallel (joblib). Stage 1's embeddings are shared
        between workers only through a persistent embedding cache.
    random_state : int, RandomState instance or None, default=None
        Seed of the default shuffled, stratified split.

    Attributes
    ----------
    best_threshold_ : float
        Chosen threshold (scikit-learn's name).
    threshold_ : float
        The same, under the router's parameter name.
    recall_lower_bound_ : float
        Lower confidence bound on MEDIUM+ recall at `threshold_`.
    expected_skip_rate_ : float
        Out-of-fold share of articles that skip Stage 2 at `threshold_`.
    target_met_ : bool
        Whether a threshold above 0 met the target.
    n_medium_plus_ : int
        MEDIUM+ articles calibrated on (by the `reference`).
    n_samples_ : int
        Articles calibrated on.
    oof_routing_scores_ : ndarray of shape (n_samples,)
        Out-of-fold routing scores.
    cv_results_ : DataFrame or None
        None unless `store_cv_results`. One row per candidate: ``threshold``, ``recall``,
        ``recall_lower_bound``, ``p_value``, ``skip_rate``,
        ``low_skip_rate`` (share of non-MEDIUM+ articles skipped),
        ``n_medium_plus``, ``n_missed``, ``passed`` (rejected null in the
        fixed sequence).
    best_estimator_ : HybridRouterRegressor
        The router with `threshold_` (when `refit` or ``cv="prefit"``).

    See Also
    --------
    sklearn.model_selection.TunedThresholdClassifierCV : The classifier
        analogue, which optimises a score instead of guaranteeing one.
    ThresholdCertificateDisplay : Recall, its bound and the skip rate
        against the threshold.
    hybrid_estimators.router.HybridRouterRegressor : The router whose
        threshold it tunes.
    hybrid_estimators.metrics.ROUTING_SCORERS : Mean cross-validated scores,
        for ``GridSearchCV`` over the threshold instead.
    hybrid_estimators.evaluation.cascade_report : Measures the tuned cascade
        on held-out articles.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.neighbors import KNeighborsRegressor
    >>> from hybrid_estimators.router import HybridRouterRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(0, 10, size=(400, 2))
    >>> Y = np.c_[X[:, 0], X[:, 0]] + rng.normal(scale=0.5, size=(400, 2))
    >>> router = HybridRouterRegressor(Ridge(), KNeighborsRegressor(), [0.5, 0.5])
    >>> tuner = TunedThresholdRouterCV(router, target_recall=0.95, confidence=0.9,
    ...                                random_state=0)
    >>> tuner.fit(X, Y).target_met_
    True
    >>> bool(tuner.recall_lower_bound_ >= 0.95), bool(0 < tuner.best_threshold_ < 5)
    (True, True)
    """

    _parameter_constraints: dict = {
        "router": [HasMethods(["fit", "predict", "route", "routing_scores"])],
        "target_recall": [Interval(Real, 0, 1, closed="neither")],
        "confidence": [Interval(Real, 0, 1, closed="neither")],
        "cv": ["cv_object", StrOptions({"prefit"})],
        "thresholds": [
            StrOptions({"auto"}),
            Interval(Integral, 2, None, closed="left"),
            "array-like",
        ],
        "refit": ["boolean"],
        "reference": [StrOptions({"oracle", "stage2"})],
        "store_cv_results": ["boolean"],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        router,
        *,
        target_recall=0.95,
        confidence=0.9,
        cv=5,
        thresholds="auto",
        refit=True,
        reference="oracle",
        store_cv_results=True,
        n_jobs=None,
        random_state=None,
    ):
        self.router = router
        self.target_recall = target_recall
        self.confidence = confidence
        self.cv = cv
        self.thresholds = thresholds
        self.refit = refit
        self.reference = reference
        self.store_cv_results = store_cv_results
        self.n_jobs = n_jobs
        self.random_state = random_state

    @_fit_context(
        # router is not validated yet
        prefer_skip_nested_validation=False
    )
    def fit(self, X, Y=None):
        """Compute out-of-fold routing scores, choose the threshold, refit.

        Parameters
        ----------
        X : DataFrame, list of dict, list of str or array-like
            Calibration rows.
        Y : array-like or DataFrame of shape (n_samples, n_dimensions) or \
                (n_samples,), default=None
            True scores per dimension; with ``reference="stage2"``, Stage
            2's scores of `X` computed beforehand, or None to run Stage 2.

        Returns
        -------
        self : object
            Fitted tuner.
        """
        self._check_reference(Y)
        X, Y = (None if data is None else _indexable_rows(data) for data in indexable(X, Y))
        if Y is not None:
            check_consistent_length(X, Y)
        scores, medium_plus = self._calibration_scores(X, Y)
        self.oof_routing_scores_ = scores
        self.n_samples_ = len(scores)
        self.n_medium_plus_ = int(medium_plus.sum())
        _warn_about_evidence(scores, medium_plus)
        results = self._test_thresholds(scores, medium_plus)
        self._choose_threshold(results)
        self.cv_results_ = results if self.store_cv_results else None
        if self.cv == "prefit":
            self.best_estimator_ = _prefit_at_threshold(self.router, self.threshold_)
        elif self.refit:
            self.best_estimator_ = (
                clone(self.router).set_params(threshold=self.threshold_).fit(X, Y)
            )
        router = getattr(self, "best_estimator_", None)
        for attribute in ("n_features_in_", "feature_names_in_"):
            if hasattr(router, attribute):
                setattr(self, attribute, getattr(router, attribute))
        return self

    def _check_reference(self, Y):
        if self.reference == "oracle" and Y is None:
            raise ValueError(
                f"This {type(self).__name__} estimator requires y to be passed, "
                "but the target y is None (pass reference='stage2' to calibrate "
                "against Stage 2's verdicts on unlabelled articles)."
            )
        if self.reference == "stage2" and self.cv != "prefit":
            raise ValueError(
                "reference='stage2' needs cv='prefit' (a router fitted on other "
                "articles): with folds, Stage 1 would be refitted on unlabelled "
                "articles, which have no target, and no guarantee can be stated."
            )

    def _calibration_scores(self, X, Y):
        """Routing scores (out-of-fold unless prefit) and the MEDIUM+ mask."""
        if self.cv == "prefit":
            try:
                check_is_fitted(self.router)
            except NotFittedError as error:
                raise NotFittedError(
                    f"With cv='prefit', router must be fitted: {error}"
                ) from None
            router = self.router
            if self.reference == "stage2":
                Y = self._stage2_scores(router, X, Y)
            return router.routing_scores(X), self._medium_plus(router, Y)
        splits = list(self._splitter(Y).split(X, self._strata(Y)))
        stage1_only = clone(self.router).set_params(stage2=None)
        folds = Parallel(n_jobs=self.n_jobs)(
            delayed(_out_of_fold_scores)(stage1_only, X, Y, train, test)
            for train, test in splits
        )
        scores = np.full(len(Y), np.nan)
        for (_, test), (fold_scores, router) in zip(splits, folds):
            scores[test] = fold_scores
        if np.isnan(scores).any():
            raise ValueError(
                "cv must give every row a held-out routing score; "
                f"{int(np.isnan(scores).sum())} rows were never held out."
            )
        return scores, self._medium_plus(router, Y)

    def _splitter(self, Y):
        if isinstance(self.cv, Integral):
            return StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state)
        return check_cv(self.cv, classifier=False)

    def _strata(self, Y):
        """Whether each article is MEDIUM+, for the default stratified split.

        Read by the router itself: a copy with a constant Stage 1 is fitted
        on `Y` alone, and its learned ``weights_``, ``tiers_`` and
        ``gatekeepers_`` (the router's own reading of dict weights, in the
        order of `Y`'s columns) say which articles are MEDIUM+.
        """
        if not isinstance(self.cv, Integral):
            return None
        return self._medium_plus(_target_reader(self.router, Y), Y)

    @staticmethod
    def _stage2_scores(router, X, Y):
        if Y is not None:
            return Y
        if router.stage2_ is None:
            raise ValueError(
                "reference='stage2' needs a router with a Stage 2 (or its scores as Y)."
            )
        logger.info("Running Stage 2 on %d calibration articles", len(X))
        return router.predict_stage2(X)

    @staticmethod
    def _medium_plus(router, Y):
        return is_medium_plus(
            check_array(Y, ensure_2d=False, dtype="numeric", input_name="y"),
            router.weights_,
            tiers=router.tiers_,
            gatekeepers=router.gatekeepers_,
        )

    def _test_thresholds(self, scores, medium_plus):
        return _certificate_table(
            scores, medium_plus, self.thresholds, self.target_recall, self.confidence
        )

    def _choose_threshold(self, results):
        chosen = _chosen_row(results)
        self.target_met_ = bool(chosen["threshold"] > SCORE_MIN)
        if not self.target_met_:
            message = (
                f"No threshold above 0 reaches MEDIUM+ recall >= {self.target_recall} "
                f"at confidence {self.confidence} with {self.n_medium_plus_} MEDIUM+ "
                "articles; routing every article to Stage 2 (threshold 0)."
            )
            warnings.warn(message, UserWarning)
        self.threshold_ = self.best_threshold_ = float(chosen["threshold"])
        self.recall_lower_bound_ = float(chosen["recall_lower_bound"])
        self.expected_skip_rate_ = float(chosen["skip_rate"])
        logger.info(
            "threshold %.3f: MEDIUM+ recall >= %.3f at confidence %.2f, expected "
            "skip rate %.3f (%d MEDIUM+ articles)",
            self.threshold_,
            self.recall_lower_bound_,
            self.confidence,
            self.expected_skip_rate_,
            self.n_medium_plus_,
        )

    # --- delegation ----------------------------------------------------------

    def _best(self):
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_

    def predict(self, X):
        """Scores of the router with the chosen threshold (see its ``predict``)."""
        return self._best().predict(X)

    def route(self, X):
        """Which rows go to Stage 2 at the chosen threshold."""
        return self._best().route(X)

    def routing_scores(self, X):
        """Routing score (0-10) of each row."""
        return self._best().routing_scores(X)

    def predict_report(self, X):
        """Report of the router with the chosen threshold (see its ``predict_report``)."""
        return self._best().predict_report(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        router_tags = get_tags(self.router)
        tags.target_tags.required = self.reference == "oracle"
        tags.target_tags.multi_output = True
        tags.input_tags = copy.deepcopy(router_tags.input_tags)
        tags.regressor_tags.poor_score = True
        return tags


def _warn_about_evidence(scores, medium_plus):
    """A FilterQualityWarning when the calibration data cannot make the guarantee mean much."""
    from .exceptions import FilterQualityWarning

    spread = float(np.std(np.clip(scores, SCORE_MIN, SCORE_MAX))) if len(scores) else 0.0
    if spread < MIN_ROUTING_SCORE_STD:
        warnings.warn(
            f"the routing score has no useful spread: its standard deviation on the {len(scores)} "
            f"calibration articles is {spread:.3f} (below {MIN_ROUTING_SCORE_STD} on 0-10), so the "
            "threshold separates articles by noise; the probe barely varies.",
            FilterQualityWarning, stacklevel=3,
        )
    share = float(np.mean(medium_plus)) if len(medium_plus) else 0.0
    if share >= MAX_MEDIUM_PLUS_SHARE:
        warnings.warn(
            f"{share:.1%} of the calibration articles are MEDIUM+ (at least "
            f"{MAX_MEDIUM_PLUS_SHARE:.0%}): the guarantee then says little: routing nearly "
            "everything meets it.",
            FilterQualityWarning, stacklevel=3,
        )


def _certificate_table(scores, medium_plus, thresholds, target_recall, confidence):
    """One row per candidate threshold: recall, its bound, skip rates, the fixed-sequence test."""
    thresholds = _candidate_thresholds(thresholds, scores[medium_plus])
    n_medium_plus = int(medium_plus.sum())
    routed = scores[np.newaxis, :] >= thresholds[:, np.newaxis]
    n_missed = (~routed & medium_plus).sum(axis=1)
    miss_target = 1.0 - target_recall
    upper = clopper_pearson_upper(n_missed, n_medium_plus, confidence)
    p_value = binom.cdf(n_missed, n_medium_plus, miss_target)
    routes_all = thresholds <= SCORE_MIN
    upper = np.where(routes_all, 0.0, upper)
    p_value = np.where(routes_all, 0.0, p_value)
    rejected = (upper <= miss_target) & (n_medium_plus > 0) | routes_all
    # Fixed sequence from the lowest threshold: stop at the first failure.
    passed = np.cumprod(rejected).astype(bool)
    low = ~medium_plus
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "recall": 1.0 - n_missed / max(n_medium_plus, 1),
            "recall_lower_bound": 1.0 - upper,
            "p_value": p_value,
            "skip_rate": 1.0 - routed.mean(axis=1),
            "low_skip_rate": (
                1.0 - routed[:, low].mean(axis=1) if low.any() else np.nan
            ),
            "n_medium_plus": n_medium_plus,
            "n_missed": n_missed,
            "passed": passed,
        }
    )


def _chosen_row(results):
    """The last candidate that passed the fixed sequence (threshold 0 always does)."""
    return results[results["passed"]].iloc[-1]


def _target_reader(router, Y):
    """A copy of `router` fitted on `Y` alone (a constant Stage 1, no Stage 2), for its
    ``weights_``, ``tiers_`` and ``gatekeepers_``: cheap, and only the public API."""
    replaced = {
        "stage1": DummyRegressor(),
        "stage2": None,
        "routing_score": None,
        "prefit": (),
        "cache": False,
    }
    params = router.get_params(deep=False)
    reader = clone(router).set_params(**{k: v for k, v in replaced.items() if k in params})
    return reader.fit(np.zeros((len(Y), 1)), Y)


def _out_of_fold_scores(stage1_only, X, Y, train, test):
    """Routing scores of the `test` rows by a Stage-1-only router fitted on `train`."""
    router = clone(stage1_only).fit(_safe_indexing(X, train), _safe_indexing(Y, train))
    return router.routing_scores(_safe_indexing(X, test)), router


class ThresholdCertificateDisplay:
    """Recall, its certified lower bound and the skip rate against the threshold.

    Build it with :meth:`from_estimator` from a fitted
    :class:`TunedThresholdRouterCV`, or with :meth:`from_predictions` from
    routing scores and MEDIUM+ verdicts, as scikit-learn's displays are
    built; all parameters are stored as attributes.

    Parameters
    ----------
    thresholds, recall, recall_lower_bound, skip_rate : ndarray
        One value per candidate threshold.
    threshold : float
        The chosen threshold.
    target_recall, confidence : float
        The tuner's target and confidence.
    reference : str, default="oracle"
        Whose MEDIUM+ verdicts the recall is measured against.
    n_samples, n_medium_plus : int or None, default=None
        Articles calibrated on, and how many of them are MEDIUM+ (shown in
        the title).
    name : str or None, default=None
        What was calibrated (a filter's or an estimator's name), shown in
        the title.

    Attributes
    ----------
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure
    lines_ : dict of str to matplotlib Line2D

    See Also
    --------
    TunedThresholdRouterCV : Chooses the threshold this display certifies.
    hybrid_estimators.evaluation.CascadeFrontierDisplay : Cost against
        quality over every threshold.
    hybrid_estimators.router.HybridRouterRegressor : The router it plots
        ``from_estimator`` when not tuned.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from hybrid_estimators.router import HybridRouterRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(0, 10, size=(300, 2))
    >>> Y = np.c_[X[:, 0], X[:, 0]] + rng.normal(scale=0.5, size=(300, 2))
    >>> router = HybridRouterRegressor(Ridge(), Ridge(), [0.5, 0.5])
    >>> tuner = TunedThresholdRouterCV(router, random_state=0).fit(X, Y)
    >>> display = ThresholdCertificateDisplay.from_estimator(tuner)
    >>> sorted(display.lines_)
    ['recall', 'recall_lower_bound', 'skip_rate']

    From routing scores and whether each article is MEDIUM+:

    >>> scores = rng.uniform(0, 10, size=200)
    >>> medium_plus = scores + rng.normal(scale=1.0, size=200) > 6
    >>> display = ThresholdCertificateDisplay.from_predictions(
    ...     medium_plus, scores, target_recall=0.9, name="demo")
    >>> print(display.ax_.get_title())
    demo: threshold 5.58 certified for recall >= 0.9 at 90% confidence
    n = 200 articles, 90 MEDIUM+ (true tiers)
    """

    def __init__(
        self,
        *,
        thresholds,
        recall,
        recall_lower_bound,
        skip_rate,
        threshold,
        target_recall,
        confidence,
        reference="oracle",
        n_samples=None,
        n_medium_plus=None,
        name=None,
    ):
        self.thresholds = thresholds
        self.recall = recall
        self.recall_lower_bound = recall_lower_bound
        self.skip_rate = skip_rate
        self.threshold = threshold
        self.target_recall = target_recall
        self.confidence = confidence
        self.reference = reference
        self.n_samples = n_samples
        self.n_medium_plus = n_medium_plus
        self.name = name

    @classmethod
    def _from_table(cls, results, *, n_samples, name, reference, target_recall, confidence):
        return cls(
            thresholds=results["threshold"].to_numpy(),
            recall=results["recall"].to_numpy(),
            recall_lower_bound=results["recall_lower_bound"].to_numpy(),
            skip_rate=results["skip_rate"].to_numpy(),
            threshold=float(_chosen_row(results)["threshold"]),
            target_recall=target_recall,
            confidence=confidence,
            reference=reference,
            n_samples=n_samples,
            n_medium_plus=int(results["n_medium_plus"].iloc[0]),
            name=name,
        )

    @classmethod
    def from_estimator(cls, estimator, *, ax=None, name=None, **kwargs):
        """Draw the certificate of a fitted :class:`TunedThresholdRouterCV`.

        Parameters
        ----------
        estimator : TunedThresholdRouterCV
            Fitted with ``store_cv_results=True``.
        ax : matplotlib Axes or None, default=None
            Where to draw; a new figure when None.
        name : str or None, default=None
            Shown in the title; None: the class name of the tuned router.
        **kwargs : dict
            Style keywords of the three curves (see :meth:`plot`).

        Returns
        -------
        display : ThresholdCertificateDisplay
        """
        check_matplotlib_support(f"{cls.__name__}.from_estimator")
        check_is_fitted(estimator, "cv_results_")
        results = estimator.cv_results_
        if results is None:
            raise ValueError("fit the tuner with store_cv_results=True to draw it.")
        display = cls._from_table(
            results,
            n_samples=estimator.n_samples_,
            name=type(estimator.router).__name__ if name is None else name,
            reference=estimator.reference,
            target_recall=estimator.target_recall,
            confidence=estimator.confidence,
        )
        display.threshold = estimator.best_threshold_
        return display.plot(ax=ax, **kwargs)

    @classmethod
    def from_predictions(
        cls,
        y_true,
        routing_scores,
        *,
        target_recall=0.95,
        confidence=0.9,
        thresholds="auto",
        reference="oracle",
        ax=None,
        name=None,
        **kwargs,
    ):
        """Certify and draw a threshold from routing scores and MEDIUM+ verdicts.

        The same test as :class:`TunedThresholdRouterCV` (which see), on
        scores computed beforehand: its ``oof_routing_scores_``, or a
        prefit router's :meth:`~HybridRouterRegressor.routing_scores` on a
        held-out calibration set.

        Parameters
        ----------
        y_true : array-like of bool, shape (n_samples,)
            Whether each article is MEDIUM+ (by `reference`).
        routing_scores : array-like of shape (n_samples,)
            The router's routing score (0-10) of each article.
        target_recall, confidence, thresholds, reference
            As for :class:`TunedThresholdRouterCV`.
        ax : matplotlib Axes or None, default=None
            Where to draw; a new figure when None.
        name : str or None, default=None
            Shown in the title.
        **kwargs : dict
            Style keywords of the three curves (see :meth:`plot`).

        Returns
        -------
        display : ThresholdCertificateDisplay
        """
        check_matplotlib_support(f"{cls.__name__}.from_predictions")
        scores = check_array(routing_scores, ensure_2d=False, input_name="routing_scores")
        medium_plus = check_array(y_true, ensure_2d=False, dtype=None, input_name="y_true")
        check_consistent_length(medium_plus, scores)
        if scores.ndim != 1 or medium_plus.ndim != 1:
            raise ValueError("y_true and routing_scores must be 1-D: one value per article.")
        if not np.isin(medium_plus, [0, 1]).all():
            raise ValueError("y_true must say whether each article is MEDIUM+ (bool or 0/1).")
        results = _certificate_table(
            scores.astype(float), medium_plus.astype(bool), thresholds, target_recall, confidence
        )
        return cls._from_table(
            results,
            n_samples=len(scores),
            name=name,
            reference=reference,
            target_recall=target_recall,
            confidence=confidence,
        ).plot(ax=ax, **kwargs)

    def _title(self, name):
        name = self.name if name is None else name
        against = "Stage 2's tiers" if self.reference == "stage2" else "true tiers"
        title = (
            f"threshold {self.threshold:.2f} certified for recall >= {self.target_recall:g} "
            f"at {self.confidence:.0%} confidence"
        )
        if name:
            title = f"{name}: {title}"
        counts = []
        if self.n_samples is not None:
            counts.append(f"n = {self.n_samples} articles")
        if self.n_medium_plus is not None:
            counts.append(f"{self.n_medium_plus} MEDIUM+ ({against})")
        return title + ("\n" + ", ".join(counts) if counts else "")

    def plot(self, ax=None, *, name=None, **kwargs):
        """Draw on `ax` (a new figure when None).

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw; a new figure when None.
        name : str or None, default=None
            Shown in the title; None keeps the display's `name`.
        **kwargs : dict
            Matplotlib style keywords of the three curves (``linewidth``,
            ``alpha``, ``marker``, ...), validated as scikit-learn's
            displays validate theirs (``lw`` and ``linewidth`` together are
            refused).

        Returns
        -------
        display : ThresholdCertificateDisplay
            Itself, with `ax_`, `figure_` and `lines_` set.
        """
        check_matplotlib_support(f"{type(self).__name__}.plot")
        import matplotlib.pyplot as plt

        created = ax is None
        if created:
            _, ax = plt.subplots(figsize=(7, 5))
        style = _validate_style_kwargs({"linewidth": 1.8}, kwargs)
        against = "Stage 2's" if self.reference == "stage2" else "true"
        curves = {
            "recall": f"MEDIUM+ recall ({against} tiers)",
            "recall_lower_bound": f"recall lower bound ({self.confidence:.0%} confidence)",
            "skip_rate": "skip rate (share of articles Stage 2 never sees)",
        }
        self.lines_ = {
            key: ax.plot(self.thresholds, getattr(self, key), label=label, **style)[0]
            for key, label in curves.items()
        }
        ax.axhline(self.target_recall, color="grey", linestyle=":", label="target recall")
        ax.axvline(
            self.threshold,
            color="black",
            linestyle="--",
            label=f"chosen threshold {self.threshold:.2f}",
        )
        ax.set_xlabel("threshold (routing score)")
        ax.set_ylabel("share of articles")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(self._title(name), fontsize="medium")
        # Below the axes, where it hides no curve.
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize="small",
            frameon=False,
        )
        if created:
            ax.figure.tight_layout()
        self.ax_, self.figure_ = ax, ax.figure
        return self
