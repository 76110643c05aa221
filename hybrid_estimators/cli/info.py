"""``hybrid-estimators info``: what a filter folder holds, without running a model."""

import json
import logging
from pathlib import Path

from ._common import CommandError, HelpFormatter, check_filter_folder

logger = logging.getLogger("hybrid_estimators.cli")


def filter_info(folder):
    """What a filter folder holds, as a dict (nothing is embedded or run)."""
    from ..filters import METADATA_FILE, FilterError, FilterSpec, load_probe

    folder = check_filter_folder(folder)
    try:
        spec = FilterSpec.from_yaml(folder / "config.yaml")
    except FilterError as error:
        raise CommandError(str(error)) from None
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        metadata, metadata_error = {}, f"{folder / METADATA_FILE}: {error}"
    else:
        metadata_error = None
    probe_path = folder / spec.hybrid_inference["probe"]
    probe, probe_error = None, metadata_error
    if metadata_error is None:
        try:
            probe = load_probe(probe_path, metadata)
        except FilterError as error:
            probe_error = str(error)
    return {
        "folder": str(folder),
        "name": spec.name,
        "version": spec.version,
        "description": spec.description,
        "dimensions": spec.dimensions,
        "tiers": spec.tiers,
        "prefilter": spec.prefilter,
        "hybrid_inference": spec.hybrid_inference,
        "probe": _probe_summary(probe, probe_path, metadata) if probe is not None else None,
        "probe_error": probe_error,
        "embedding_dim": metadata.get("embedding_dim"),
        "n_training_articles": metadata.get("n_training_articles"),
        "training_data_sha256": metadata.get("training_data_sha256"),
        "versions": metadata.get("versions", {}),
        "metrics": metadata.get("metrics", {}),
    }


def _probe_summary(probe, path, metadata):
    import numpy as np

    head = probe[-1] if hasattr(probe, "steps") else probe
    coef = getattr(head, "coef_", None)  # linear probes: (n_outputs, n_inputs)
    return {
        "file": str(path),
        "model": type(head).__name__,
        "hidden_layer_sizes": list(getattr(head, "hidden_layer_sizes", ())),
        "n_inputs": getattr(probe, "n_features_in_", None),
        "n_outputs": getattr(head, "n_outputs_", None) or (None if coef is None else int(np.atleast_2d(coef).shape[0])),
        "n_iter": getattr(head, "n_iter_", None),
        "alpha": None if getattr(head, "alpha_", None) is None else float(head.alpha_),
        "sha256": metadata.get("probe_sha256"),
    }


def _probe_shape(probe):
    return str(tuple(probe["hidden_layer_sizes"])) if probe["hidden_layer_sizes"] else ""


def _probe_fit(probe):
    if probe.get("alpha") is not None:
        return f"alpha {probe['alpha']:g}"
    return f"{probe['n_iter']} epochs"


def _format_info(info):
    hybrid = info["hybrid_inference"]
    lines = [f"filter      {info['name']}/{info['version']}  ({info['folder']})"]
    if info["description"]:
        lines.append(f"description {info['description']}")
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
    lines.append(
        f"embedder    {hybrid['embedding_model']}  (prefix {hybrid['embedding_prefix']!r}, "
        f"max_seq_length {hybrid['max_seq_length']}, dim {info['embedding_dim']})"
    )
    stage2 = hybrid["stage2"]
    lines.append(
        "stage2      none (Stage 1 only)"
        if stage2 is None
        else "stage2      " + ", ".join(f"{k}={v}" for k, v in stage2.items())
    )
    prefilter = info["prefilter"]
    lines.append(
        "prefilter   "
        + ("none" if not prefilter else "; ".join(f"{k}: {v}" for k, v in prefilter.items()))
    )
    probe = info["probe"]
    if probe is not None:
        lines.append(
            f"probe       {probe['model']}{_probe_shape(probe)}: "
            f"{probe['n_inputs']} inputs -> {probe['n_outputs']} outputs, "
            f"{_probe_fit(probe)}, sha256 {str(probe['sha256'])[:12]}… ok"
        )
    else:
        lines.append(f"probe       INVALID: {info['probe_error']}")
    if info["n_training_articles"] is not None:
        lines.append(
            f"training    {info['n_training_articles']} articles, sha256 "
            f"{str(info['training_data_sha256'])[:12]}…"
        )
    if info["versions"]:
        lines.append("versions    " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    lines.append("metrics" + ("" if info["metrics"] else "     none recorded"))
    if info["metrics"]:
        width = max(map(len, info["metrics"]))
        for name, value in info["metrics"].items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"  {name:<{width}}  {shown}")
    return "\n".join(lines)


def _info_command(args):
    info = filter_info(args.filter)
    if args.format == "json":
        print(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        print(_format_info(info))
    return 0 if info["probe_error"] is None else 1


def add_parser(subparsers, parents=()):
    """Register ``info`` on `subparsers`."""
    info = subparsers.add_parser(
        "info", parents=parents, help="show what a filter folder holds",
        formatter_class=HelpFormatter,
        description="Show a filter folder's config, probe, Stage 2, metrics and evaluation, "
        "checking the probe's hash and types without loading any model.",
    )
    info.add_argument("--filter", required=True, type=Path, help="filter folder")
    info.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    info.set_defaults(handler=_info_command)
    return info
