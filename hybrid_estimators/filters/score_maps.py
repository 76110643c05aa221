"""A filter's score maps, stored as data: per-stage calibration and normalisation tables.

A filter folder may hold, named in ``config.yaml``'s ``hybrid_inference``::

    score_calibration:
      stage1: calibration/stage1.json   IsotonicCalibrator.to_table() of Stage 1
      stage2: calibration/stage2.json   ... of the routed rows' (blended) scores
    normalisation: normalisation.json   PercentileNormalizer.to_table() of the
                                        weighted average (with its traffic)

Each table is read through the one bounded regular-file reader, its sha256
checked against the metadata's ``score_maps`` record, and rebuilt without
refitting (``from_table``): the numbers a filter applies are the table's.
"""

import hashlib
import json

import numpy as np

from sklearn.frozen import FrozenEstimator

from .._io import json_safe
from ..isotonic_calibrator import IsotonicCalibrator
from ..percentile_normalizer import PercentileNormalizer
from ._safe_io import FilterError, _load_json, read_regular_file, resolve_in_folder

#: Largest score-map table read, in bytes (a 1001-breakpoint table of 256
#: dimensions is about 10 MiB of JSON).
MAX_SCORE_MAP_BYTES = 16 << 20
#: Where :func:`score_map_files` puts each table, relative to the filter folder.
SCORE_MAP_PATHS = {
    "stage1_calibration": "calibration/stage1.json",
    "stage2_calibration": "calibration/stage2.json",
    "normalisation": "normalisation.json",
}


def configured_score_maps(spec):
    """``{key: relative path}`` of the tables `spec` names (keys of :data:`SCORE_MAP_PATHS`)."""
    hybrid = spec.hybrid_inference
    calibration = hybrid.get("score_calibration") or {}
    paths = {f"{stage}_calibration": calibration.get(stage) for stage in ("stage1", "stage2")}
    paths["normalisation"] = hybrid.get("normalisation")
    return {key: path for key, path in paths.items() if path is not None}


def _read_table(folder, key, relative):
    where = f"hybrid_inference.{'normalisation' if key == 'normalisation' else 'score_calibration.' + key.split('_')[0]}"
    path = resolve_in_folder(folder, relative, where)
    data = read_regular_file(path, MAX_SCORE_MAP_BYTES, f"the {key.replace('_', ' ')} table")
    return path, data


def score_map_hashes(folder, spec):
    """``{key: sha256}`` of the tables `spec` names, read from the folder (the resume identity)."""
    return {
        key: hashlib.sha256(_read_table(folder, key, relative)[1]).hexdigest()
        for key, relative in configured_score_maps(spec).items()
    }


def read_score_maps(folder, spec, metadata):
    """The filter's score maps, ready to apply.

    Parameters
    ----------
    folder : path-like
    spec : FilterSpec
    metadata : dict
        Its ``score_maps`` record holds each table's sha256.

    Returns
    -------
    maps : dict
        ``stage1_calibrator`` and ``stage2_calibrator`` (fitted
        :class:`IsotonicCalibrator` in a ``FrozenEstimator``, or None) and
        ``normaliser`` (fitted :class:`PercentileNormalizer`, or None).

    Raises
    ------
    FilterError
        Naming the file: unreadable, too large, not JSON, its sha256 not the
        metadata's, or breakpoints that are not a valid table.
    """
    recorded = (metadata.get("score_maps") or {}) if isinstance(metadata, dict) else {}
    maps = {"stage1_calibrator": None, "stage2_calibrator": None, "normaliser": None}
    for key, relative in configured_score_maps(spec).items():
        path, data = _read_table(folder, key, relative)
        expected = (recorded.get(key) or {}).get("sha256")
        actual = hashlib.sha256(data).hexdigest()
        if expected != actual:
            raise FilterError(
                f"{path}: sha256 {actual[:12]}… is not the metadata's score_maps.{key}.sha256 "
                f"({str(expected)[:12]}…): the table changed or was not recorded."
            )
        table = _load_json(data, str(path))
        try:
            if key == "normalisation":
                maps["normaliser"] = PercentileNormalizer.from_table(table)
            else:
                calibrator = IsotonicCalibrator.from_table(table)
                maps[f"{key.split('_')[0]}_calibrator"] = FrozenEstimator(calibrator)
        except (KeyError, TypeError, ValueError) as error:
            raise FilterError(f"{path}: not a valid {key.replace('_', ' ')} table: {error}") from None
        width = maps["normaliser" if key == "normalisation" else f"{key.split('_')[0]}_calibrator"]
        width = getattr(width, "n_features_in_", None)
        expected_width = 1 if key == "normalisation" else len(spec.dimension_names)
        if width != expected_width:
            raise FilterError(f"{path}: the table has {width} columns; expected {expected_width}.")
    return maps


def _table_text(table):
    return json.dumps(json_safe(table), indent=1, allow_nan=False, ensure_ascii=False) + "\n"


