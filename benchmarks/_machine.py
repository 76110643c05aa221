"""One line that says what a benchmark ran on, instruction sets included.

int8 kernels are fast only where the CPU has dot-product instructions for
them (VNNI, AMX); without them an int8 model can be slower than fp32, so a
table of int8 timings means little without this line. The flags are read
by :mod:`hybrid_estimators.models.cpu`, the parser ``backend="auto"`` uses.
"""

import os
import platform
from pathlib import Path

from hybrid_estimators.models.cpu import ISA_FLAGS, cpu_kind, cpu_model  # noqa: F401 (re-exported)
from hybrid_estimators.models.cpu import cpu_flags as _cpu_flags


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The :data:`ISA_FLAGS` the CPU reports, or None where /proc/cpuinfo is not readable."""
    return _cpu_flags(cpuinfo)


def describe_machine(runtime=None):
    """E.g. ``"x86_64 CPU (AMD EPYC; avx2; no VNNI), kind avx2, 2 cores, 2 torch threads, torch 2.13.0+cpu"``.

    `runtime`, a :func:`runtime_choice`, adds what ``backend="auto"`` and
    ``dtype="auto"`` chose here for a filter, and why.
    """
    import torch

    flags = cpu_flags()
    if flags is None:
        isa = "instruction sets unknown"
    else:
        has_vnni = any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_tile"))
        isa = " ".join(flags) + ("" if has_vnni else "; no VNNI: int8 is not expected to be faster")
    line = (
        f"{platform.machine()} CPU ({cpu_model()}; {isa}), kind {cpu_kind(flags)}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    if runtime is not None:
        stage1, stage2 = runtime["stage1"], runtime["stage2"]
        line += f"; backend='auto' -> {stage1['backend']} ({stage1['reason']})"
        if stage2 is not None:
            line += f"; dtype='auto' -> {stage2['dtype']} ({stage2['reason']})"
    return line


def runtime_choice(filter_dir, flags=None):
    """What ``load_filter(filter_dir)`` runs here (``backend="auto"``, ``dtype="auto"``), and why.

    :func:`hybrid_estimators.filters.runtime_configuration`, the loader's
    own resolver, on the filter's records of qualified configurations (per
    CPU kind); `flags` stand for this CPU's.
    """
    from hybrid_estimators.filters import FilterSpec, check_adapter_folder, read_metadata
    from hybrid_estimators.filters._runtime import stage1_backend, stage2_dtype

    flags = cpu_flags() if flags is None else flags
    spec = FilterSpec.from_yaml(Path(filter_dir) / "config.yaml")
    metadata = read_metadata(filter_dir)
    backend, reason = stage1_backend(spec, metadata, flags=flags)
    runtime = {"stage1": {"backend": backend, "reason": reason}, "stage2": None}
    if spec.hybrid_inference["stage2"] is not None:
        dtype, why = stage2_dtype(metadata, check_adapter_folder(filter_dir, spec), flags=flags)
        runtime["stage2"] = {"dtype": dtype, "reason": why}
    return runtime
