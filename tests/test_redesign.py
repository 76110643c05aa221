"""One filter object, one scoring path, no stale results: the layout and its promises."""

import ast
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from hybrid_estimators.cli import main
from hybrid_estimators.datasets import make_articles
from hybrid_estimators.filters import load_filter
from hybrid_estimators.teacher import teacher_identity, teacher_scores

from _teacher_files import write_sidecar

PACKAGE = Path(__file__).resolve().parents[1] / "hybrid_estimators"
FILTERS = PACKAGE.parent / "filters"


def _imports(path):
    """Package modules a file imports (relative imports resolved), as dotted names."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("hybrid_estimators")}


def _module_imports():
    return {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts): _imports(path)
        for path in PACKAGE.rglob("*.py")
    }


def _touches(imports, target):
    return any(name == target or name.startswith(target + ".") for name in imports)


def test_imports_run_one_way():
    modules = _module_imports()
    for module, imports in modules.items():
        if not module.startswith("hybrid_estimators.cli") and module != "hybrid_estimators.__main__":
            assert not _touches(imports, "hybrid_estimators.cli"), f"{module} imports the CLI"
    for stage in ("text", "embedding", "probe", "qwen"):
        imports = modules[f"hybrid_estimators.{stage}"]
        for upper in ("router", "filters", "calibration", "scoring", "distributed", "evaluation"):
            assert not _touches(imports, f"hybrid_estimators.{upper}"), f"{stage} imports {upper}"
    assert not _touches(modules["hybrid_estimators.router"], "hybrid_estimators.filters")
    assert not _touches(modules["hybrid_estimators.tiers"], "hybrid_estimators")
    assert not _touches(modules["hybrid_estimators.distributed"], "hybrid_estimators.cli")


@pytest.fixture(scope="module")
def seece_stage1_only():
    return load_filter(FILTERS / "seece_energy_tech" / "v1", stage1_only=True)


def test_python_and_cli_block_the_same_articles(seece_stage1_only, tmp_path, capsys):
    X, _ = make_articles(6, random_state=0)
    X.loc[2, ["title", "content"]] = ["Grid", "short"]  # under the filter's min_length
    X.loc[4, ["title", "content"]] = ["\u200b" * 15, "\u200b" * 15]  # invisible
    X["id"] = [f"x{i}" for i in range(len(X))]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in X.to_dict("records")))
    out = tmp_path / "out.jsonl"
    folder = str(FILTERS / "seece_energy_tech" / "v1")
    assert main(["score", "--filter", folder, str(source), "-o", str(out), "-q", "--stage1-only"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    report = seece_stage1_only.predict_report(X)
    assert [row["blocked_by"] for row in rows] == report["blocked_by"].tolist()
    assert report["blocked_by"].iloc[2] is not None
    scored = report["blocked_by"].isna().to_numpy()
    assert np.isnan(report.loc[~scored, seece_stage1_only.dimension_names_].to_numpy()).all()
    np.testing.assert_allclose(
        [row["weighted_average"] for row, keep in zip(rows, scored) if keep],
        report.loc[scored, "weighted_average"],
        atol=1e-4,
    )


def test_loading_a_filter_runs_no_stage():
    filter_ = load_filter(FILTERS / "seece_energy_tech" / "v1")
    stage2 = filter_.stage2_.estimator
    assert not hasattr(stage2, "_model")  # Stage 2's weights are not even loaded yet
    assert filter_.threshold == filter_.spec.hybrid_inference["threshold"]  # the parameter; no fitted twin


def _modes(folder):
    return {
        path.relative_to(folder): stat.S_IMODE(path.stat().st_mode)
        for path in folder.rglob("*")
    }


@pytest.mark.slow
def test_calibrate_against_stage2_keeps_permissions_and_records_the_calibration(
    seece_with_tiny_stage2, tmp_path, capsys
):
    folder = tmp_path / "seece"
    shutil.copytree(seece_with_tiny_stage2, folder)
    for path in folder.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    before = _modes(folder)
    X, _ = make_articles(40, random_state=7)
    X["id"] = [f"u{i}" for i in range(len(X))]
    articles = tmp_path / "unlabelled.jsonl"
    articles.write_text("".join(json.dumps(row) + "\n" for row in X.to_dict("records")))
    filter_ = load_filter(folder)
    scores = teacher_scores(filter_, X)
    identity = teacher_identity(filter_)
    teacher = tmp_path / "teacher.jsonl"
    teacher.write_text("".join(
        json.dumps({"line": i + 1, "id": row_id, "scores": dict(zip(scores.columns, values)),
                    "stage_used": "stage2", "blocked_by": None, "error": None, "teacher": identity}) + "\n"
        for i, (row_id, values) in enumerate(zip(X["id"], scores.to_numpy().tolist()))
    ))
    write_sidecar(teacher, articles)  # as `score --all-stage2 -o` writes it
    status = main(["calibrate", "--filter", str(folder), str(articles), "--reference", "stage2",
                   "--teacher-scores", str(teacher), "--target-recall", "0.8", "--confidence", "0.8"])
    assert status == 0
    assert _modes(folder) == before  # nothing made private, no temporary file left
    metadata = json.loads((folder / "probe" / "metadata.json").read_text())
    record = metadata["calibration"]
    verdicts = (scores.to_numpy() @ np.array(list(filter_.spec.weights.values()))) >= 4.0
    assert (record["reference"], record["n"]) == ("stage2", 40)
    assert record["n_medium_plus"] == int(verdicts.sum())
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["hybrid_inference"]["threshold"] == pytest.approx(record["threshold"])
    assert "against Stage 2's verdicts" in capsys.readouterr().out


def test_stage2_reference_refuses_teacher_scores_of_another_filter(tmp_path, capsys):
    folder = FILTERS / "seece_energy_tech" / "v1"
    articles = tmp_path / "a.jsonl"
    articles.write_text(json.dumps({"id": 1, "title": "A solar plant", "content": "It opened today."}) + "\n")
    teacher = tmp_path / "t.jsonl"
    teacher.write_text(json.dumps({"line": 1, "id": 1, "scores": {}, "stage_used": "stage2",
                                   "teacher": {"filter": "other/v9", "stage2_sha256": "0"}}) + "\n")
    copy = tmp_path / "f"
    shutil.copytree(folder, copy)
    assert main(["calibrate", "--filter", str(copy), str(articles), "--reference", "stage2",
                 "--teacher-scores", str(teacher)]) == 2
    assert "t.jsonl: line 1: written by filter 'other/v9'" in capsys.readouterr().err
