"""score --all-stage2 (teacher scores) and --audit (live recall audit) on the shipped filter."""

import json
import shutil
from pathlib import Path

import pytest

from hybrid_estimators.cli import main
from hybrid_estimators.datasets import make_articles
from hybrid_estimators.filters import load_filter
from hybrid_estimators.teacher import read_teacher_scores

SEECE = Path(__file__).resolve().parents[1] / "filters" / "seece_energy_tech" / "v1"


@pytest.fixture(scope="module")
def two_stage(seece_with_tiny_stage2):
    return seece_with_tiny_stage2


@pytest.fixture(scope="module")
def articles_file(tmp_path_factory):
    X, _ = make_articles(8, random_state=11)
    X["id"] = [f"s{i}" for i in range(len(X))]
    lines = [json.dumps(row) for row in X.to_dict("records")]
    lines.insert(3, "not json")
    path = tmp_path_factory.mktemp("in") / "articles.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_all_stage2_writes_teacher_scores_that_resume_and_read_back(two_stage, articles_file, tmp_path):
    out = tmp_path / "teacher.jsonl"
    args = ["score", "--filter", str(two_stage), str(articles_file), "-o", str(out), "-q",
            "--all-stage2", "--batch-size", "3", "--no-progress"]
    assert main(args) == 0
    rows = _rows(out)
    assert len(rows) == 9 and rows[3]["error"] is not None and "teacher" not in rows[3]
    valid = [row for row in rows if row["error"] is None]
    assert {row["stage_used"] for row in valid} == {"stage2"}
    assert {row["teacher"]["filter"] for row in valid} == {"seece_energy_tech/v1"}
    full = out.read_bytes()
    out.write_bytes(b"".join(full.splitlines(keepends=True)[:4]))  # stopped after line 4
    assert main([*args, "--resume"]) == 0
    assert out.read_bytes() == full
    scores = read_teacher_scores(out, load_filter(two_stage))
    assert scores.shape == (9, 8) and scores.iloc[3].isna().all()


def test_audit_marks_skipped_rows_without_changing_scores(two_stage, articles_file, tmp_path):
    folder = tmp_path / "f"
    shutil.copytree(two_stage, folder)
    plain, audited = tmp_path / "plain.jsonl", tmp_path / "audited.jsonl"
    base = ["score", "--filter", str(folder), str(articles_file), "-q", "--no-progress"]
    # A threshold of 9 makes most articles skip Stage 2, so the audit has work.
    config = (folder / "config.yaml").read_text().replace("threshold: ", "threshold: 9 #", 1)
    (folder / "config.yaml").write_text(config)
    assert main([*base, "-o", str(plain)]) == 0
    status = main([*base, "-o", str(audited), "--audit", "1", "--fail-on-audit"])
    plain_rows, audited_rows = _rows(plain), _rows(audited)
    for before, after in zip(plain_rows, audited_rows):
        assert {k: v for k, v in after.items() if k not in ("audited", "audit_tier")} == before
    skipped = [row for row in audited_rows if row["stage_used"] == "stage1"]
    assert skipped and all(row["audited"] and row["audit_tier"] in ("low", "medium", "high") for row in skipped)
    assert all("audited" not in row for row in audited_rows if row["stage_used"] != "stage1")
    summary = json.loads(Path(f"{audited}.audit.json").read_text())
    assert summary["n_audited"] == summary["n_skipped"] == len(skipped)
    assert summary["recall_lower_bound"] < 0.95 and status == 1  # 8 articles cannot certify 0.95


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--audit", "0"], "must lie in (0, 1]"),
        (["--audit", "1.5"], "must lie in (0, 1]"),
        (["--all-stage2", "--stage1-only"], "cannot be --stage1-only"),
        (["--audit", "0.1", "--all-stage2"], "not with --stage1-only or --all-stage2"),
        (["--fail-on-audit"], "--fail-on-audit needs --audit"),
    ],
)
def test_stage2_options_are_checked(articles_file, extra, message, capsys):
    status = main(["score", "--filter", str(SEECE), str(articles_file), *extra])
    assert status == 2
    assert message in capsys.readouterr().err


AI = SEECE.parents[1] / "ai_engineering_practice" / "v1"


