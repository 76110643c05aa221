"""The CPU's instruction sets and the Stage 1 configuration chosen from them, with fake CPUs."""

import pytest

from hybrid_estimators.models.cpu import (
    CPU_KINDS,
    REFERENCE_CONFIGURATION,
    STAGE1_PREFERENCES,
    choose_stage1_configuration,
    cpu_flags,
    cpu_kind,
    cpu_model,
    parse_cpuinfo,
)

AVX2 = ["avx2"]
AVX512_VNNI = ["avx2", "avx512f", "avx512_vnni"]
ZEN4 = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
SAPPHIRE_RAPIDS = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
EVERYTHING = [{"backend": b} for b in ("torch", "openvino-fp32", "openvino-bf16", "openvino-int8")]


def test_cpuinfo_is_parsed_once_per_file(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile avx512_bf16\n"
        "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
    )
    assert cpu_flags(cpuinfo) == ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]
    assert cpu_model(cpuinfo) == "Xeon"
    assert cpu_flags(tmp_path / "missing") is None
    assert parse_cpuinfo("no flags here") == (None, None)


@pytest.mark.parametrize(
    ("flags", "kind"),
    [
        (None, "generic"), ([], "generic"), (AVX2, "avx2"), (["avx2", "avx512f"], "avx512"),
        (["avx2", "avx_vnni"], "avx_vnni"), (AVX512_VNNI, "avx512_vnni"), (ZEN4, "avx512_bf16"),
        (SAPPHIRE_RAPIDS, "amx"), (["amx_tile"], "amx"),
    ],
)
def test_cpu_kind(flags, kind):
    assert cpu_kind(flags) == kind


@pytest.mark.parametrize(
    ("flags", "backend", "precision"),
    [
        (SAPPHIRE_RAPIDS, "openvino-bf16", "bf16"),
        (ZEN4, "openvino-int8", "int8"),  # AVX512-BF16 without AMX: VNNI int8 measured faster than bf16
        (AVX512_VNNI, "openvino-int8", "int8"),  # no bf16 instructions: int8 where VNNI exists
        (AVX2, "openvino-fp32", "fp32"),  # neither: fp32, never int8 or bf16
    ],
)
def test_the_fastest_precision_the_cpu_has_instructions_for(flags, backend, precision):
    qualified = {kind: EVERYTHING for kind in CPU_KINDS}
    configuration, reason = choose_stage1_configuration(flags, qualified)
    assert configuration == {"backend": backend, "precision": precision}
    assert cpu_kind(flags) in reason and backend in reason


def test_only_configurations_qualified_for_that_kind_are_chosen():
    # int8 failed iso-quality on AMX machines: bf16 is not qualified either, so fp32 OpenVINO.
    qualified = {"amx": [{"backend": "torch"}, {"backend": "openvino-fp32"}], "avx2": EVERYTHING}
    assert choose_stage1_configuration(SAPPHIRE_RAPIDS, qualified)[0]["backend"] == "openvino-fp32"
    # What qualified on another kind does not count here.
    configuration, reason = choose_stage1_configuration(AVX512_VNNI, qualified)
    assert configuration == REFERENCE_CONFIGURATION
    assert "no configuration recorded" in reason


@pytest.mark.parametrize("qualified", [None, {}, {"avx2": []}])
def test_nothing_recorded_means_the_reference(qualified):
    configuration, reason = choose_stage1_configuration(AVX2, qualified)
    assert configuration == {"backend": "torch", "precision": "fp32"}
    assert "reference" in reason


def test_a_qualified_backend_that_is_not_installed_is_passed_over():
    qualified = {"avx512_bf16": [{"backend": "openvino-bf16"}, {"backend": "torch"}]}
    configuration, reason = choose_stage1_configuration(ZEN4, qualified, available_backends=["torch"])
    assert configuration["backend"] == "torch"
    assert "openvino-bf16 qualified but not available here" in reason
    configuration, reason = choose_stage1_configuration(
        ZEN4, {"avx512_bf16": [{"backend": "openvino-bf16"}]}, available_backends=["torch"]
    )
    assert configuration == REFERENCE_CONFIGURATION and "not available here" in reason


def test_every_kind_ranks_the_reference_last():
    assert set(STAGE1_PREFERENCES) == set(CPU_KINDS)
    for kind, ranked in STAGE1_PREFERENCES.items():
        assert ranked[-1] == "torch"
        assert ("openvino-int8" in ranked) == (kind in ("amx", "avx512_bf16", "avx512_vnni", "avx_vnni"))
        assert ("openvino-bf16" in ranked) == (kind in ("amx", "avx512_bf16"))
