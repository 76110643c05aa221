"""A smoke run of ``python -m benchmarks`` on a few real articles (numbers are not judged here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_benchmark_runs_end_to_end_and_writes_its_table(seece, tmp_path):
    out, plot = tmp_path / "benchmark.json", tmp_path / "time_per_stage.png"
    command = [
        sys.executable, "-m", "benchmarks", "--n", "12", "--backends", "torch", "--qwen-articles", "0", "--repeats", "1",
        "--out", str(out), "--plot", str(plot),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    results = json.loads(out.read_text())
    plain, torch_backend = results["stage1"]
    assert plain["stage1"] == "SentenceTransformer.encode fp32"
    assert torch_backend["cosine_min"] > 0.999  # the same model and weights
    assert abs(torch_backend["probe_mae_change"]) < 0.01
    (cascade,) = results["cascade"]
    assert cascade["n_articles"] == 3 and 0 <= cascade["skip_rate"] <= 1
    assert cascade["ideal_speedup"] >= 1 and cascade["speedup"] > 0
    assert "The seed's table" in result.stdout and "E5Embedder(backend='torch')" in result.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")

    reprinted = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--print", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert reprinted.stdout == result.stdout
