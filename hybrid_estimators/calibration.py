"""A routing threshold with a stated recall guarantee: :class:`TunedThresholdRouterCV`."""

import copy
import logging
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from scipy.stats import beta, binom
from sklearn.base import BaseEstimator, MetaEstimatorMixin, RegressorMixin, _fit_context, clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import check_cv
from sklearn.utils import _safe_indexing, check_array, get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_consistent_length, check_is_fitted, indexable
from tqdm.auto import tqdm

from .metrics import is_medium_plus
from .router import _indexable_rows
from .tiers import SCORE_MAX, SCORE_MIN

__all__ = ["TunedThresholdRouterCV", "clopper_pearson_upper"]

logger = logging.getLogger(__name__)


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

    Parameters
    ----------
    router : HybridRouterRegressor
        The router to tune (fitted when ``cv="prefit"``).
    target_recall : float, default=0.95
        Share of MEDIUM+ articles Stage 2 must see.
    confidence : float, default=0.9
        Probability that the realised recall meets `target_recall`.
    cv : int, cross-validation generator, iterable or "prefit", default=5
        Splits for the out-of-fold routing scores (as in
        :func:`~sklearn.model_selection.cross_val_predict`; an int is a
        ``KFold``: pass ``KFold(n, shuffle=True, random_state=...)`` for
        ordered data). ``"prefit"``: `router` is fitted; ``X, Y`` are a
        held-out calibration set.
    thresholds : "auto", int or array-like, default="auto"
        Candidates: ``"auto"`` is a 0.1 grid over 0-10 plus every MEDIUM+
        article's routing score (the points where the miss count changes);
        an int is that many evenly spaced points over 0-10. 0 is always a
        candidate.
    refit : bool, default=True
        Refit the router with the chosen threshold on all of ``X, Y``
        (``cv="prefit"`` copies the fitted router instead).
    show_progress_bar : bool, default=False
        Show a tqdm bar over the splits.

    Attributes
    ----------
    threshold_ : float
        Chosen threshold.
    recall_lower_bound_ : float
        Lower confidence bound on MEDIUM+ recall at `threshold_`.
    expected_skip_rate_ : float
        Out-of-fold share of articles that skip Stage 2 at `threshold_`.
    target_met_ : bool
        Whether a threshold above 0 met the target.
    n_medium_plus_ : int
        MEDIUM+ articles calibrated on.
    oof_routing_scores_ : ndarray of shape (n_samples,)
        Out-of-fold routing scores.
    cv_results_ : DataFrame
        One row per candidate: ``threshold``, ``recall``,
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
    >>> tuner = TunedThresholdRouterCV(router, target_recall=0.95, confidence=0.9)
    >>> tuner.fit(X, Y).target_met_
    True
    >>> bool(tuner.recall_lower_bound_ >= 0.95), bool(0 < tuner.threshold_ < 5)
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
        "show_progress_bar": ["boolean"],
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
        show_progress_bar=False,
    ):
        self.router = router
        self.target_recall = target_recall
        self.confidence = confidence
        self.cv = cv
        self.thresholds = thresholds
        self.refit = refit
        self.show_progress_bar = show_progress_bar

    @_fit_context(
        # router is not validated yet
        prefer_skip_nested_validation=False
    )
    def fit(self, X, Y):
        """Compute out-of-fold routing scores, choose the threshold, refit.

        Parameters
        ----------
        X : DataFrame, list of dict, list of str or array-like
            Calibration rows.
        Y : array-like or DataFrame of shape (n_samples, n_dimensions) or \
                (n_samples,)
            True scores per dimension.

        Returns
        -------
        self : object
            Fitted tuner.
        """
        if Y is None:
            raise ValueError(
                f"This {type(self).__name__} estimator requires y to be passed, "
                "but the target y is None."
            )
        X, Y = (_indexable_rows(data) for data in indexable(X, Y))
        check_consistent_length(X, Y)
        scores, medium_plus = self._calibration_scores(X, Y)
        self.oof_routing_scores_ = scores
        self.n_medium_plus_ = int(medium_plus.sum())
        self.cv_results_ = self._test_thresholds(scores, medium_plus)
        self._choose_threshold()
        if self.cv == "prefit":
            self.best_estimator_ = copy.copy(self.router).set_params(
                threshold=self.threshold_
            )
        elif self.refit:
            self.best_estimator_ = (
                clone(self.router).set_params(threshold=self.threshold_).fit(X, Y)
            )
        router = getattr(self, "best_estimator_", None)
        for attribute in ("n_features_in_", "feature_names_in_"):
            if hasattr(router, attribute):
                setattr(self, attribute, getattr(router, attribute))
        return self

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
            return router.routing_scores(X), self._medium_plus(router, Y)
        cv = check_cv(self.cv, classifier=False)
        n_samples = len(Y)
        scores = np.full(n_samples, np.nan)
        router = None
        splits = list(cv.split(X, Y))
        for train, test in tqdm(
            splits, desc="out-of-fold Stage 1", disable=not self.show_progress_bar
        ):
            router = clone(self.router)
            router._validate_params()
            router._fit(
                _safe_indexing(X, train), _safe_indexing(Y, train), fit_stage2=False
            )
            scores[test] = router.routing_scores(_safe_indexing(X, test))
        if np.isnan(scores).any():
            raise ValueError(
                "cv must give every row a held-out routing score; "
                f"{int(np.isnan(scores).sum())} rows were never held out."
            )
        return scores, self._medium_plus(router, Y)

    @staticmethod
    def _medium_plus(router, Y):
        return is_medium_plus(
            check_array(Y, ensure_2d=False, dtype="numeric", input_name="y"),
            router.weights_,
            tiers=router.tiers_,
            gatekeepers=router.gatekeepers_,
        )

    def _test_thresholds(self, scores, medium_plus):
        thresholds = _candidate_thresholds(self.thresholds, scores[medium_plus])
        n_medium_plus = int(medium_plus.sum())
        routed = scores[np.newaxis, :] >= thresholds[:, np.newaxis]
        n_missed = (~routed & medium_plus).sum(axis=1)
        miss_target = 1.0 - self.target_recall
        upper = clopper_pearson_upper(n_missed, n_medium_plus, self.confidence)
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

    def _choose_threshold(self):
        results = self.cv_results_
        chosen = results[results["passed"]].iloc[-1]
        self.target_met_ = bool(chosen["threshold"] > SCORE_MIN)
        if not self.target_met_:
            message = (
                f"No threshold above 0 reaches MEDIUM+ recall >= {self.target_recall} "
                f"at confidence {self.confidence} with {self.n_medium_plus_} MEDIUM+ "
                "articles; routing every article to Stage 2 (threshold 0)."
            )
            warnings.warn(message, UserWarning)
        self.threshold_ = float(chosen["threshold"])
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

    # --- plot ----------------------------------------------------------------

    def plot(self, ax=None, path=None):
        """Recall, its lower bound and the skip rate against the threshold.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw; a new figure when None.
        path : str or path-like or None, default=None
            Save the figure there too.

        Returns
        -------
        ax : matplotlib Axes
        """
        check_is_fitted(self, "cv_results_")
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4))
        results = self.cv_results_
        ax.plot(results["threshold"], results["recall"], label="MEDIUM+ recall (OOF)")
        ax.plot(
            results["threshold"],
            results["recall_lower_bound"],
            label=f"recall lower bound ({self.confidence:.0%} confidence)",
        )
        ax.plot(results["threshold"], results["skip_rate"], label="skip rate")
        ax.axhline(self.target_recall, color="grey", linestyle=":", label="target recall")
        ax.axvline(self.threshold_, color="black", linestyle="--")
        ax.plot(
            [self.threshold_],
            [self.recall_lower_bound_],
            "ko",
            label=f"chosen threshold {self.threshold_:.2f}",
        )
        ax.set_xlabel("threshold (routing score)")
        ax.set_ylabel("share of articles")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="lower left", fontsize="small")
        if path is not None:
            ax.figure.savefig(path, bbox_inches="tight")
        return ax

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        router_tags = get_tags(self.router)
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.input_tags = copy.deepcopy(router_tags.input_tags)
        tags.regressor_tags.poor_score = True
        return tags
