"""The model card (``README.md``) of a filter folder, written from its spec and
metadata: plain Markdown, every value escaped.
"""

import json
import re
import shlex
from numbers import Real
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline

from ._safe_io import _CONTROL, FilterError
from .metadata import _fmt, evaluation_summary, probe_beats_mean, quality_verdicts

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


def model_card(spec, metadata, probe=None, *, folder=None):
    """The filter's model card (``README.md``): plain Markdown from its metadata.

    Parameters
    ----------
    spec : FilterSpec
    metadata : dict
        As :func:`save_filter` writes it.
    probe : estimator or None, default=None
        The Stage 1 probe, to name its steps.
    folder : str, path-like or None, default=None
        Where the filter is saved, for "How to use it" (None:
        ``filters/{name}/{version}``).

    Returns
    -------
    card : str

    See Also
    --------
    hybrid_estimators.filters.save_filter : Writes it as the folder's ``README.md``.
    hybrid_estimators.filters.quality_verdicts : The verdicts it shows.

    Examples
    --------
    >>> from hybrid_estimators.filters import FilterSpec
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
        _card_runtimes(metadata),
        _card_metrics(spec, metrics),
        _card_quality(metadata),
        _card_calibration(spec, metadata.get("calibration"), metadata.get("calibrations")),
        _card_score_maps(metadata),
        _card_evaluation(metadata),
        _card_data(metadata),
        _card_use(spec, metadata),
        _card_loading(spec, folder),
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


def _card_runtimes(metadata):
    """The configurations ``backend="auto"``/``dtype="auto"`` may pick, per kind of machine."""
    records = metadata.get("qualified_configurations") or {}
    if not records:
        return [
            "## Runtimes", "",
            "No configuration is recorded as qualified: `auto` runs the reference (torch, float32).",
        ]
    lines = [
        "## Runtimes", "",
        "Configurations measured at iso-quality with the reference (torch, float32) on this filter's "
        "articles, same folds; `load_filter`'s `backend=\"auto\"` and `dtype=\"auto\"` pick the fastest "
        "one recorded for the machine's kind, the reference elsewhere.", "",
        "| stage | machine kind | qualified |", "|---|---|---|",
    ]
    for stage, key in (("stage1", "backend"), ("stage2", "dtype")):
        record = records.get(stage) or {}
        for kind, configurations in sorted((record.get("by_kind") or {}).items()):
            names = ", ".join(_code(str(c.get(key))) for c in configurations if isinstance(c, dict))
            lines.append(f"| {stage.replace('stage', 'Stage ')} | {_md(str(kind))} | {names} |")
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
        ("tier accuracy", _beside(_percent(metrics.get("cv_tier_accuracy")), "always the largest tier",
                                  _percent(metrics.get("cv_tier_accuracy_baseline")), "majority-class baseline")),
        (f"MEDIUM+ recall at threshold {_number_text(threshold)}", _percent(metrics.get("cv_medium_plus_recall_at_threshold"))),
        (f"skip rate at threshold {_number_text(threshold)}", _percent(metrics.get("cv_skip_rate_at_threshold"))),
    ]
    rows += [
        (f"MAE of {_md(name)}", _beside(_number_text(metrics[f"cv_mae_{name}"]), "predicting the mean",
                                        _number_text(metrics.get(f"cv_mae_{name}_baseline")), "mean baseline"))
        for name in spec.dimension_names if f"cv_mae_{name}" in metrics
    ]
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows if value != "n/a"]
    return lines


def _card_quality(metadata):
    verdicts = quality_verdicts(metadata)
    if not verdicts:
        return []
    lines = ["## Quality verdicts", ""]
    lines += [f"- {'ok' if v.passed else '**Warning**'}: {_md(v.message)}" for v in verdicts]
    return lines


def _beside(value, baseline_name, baseline, what):
    """A metric and its baseline in one cell (saying so when the baseline was not recorded)."""
    if value == "n/a":
        return value
    return f"{value} ({baseline_name}: {baseline})" if baseline != "n/a" else f"{value} ({what} not recorded)"


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


def _card_score_maps(metadata):
    """Which score maps the filter applies (calibration, normalisation) and their evidence."""
    from .score_maps import score_maps_summary

    lines = [
        "## Score maps: calibration and normalisation", "",
        "See the package's `docs/scores.md`: calibration maps each stage's scores per dimension "
        "(routing keeps the uncalibrated Stage 1 score); `normalised` is the weighted average's "
        "percentile (x 10) on a reference traffic sample.", "",
    ]
    return lines + [f"- {_md(line.strip())}" for line in score_maps_summary(metadata)]


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


def _card_loading(spec, folder=None):
    folder = f"filters/{spec.name}/{spec.version}" if folder is None else Path(folder).as_posix()
    if _CONTROL.search(folder):  # a name that would break the card's code blocks
        folder = f"filters/{spec.name}/{spec.version}"
    shell = shlex.quote(folder)
    return [
        "## How to use it",
        "",
        "```python",
        "from hybrid_estimators import load_filter",
        "",
        f"scorer = load_filter({json.dumps(folder, ensure_ascii=False)})  # checks the probe (sha256, types) before loading",
        "report = scorer.predict_report(articles)  # a DataFrame with title and content columns",
        "```",
        "",
        "```",
        f"hybrid-estimators info --filter {shell}",
        f"hybrid-estimators score --filter {shell} articles.jsonl",
        "```",
    ]


# --- load -------------------------------------------------------------------
