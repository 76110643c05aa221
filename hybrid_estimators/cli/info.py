"""``hybrid-estimators info``: what a filter folder holds, without running a model.

Nothing in the folder can make it hang, exhaust memory or fail with a
traceback: the config and metadata are read as bounded regular files,
paths stay inside the folder, and the probe is checked (size, sha256,
archive bounds, allowed types) before skops reads it. A bad config exits
with status 2; a bad probe, adapter, metadata or evaluation is shown as
INVALID and exits with status 1.
"""

import json
import logging
import os
from pathlib import Path

from ._common import CommandError, HelpFormatter, check_filter_folder

logger = logging.getLogger("hybrid_estimators.cli")


def filter_info(folder):
    """What a filter folder holds, as a dict (nothing is embedded or run).

    Parameters
    ----------
    folder : str or path-like

    Returns
    -------
    info : dict
        The config's sections, the probe's summary (or ``probe_error``),
        ``stage2_error``, the metadata's provenance, ``metrics`` (with
        ``probe_beats_mean``), ``calibration``, ``evaluation`` (a summary:
        see :func:`hybrid_estimators.filters.evaluation_summary`) with
        ``evaluation_stale`` and ``stage2_doubts``, and ``problems``: every
        error found (empty when the folder is sound).

    Raises
    ------
    CommandError
        When the folder or its config cannot be read.
    """
    from .. import filters

    folder = Path(folder)
    if not folder.is_dir() or not os.path.lexists(folder / filters.CONFIG_FILE):
        check_filter_folder(folder)  # its message: no folder, or no config.yaml
    try:
        spec = filters.FilterSpec.from_yaml(filters.resolve_in_folder(folder, filters.CONFIG_FILE, filters.CONFIG_FILE))
    except filters.FilterError as error:
        raise CommandError(str(error)) from None
    info = _config_info(folder, spec)
    metadata = _metadata_info(folder, info)
    _probe_info(folder, spec, metadata, info)
    _stage2_info(folder, spec, info)
    _runtime_info(folder, spec, metadata, info)
    _evaluation_info(folder, spec, metadata, info)
    info["problems"] = [
        info[key] for key in ("metadata_error", "probe_error", "stage2_error", "runtime_error", "evaluation_error")
        if info[key] is not None
    ]
    return info


def _config_info(folder, spec):
    return {
        "folder": str(folder),
        "name": spec.name,
        "version": spec.version,
        "description": spec.description,
        "dimensions": spec.dimensions,
        "tiers": spec.tiers,
        "prefilter": spec.prefilter,
        "hybrid_inference": spec.hybrid_inference,
    }


def _metadata_info(folder, info):
    from ..filters import FilterError, probe_beats_mean, quality_verdicts, read_metadata

    try:
        metadata, info["metadata_error"] = read_metadata(folder), None
    except FilterError as error:
        metadata, info["metadata_error"] = {}, str(error)
    info.update(
        schema_version=metadata.get("schema_version"),
        embedding_dim=metadata.get("embedding_dim"),
        n_training_articles=metadata.get("n_training_articles"),
        training_data_sha256=metadata.get("training_data_sha256"),
        versions=metadata.get("versions") or {},
        metrics=metadata.get("metrics") or {},
        probe_beats_mean=probe_beats_mean(metadata.get("metrics") or {}),
        calibration=metadata.get("calibration"),
        score_maps=metadata.get("score_maps"),
        score_maps_summary=_score_maps_summary(metadata),
        quality=[vars(verdict) for verdict in quality_verdicts(metadata)],
    )
    return metadata


def _score_maps_summary(metadata):
    from ..filters.score_maps import score_maps_summary

    try:
        return score_maps_summary(metadata)
    except (KeyError, TypeError, ValueError, IndexError) as error:
        return [f"score maps: the metadata's record is unreadable: {error}"]


def _probe_info(folder, spec, metadata, info):
    from ..filters import FilterError, load_probe, resolve_in_folder

    info["probe"], info["probe_error"] = None, None
    if info["metadata_error"] is not None:
        info["probe_error"] = "not checked: the metadata (its sha256) cannot be read"
        return
    try:
        path = resolve_in_folder(folder, spec.hybrid_inference["probe"], "hybrid_inference.probe")
        info["probe"] = _probe_summary(load_probe(path, metadata), path, metadata)
    except FilterError as error:
        info["probe_error"] = str(error)


def _stage2_info(folder, spec, info):
    from ..filters import FilterError, check_adapter_folder

    info["stage2_error"] = None
    try:
        check_adapter_folder(folder, spec)
    except FilterError as error:
        info["stage2_error"] = str(error)
    except OSError as error:
        info["stage2_error"] = f"the adapter folder cannot be read: {error}"


