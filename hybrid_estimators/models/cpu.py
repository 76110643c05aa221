"""The CPU's instruction sets, and the Stage 1 configuration they make fastest.

int8 and bf16 kernels pay only where the CPU has instructions for them:
int8 dot products (AVX512-VNNI, AVX-VNNI, AMX-INT8) and bf16 ones
(AVX512-BF16, AMX-BF16). ``cpu_flags`` reads them (the one parser of
``/proc/cpuinfo`` in the project), ``cpu_kind`` names the machine's
class, and ``choose_stage1_configuration`` picks, among the
configurations a filter records as qualified (at iso-quality, measured) for
that class, the one expected to be fastest.
"""

import platform
from pathlib import Path

#: /proc/cpuinfo flags that decide which kernels oneDNN, OpenVINO and ONNX
#: Runtime can use, in the order they are printed.
ISA_FLAGS = (
    "avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
)
#: CPU kinds, fastest instructions first; see ``cpu_kind``.
CPU_KINDS = ("amx", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512", "avx2", "generic")
#: The configuration every filter is trained and calibrated with.
REFERENCE_CONFIGURATION = {"backend": "torch", "precision": "fp32"}
#: Stage 1 configurations from the expected fastest to the slowest, per
#: kind, as measured (``python -m benchmarks``, docs/speed.md): with AMX,
#: bf16 tiles beat int8 (OpenVINO bf16 7.61x a plain fp32 encode, int8
#: 6.99x, on a Xeon); with AVX512-BF16 but no AMX, VNNI int8 beats bf16
#: (e5-small at 256 tokens: 13.3 ms against 22.3 ms an article on an AMD
#: EPYC). int8 only where the CPU has int8 dot products, fp32 elsewhere;
#: OpenVINO is ahead of torch at every precision.
STAGE1_PREFERENCES = {
    "amx": ("openvino-bf16", "openvino-int8", "openvino-fp32", "torch"),
    "avx512_bf16": ("openvino-int8", "openvino-bf16", "openvino-fp32", "torch"),
    "avx512_vnni": ("openvino-int8", "openvino-fp32", "torch"),
    "avx_vnni": ("openvino-int8", "openvino-fp32", "torch"),
    "avx512": ("openvino-fp32", "torch"),
    "avx2": ("openvino-fp32", "torch"),
    "generic": ("openvino-fp32", "torch"),
}
#: The numeric precision of each Stage 1 backend's forward pass.
BACKEND_PRECISION = {
    "torch": "fp32",
    "openvino": "default",
    "openvino-fp32": "fp32",
    "openvino-bf16": "bf16",
    "openvino-int8": "int8",
    "onnx": "fp32",
    "onnx-int8": "int8",
}


def parse_cpuinfo(text):
    """The ``ISA_FLAGS`` and the model name in the text of ``/proc/cpuinfo``.

    Parameters
    ----------
    text : str

    Returns
    -------
    flags : list of str or None
        The ``ISA_FLAGS`` reported, in that order; None without a
        ``flags`` line.
    model : str or None

    Examples
    --------
    >>> parse_cpuinfo("model name\\t: AMD EPYC\\nflags\\t\\t: fpu sse2 avx2 avx512_vnni\\n")
    (['avx2', 'avx512_vnni'], 'AMD EPYC')
    """
    flags = model = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and flags is None:
            reported = set(value.split())
            flags = [flag for flag in ISA_FLAGS if flag in reported]
        elif key == "model name" and model is None:
            model = value.strip()
    return flags, model


def _read_cpuinfo(cpuinfo):
    try:
        return Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The ``ISA_FLAGS`` the CPU reports, or None where `cpuinfo` is not readable."""
    return parse_cpuinfo(_read_cpuinfo(cpuinfo))[0]


def cpu_model(cpuinfo="/proc/cpuinfo"):
    """The CPU's model name, else what ``platform`` knows."""
    return parse_cpuinfo(_read_cpuinfo(cpuinfo))[1] or platform.processor() or platform.machine()


def cpu_kind(flags):
    """The class of a CPU for Stage 1's precision: one of ``CPU_KINDS``.

    Parameters
    ----------
    flags : iterable of str or None
        Instruction-set flags as in ``/proc/cpuinfo`` (see ``cpu_flags``);
        None (unknown) is ``"generic"``.

    Returns
    -------
    kind : str

    Examples
    --------
    >>> cpu_kind(["avx2", "avx512f", "avx512_vnni", "avx512_bf16"])
    'avx512_bf16'
    >>> cpu_kind(["avx2"])
    'avx2'
    """
    flags = set(flags or ())
    if flags & {"amx_tile", "amx_int8", "amx_bf16"}:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx_vnni" in flags:
        return "avx_vnni"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "generic"


def choose_stage1_configuration(flags, qualified, *, available_backends=None):
    """The fastest Stage 1 configuration at iso-quality on a CPU with `flags`.

    Only configurations `qualified` records for the CPU's kind (measured at
    iso-quality with the reference, see ``benchmarks/stage1_qualify.py``)
    are candidates, ranked by ``STAGE1_PREFERENCES``; the reference,
    torch in fp32, is the answer when none is recorded or none can run.

    Parameters
    ----------
    flags : iterable of str or None
        The CPU's instruction-set flags (see ``cpu_flags``).
    qualified : dict or None
        ``{cpu_kind: [configuration, ...]}``, a filter's
        ``qualified_configurations``; a configuration is a dict with at
        least ``"backend"`` (one of ``E5Embedder``'s backends).
    available_backends : collection of str or None, default=None
        Backends that can run here (their packages are installed); None:
        all of them.

    Returns
    -------
    configuration : dict
        With ``backend`` and ``precision``.
    reason : str
        Why, in words, for a log line.

    Examples
    --------
    >>> qualified = {"avx512_vnni": [{"backend": "openvino-int8"}, {"backend": "torch"}]}
    >>> choose_stage1_configuration(["avx2", "avx512_vnni"], qualified)[0]
    {'backend': 'openvino-int8', 'precision': 'int8'}
    >>> choose_stage1_configuration(["avx2"], qualified)[0]
    {'backend': 'torch', 'precision': 'fp32'}
    """
    kind = cpu_kind(flags)
    recorded = list((qualified or {}).get(kind) or ())
    if not recorded:
        return dict(REFERENCE_CONFIGURATION), (
            f"CPU kind {kind}: no configuration recorded as qualified for it, so the reference "
            "(torch, fp32)"
        )
    by_backend = {configuration["backend"]: configuration for configuration in recorded}
    unavailable = []
    for backend in STAGE1_PREFERENCES[kind]:
        if backend not in by_backend:
            continue
        if available_backends is not None and backend not in available_backends:
            unavailable.append(backend)
            continue
        chosen = {"backend": backend, "precision": BACKEND_PRECISION[backend]}
        skipped = f"; {', '.join(unavailable)} qualified but not available here" if unavailable else ""
        return chosen, (
            f"CPU kind {kind}: {backend} ({chosen['precision']}) is the fastest of the configurations "
            f"qualified at iso-quality for it ({', '.join(by_backend)}){skipped}"
        )
    return dict(REFERENCE_CONFIGURATION), (
        f"CPU kind {kind}: none of the qualified configurations ({', '.join(by_backend)}) can run here"
        + (f" ({', '.join(unavailable)} not available here)" if unavailable else "")
        + ", so the reference (torch, fp32)"
    )


def choose_stage2_dtype(device_type, flags, qualified, *, cuda_bf16=False):
    """Stage 2's precision on a device, among those `qualified` records for its kind.

    bfloat16 only where the hardware multiplies it natively (a CPU with
    AMX-BF16 or AVX-512-BF16, a CUDA device that supports it) and the filter
    records it as qualified at iso-quality for that kind (a CPU kind of
    ``cpu_kind``, or ``"cuda"``); float32, the reference, otherwise.

    Parameters
    ----------
    device_type : str
        The torch device's type, ``"cpu"`` or ``"cuda"``.
    flags : iterable of str or None
        The CPU's instruction-set flags (see ``cpu_flags``).
    qualified : dict or None
        ``{kind: [{"dtype": ...}, ...]}``, a filter's record for Stage 2.
    cuda_bf16 : bool, default=False
        Whether the CUDA device supports bfloat16.

    Returns
    -------
    dtype : {"bfloat16", "float32"}
    reason : str

    Examples
    --------
    >>> qualified = {"avx512_bf16": [{"dtype": "float32"}, {"dtype": "bfloat16"}]}
    >>> choose_stage2_dtype("cpu", ["avx2", "avx512f", "avx512_bf16"], qualified)[0]
    'bfloat16'
    >>> choose_stage2_dtype("cpu", ["avx2", "amx_tile", "amx_bf16"], qualified)
    ('float32', 'CPU kind amx: bfloat16 is not recorded as qualified for it, so the reference (float32)')
    """
    from ._stage2_precision import auto_dtype

    kind = "cuda" if device_type == "cuda" else cpu_kind(flags)
    where = "cuda" if kind == "cuda" else f"CPU kind {kind}"
    native, why = auto_dtype(device_type, frozenset(flags or ()), cuda_bf16)
    recorded = {configuration.get("dtype") for configuration in (qualified or {}).get(kind) or ()}
    if native != "bfloat16":
        return "float32", f"{why}: float32"
    if "bfloat16" not in recorded:
        return "float32", f"{where}: bfloat16 is not recorded as qualified for it, so the reference (float32)"
    return "bfloat16", f"{where}: {why} and bfloat16 is qualified at iso-quality for it"
