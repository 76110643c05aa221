"""A smoke run of ``python -m benchmarks`` on a few real articles (numbers are not judged here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.mark.heavy
def test_benchmark_runs_end_to_end_and_writes_its_table(seece, seece_with_tiny_stage2, tmp_path):
    """Every part but the budget one (tested below); the cascade runs the shipped seece filter with a
    tiny Qwen2 Stage 2, as the real one costs minutes here."""
    out, plot = tmp_path / "benchmark.json", tmp_path / "time_per_stage.png"
    command = [
        sys.executable, "-m", "benchmarks", "--n", "20", "--backends", "torch", "--qwen-articles", "0", "--repeats", "1",
        "--parts", "stage1", "multi-filter", "stage2", "cascade", "--filter", str(seece_with_tiny_stage2),
        "--out", str(out), "--plot", str(plot),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    results = json.loads(out.read_text())
    plain, torch_backend, at_budget = results["stage1"]
    assert plain["stage1"] == "SentenceTransformer.encode fp32, 512 tokens"
    assert torch_backend["cosine_min"] > 0.999  # the same model and weights
    assert abs(torch_backend["probe_mae_change"]) < 0.01
    assert abs(torch_backend["routing_auc_change"]) < 0.01
    shipped = yaml.safe_load((ROOT / "filters/seece_energy_tech/v1/config.yaml").read_text())["hybrid_inference"]
    assert at_budget["budget"] == [shipped["max_seq_length"], shipped["embedding_head_tail"]]
    assert at_budget["stage1"].endswith(f"at {shipped['max_seq_length']} tokens, head+tail "
                                        f"{shipped['embedding_head_tail'][0]}+{shipped['embedding_head_tail'][1]}")
    assert abs(at_budget["probe_mae_change"]) < 0.05 and at_budget["routing_auc"] is not None
    assert "iso-quality" in result.stdout and "load average" in result.stdout
    multi = results["multi_filter"]
    assert multi["n_articles"] == 20 and len(multi["filters"]) == 3
    assert multi["ratio_three_to_one"] > 0 and "three sharing its embedder" in result.stdout
    (cascade,) = results["cascade"]
    assert cascade["n_articles"] == 4 and 0 <= cascade["skip_rate"] <= 1
    t1, t2, skip = cascade["stage1_ms"], cascade["stage2_ms"], cascade["skip_rate"]
    assert cascade["ideal_speedup"] == pytest.approx(t2 / (t1 + (1 - skip) * t2))
    assert cascade["speedup"] == pytest.approx(t2 / cascade["hybrid_ms"]) and cascade["hybrid_ms"] > 0
    assert "The seed's table" in result.stdout and "E5Embedder(backend='torch')" in result.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")

    reprinted = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--print", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert reprinted.stdout == result.stdout


def _write_labelled_folder(folder, n_articles):
    """A generated labelled folder in the shared data's format (articles.jsonl + filter.yaml)."""
    from hybrid_estimators.datasets import make_articles

    X, Y = make_articles(n_articles, random_state=0)
    folder.mkdir()
    with (folder / "articles.jsonl").open("w", encoding="utf-8") as lines:
        for article, scores in zip(X.to_dict("records"), Y.to_dict("records")):
            lines.write(json.dumps({**article, "scores": scores}) + "\n")
    dimensions = "\n".join(f"  {name}: 1.0" for name in Y.columns)
    (folder / "filter.yaml").write_text(
        f"name: {folder.name}\ndimensions:\n{dimensions}\ntiers:\n  high: 7.0\n  medium: 4.0\n  low: 0.0\n",
        encoding="utf-8",
    )