def _runtime_info(folder, spec, metadata, info):
    """What ``load_filter(folder)`` would run here (``backend="auto"``, ``dtype="auto"``), and the kinds
    of machine the filter records qualified configurations for."""
    from ..filters import FilterError, check_adapter_folder, runtime_configuration

    records = metadata.get("qualified_configurations") or {}
    info.update(runtime=None, runtime_error=None, qualified_kinds={
        stage: sorted(record["by_kind"]) if isinstance(record, dict) and isinstance(record.get("by_kind"), dict) else []
        for stage, record in (records.items() if isinstance(records, dict) else ())
    })
    try:
        adapter = None if info["stage2_error"] else check_adapter_folder(folder, spec)
        info["runtime"] = runtime_configuration(spec, metadata, adapter, device="cpu")
    except FilterError as error:
        info["runtime_error"] = str(error)
    except OSError as error:
        info["runtime_error"] = f"the Stage 2 adapter cannot be read: {error}"


def _evaluation_info(folder, spec, metadata, info):
    from ..filters import FilterError, evaluation_staleness, evaluation_summary, stage2_doubts

    info.update(evaluation=None, evaluation_error=None, evaluation_stale=[], stage2_doubts=[])
    try:
        info["evaluation"] = evaluation_summary(metadata)
        info["evaluation_stale"] = evaluation_staleness(folder, spec, metadata)
        info["stage2_doubts"] = stage2_doubts(metadata)
    except FilterError as error:
        info["evaluation_error"] = str(error)
    except OSError as error:
        info["evaluation_error"] = f"the Stage 2 adapter cannot be read: {error}"


def _probe_summary(probe, path, metadata):
    import numpy as np

    head = probe[-1] if hasattr(probe, "steps") else probe
    coef = getattr(head, "coef_", None)  # linear probes: (n_outputs, n_inputs)
    return {
        "file": str(path),
        "model": type(head).__name__,
        "hiddenlayer_sizes": list(getattr(head, "hidden_layer_sizes", ())),
        "n_inputs": getattr(probe, "n_features_in_", None),
        "n_outputs": getattr(head, "n_outputs_", None) or (None if coef is None else int(np.atleast_2d(coef).shape[0])),
        "n_iter": getattr(head, "n_iter_", None),
        "alpha": None if getattr(head, "alpha_", None) is None else float(head.alpha_),
        "sha256": metadata.get("probe_sha256"),
    }


# --- text ---------------------------------------------------------------------------


def _shown(value):
    """A value from the folder as one printable line (no terminal escapes)."""
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _estimate(estimate):
    if not estimate or estimate.get("value") is None:
        return "n/a"
    text = f"{estimate['value']:.3f}"
    if estimate.get("low") is not None and estimate.get("high") is not None:
        text += f" [{estimate['low']:.3f}, {estimate['high']:.3f}]"
    return text


def _probe_shape(probe):
    return str(tuple(probe["hiddenlayer_sizes"])) if probe["hiddenlayer_sizes"] else ""


def _probe_fit(probe):
    if probe.get("alpha") is not None:
        return f"alpha {probe['alpha']:g}"
    return f"{probe['n_iter']} epochs"


def _config_lines(info):
    hybrid = info["hybrid_inference"]
    lines = [f"filter      {info['name']}/{info['version']}  ({info['folder']})"]
    if info["description"]:
        lines.append(f"description {' '.join(info['description'].split())}")
    lines.append("dimensions  weight  gatekeeper")
    width = max(map(len, info["dimensions"]))
    for name, entry in info["dimensions"].items():
        gate = (
            f"below {entry['gatekeeper_threshold']:g} caps at {entry['gatekeeper_max_score']:g}"
            if entry.get("gatekeeper")
            else "-"
        )
        lines.append(f"  {name:<{width}}  {entry['weight']:.3f}  {gate}")
    lines.append("tiers       " + ", ".join(f"{n} >= {b:g}" for n, b in info["tiers"].items()))
    calibrated = (
        f"calibrated: MEDIUM+ recall >= {hybrid['target_recall']:g} at confidence "
        f"{hybrid['confidence']:g}"
        if hybrid["target_recall"] is not None
        else "not calibrated"
    )
    routes = ", no Stage 2: routes nothing" if hybrid["stage2"] is None else ""
    lines.append(f"threshold   {hybrid['threshold']:g}  ({calibrated}{routes})")
    head_tail = hybrid["embedding_head_tail"]
    head_tail = "" if head_tail is None else f", head+tail {head_tail[0]}+{head_tail[1]}"
    lines.append(
        f"embedder    {hybrid['embedding_model']}  (prefix {hybrid['embedding_prefix']!r}, "
        f"max_seq_length {hybrid['max_seq_length']}{head_tail}, dim {info['embedding_dim']})"
    )
    stage2 = hybrid["stage2"]
    if stage2 is None:
        lines.append("stage2      none (Stage 1 only)")
    else:
        state = "ok" if info["stage2_error"] is None else f"INVALID: {info['stage2_error']}"
        lines.append("stage2      " + ", ".join(f"{k}={v}" for k, v in stage2.items()) + f"  ({state})")
    lines.append(_runtime_line(info))
    prefilter = info["prefilter"]
    lines.append(
        "prefilter   "
        + ("none" if not prefilter else "; ".join(f"{k}: {v}" for k, v in prefilter.items()))
    )
    return lines


