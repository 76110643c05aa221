"""backend="auto" / dtype="auto": only configurations a filter records as qualified, per machine kind.

The choice is tested with fake CPU flags (as ``describe_machine`` is), and
once end to end: a filter saved with MiniLM, its record written by
``record_qualified_configurations`` for this machine's kind, loaded.
"""

import json
import logging
import shutil

import pytest
from sklearn.pipeline import make_pipeline

from hybrid_estimators import ArticleText, E5Embedder, FilterSpec, HybridRouterRegressor, make_articles
from hybrid_estimators import make_ridge_probe, save_filter
from hybrid_estimators.filters import FilterError, load_filter, read_metadata, record_qualified_configurations
from hybrid_estimators.filters._runtime import stage1_backend, stage2_dtype
from hybrid_estimators.models import choose_stage2_dtype, cpu_flags, cpu_kind

AVX2 = ["avx2", "fma"]
AVX512_BF16 = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
AMX = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
BUDGET = {"max_seq_length": 128, "head_tail": [60, 59]}


def _spec(stage2=None):
    return FilterSpec.from_dict({
        "name": "q", "version": "v1", "dimensions": {"a": 1.0},
        "hybrid_inference": {"max_seq_length": 128, "embedding_head_tail": [60, 59], "stage2": stage2},
    })


def _metadata(by_kind, **changes):
    record = {"probe_sha256": "p" * 64, "budget": BUDGET, "by_kind": by_kind, "measured_by": "test"}
    return {"probe_sha256": "p" * 64, "qualified_configurations": {"stage1": {**record, **changes}}}


QUALIFIED = {"avx512_bf16": [{"backend": "openvino-fp32"}, {"backend": "openvino-bf16"},
                             {"backend": "openvino-int8"}]}


@pytest.mark.parametrize("flags, calibration, expected", [
    (AVX512_BF16, None, "openvino-bf16"),  # int8 would be faster here, but needs calibration articles
    (AVX512_BF16, [{"title": "t", "content": "c"}], "openvino-int8"),  # VNNI int8 beats bf16 without AMX
    (AVX2, None, "torch"),  # nothing recorded for the kind: the reference
    (AMX, None, "torch"),  # measured on avx512_bf16 only: AMX is another kind
])
def test_auto_picks_stage1_only_among_what_the_filter_qualified_for_the_kind(flags, calibration, expected):
    backend, reason = stage1_backend(_spec(), _metadata(QUALIFIED), "auto", calibration=calibration, flags=flags)
    assert backend == expected
    assert cpu_kind(flags) in reason


def test_auto_needs_calibration_articles_for_a_calibrated_backend():
    only_int8 = {"avx512_vnni": [{"backend": "openvino-int8"}, {"backend": "openvino-fp32"}]}
    vnni = ["avx2", "avx512f", "avx512_vnni"]
    assert stage1_backend(_spec(), _metadata(only_int8), flags=vnni)[0] == "openvino-fp32"
    assert stage1_backend(_spec(), _metadata(only_int8), flags=vnni, calibration=[{"title": "t"}])[0] \
        == "openvino-int8"


@pytest.mark.parametrize("changes, why", [
    ({"probe_sha256": "x" * 64}, "another probe"),
    ({"budget": {"max_seq_length": 256, "head_tail": [124, 123]}}, "another token budget"),
])
def test_a_record_of_another_probe_or_budget_is_not_used(changes, why):
    backend, reason = stage1_backend(_spec(), _metadata(QUALIFIED, **changes), flags=AVX512_BF16)
    assert backend == "torch" and why in reason


def test_explicit_choices_are_kept():
    assert stage1_backend(_spec(), {}, "openvino-int8", flags=AVX2) == ("openvino-int8", "chosen explicitly")
    assert stage2_dtype({}, None, "bfloat16", flags=AVX2) == ("bfloat16", "chosen explicitly")


@pytest.mark.parametrize("by_kind", [
    ["openvino-bf16"], {"avx512_bf16": "openvino-bf16"}, {"avx512_bf16": [{"precision": "bf16"}]},
])
def test_a_malformed_record_is_refused_naming_the_field(by_kind):
    with pytest.raises(FilterError, match="qualified_configurations.stage1"):
        stage1_backend(_spec(), _metadata(by_kind), flags=AVX512_BF16)


@pytest.mark.parametrize("records", ["openvino-bf16", ["stage1"]])
def test_a_record_that_is_no_mapping_is_refused(records):
    with pytest.raises(FilterError, match="qualified_configurations: expected a mapping"):
        stage1_backend(_spec(), {"qualified_configurations": records}, flags=AVX512_BF16)


def test_an_edited_budget_that_is_not_a_budget_does_not_match():
    backend, reason = stage1_backend(_spec(), _metadata(QUALIFIED, budget={"max_seq_length": 128, "head_tail": "x"}),
                                     flags=AVX512_BF16)
    assert backend == "torch" and "another token budget" in reason


