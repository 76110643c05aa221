"""The runtime a filter's stages run with: ``backend="auto"`` and ``dtype="auto"`` resolved.

A filter's metadata records, per stage and CPU kind, the configurations
measured at iso-quality with the reference (torch, float32) on its own
labelled articles (``qualified_configurations``, written by
:func:`~hybrid_estimators.filters.record_qualified_configurations`):

.. code-block:: json

    {"stage1": {"probe_sha256": "...", "budget": {"max_seq_length": 256, "head_tail": [124, 123]},
                "by_kind": {"avx512_bf16": [{"backend": "openvino-bf16", ...}, ...]},
                "measured_by": "..."},
     "stage2": {"adapter_sha256": "...", "by_kind": {"avx512_bf16": [{"dtype": "bfloat16", ...}]},
                "measured_by": "..."}}

``auto`` picks the fastest recorded configuration for the machine it runs
on, and the reference where nothing is recorded for its kind, or the record
was measured with another probe, adapter or token budget.
"""

import logging

from .._io import adapter_fingerprint
from ..models import (
    CALIBRATED_BACKENDS,
    choose_stage1_configuration,
    choose_stage2_dtype,
    cpu_flags,
    cpu_kind,
    installed_backends,
    resolve_device,
)
from ._safe_io import FilterError
from ._stages import embedding_budget

logger = logging.getLogger("hybrid_estimators.filters")

#: Stage 2 precisions a filter's record or ``load_filter(dtype=...)`` may name.
STAGE2_DTYPES = ("float32", "bfloat16")
_LOGGED = set()  # (filter, choice) pairs already logged by this process


def qualified_record(metadata, stage):
    """The metadata's ``qualified_configurations[stage]``, checked: a dict, or None if absent."""
    records = metadata.get("qualified_configurations") or {}
    if not isinstance(records, dict):
        raise FilterError("metadata qualified_configurations: expected a mapping of stage -> record.")
    record = records.get(stage)
    if record is None:
        return None
    where = f"metadata qualified_configurations.{stage}"
    by_kind = record.get("by_kind") if isinstance(record, dict) else None
    if not isinstance(by_kind, dict) or not all(
        isinstance(configurations, list) and all(isinstance(c, dict) for c in configurations)
        for configurations in by_kind.values()
    ):
        raise FilterError(f"{where}: expected {{'by_kind': {{cpu_kind: [configuration, ...]}}, ...}}.")
    key = "backend" if stage == "stage1" else "dtype"
    for kind, configurations in by_kind.items():
        for configuration in configurations:
            if not isinstance(configuration.get(key), str):
                raise FilterError(f"{where}.by_kind.{kind}: every configuration names its {key}.")
    return record


def _stage1_candidates(spec, metadata):
    """(``{kind: [configuration]}`` or None, why the record is not used or None)."""
    record = qualified_record(metadata, "stage1")
    if record is None:
        return None, "the filter records no qualified Stage 1 configuration"
    if record.get("probe_sha256") != metadata.get("probe_sha256"):
        return None, "its qualified Stage 1 configurations were measured with another probe"
    budget = embedding_budget(spec)
    recorded = record.get("budget") or {}
    if (recorded.get("max_seq_length"), _as_list(recorded.get("head_tail"))) != (
        budget["max_seq_length"], _as_list(budget["head_tail"])
    ):
        return None, "its qualified Stage 1 configurations were measured at another token budget"
    return record["by_kind"], None


def _stage2_candidates(metadata, adapter):
    record = qualified_record(metadata, "stage2")
    if record is None:
        return None, "the filter records no qualified Stage 2 precision"
    if adapter is None or record.get("adapter_sha256") != adapter_fingerprint(adapter):
        return None, "its qualified Stage 2 precisions were measured with another adapter"
    return record["by_kind"], None


def _as_list(value):
    """A budget's head and tail as a list of ints to compare; anything else as it is (it will not match)."""
    try:
        return None if value is None else [int(v) for v in value]
    except (TypeError, ValueError):
        return value


def stage1_backend(spec, metadata, backend="auto", *, device=None, calibration=None, flags=None):
    """Stage 1's backend for ``load_filter(backend=...)``, and why.

    Parameters
    ----------
    spec : FilterSpec
    metadata : dict
    backend : str, default="auto"
        An explicit backend is returned as it is.
    device : str or None, default=None
    calibration : object or None, default=None
        Articles to quantise a calibrated backend on; without them ``auto``
        does not consider one.
    flags : iterable of str or None, default=None
        The CPU's flags (None: this machine's).

    Returns
    -------
    backend : str
    reason : str
    """
    if backend != "auto":
        return backend, "chosen explicitly"
    device = resolve_device(device)
    if device != "cpu":
        return "torch", f"device {device}: torch runs on it"
    qualified, unused = _stage1_candidates(spec, metadata)
    if unused:
        return "torch", f"{unused}, so the reference (torch, fp32)"
    available = set(installed_backends())
    if calibration is None:  # a calibrated backend is quantised on articles like those it scores
        available -= set(CALIBRATED_BACKENDS)
    configuration, reason = choose_stage1_configuration(
        cpu_flags() if flags is None else flags, qualified, available_backends=available
    )
    return configuration["backend"], reason


