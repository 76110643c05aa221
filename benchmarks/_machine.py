"""One line that says what a benchmark ran on, instruction sets included.

int8 kernels are fast only where the CPU has dot-product instructions for
them (VNNI, AMX); without them an int8 model can be slower than fp32, so a
table of int8 timings means little without this line.
"""

import os
import platform
from pathlib import Path

#: /proc/cpuinfo flags that decide which kernels oneDNN, OpenVINO and
#: ONNX Runtime can use, in the order they are printed.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")


def cpu_flags(cpuinfo=Path("/proc/cpuinfo")):
    """The :data:`ISA_FLAGS` the CPU reports, or None where /proc/cpuinfo is not readable."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            reported = set(line.partition(":")[2].split())
            return [flag for flag in ISA_FLAGS if flag in reported]
    return None


def cpu_model(cpuinfo=Path("/proc/cpuinfo")):
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def describe_machine():
    """E.g. ``"x86_64 CPU (AMD EPYC; avx2; no VNNI), 2 cores, 2 torch threads, torch 2.13.0+cpu"``."""
    import torch

    flags = cpu_flags()
    if flags is None:
        isa = "instruction sets unknown"
    else:
        has_vnni = any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_tile"))
        isa = " ".join(flags) + ("" if has_vnni else "; no VNNI: int8 is not expected to be faster")
    return (
        f"{platform.machine()} CPU ({cpu_model()}; {isa}), {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