def _probe_lines(info):
    probe = info["probe"]
    if probe is None:
        return [f"probe       INVALID: {info['probe_error']}"]
    return [
        f"probe       {probe['model']}{_probe_shape(probe)}: "
        f"{probe['n_inputs']} inputs -> {probe['n_outputs']} outputs, "
        f"{_probe_fit(probe)}, sha256 {_shown(probe['sha256'])[:12]}… ok"
    ]


def _provenance_lines(info):
    lines = []
    if info["metadata_error"] is not None:
        lines.append(f"metadata    INVALID: {info['metadata_error']}")
    if info["n_training_articles"] is not None:
        lines.append(
            f"training    {_shown(info['n_training_articles'])} articles, sha256 "
            f"{_shown(info['training_data_sha256'])[:12]}…"
        )
    if info["versions"]:
        lines.append("versions    " + ", ".join(f"{_shown(k)} {_shown(v)}" for k, v in info["versions"].items()))
    return lines


#: Metrics measured at ``cv_threshold``: shown as such when the filter now routes elsewhere.
_AT_THRESHOLD = ("cv_medium_plus_recall_at_threshold", "cv_skip_rate_at_threshold")


def _metrics_lines(info):
    """Metrics beside their baselines; those of an earlier threshold labelled as such."""
    metrics = info["metrics"]
    lines = ["metrics" + ("" if metrics else "     none recorded")]
    in_use = info["hybrid_inference"]["threshold"]
    measured_at = metrics.get("cv_threshold")
    earlier = isinstance(measured_at, (int, float)) and abs(measured_at - in_use) > 1e-9
    shown = [name for name in metrics if not str(name).endswith("_baseline") and name != "cv_tier_accuracy"]
    if earlier:
        shown = [name for name in shown if name not in _AT_THRESHOLD]
    width = max(map(len, map(str, shown)), default=0)
    for name in shown:
        lines.append(f"  {_shown(name):<{width}}  {_shown(metrics[name])}{_baseline_text(metrics, name)}")
    if "cv_tier_accuracy" in metrics:
        majority = metrics.get("cv_tier_accuracy_baseline")
        beside = "majority-class baseline not recorded" if majority is None else f"always the largest tier: {_shown(majority)}"
        lines.append(f"  {'cv_tier_accuracy':<{width}}  {_shown(metrics['cv_tier_accuracy'])}  ({beside})")
    if earlier:
        lines.append(f"  at an earlier threshold {measured_at:.3f} (the filter now routes at {in_use:g}):")
        for name in _AT_THRESHOLD:
            if name in metrics:
                lines.append(f"    {_shown(name)}  {_shown(metrics[name])}")
    if info["probe_beats_mean"] is False:
        lines.append(
            f"  WARNING: the probe does not beat predicting the mean (CV MAE "
            f"{metrics['cv_mae_weighted_average']:.3f} vs the mean's "
            f"{metrics['cv_mae_weighted_average_baseline']:.3f})"
        )
    for verdict in info.get("quality", []):
        lines.append(f"  {'ok' if verdict['passed'] else 'WARNING'}: {_shown(verdict['message'])}")
    return lines


def _baseline_text(metrics, name):
    baseline = metrics.get(f"{name}_baseline")
    if baseline is not None:
        return f"  (predicting the mean: {_shown(baseline)})"
    if str(name).startswith("cv_mae_") and not str(name).startswith("cv_mae_weighted_average_"):
        return "  (mean baseline not recorded)"
    return ""


def _score_maps_lines(info):
    summary = info.get("score_maps_summary") or []
    return [f"score maps  {summary[0]}"] + [f"            {line}" for line in summary[1:]] if summary else []