def score_map_files(*, stage1_calibrator=None, stage2_calibrator=None, normaliser=None, traffic=None):
    """The tables to write and their metadata record, nothing written.

    Parameters
    ----------
    stage1_calibrator, stage2_calibrator : fitted IsotonicCalibrator (or FrozenEstimator of one) or None
    normaliser : fitted PercentileNormalizer or None
    traffic : dict or None
        What the normaliser was fitted on (file name, sha256, size), kept
        in the record.

    Returns
    -------
    files : dict of str to str
        Relative path -> JSON text.
    record : dict
        Key -> ``{"file", "sha256", ...}``: the metadata's ``score_maps``.
    """
    from ..router import unwrap_frozen

    files, record = {}, {}
    for key, estimator in (
        ("stage1_calibration", stage1_calibrator), ("stage2_calibration", stage2_calibrator),
        ("normalisation", normaliser),
    ):
        if estimator is None:
            continue
        table = unwrap_frozen(estimator).to_table()
        text = _table_text(table)
        relative = SCORE_MAP_PATHS[key]
        files[relative] = text
        entry = {"file": relative, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
        if key == "normalisation":
            column = table["columns"][0]
            entry.update(
                n_samples=int(column["n_samples"]), sample_sha256=table["sample_sha256"],
                traffic=traffic,
                reference_p10_p50_p90=[float(v) for v in np.interp([1.0, 5.0, 9.0], column["y"], column["x"])],
            )
        else:
            entry["breakpoints"] = [len(column["x"]) for column in table["columns"]]
        record[key] = entry
    return files, record


def config_paths(record):
    """``score_calibration`` and ``normalisation`` of the config, from a record of :func:`score_map_files`."""
    calibration = {
        stage: record[f"{stage}_calibration"]["file"]
        for stage in ("stage1", "stage2") if f"{stage}_calibration" in record
    }
    normalisation = record.get("normalisation", {}).get("file")
    return {"score_calibration": calibration or None, "normalisation": normalisation}


def _metric(values, digits=3):
    if values is None or values[0] is None:
        return "n/a"
    mean, low, high = values
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _comparison_lines(name, comparison):
    without, with_, difference = comparison["without"], comparison["with"], comparison["difference"]
    return [
        f"{name}: MAE {_metric(with_['mae'])} with, {_metric(without['mae'])} without "
        f"(difference {_metric(difference['mae'])}); std ratio {_metric(with_['std_ratio'])} with, "
        f"{_metric(without['std_ratio'])} without; KS {_metric(with_['ks'])} with, "
        f"{_metric(without['ks'])} without; tier accuracy {_metric(with_['tier_accuracy'])} with, "
        f"{_metric(without['tier_accuracy'])} without; HIGH recall {_metric(with_['high_recall'])} with, "
        f"{_metric(without['high_recall'])} without"
    ]


def score_maps_summary(metadata):
    """Lines of text saying which score maps a filter applies and their evidence (``info``, the card).

    Parameters
    ----------
    metadata : dict
        The filter's metadata (its ``score_maps`` record, ``metrics``).

    Returns
    -------
    lines : list of str
    """
    record = (metadata or {}).get("score_maps") or {}
    evidence = record.get("evidence") or {}
    stages = [stage for stage in ("stage1", "stage2") if f"{stage}_calibration" in record]
    lines = []
    if stages:
        lines.append(
            f"calibration applied to {' and '.join(stages)} (per-dimension isotonic maps, "
            f"distribution_weight {evidence.get('distribution_weight', 0):g}, fitted out of fold: "
            f"{evidence.get('folds', '?')} folds x seeds {evidence.get('seeds', '?')}); routing uses "
            "the uncalibrated Stage 1 score"
        )
    elif evidence:
        lines.append("calibration not applied: it does not qualify (MAE worse beyond the interval)")
    else:
        lines.append("calibration none")
    if evidence:
        confidence = evidence.get("confidence")
        lines.append(
            f"evidence ({evidence.get('source')}, out of fold, paired {confidence:g} intervals):"
            if confidence is not None else f"evidence ({evidence.get('source')}):"
        )
        for key in ("stage1", "cascade"):
            if key in evidence:
                lines += ["  " + line for line in _comparison_lines(key, evidence[key])]
    normalisation = record.get("normalisation")
    if normalisation is None:
        lines.append("normalisation none (score writes normalised: null)")
        return lines
    traffic = normalisation.get("traffic") or {}
    p10, p50, p90 = normalisation.get("reference_p10_p50_p90") or (np.nan,) * 3
    lines.append(
        f"normalisation 10 x percentile of the {traffic.get('scores', '?')} weighted average among "
        f"{normalisation['n_samples']} articles of {traffic.get('file', '?')} (sha256 "
        f"{str(traffic.get('sha256'))[:16]}…); their 10/50/90th percentiles {p10:.2f} / {p50:.2f} / {p90:.2f}"
    )
    mae = ((metadata or {}).get("metrics") or {}).get("cv_mae_weighted_average")
    if mae is not None and p90 - p10 < mae:
        lines.append(
            f"  the reference scores' 10-90th percentile range ({p90 - p10:.2f}) is below the filter's "
            f"cross-validated MAE ({mae:.2f}): its normalised scale mostly reflects noise"
        )
    return lines
