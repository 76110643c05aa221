"""A filter's ``probe/metadata.json``: the one schema (metrics, calibration,
evaluation), its checks, the evaluation summaries and the quality
verdicts read from it.
"""

import hashlib
import logging
import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import pandas as pd

from .._io import json_safe
from ..calibration import MIN_ROUTING_SCORE_STD  # one bound: the tuner warns at it too
from ..exceptions import FilterQualityWarning
from ..text import text_hashes
from ._safe_io import (
    MAX_METADATA_BYTES,
    METADATA_FILE,
    METADATA_SCHEMA_VERSION,
    _fixed_file,
    _load_json,
    FilterError,
    read_regular_file,
)
from ._stages import embedding_budget
from .spec import _name

logger = logging.getLogger(__name__)


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
    "cv_tier_accuracy_baseline",
    "cv_routing_score_std",
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

    See Also
    --------
    hybrid_estimators.filters.METRIC_KEYS : The keys it checks.
    hybrid_estimators.filters.filter_metadata : Records the metrics it checks.

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
    extra += [f"cv_mae_{name}_baseline" for name in dimension_names]
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
    return {key: json_safe(metrics[key]) for key in allowed if key in metrics}


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

    See Also
    --------
    hybrid_estimators.filters.check_calibration : The checks the record passes.
    hybrid_estimators.filters.record_calibration : Writes it into a filter's metadata.
    hybrid_estimators.calibration.TunedThresholdRouterCV : The tuner it records.
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

    See Also
    --------
    hybrid_estimators.filters.CALIBRATION_KEYS : The keys it checks.
    hybrid_estimators.filters.calibration_record : Builds a record that passes it.

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
    return {key: json_safe(calibration[key]) for key in CALIBRATION_KEYS if key in calibration}


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

    See Also
    --------
    hybrid_estimators.filters.EVALUATION_SPLIT_KEYS : The keys of the split it checks.
    hybrid_estimators.filters.record_evaluation : Writes a checked evaluation into a filter.
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
    return json_safe(evaluation), json_safe(split)


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

    See Also
    --------
    hybrid_estimators.filters.report_summary : The summary of a fresh report.
    hybrid_estimators.filters.stage2_doubts : Reads the same evaluation for doubts about Stage 2.
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

    See Also
    --------
    hybrid_estimators.evaluation.cascade_report : The report it summarises.
    hybrid_estimators.filters.evaluation_summary : The same summary, from a filter's metadata.
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

    See Also
    --------
    hybrid_estimators.filters.quality_verdicts : Every verdict on a filter's numbers.
    hybrid_estimators.evaluation.cascade_report : Measures Stage 2 against
        Stage 1.

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
    """sha256 of training articles and scores, to tell what a probe saw.

    See Also
    --------
    hybrid_estimators.filters.filter_metadata : Records it as the training data's fingerprint.
    """
    frame = pd.concat([pd.DataFrame(X).reset_index(drop=True), pd.DataFrame(Y).reset_index(drop=True)], axis=1)
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()



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

    See Also
    --------
    hybrid_estimators.filters.save_filter : Writes it as ``metadata.json``.
    hybrid_estimators.filters.read_metadata : Reads it back, checked.
    """
    import sklearn
    import skops

    from .. import __version__

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


def probe_beats_mean(metrics):
    """Whether the cross-validated MAE is below the mean baseline's (None: not recorded).

    See Also
    --------
    hybrid_estimators.filters.quality_verdicts : Every verdict on a filter's numbers.

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


#: A probe whose MAE is not at least this much below the mean's "barely beats" it.
BARELY_BEATS_MEAN = 0.10


@dataclass(frozen=True)
class QualityVerdict:
    """One verdict on a filter's quality, read from its metadata.

    Attributes
    ----------
    check : str
        What was checked: ``"probe_vs_mean"``, ``"dimension_vs_mean"``,
        ``"routing_score_spread"``, ``"tier_accuracy_vs_majority"``,
        ``"stage2_vs_stage1"`` or ``"calibration_target"``.
    passed : bool
        False when the numbers say the filter falls short.
    message : str
        The verdict in words, with its numbers (the same in every command).

    See Also
    --------
    hybrid_estimators.filters.quality_verdicts : Returns them.
    """

    check: str
    passed: bool
    message: str


