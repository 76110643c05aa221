"""One line that says what a benchmark ran on, instruction sets included.

int8 kernels are fast only where the CPU has dot-product instructions for
them (VNNI, AMX); without them an int8 model can be slower than fp32, so a
table of int8 timings means little without this line. The flags are read
by :mod:`hybrid_estimators.models.cpu`, the parser ``backend="auto"`` uses.
"""

import json
import os
import platform
from pathlib import Path

from hybrid_estimators.models.cpu import ISA_FLAGS, cpu_kind, cpu_model  # noqa: F401 (re-exported)
from hybrid_estimators.models.cpu import cpu_flags as _cpu_flags


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The :data:`ISA_FLAGS` the CPU reports, or None where /proc/cpuinfo is not readable."""
    return _cpu_flags(cpuinfo)


def describe_machine(auto=None):
    """E.g. ``"x86_64 CPU (AMD EPYC; avx2; no VNNI), kind avx2, 2 cores, 2 torch threads, torch 2.13.0+cpu"``.

    `auto`, a ``(configuration, reason)`` of
    :func:`~hybrid_estimators.models.cpu.choose_stage1_configuration`, adds
    what ``backend="auto"`` chose here and why.
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
    if auto is not None:
        configuration, reason = auto
        line += f"; Stage 1 backend='auto' -> {configuration['backend']} ({reason})"
    return line


def stage1_auto_choice(filter_dir, flags=None):
    """What ``E5Embedder(backend="auto")`` picks here for a filter, and why.

    The configurations the filter's ``probe/metadata.json`` records as
    qualified per CPU kind (``qualified_configurations``; none recorded:
    the reference, torch fp32), among the backends installed here.
    """
    from hybrid_estimators.models import choose_stage1_configuration, installed_backends

    metadata = Path(filter_dir) / "probe" / "metadata.json"
    try:
        qualified = json.loads(metadata.read_text(encoding="utf-8")).get("qualified_configurations")
    except (OSError, ValueError):
        qualified = None
    flags = cpu_flags() if flags is None else flags
    return choose_stage1_configuration(flags, qualified, available_backends=installed_backends())
