"""Live recall audit: a seeded share of skipped articles also goes through Stage 2.

A cascade's promise is that Stage 2 sees the articles Stage 2 would call
MEDIUM+. Articles routed to Stage 2 show it directly; for the skipped ones,
:class:`RecallAudit` sends a seeded random share through Stage 2 as well,
without changing any output score, and estimates the recall relative to
Stage 2 with an exact (Clopper-Pearson) lower bound:

- routed articles whose Stage 2 tier is MEDIUM+ are hits (all observed);
- among ``n_audited`` audited skipped articles, ``k`` are Stage-2 MEDIUM+:
  the share of skipped articles that are misses is at most
  ``p = clopper_pearson_upper(k, n_audited, confidence)``;
- recall >= hits / (hits + p * n_skipped), at `confidence`.

Which articles are audited depends only on their text and `random_state`
(a keyed hash), never on batching, order or resumption.
"""

import hashlib
import logging
import warnings

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from .calibration import clopper_pearson_upper
from .exceptions import FilterQualityWarning
from .text import as_frame
from .tiers import apply_gatekeepers, medium_threshold, tier_of, weighted_average

__all__ = ["RecallAudit", "audit_selection", "audit_summary", "count_audited", "summary_of_counts"]

logger = logging.getLogger(__name__)

AUDIT_COLUMNS = ("audited", "audit_tier", "audit_weighted_average")


def audit_selection(X, rate, random_state=0):
    """Which articles fall in a seeded `rate` share, by a keyed hash of their text.

    Parameters
    ----------
    X : DataFrame or list of dict
        Articles with ``title`` and/or ``content``.
    rate : float
        Share in (0, 1].
    random_state : int, default=0
        Key of the hash: another value audits other articles.

    Returns
    -------
    selected : ndarray of bool, shape (n_samples,)

    See Also
    --------
    RecallAudit : Audits a filter's skipped articles.

    Examples
    --------
    >>> articles = [{"title": f"t{i}", "content": "c"} for i in range(1000)]
    >>> round(float(audit_selection(articles, 0.1).mean()), 2)
    0.1
    >>> bool((audit_selection(articles, 0.1) == audit_selection(articles[::-1], 0.1)[::-1]).all())
    True
    """
    if not 0 < rate <= 1:
        raise ValueError(f"rate must lie in (0, 1]; got {rate!r}.")
    frame = as_frame(X)
    key = str(random_state).encode()
    draws = []
    for row in frame.itertuples(index=False):
        text = "\x00".join(str(getattr(row, name, "") or "") for name in ("title", "content"))
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), key=key[:64], digest_size=8)
        draws.append(int.from_bytes(digest.digest(), "big") / 2**64)
    return np.asarray(draws) < rate


def audit_summary(stage_used, tier, audited, audit_tier, *, tiers=None, confidence=0.9, target_recall=None):
    """Recall relative to Stage 2, estimated from scored rows, with its lower bound.

    Parameters
    ----------
    stage_used : array-like of {"stage1", "stage2", None}
        Per article (None: blocked or invalid, not counted).
    tier : array-like of str or None
        Final tier of each article (Stage 2's where routed).
    audited : array-like of bool
        Whether a skipped article was audited.
    audit_tier : array-like of str or None
        Stage 2's tier of each audited article.
    tiers : dict or None, default=None
        Tier bounds; MEDIUM+ is any tier at or above the second-lowest.
    confidence : float, default=0.9
        Of the lower bound.
    target_recall : float or None, default=None
        When given, ``below_target`` says whether the bound falls under it.

    Returns
    -------
    summary : dict
        ``n_scored``, ``n_routed``, ``n_skipped``, ``n_audited``,
        ``routed_medium_plus``, ``audited_medium_plus``, ``recall``
        (estimate), ``recall_lower_bound``, ``confidence``,
        ``target_recall``, ``verdict`` and ``below_target`` (see
        :func:`summary_of_counts`).

    See Also
    --------
    RecallAudit : Audits a filter's skipped articles.
    hybrid_estimators.calibration.clopper_pearson_upper : The bound used.

    Examples
    --------
    >>> summary = audit_summary(
    ...     ["stage2"] * 40 + ["stage1"] * 60, ["medium"] * 40 + ["low"] * 60,
    ...     [False] * 40 + [True] * 30 + [False] * 30, [None] * 40 + ["low"] * 30 + [None] * 30)
    >>> summary["recall"], round(summary["recall_lower_bound"], 3)
    (1.0, 0.9)
    """
    counts = count_audited(stage_used, tier, audited, audit_tier, tiers=tiers)
    return summary_of_counts(counts, confidence=confidence, target_recall=target_recall)