@pytest.mark.parametrize("device_type, flags, cuda_bf16, expected", [
    ("cpu", AVX512_BF16, False, "bfloat16"),
    ("cpu", AVX2, False, "float32"),  # recorded, but emulated here: slower
    ("cpu", AMX, False, "float32"),  # not measured on this kind
    ("cuda", [], True, "float32"),  # not measured on a GPU
])
def test_stage2_dtype_only_where_native_and_qualified(device_type, flags, cuda_bf16, expected):
    qualified = {"avx512_bf16": [{"dtype": "float32"}, {"dtype": "bfloat16"}], "avx2": [{"dtype": "bfloat16"}]}
    assert choose_stage2_dtype(device_type, flags, qualified, cuda_bf16=cuda_bf16)[0] == expected


def test_stage2_record_of_another_adapter_is_not_used(tmp_path):
    adapter = tmp_path / "model"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    metadata = {"qualified_configurations": {"stage2": {
        "adapter_sha256": "0" * 64, "by_kind": {"avx512_bf16": [{"dtype": "bfloat16"}]}}}}
    dtype, reason = stage2_dtype(metadata, adapter, flags=AVX512_BF16)
    assert dtype == "float32" and "another adapter" in reason


@pytest.fixture(scope="module")
def minilm_filter(minilm_path, tmp_path_factory):
    X, Y = make_articles(20, random_state=0)
    spec = FilterSpec.from_dict({"name": "demo", "version": "v1", "dimensions": dict.fromkeys(Y.columns, 1.0),
                                 "hybrid_inference": {"stage2": None, "embedding_model": minilm_path,
                                                      "embedding_prefix": ""}})
    stage1 = make_pipeline(ArticleText(), E5Embedder(minilm_path, prefix="", show_progress_bar=False),
                           make_ridge_probe())
    router = HybridRouterRegressor(stage1, None, spec.weights, threshold=4.5).fit(X, Y)
    return save_filter(router, tmp_path_factory.mktemp("runtime") / "demo" / "v1", spec, training_data=(X, Y))


def test_load_filter_runs_the_recorded_configuration_and_says_why(minilm_filter, tmp_path, caplog):
    pytest.importorskip("optimum.intel")
    folder = tmp_path / "demo"
    shutil.copytree(minilm_filter, folder)
    kind = cpu_kind(cpu_flags())
    record_qualified_configurations(folder, "stage1", {kind: [{"backend": "openvino-fp32"}]}, measured_by="test")
    recorded = read_metadata(folder)["qualified_configurations"]["stage1"]
    assert recorded["probe_sha256"] == read_metadata(folder)["probe_sha256"]
    assert "openvino-fp32" in (folder / "README.md").read_text()
    with caplog.at_level(logging.INFO, logger="hybrid_estimators"):
        loaded = load_filter(folder)
    assert loaded.stage1.estimator.named_steps["e5embedder"].backend == "openvino-fp32"
    assert f"CPU kind {kind}: openvino-fp32" in caplog.text
    assert load_filter(folder, backend="torch").stage1.estimator.named_steps["e5embedder"].backend == "torch"
    # another kind added later keeps this one; a new probe drops the record
    record_qualified_configurations(folder, "stage1", {"other": [{"backend": "torch"}]}, measured_by="test")
    assert set(read_metadata(folder)["qualified_configurations"]["stage1"]["by_kind"]) == {kind, "other"}
    # `info` says the same without loading a model
    from hybrid_estimators.cli import filter_info
    from hybrid_estimators.cli.info import _runtime_line

    info = filter_info(folder)
    assert info["runtime"]["stage1"]["backend"] == "openvino-fp32"
    assert info["qualified_kinds"] == {"stage1": sorted([kind, "other"])}
    assert _runtime_line(info).startswith(f"runtime     auto on this CPU (kind {kind}): Stage 1 openvino-fp32")


def test_an_edited_record_naming_no_backend_is_refused_at_load(minilm_filter, tmp_path):
    folder = tmp_path / "demo"
    shutil.copytree(minilm_filter, folder)
    metadata_path = folder / "probe" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["qualified_configurations"] = {"stage1": {"by_kind": {"avx2": [{"speed": "fast"}]}}}
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(FilterError, match="qualified_configurations.stage1.by_kind.avx2"):
        load_filter(folder)


def test_a_config_of_an_earlier_version_with_qualified_dtypes_loads_and_says_it_is_not_read(caplog):
    """Earlier filters listed Stage 2 precisions in config.yaml, for every machine at once."""
    spec = _spec({"base_model": "Qwen/Qwen2.5-1.5B", "qualified_dtypes": ["float32", "bfloat16"]})
    assert "qualified_dtypes" not in spec.hybrid_inference["stage2"]
    assert "qualified_dtypes is no longer read" in caplog.text
