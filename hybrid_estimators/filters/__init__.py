"""Filters are data: a YAML config plus a skops probe, loaded safely.

A filter folder ``filters/{name}/{version}/`` holds::

    config.yaml                  dimensions, tiers, prefilter, hybrid_inference
    probe/embedding_probe.skops  the Stage 1 probe (StandardScaler + MLP or ridge)
    probe/metadata.json          provenance, cross-validated metrics, calibration,
                                 evaluation (one schema: :data:`METRIC_KEYS`, ...)
    README.md                    model card (Markdown, written from the metadata)
    model/                       Stage 2 LoRA adapter (optional)

:func:`load_filter` returns a ready :class:`Filter`; nothing it reads can
run code or exhaust the machine: every path a config names stays inside the
folder, only regular files of bounded size are read, the YAML may hold no
anchors or aliases, the probe archive's uncompressed size is bounded before
skops reads it, its types are checked against an explicit allow-list and
its sha256 against the metadata. :func:`save_filter` writes all of it from
a fitted router, Stage 2 adapter included.

The package's modules, one job each: :mod:`~hybrid_estimators.filters.spec`
(the config), :mod:`~hybrid_estimators.filters._safe_io` (bounded reads),
:mod:`~hybrid_estimators.filters.metadata` (the metadata schema and quality
verdicts), :mod:`~hybrid_estimators.filters.card` (the model card),
:mod:`~hybrid_estimators.filters.save` and
:mod:`~hybrid_estimators.filters.load`.
"""

from ._safe_io import (
    ADAPTER_FOLDER,
    ALLOWED_PROBE_TYPES,
    CARD_FILE,
    CONFIG_FILE,
    MAX_ARCHIVE_MEMBERS,
    MAX_COMPRESSION_RATIO,
    MAX_CONFIG_BYTES,
    MAX_DIMENSIONS,
    MAX_METADATA_BYTES,
    MAX_NAME_LENGTH,
    MAX_PROBE_BYTES,
    MAX_PROBE_UNCOMPRESSED_BYTES,
    MAX_TEXT_LENGTH,
    METADATA_FILE,
    METADATA_SCHEMA_VERSION,
    PROBE_FILE,
    FilterError,
    _load_yaml,
    check_probe_archive,
    probe_types,
    read_regular_file,
    resolve_in_folder,
)
from ._stages import embedding_budget, embedding_head_tail, stage1_article_text, stage1_pipeline
from .card import model_card
from .load import Filter, check_adapter_folder, evaluation_staleness, load_filter, load_probe
from .metadata import (
    CALIBRATION_KEYS,
    EVALUATION_SPLIT_KEYS,
    METRIC_KEYS,
    PROBE_KINDS,
    SPLIT_KINDS,
    calibration_record,
    check_calibration,
    check_evaluation,
    check_metrics,
    data_hash,
    evaluation_summary,
    filter_metadata,
    QualityVerdict,
    probe_beats_mean,
    quality_verdicts,
    read_metadata,
    report_summary,
    stage2_doubts,
)
from .save import (
    _write_config,
    portable_base_name,
    record_calibration,
    record_evaluation,
    record_qualified_configurations,
    record_score_maps,
    save_filter,
)
from ._runtime import runtime_configuration
from .score_maps import MAX_SCORE_MAP_BYTES, SCORE_MAP_PATHS, read_score_maps, score_map_hashes
from .spec import FilterSpec, _stage2_section

__all__ = [
    "ADAPTER_FOLDER",
    "ALLOWED_PROBE_TYPES",
    "CALIBRATION_KEYS",
    "CARD_FILE",
    "CONFIG_FILE",
    "EVALUATION_SPLIT_KEYS",
    "MAX_ARCHIVE_MEMBERS",
    "MAX_COMPRESSION_RATIO",
    "MAX_CONFIG_BYTES",
    "MAX_DIMENSIONS",
    "MAX_METADATA_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_PROBE_BYTES",
    "MAX_PROBE_UNCOMPRESSED_BYTES",
    "MAX_TEXT_LENGTH",
    "METADATA_FILE",
    "METADATA_SCHEMA_VERSION",
    "METRIC_KEYS",
    "PROBE_FILE",
    "PROBE_KINDS",
    "QualityVerdict",
    "SPLIT_KINDS",
    "Filter",
    "FilterError",
    "FilterSpec",
    "calibration_record",
    "check_adapter_folder",
    "check_calibration",
    "check_evaluation",
    "check_metrics",
    "check_probe_archive",
    "data_hash",
    "embedding_budget",
    "embedding_head_tail",
    "evaluation_staleness",
    "evaluation_summary",
    "filter_metadata",
    "load_filter",
    "load_probe",
    "model_card",
    "portable_base_name",
    "probe_beats_mean",
    "probe_types",
    "quality_verdicts",
    "read_metadata",
    "read_regular_file",
    "record_calibration",
    "record_evaluation",
    "record_qualified_configurations",
    "runtime_configuration",
    "record_score_maps",
    "read_score_maps",
    "score_map_hashes",
    "MAX_SCORE_MAP_BYTES",
    "SCORE_MAP_PATHS",
    "report_summary",
    "resolve_in_folder",
    "save_filter",
    "stage1_article_text",
    "stage1_pipeline",
    "stage2_doubts",
]