#: The counts a recall audit keeps (all it needs, whatever the stream's length).
COUNTS = ("n_routed", "n_skipped", "n_audited", "routed_medium_plus", "audited_medium_plus")


def count_audited(stage_used, tier, audited, audit_tier, *, tiers=None):
    """The audit's counts (:data:`COUNTS`) of some scored rows; add them to a running total.

    See Also
    --------
    summary_of_counts : The recall bound from these counts.
    audit_summary : Both in one call.

    Examples
    --------
    >>> count_audited(["stage2", "stage1", None], ["high", "low", None], [False, True, True],
    ...               [None, "medium", None])
    {'n_routed': 1, 'n_skipped': 1, 'n_audited': 1, 'routed_medium_plus': 1, 'audited_medium_plus': 1}
    """
    medium_plus = _medium_plus_tiers(tiers)
    stage_used = np.asarray(list(stage_used), dtype=object)
    tier = np.asarray(list(tier), dtype=object)
    audit_tier = np.asarray(list(audit_tier), dtype=object)
    routed, skipped = stage_used == "stage2", stage_used == "stage1"
    audited = np.asarray([bool(a) for a in audited], dtype=bool).reshape(-1) & skipped
    return {
        "n_routed": int(routed.sum()),
        "n_skipped": int(skipped.sum()),
        "n_audited": int(audited.sum()),
        "routed_medium_plus": int(np.isin(tier[routed], medium_plus).sum()),
        "audited_medium_plus": int(np.isin(audit_tier[audited], medium_plus).sum()),
    }


def summary_of_counts(counts, *, confidence=0.9, target_recall=None):
    """Recall relative to Stage 2 and its lower bound, from the audit's counts.

    The summary is strict JSON: a number that cannot be computed is None,
    with ``undetermined`` saying why. ``verdict`` is one of:

    - ``"pass"``: the lower bound reaches `target_recall`;
    - ``"fail"``: it falls under it (``below_target`` True);
    - ``"undetermined"``: no bound can be computed, because no skipped
      article was audited, or because Stage 2 called no routed or audited
      article MEDIUM+ (there is then nothing recall could have missed, nor
      any evidence of it): neither pass nor fail, ``below_target`` None;
    - ``"no target"``: no `target_recall` to compare with.

    See Also
    --------
    count_audited : The counts it summarises.
    audit_summary : Both in one call.

    Examples
    --------
    >>> summary = summary_of_counts({"n_routed": 0, "n_skipped": 5, "n_audited": 5,
    ...                              "routed_medium_plus": 0, "audited_medium_plus": 0},
    ...                             target_recall=0.9)
    >>> summary["verdict"], summary["below_target"], summary["recall_lower_bound"]
    ('undetermined', None, None)
    """
    hits, n_skipped = counts["routed_medium_plus"], counts["n_skipped"]
    n_audited, misses = counts["n_audited"], counts["audited_medium_plus"]
    recall = bound = undetermined = None
    if n_skipped and not n_audited:
        undetermined = f"none of the {n_skipped} skipped articles was audited"
    elif not hits and not misses:
        undetermined = (
            f"Stage 2 called none of the {counts['n_routed']} routed and {n_audited} audited "
            "articles MEDIUM+: there is no reference MEDIUM+ article to measure recall on"
        )
    else:
        miss_share = misses / n_audited if n_audited else 0.0
        miss_upper = float(clopper_pearson_upper(misses, n_audited, confidence)) if n_audited else 0.0
        recall = hits / (hits + miss_share * n_skipped)
        bound = hits / (hits + miss_upper * n_skipped)
    if target_recall is None:
        verdict, below = "no target", False
    elif bound is None:
        verdict, below = "undetermined", None
    else:
        below = bound < target_recall
        verdict = "fail" if below else "pass"
    return {
        "n_scored": counts["n_routed"] + n_skipped,
        **counts,
        "recall": recall,
        "recall_lower_bound": bound,
        "confidence": float(confidence),
        "target_recall": None if target_recall is None else float(target_recall),
        "verdict": verdict,
        "below_target": below,
        "undetermined": undetermined,
    }


