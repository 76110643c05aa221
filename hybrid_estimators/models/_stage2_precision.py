"""Stage 2's precision chosen from the machine: ``QwenRegressor(dtype="auto")``.

bfloat16 where the hardware computes it (a CUDA device that supports it, a
CPU with AMX-BF16 or AVX-512-BF16), float32 elsewhere: on a CPU without
those instructions bfloat16 matmuls are emulated and slower than float32.
"""

import logging

logger = logging.getLogger("hybrid_estimators.qwen")

#: CPU flags (as /proc/cpuinfo names them) of native bfloat16 matmuls.
CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})

_choices_logged = set()


def auto_dtype(device_type, cpu_flags=frozenset(), cuda_bf16=False):
    """The dtype ``"auto"`` picks on a device, and why.

    Parameters
    ----------
    device_type : str
        The torch device's type: ``"cpu"``, ``"cuda"``, ``"mps"``...
    cpu_flags : set of str
        The CPU's instruction-set flags, as /proc/cpuinfo lists them.
    cuda_bf16 : bool
        Whether the CUDA device supports bfloat16.

    Returns
    -------
    dtype : {"bfloat16", "float32"}
    reason : str

    Examples
    --------
    >>> auto_dtype("cpu", {"avx2", "amx_bf16"})[0], auto_dtype("cpu", {"avx2", "fma"})[0]
    ('bfloat16', 'float32')
    >>> auto_dtype("cuda", cuda_bf16=True)
    ('bfloat16', 'the CUDA device supports bfloat16')
    """
    if device_type == "cuda":
        if cuda_bf16:
            return "bfloat16", "the CUDA device supports bfloat16"
        return "float32", "the CUDA device does not support bfloat16"
    if device_type == "cpu":
        native = sorted(CPU_BF16_FLAGS & set(cpu_flags))
        if native:
            return "bfloat16", f"the CPU has {'/'.join(native)}"
        return "float32", "the CPU has neither AMX-BF16 nor AVX-512-BF16"
    return "float32", f"no bfloat16 rule for {device_type!r} devices"


def machine_cpu_flags():
    """This CPU's instruction-set flags (``models.cpu.cpu_flags``, the package's one reader), as a set."""
    from .cpu import cpu_flags

    return frozenset(cpu_flags() or ())


def log_choice_once(dtype, reason, device_type):
    """Log the precision ``"auto"`` chose, once per choice and process."""
    if (dtype, reason, device_type) not in _choices_logged:
        _choices_logged.add((dtype, reason, device_type))
        logger.info('Stage 2 dtype="auto": %s on %s (%s)', dtype, device_type, reason)