def stage2_dtype(metadata, adapter, dtype="auto", *, device=None, flags=None):
    """Stage 2's precision for ``load_filter(dtype=...)``, and why.

    Parameters
    ----------
    metadata : dict
    adapter : Path or None
        The filter's adapter folder (its fingerprint must match the record's).
    dtype : {"auto", "float32", "bfloat16"}, default="auto"
    device : str or None, default=None
    flags : iterable of str or None, default=None
        The CPU's flags (None: this machine's).

    Returns
    -------
    dtype : str
    reason : str
    """
    if dtype != "auto":
        return dtype, "chosen explicitly"
    device = resolve_device(device)
    device_type = device.split(":")[0]
    if device_type not in ("cpu", "cuda"):
        return "float32", f"device {device}: float32"
    qualified, unused = _stage2_candidates(metadata, adapter)
    if unused:
        return "float32", f"{unused}, so the reference (float32)"
    cuda_bf16 = False
    if device_type == "cuda":
        import torch

        cuda_bf16 = torch.cuda.is_bf16_supported()
    return choose_stage2_dtype(device_type, cpu_flags() if flags is None else flags, qualified, cuda_bf16=cuda_bf16)


def runtime_configuration(spec, metadata, adapter, *, backend="auto", dtype="auto", device=None,
                          calibration=None, stage1_only=False):
    """Both stages' configuration on this machine, as ``load_filter`` runs them.

    The one resolver of ``backend="auto"`` and ``dtype="auto"``: the
    loader, ``score``'s sidecar and the benchmark's machine line all call
    it. The choice is logged once per filter and process.

    Parameters
    ----------
    spec : FilterSpec
    metadata : dict
        The filter's ``probe/metadata.json`` (its ``qualified_configurations``).
    adapter : Path or None
        The filter's Stage 2 adapter folder (see
        :func:`~hybrid_estimators.filters.check_adapter_folder`).
    backend : str, default="auto"
        Stage 1's backend; an explicit one is kept.
    dtype : {"auto", "float32", "bfloat16"}, default="auto"
        Stage 2's precision; an explicit one is kept.
    device : str or None, default=None
        Torch device (None: CUDA when available, else the CPU).
    calibration : object or None, default=None
        Articles a calibrated backend would be quantised on; without them
        ``auto`` passes over ``openvino-int8``.
    stage1_only : bool, default=False
        No Stage 2 is resolved.

    Returns
    -------
    runtime : dict
        ``{"cpu_kind", "stage1": {"backend", "reason"}, "stage2": {"dtype",
        "reason"} or None}``.

    See Also
    --------
    hybrid_estimators.filters.record_qualified_configurations : Writes what it reads.
    hybrid_estimators.models.choose_stage1_configuration : Stage 1's choice among them.
    hybrid_estimators.models.choose_stage2_dtype : Stage 2's.

    Examples
    --------
    A filter that records nothing runs the reference, and says why:

    >>> from hybrid_estimators.filters import FilterSpec
    >>> spec = FilterSpec.from_dict({"name": "demo", "version": "v1", "dimensions": {"a": 1.0},
    ...                              "hybrid_inference": {"stage2": None}})
    >>> runtime = runtime_configuration(spec, {}, None, device="cpu")
    >>> runtime["stage1"]["backend"], runtime["stage1"]["reason"]
    ('torch', 'the filter records no qualified Stage 1 configuration, so the reference (torch, fp32)')
    >>> runtime["stage2"] is None
    True
    """
    flags = cpu_flags()
    chosen_backend, backend_reason = stage1_backend(
        spec, metadata, backend, device=device, calibration=calibration, flags=flags
    )
    has_stage2 = spec.hybrid_inference["stage2"] is not None and not stage1_only
    configuration = {
        "cpu_kind": cpu_kind(flags),
        "stage1": {"backend": chosen_backend, "reason": backend_reason},
        "stage2": None,
    }
    if has_stage2:
        chosen_dtype, dtype_reason = stage2_dtype(metadata, adapter, dtype, device=device, flags=flags)
        configuration["stage2"] = {"dtype": chosen_dtype, "reason": dtype_reason}
    _log_once(spec.qualified_name, configuration)
    return configuration


def _log_once(name, configuration):
    stage2 = configuration["stage2"]
    line = (
        f"filter {name}: Stage 1 {configuration['stage1']['backend']} "
        f"({configuration['stage1']['reason']})"
        + ("" if stage2 is None else f"; Stage 2 {stage2['dtype']} ({stage2['reason']})")
    )
    if (name, line) not in _LOGGED:
        _LOGGED.add((name, line))
        logger.info("%s", line)
