"""``hybrid-estimators normalise``: a filter's percentile table fitted on traffic."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from hybrid_estimators.cli import main
from hybrid_estimators.datasets import make_articles
from hybrid_estimators.filters import load_filter
from hybrid_estimators.percentile_normalizer import PercentileNormalizer

SEECE = Path(__file__).resolve().parents[1] / "filters" / "seece_energy_tech" / "v1"


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    X, _ = make_articles(10, random_state=3)
    X["id"] = [f"t{i}" for i in range(len(X))]
    X.loc[4, ["title", "content"]] = ["Grid", "short"]  # under the filter's min_length: blocked
    lines = [json.dumps(row) for row in X.to_dict("records")]
    lines.insert(2, "{not json")  # an invalid line: left out, counted
    path = tmp_path_factory.mktemp("traffic") / "traffic.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, X


def test_normalise_writes_the_percentile_table_of_stage1(traffic, tmp_path, capsys):
    path, X = traffic
    out = tmp_path / "normalisation.json"
    assert main(["normalise", "--filter", str(SEECE), str(path), "-o", str(out), "--no-progress"]) == 0
    table = json.loads(out.read_text())
    assert table["filter"] == "seece_energy_tech/v1" and table["scores"] == "stage1"
    assert table["traffic"] == {
        "file": "traffic.jsonl", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "n_lines": 11, "n_articles": 10, "n_blocked": 1, "n_scored": 9,
    }
    column = table["normaliser"]["columns"][0]
    assert column["name"] == "weighted_average" and column["n_samples"] == 9
    report = load_filter(SEECE, stage1_only=True).predict_report(X)
    averages = report.loc[report["blocked_by"].isna(), ["weighted_average"]]
    normalised = PercentileNormalizer.from_table(table["normaliser"]).transform(averages).ravel()
    averages = averages["weighted_average"].to_numpy()
    expected = [10 * np.mean(averages <= value) for value in averages]
    np.testing.assert_allclose(normalised, expected, atol=1e-6)  # the CLI's JSON keeps floats exactly
    assert "on 9 articles" in capsys.readouterr().out


def test_normalise_refuses_traffic_the_filter_blocks_entirely(tmp_path, capsys):
    path = tmp_path / "short.jsonl"
    path.write_text(json.dumps({"id": "a", "title": "x", "content": "short"}) + "\n")
    out = tmp_path / "table.json"
    assert main(["normalise", "--filter", str(SEECE), str(path), "-o", str(out), "--no-progress"]) == 2
    assert "blocked every article" in capsys.readouterr().err
    assert not out.exists()