def test_several_filters_score_in_one_pass_embedding_each_article_once(tmp_path):
    from hybrid_estimators import embedding
    from hybrid_estimators.scoring import MultiScoredLine, read_chunks, score_lines, score_lines_multi

    X, _ = make_articles(5, random_state=21)
    X["title"] = X["title"] + " (multi-filter test)"  # texts no cache has seen
    raw = [json.dumps(row).encode() for row in X.to_dict("records")] + [b"{broken"]
    chunk = next(read_chunks(raw, 10))
    seece, again, ai = (load_filter(folder, stage1_only=True) for folder in (SEECE, SEECE, AI))
    before = len(embedding._MEMORY_CACHE._items)
    rows = score_lines_multi({"seece_energy_tech/v1": seece, "seece (again)": again}, chunk)
    assert len(embedding._MEMORY_CACHE._items) - before == len(X)  # once per article, not per filter
    # The two shipped filters read the same budget (256 tokens, 124 + 123): still once per article.
    rows = score_lines_multi({"seece_energy_tech/v1": seece, "ai_engineering_practice/v1": ai}, chunk)
    assert len(embedding._MEMORY_CACHE._items) - before == len(X)
    # At another token budget nothing is shared.
    other = load_filter(SEECE, stage1_only=True)
    other.stage1_.estimator.steps[1][1].set_params(max_seq_length=128)
    score_lines_multi({"seece_energy_tech/v1": seece, "at 128 tokens": other}, chunk)
    assert len(embedding._MEMORY_CACHE._items) - before == 2 * len(X)
    assert len(rows) == 6 and rows[-1].error is not None and rows[-1].results == {}
    for name, scorer in (("seece_energy_tech/v1", seece), ("ai_engineering_practice/v1", ai)):
        alone = score_lines(scorer, chunk)
        for row, single in zip(rows[:-1], alone):
            assert row.results[name].scores == single.scores
            assert row.results[name].tier == single.tier
    record = json.loads(rows[0].to_json())
    assert list(record) == ["line", "id", "error", "best_filter", "filters"]
    assert list(record["filters"]) == ["seece_energy_tech/v1", "ai_engineering_practice/v1"]
    for row in rows:  # a row read back (as from Ray, filters as JSON text) writes the same bytes
        record = json.loads(row.to_json())
        assert MultiScoredLine.from_record(record).to_json() == row.to_json()
        as_text = {**record, "filters": json.dumps(record["filters"])}
        assert MultiScoredLine.from_record(as_text).to_json() == row.to_json()


def test_filters_sharing_an_embedder_embed_a_dataframe_once_from_python():
    from hybrid_estimators import embedding

    X, _ = make_articles(4, random_state=22)
    X["title"] = X["title"] + " (python multi-filter test)"  # texts no cache has seen
    first, second = (load_filter(SEECE, stage1_only=True) for _ in range(2))
    before = len(embedding._MEMORY_CACHE._items)
    reports = {name: scorer.predict_report(X) for name, scorer in (("a", first), ("b", second))}
    assert len(embedding._MEMORY_CACHE._items) - before == len(X)
    assert reports["a"].equals(reports["b"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--all-stage2"], "--all-stage2: with one --filter only"),
        (["--audit", "0.1"], "--audit: with one --filter only"),
        (["--columns", "a"], "--columns: with one --filter only"),
    ],
)
def test_several_filters_refuse_what_needs_one(articles_file, capsys, extra, message):
    status = main(["score", "--filter", str(SEECE), "--filter", str(AI), str(articles_file), *extra])
    assert status == 2 and message in capsys.readouterr().err


def test_several_filters_refuse_a_filter_given_twice(articles_file, capsys):
    status = main(["score", "--filter", str(SEECE), "--filter", str(AI), "--filter", str(SEECE) + "/",
                   str(articles_file)])
    assert status == 2
    assert "is seece_energy_tech/v1 again: give each filter once" in capsys.readouterr().err