def _calibration_lines(info):
    calibration = info["calibration"]
    if not calibration:
        return ["calibration none recorded"]
    try:
        return [
            f"calibration threshold {calibration['threshold']:.3f}: MEDIUM+ recall >= "
            f"{calibration['target_recall']:g} at confidence {calibration['confidence']:g} "
            f"(lower bound {_shown(calibration.get('recall_lower_bound'))}, "
            f"{_shown(calibration.get('n_medium_plus'))} MEDIUM+ of {_shown(calibration.get('n'))} "
            f"articles, reference {_shown(calibration.get('reference'))}, cv "
            f"{_shown(calibration.get('cv'))}), expected skip rate "
            f"{_shown(calibration.get('expected_skip_rate'))}"
        ]
    except (KeyError, TypeError, ValueError) as error:
        return [f"calibration INVALID: {type(error).__name__}: {error}"]


def _evaluation_lines(info):
    if info["evaluation_error"] is not None:
        return [f"evaluation  INVALID: {info['evaluation_error']}"]
    summary = info["evaluation"]
    if summary is None:
        return ["evaluation  none recorded (nothing shows that Stage 2 earns its place)"]
    split = summary["split"]
    lines = [
        f"evaluation  {summary['n']} articles at threshold {summary['threshold']:.3f}, "
        f"{summary['confidence']:.0%} bootstrap intervals; Stage 1 {_shown(split.get('stage1'))}, "
        f"Stage 2 {_shown(split.get('stage2'))}",
    ]
    if split.get("description"):
        lines.append(f"  how        {_shown(' '.join(str(split['description']).split()))}")
    for system in ("stage1", "stage2", "hybrid"):
        lines.append(f"  MAE {system:<7}{_estimate(summary['mae'].get(system))}")
    if summary["stage2_available"]:
        lines.append(f"  skip rate  {_estimate(summary['skip_rate'])}")
        lines.append(_routed_line(summary, "  routed     "))
    held_out = summary["held_out"]
    if held_out is not None:
        lines.append(f"  held out   {_shown(held_out.get('description', ''))}")
        lines.append(_routed_line(held_out, "             "))
    for reason in info["evaluation_stale"]:
        lines.append(f"  WARNING: stale evaluation: {reason}")
    if not info["evaluation_stale"]:
        for reason in info["stage2_doubts"]:
            lines.append(f"  WARNING: Stage 2 is not shown to be better: {reason}")
    return lines


def _routed_line(summary, prefix):
    routed = summary.get("routed") or {}
    return (
        f"{prefix}{routed.get('n', 0)} articles routed: Stage 2 - Stage 1 MAE "
        f"{_estimate(routed.get('difference'))}, stage2_better "
        f"{bool(summary.get('stage2_better'))}"
    )


def _runtime_line(info):
    if info["runtime_error"] is not None:
        return f"runtime     INVALID: {info['runtime_error']}"
    runtime, kinds = info["runtime"], info["qualified_kinds"]
    stage2 = "" if runtime["stage2"] is None else f", Stage 2 {runtime['stage2']['dtype']}"
    recorded = "; ".join(f"{stage}: {', '.join(found) or 'none'}" for stage, found in kinds.items()) or "none"
    return (f"runtime     auto on this CPU (kind {runtime['cpu_kind']}): Stage 1 {runtime['stage1']['backend']}"
            f"{stage2}  (qualified for: {recorded})")


def _format_info(info):
    lines = _config_lines(info) + _probe_lines(info) + _provenance_lines(info)
    lines += _metrics_lines(info) + _calibration_lines(info) + _score_maps_lines(info) + _evaluation_lines(info)
    return "\n".join(lines)


def _info_command(args):
    info = filter_info(args.filter)
    try:
        if args.format == "json":
            print(json.dumps(info, indent=2, ensure_ascii=False))
        else:
            print(_format_info(info))
    except (KeyError, TypeError, ValueError) as error:  # a folder no check foresaw
        logger.debug("info could not show %s", args.filter, exc_info=True)
        raise CommandError(f"cannot show {args.filter}: {type(error).__name__}: {error}") from None
    return 0 if not info["problems"] else 1


def add_parser(subparsers, parents=()):
    """Register ``info`` on `subparsers`."""
    info = subparsers.add_parser(
        "info", parents=parents, help="show what a filter folder holds",
        formatter_class=HelpFormatter,
        description="Show a filter folder's config, probe, Stage 2, metrics, calibration and "
        "evaluation (Stage 1 vs Stage 2 vs hybrid, with intervals), checking the probe's hash "
        "and types without loading any model. Exits with 1 when something in the folder is "
        "invalid, 2 when it cannot be read as a filter.",
    )
    info.add_argument("--filter", required=True, type=Path, help="filter folder")
    info.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    info.set_defaults(handler=_info_command)
    return info
