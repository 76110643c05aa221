"""scikit-learn estimators for fast, accurate two-stage scoring of news articles.

Stage 1 (:class:`ArticleText` + :class:`E5Embedder` + :func:`make_probe`)
scores every article cheaply; only articles whose Stage-1 weighted average
reaches a threshold go on to Stage 2, a fine-tuned decoder LM.
"""

import importlib

__version__ = "0.1.0"

# Public name -> module. Loaded on first use so that `import hybrid_estimators`
# stays light (torch and transformers load only when a model is needed).
_EXPORTS = {
    "ArticleText": "text",
    "as_texts": "text",
    "E5Embedder": "embedding",
    "make_probe": "probe",
    "make_ridge_probe": "probe",
    "make_articles": "datasets",
    "load_articles": "datasets",
    "weighted_average": "tiers",
    "tier_of": "tiers",
    "apply_gatekeepers": "tiers",
    "HybridRouterRegressor": "router",
    "TunedThresholdRouterCV": "calibration",
    "ThresholdCertificateDisplay": "calibration",
    "IsotonicCalibrator": "isotonic_calibrator",
    "fit_out_of_fold_calibration": "isotonic_calibrator",
    "PercentileNormalizer": "percentile_normalizer",
    "best_filter": "percentile_normalizer",
    "cascade_report": "evaluation",
    "CascadeFrontierDisplay": "evaluation",
    "RecallAudit": "audit",
    "teacher_scores": "teacher",
    "read_teacher_scores": "teacher",
    "make_distillation_set": "teacher",
    "disjoint_split": "teacher",
    "ROUTING_SCORERS": "metrics",
    "QwenRegressor": "qwen",
    "Filter": "filters",
    "FilterSpec": "filters",
    "load_filter": "filters",
    "save_filter": "filters",
    "score_dataset": "distributed",
    "score_chunk": "scoring",
    "Prefilter": "prefilter",
    "offline_e5_small": "models",
    "resolve_model": "models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