def test_several_filters_resume_an_interrupted_output_byte_for_byte(articles_file, tmp_path, capsys):
    both = ["score", "--filter", str(SEECE), "--filter", str(AI), "--stage1-only", "--batch-size", "2",
            "--no-progress", "--quiet", str(articles_file)]
    whole, cut = tmp_path / "whole.jsonl", tmp_path / "cut.jsonl"
    assert main([*both, "-o", str(whole)]) == 0
    rows = whole.read_bytes().splitlines(keepends=True)
    assert len(rows) >= 5
    cut.write_bytes(b"".join(rows[:3]) + rows[3][:10])  # three rows and a partial fourth
    sidecar = json.loads(Path(f"{whole}.meta.json").read_text())
    Path(f"{cut}.meta.json").write_text(json.dumps({**sidecar, "input": {**sidecar["input"]}}))
    assert main([*both, "-o", str(cut), "--resume"]) == 0
    assert cut.read_bytes() == whole.read_bytes()
    capsys.readouterr()
    other = ["score", "--filter", str(AI), "--filter", str(SEECE), "--stage1-only", "--batch-size", "2",
             "--no-progress", str(articles_file), "-o", str(cut), "--resume"]
    assert main(other) == 2
    assert "it was written with filters seece_energy_tech/v1" in capsys.readouterr().err


def _strict_json(path):
    def refuse(constant):
        raise ValueError(f"{constant} is not strict JSON")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def test_audit_without_a_medium_plus_article_is_undetermined_and_does_not_fail(
    two_stage, articles_file, tmp_path, caplog
):
    import logging

    folder = tmp_path / "f"
    shutil.copytree(two_stage, folder)
    # Tiers no article reaches: no reference MEDIUM+ article anywhere.
    config = (folder / "config.yaml").read_text()
    config = config.replace("threshold: ", "threshold: 9 #", 1)
    config = config.replace("medium: ", "medium: 9.98 #", 1).replace("high: ", "high: 9.99 #", 1)
    (folder / "config.yaml").write_text(config)
    out = tmp_path / "audited.jsonl"
    with caplog.at_level(logging.INFO, logger="hybrid_estimators"):
        status = main(["score", "--filter", str(folder), str(articles_file), "-q", "--no-progress",
                       "-o", str(out), "--audit", "1", "--fail-on-audit"])
    summary = _strict_json(f"{out}.audit.json")
    assert status == 0
    assert summary["verdict"] == "undetermined" and summary["below_target"] is None
    assert summary["recall"] is None and "no reference MEDIUM+" in summary["undetermined"]
    assert "--fail-on-audit: not failing" in caplog.text


def test_an_input_named_like_the_audit_file_is_never_overwritten(two_stage, articles_file, tmp_path, capsys):
    out = tmp_path / "audited.jsonl"
    source = tmp_path / "audited.jsonl.audit.json"
    source.write_bytes(articles_file.read_bytes())
    status = main(["score", "--filter", str(two_stage), str(source), "-q", "--no-progress",
                   "-o", str(out), "--audit", "1"])
    assert status == 2 and "must not be the input" in capsys.readouterr().err
    assert source.read_bytes() == articles_file.read_bytes()


def test_the_summary_and_sidecar_compare_the_skip_rate_with_the_record(two_stage, articles_file, tmp_path, caplog):
    import logging

    folder = tmp_path / "f"
    shutil.copytree(two_stage, folder)
    # Threshold 0 routes every article; the record says 90% skip at that threshold.
    config = (folder / "config.yaml").read_text().replace("threshold: ", "threshold: 0.0 #", 1)
    (folder / "config.yaml").write_text(config)
    metadata_path = folder / "probe" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["calibration"] = {"threshold": 0.0, "expected_skip_rate": 0.9}
    metadata_path.write_text(json.dumps(metadata))
    out = tmp_path / "out.jsonl"
    with caplog.at_level(logging.INFO, logger="hybrid_estimators"):
        assert main(["score", "--filter", str(folder), str(articles_file), "-q", "--no-progress",
                     "-o", str(out)]) == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "skipped Stage 2" in r.getMessage()]
    assert len(warnings) == 1 and "0.0% of 8 scored articles" in warnings[0].getMessage()
    assert "skip rate 0.0% (expected 90.0%)" in caplog.text
    skip = _strict_json(f"{out}.meta.json")["skip_rate"]["seece_energy_tech/v1"]
    assert (skip["n_scored"], skip["n_skipped"], skip["expected"], skip["outside"]) == (8, 0, 0.9, True)