@pytest.mark.heavy
def test_stage1_budget_part_has_a_row_per_budget_and_truncation(minilm_path, tmp_path):
    folder = tmp_path / "synthetic"
    _write_labelled_folder(folder, 40)
    out, plot = tmp_path / "budget.json", tmp_path / "token_budget.png"
    command = [
        sys.executable, "-m", "benchmarks", "--parts", "stage1-budget", "--datasets", str(folder),
        "--model", minilm_path, "--budgets", "64", "32", "--seeds", "0", "--repeats", "1", "--bootstrap", "50",
        "--budget-out", str(out), "--budget-plot", str(plot), "--backends", "torch",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    results = json.loads(out.read_text())
    assert results["kind"] == "stage1-budget" and results["prefix"] == ""
    assert len(results["loadavg_start"]) == 3 and len(results["loadavg_end"]) == 3
    data = results["datasets"]["synthetic"]
    assert data["probe"] == "ridge" and data["n_articles"] == 40
    rows = data["rows"]
    assert [(row["budget"], row["truncation"]) for row in rows] == [
        (32, "head"), (32, "head+tail"), (64, "head"), (64, "head+tail")
    ]
    for row in rows:
        assert row["tokens_per_article"] <= row["budget"] and row["ms_per_article"] > 0
        assert row["mae_ci90"][0] <= row["mae"] <= row["mae_ci90"][1]
        assert 0 <= row["auc"] <= 1
        if row["truncation"] == "head+tail":
            assert row["share_cut_by_model"] == 0  # head + tail fit the budget: the model cuts nothing
            assert sum(row["head_tail"]) < row["budget"]
    baseline = rows[2]
    assert baseline["delta_mae"] == 0 and baseline["delta_auc"] == 0 and baseline["speedup"] == 1
    choice = data["iso_quality"]["torch"]
    assert choice["criteria"]["baseline"] == {"budget": 64, "truncation": "head"}
    assert [64, "head"] in choice["qualifying"]

    table = [line for line in result.stdout.splitlines() if line.lstrip()[:3] in ("32 ", "64 ")]
    assert len(table) == 4
    assert "iso-quality (torch" in result.stdout and "load average" in result.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")
    reprinted = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--print", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert reprinted.stdout == result.stdout


def _row(budget, truncation, mae, auc, tokens=None):
    return {
        "budget": budget, "truncation": truncation, "tokens_per_article": tokens or 0.6 * budget,
        "mae": mae, "auc": auc, "ms_per_article": budget / 10, "speedup": 51.2 / budget,
        "head_tail": None if truncation == "head" else [budget // 2 - 4, budget // 2 - 5],
    }


def test_choose_budget_picks_the_smallest_budget_at_iso_quality():
    from benchmarks.budget import choose_budget

    rows = [
        _row(512, "head", 0.800, 0.900),
        _row(512, "head+tail", 0.790, 0.905),
        _row(384, "head", 0.805, 0.899),  # qualifies
        _row(256, "head", 0.807, 0.896),  # MAE +0.9%, AUC -0.004: qualifies
        _row(256, "head+tail", 0.801, 0.901),  # qualifies, same budget, fewer tokens below
        _row(192, "head", 0.809, 0.900),  # MAE +1.1%: fails
        _row(192, "head+tail", 0.800, 0.894),  # AUC -0.006: fails
        _row(128, "head", 0.900, 0.850),  # fails both
    ]
    rows[4]["tokens_per_article"] = rows[3]["tokens_per_article"] - 1
    choice = choose_budget(rows)
    assert choice["criteria"]["baseline"] == {"budget": 512, "truncation": "head"}
    assert choice["max_seq_length"] == 256 and choice["choice"]["truncation"] == "head+tail"
    assert choice["head_tail"] == [124, 123]
    assert choice["any_below_baseline"] is True and choice["certified"] is None
    assert sorted(map(tuple, choice["qualifying"])) == [
        (256, "head"), (256, "head+tail"), (384, "head"), (512, "head"), (512, "head+tail")
    ]
    # The intervals decide whether the choice is certified (MAE: 1% of 0.800 = 0.008).
    rows[4].update(delta_mae_ci90=[-0.02, 0.007], delta_auc_ci90=[-0.004, 0.006])
    assert choose_budget(rows)["certified"] is True
    rows[4].update(delta_mae_ci90=[-0.02, 0.02])
    assert choose_budget(rows)["certified"] is False

    # Nothing below the baseline qualifies: the baseline is kept, and said so.
    worse = [_row(512, "head", 0.8, 0.9), _row(256, "head", 0.9, 0.9), _row(256, "head+tail", 0.8, 0.8)]
    choice = choose_budget(worse)
    assert choice["max_seq_length"] == 512 and choice["any_below_baseline"] is False
    assert choice["qualifying"] == [[512, "head"]]


@pytest.mark.parametrize(
    ("flags", "expected", "says_no_vnni"),
    [
        ("fpu avx avx2 fma", ["avx2"], True),
        ("avx2 avx512f avx512_vnni avx512_bf16 amx_tile", ["avx2", "avx512f", "avx512_vnni", "avx512_bf16",
                                                             "amx_tile"], False),
        ("avx2 avx_vnni", ["avx2", "avx_vnni"], False),
    ],
)
def test_the_machine_line_names_the_instruction_sets_int8_needs(tmp_path, monkeypatch, flags, expected, says_no_vnni):
    from benchmarks import _machine

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
    assert _machine.cpu_flags(cpuinfo) == expected
    assert _machine.cpu_model(cpuinfo) == "Some CPU"
    assert _machine.cpu_flags(tmp_path / "missing") is None
    monkeypatch.setattr(_machine, "cpu_flags", lambda: expected)
    assert ("no VNNI" in _machine.describe_machine()) == says_no_vnni


def test_the_machine_line_says_what_auto_chose_and_why(tmp_path, monkeypatch):
    """The benchmark's machine line runs the loader's own resolver on the filter's records."""
    import json

    from benchmarks import _machine
    from hybrid_estimators.filters import FilterSpec

    spec = FilterSpec.from_dict({"name": "q", "version": "v1", "dimensions": {"a": 1.0},
                                 "hybrid_inference": {"stage2": None}})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(spec.to_dict()))
    (tmp_path / "probe").mkdir()
    record = {"probe_sha256": "p" * 64, "budget": {"max_seq_length": 512, "head_tail": None},
              "by_kind": {"avx512_vnni": [{"backend": "torch"}, {"backend": "openvino-fp32"}]}}
    (tmp_path / "probe" / "metadata.json").write_text(json.dumps(
        {"probe_sha256": "p" * 64, "qualified_configurations": {"stage1": record}}))
    monkeypatch.setattr(_machine, "cpu_flags", lambda: ["avx2", "avx512f", "avx512_vnni"])
    monkeypatch.setattr("hybrid_estimators.filters._runtime.installed_backends", lambda: ["torch", "openvino-fp32"])

    line = _machine.describe_machine(_machine.runtime_choice(tmp_path))
    assert "kind avx512_vnni" in line
    assert "backend='auto' -> openvino-fp32" in line and "qualified" in line
    # An AVX2 CPU gets the reference, and says why.
    avx2 = _machine.runtime_choice(tmp_path, ["avx2"])["stage1"]
    assert avx2["backend"] == "torch" and "no configuration recorded" in avx2["reason"]


def test_the_cascade_speedups_compare_auto_with_the_filter_before():
    """`--before-filter` adds the row the targets are ratios against, measured in the same run."""
    from benchmarks.run import cascade_ratios

    def row(label, t1, t2, hybrid, mae):
        return {"label": label, "stage1_ms": t1, "stage2_ms": t2, "hybrid_ms": hybrid, "hybrid_mae": mae}

    rows = [row("before", 40.0, 6000.0, 4000.0, 0.75), row("auto/auto", 20.0, 1200.0, 800.0, 0.76)]
    ratios = cascade_ratios(rows)
    assert ratios["stage2"] == pytest.approx(5.0) and ratios["cascade"] == pytest.approx(5.0)
    assert ratios["stage1"] == pytest.approx(2.0) and ratios["hybrid_mae_change"] == pytest.approx(0.01)
    assert cascade_ratios(rows[1:]) is None  # nothing to compare with