def quality_verdicts(metadata):
    """A filter's quality verdicts, from its metadata: the one place they are computed.

    Each recorded measurement gives one verdict: the probe's weighted-average
    MAE against predicting the mean (failing when it is not at least
    :data:`BARELY_BEATS_MEAN` lower), each dimension's MAE against its
    mean, the routing score's spread, tier accuracy against the
    majority-class baseline, Stage 2 against Stage 1 (the recorded
    evaluation) and whether the calibration met its target. Measurements
    that were not recorded give no verdict.

    Parameters
    ----------
    metadata : dict
        A filter's ``probe/metadata.json``.

    Returns
    -------
    verdicts : list of QualityVerdict

    See Also
    --------
    hybrid_estimators.filters.QualityVerdict : One verdict.
    hybrid_estimators.filters.probe_beats_mean : The probe's verdict.
    hybrid_estimators.filters.stage2_doubts : The verdicts on Stage 2.

    Examples
    --------
    >>> verdicts = quality_verdicts({"metrics": {
    ...     "cv_mae_weighted_average": 0.619, "cv_mae_weighted_average_baseline": 0.632,
    ...     "cv_tier_accuracy": 0.968, "cv_tier_accuracy_baseline": 0.968}})
    >>> [(v.check, v.passed) for v in verdicts]
    [('probe_vs_mean', False), ('tier_accuracy_vs_majority', False)]
    >>> print(verdicts[0].message)
    Stage 1 barely beats predicting the mean: weighted-average MAE 0.619 against 0.632 for the mean (2.1% lower; less than 10% is little).
    """
    metrics = metadata.get("metrics") or {}
    verdicts = []
    mae, baseline = metrics.get("cv_mae_weighted_average"), metrics.get("cv_mae_weighted_average_baseline")
    if _numbers(mae, baseline) and baseline > 0:
        gain = 1 - mae / baseline
        numbers = f"weighted-average MAE {mae:.3f} against {baseline:.3f} for the mean"
        if gain <= 0:
            verdicts.append(QualityVerdict("probe_vs_mean", False, f"Stage 1 is no better than predicting the mean: {numbers}."))
        elif gain < BARELY_BEATS_MEAN:
            verdicts.append(QualityVerdict(
                "probe_vs_mean", False,
                f"Stage 1 barely beats predicting the mean: {numbers} ({gain:.1%} lower; "
                f"less than {BARELY_BEATS_MEAN:.0%} is little).",
            ))
        else:
            verdicts.append(QualityVerdict("probe_vs_mean", True, f"Stage 1 beats predicting the mean: {numbers} ({gain:.1%} lower)."))
    for name in metadata.get("dimension_names") or []:
        mae, baseline = metrics.get(f"cv_mae_{name}"), metrics.get(f"cv_mae_{name}_baseline")
        if _numbers(mae, baseline) and mae >= baseline:
            verdicts.append(QualityVerdict(
                "dimension_vs_mean", False,
                f"{name}: Stage 1 is no better than predicting the mean (MAE {mae:.3f} against {baseline:.3f}).",
            ))
    spread = metrics.get("cv_routing_score_std")
    if _numbers(spread):
        passed = spread >= MIN_ROUTING_SCORE_STD
        verdicts.append(QualityVerdict(
            "routing_score_spread", passed,
            f"the routing score's standard deviation is {spread:.3f}"
            + ("." if passed else f" (below {MIN_ROUTING_SCORE_STD}): it barely varies, so routing "
               "and its calibration say little about individual articles."),
        ))
    accuracy, majority = metrics.get("cv_tier_accuracy"), metrics.get("cv_tier_accuracy_baseline")
    if _numbers(accuracy, majority):
        passed = accuracy > majority
        verdicts.append(QualityVerdict(
            "tier_accuracy_vs_majority", passed,
            f"tier accuracy {accuracy:.1%} against {majority:.1%} for always predicting the largest tier"
            + ("." if passed else ": no better than the majority class."),
        ))
    if metadata.get("evaluation"):
        try:
            doubts = stage2_doubts(metadata)
        except FilterError as error:
            doubts = [f"its recorded evaluation cannot be read ({error})"]
        verdicts.append(QualityVerdict(
            "stage2_vs_stage1", not doubts,
            "Stage 2 " + ("is not shown to be better than Stage 1: " + "; ".join(doubts)
                          + ". It costs time without a measured gain: stage1_only=True (score "
                          "--stage1-only) skips it" if doubts
                          else "is measured better than Stage 1 in the recorded evaluation."),
        ))
    calibration = metadata.get("calibration") or {}
    if isinstance(calibration.get("target_met"), bool):
        passed = calibration["target_met"]
        verdicts.append(QualityVerdict(
            "calibration_target", passed,
            f"the calibration at threshold {calibration.get('threshold', float('nan')):.3f} "
            + ("met" if passed else "did not meet")
            + f" its target (MEDIUM+ recall {calibration.get('target_recall')} with confidence "
            f"{calibration.get('confidence')}).",
        ))
    return verdicts


def _numbers(*values):
    return all(isinstance(v, Real) and not isinstance(v, bool) and np.isfinite(v) for v in values)


def warn_about_quality(name, metadata):
    """Issue each failed verdict once as a :class:`~hybrid_estimators.exceptions.FilterQualityWarning`.

    Parameters
    ----------
    name : str
        The filter, as the warnings name it.
    metadata : dict

    Returns
    -------
    failed : list of QualityVerdict
    """
    failed = [verdict for verdict in quality_verdicts(metadata) if not verdict.passed]
    for verdict in failed:
        warnings.warn(f"filter {name}: {verdict.message}", FilterQualityWarning, stacklevel=3)
    return failed


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


def read_metadata(folder):
    """A filter folder's ``probe/metadata.json``, bounded and checked to be a mapping.

    Parameters
    ----------
    folder : str or path-like

    Returns
    -------
    metadata : dict

    See Also
    --------
    hybrid_estimators.filters.filter_metadata : Builds the metadata it reads.
    hybrid_estimators.filters.load_filter : Reads it with the rest of the folder.
    """
    path = _fixed_file(folder, METADATA_FILE)
    metadata = _load_json(read_regular_file(path, MAX_METADATA_BYTES, "the metadata"), str(path))
    if not isinstance(metadata, dict):
        raise FilterError(f"{path}: expected a JSON object, got {type(metadata).__name__}.")
    for key in ("metrics", "calibration", "evaluation", "evaluation_split", "versions"):
        if metadata.get(key) is not None and not isinstance(metadata[key], dict):
            raise FilterError(f"{path}: {key} must be an object.")
    return metadata