def _medium_plus_tiers(tiers):
    tiers = tiers or {"high": 7.0, "medium": 4.0, "low": 0.0}
    bound = medium_threshold(tiers)
    return [name for name, lower in tiers.items() if lower >= bound]


class RecallAudit:
    """Audit a fitted filter or router's skipped articles against its Stage 2.

    Call :meth:`audit` on each batch's ``predict_report``; it returns the
    audit columns for that batch and accumulates the counts; :meth:`summary`
    gives the recall relative to Stage 2 with its lower bound. Scores are
    never changed.

    Parameters
    ----------
    scorer : Filter or HybridRouterRegressor
        Fitted, with a Stage 2 (``stage2_``).
    rate : float
        Share of the skipped articles audited, in (0, 1].
    random_state : int, default=0
        Key of the seeded selection (see :func:`audit_selection`).
    confidence : float or None, default=None
        Of the lower bound; None takes the filter's calibration confidence
        (``spec.hybrid_inference["confidence"]``), else 0.9.
    target_recall : float or None, default=None
        Recall the bound is compared with; None takes the filter's
        ``target_recall`` when it has one.

    Attributes
    ----------
    counts_ : dict
        The running counts (:data:`COUNTS`) of every article seen so far:
        constant memory and work per batch, however long the stream.

    See Also
    --------
    audit_selection : Which skipped articles to audit.
    audit_summary : The recall bound from audited articles.
    hybrid_estimators.calibration.TunedThresholdRouterCV : Certifies the
        threshold before deployment; the audit checks it after.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from hybrid_estimators.router import HybridRouterRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(0, 10, size=(400, 2))
    >>> Y = np.c_[X[:, 0], X[:, 0]]
    >>> router = HybridRouterRegressor(Ridge(), Ridge(), [0.5, 0.5], threshold=3.5).fit(X, Y)
    >>> import pandas as pd
    >>> articles = pd.DataFrame({"title": [str(v) for v in X[:, 0]], "content": ""})
    >>> monitor = RecallAudit(router, rate=0.5, confidence=0.9)
    >>> columns = monitor.audit(X, router.predict_report(X), articles=articles)
    >>> summary = monitor.summary()
    >>> summary["recall"], bool(summary["recall_lower_bound"] > 0.95)
    (1.0, True)
    """

    def __init__(self, scorer, rate, *, random_state=0, confidence=None, target_recall=None):
        self.scorer = scorer
        self.rate = rate
        self.random_state = random_state
        self.confidence = confidence
        self.target_recall = target_recall

    def _settings(self):
        hybrid = getattr(getattr(self.scorer, "spec", None), "hybrid_inference", {})
        confidence = self.confidence or hybrid.get("confidence") or 0.9
        target = self.target_recall if self.target_recall is not None else hybrid.get("target_recall")
        return confidence, target

    def select(self, X):
        """Which of the articles `X` fall in the audited share (see :func:`audit_selection`)."""
        return audit_selection(X, self.rate, self.random_state)

    def stage2_tiers(self, X):
        """Stage 2's tier and weighted average (gatekeepers applied) of each row of `X`."""
        check_is_fitted(self.scorer)
        scorer = self.scorer
        if scorer.stage2_ is None:
            raise ValueError("a recall audit needs a filter or router with a Stage 2.")
        scores = np.asarray(scorer.predict_stage2(X), dtype=float)
        scores = scores.reshape(len(scores), -1)
        averages, _ = apply_gatekeepers(
            scores, weighted_average(scores, scorer.weights_), scorer.gatekeepers_
        )
        return tier_of(averages, scorer.tiers_), averages

    def update(self, stage_used, tier, audited, audit_tier):
        """Add scored articles to the counts (one value per article in each argument)."""
        counts = count_audited(
            stage_used, tier, audited, audit_tier, tiers=getattr(self.scorer, "tiers_", None)
        )
        total = getattr(self, "counts_", dict.fromkeys(COUNTS, 0))
        self.counts_ = {name: total[name] + counts[name] for name in COUNTS}
        return self

    def audit(self, X, report, *, articles=None):
        """Audit the skipped rows of one scored batch.

        Parameters
        ----------
        X : DataFrame, list of dict or array-like
            The batch, as given to the scorer.
        report : DataFrame
            The scorer's ``predict_report(X)``.
        articles : DataFrame or None, default=None
            Articles (title/content) to key the selection on, when `X` is
            not one.

        Returns
        -------
        columns : DataFrame
            ``audited``, ``audit_tier``, ``audit_weighted_average``, one row
            per row of `X` (None where not audited).
        """
        skipped = (report["stage_used"] == "stage1").to_numpy()
        chosen = skipped & self.select(X if articles is None else articles)
        columns = pd.DataFrame(
            {"audited": chosen, "audit_tier": None, "audit_weighted_average": np.nan},
            index=report.index,
        ).astype({"audit_tier": object})
        if chosen.any():
            tiers, averages = self.stage2_tiers(_rows(X, np.flatnonzero(chosen)))
            columns.loc[chosen, "audit_tier"] = tiers
            columns.loc[chosen, "audit_weighted_average"] = averages
        self.update(report["stage_used"], report["tier"], columns["audited"], columns["audit_tier"])
        return columns

    def summary(self):
        """Recall relative to Stage 2 over every audited batch (see :func:`summary_of_counts`)."""
        confidence, target = self._settings()
        summary = summary_of_counts(
            getattr(self, "counts_", dict.fromkeys(COUNTS, 0)), confidence=confidence, target_recall=target
        )
        summary.update(rate=float(self.rate), random_state=self.random_state)
        if summary["below_target"]:
            warnings.warn(
                f"recall audit{_filter_name(self.scorer)}: recall relative to Stage 2 may be below "
                f"the target: lower bound {summary['recall_lower_bound']:.3f} < {target:.3f} (estimate "
                f"{summary['recall']:.3f}; {summary['audited_medium_plus']} of {summary['n_audited']} "
                "audited skipped articles are Stage-2 MEDIUM+)",
                FilterQualityWarning,
                stacklevel=2,
            )
            logger.warning(
                "recall audit%s: recall relative to Stage 2 may be below the target: lower bound "
                "%.3f < %.3f (estimate %.3f; %d of %d audited skipped articles are Stage-2 MEDIUM+)",
                _filter_name(self.scorer), summary["recall_lower_bound"], target,
                summary["recall"], summary["audited_medium_plus"], summary["n_audited"],
            )
        return summary


def _filter_name(scorer):
    spec = getattr(scorer, "spec", None)
    return f" of filter {spec.qualified_name}" if spec is not None else ""


def _rows(X, positions):
    if hasattr(X, "iloc"):
        return X.iloc[positions]
    if isinstance(X, list):
        return [X[i] for i in positions]
    return np.asarray(X)[positions]
