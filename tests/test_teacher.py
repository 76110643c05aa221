"""Stage 2 as the teacher: teacher scores, their checks, disjoint splits, distillation."""

import json

import numpy as np
import pandas as pd
import pytest

from hybrid_estimators.teacher import (
    TeacherScoresError,
    check_disjoint,
    disjoint_split,
    make_distillation_set,
    read_teacher_scores,
    teacher_identity,
    teacher_scores,
)

from _numeric_filter import articles, numeric_filter


@pytest.fixture(scope="module")
def filter_():
    return numeric_filter()


def test_teacher_scores_are_stage2_on_every_article_and_nan_where_blocked(filter_):
    X = articles(np.array([1.0, 5.0, 9.0]))
    X.loc[1, ["title", "content"]] = ["3 x", ""]  # too short: blocked
    scores = teacher_scores(filter_, X)
    assert scores.columns.tolist() == ["a", "b"]
    np.testing.assert_allclose(scores.iloc[[0, 2]].to_numpy(), [[1, 1], [9, 9]], atol=1e-6)
    assert scores.iloc[1].isna().all()
    assert filter_.threshold == 4.0  # the filter itself is left as it was


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _row(filter_, line, article_id, dimension_scores, **changes):
    row = {
        "line": line, "id": article_id, "scores": dimension_scores, "stage_used": "stage2",
        "blocked_by": None, "error": None, "teacher": teacher_identity(filter_),
    }
    row.update(changes)
    return row


def test_a_teacher_file_round_trips(filter_, tmp_path):
    X = articles(np.array([2.0, 6.0]))
    path = _write(tmp_path / "t.jsonl", [
        _row(filter_, 1, "a0", {"a": 2.0, "b": 2.1}),
        _row(filter_, 2, "a1", {"a": 6.0, "b": 5.9}),
    ])
    scores = read_teacher_scores(path, filter_, articles=X)
    np.testing.assert_allclose(scores.to_numpy(), [[2.0, 2.1], [6.0, 5.9]])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"teacher": {"filter": "other/v1", "stage2_sha256": "x"}}, "written by filter 'other/v1'"),
        ({"stage_used": "stage1"}, "not scored by Stage 2"),
        ({"scores": {"a": 1.0, "c": 2.0}}, "has dimensions"),
    ],
)
def test_a_teacher_file_from_elsewhere_is_refused_naming_file_and_line(filter_, tmp_path, change, message):
    rows = [_row(filter_, 1, "a0", {"a": 2.0, "b": 2.0}), _row(filter_, 2, "a1", {"a": 6.0, "b": 6.0}, **change)]
    path = _write(tmp_path / "t.jsonl", rows)
    with pytest.raises(TeacherScoresError, match=f"t.jsonl: line 2: {message}"):
        read_teacher_scores(path, filter_)


def test_another_stage2_is_refused(filter_, tmp_path):
    identity = dict(teacher_identity(filter_), stage2_sha256="0" * 64)
    path = _write(tmp_path / "t.jsonl", [_row(filter_, 1, "a0", {"a": 2.0, "b": 2.0}, teacher=identity)])
    with pytest.raises(TeacherScoresError, match="line 1: written by another Stage 2"):
        read_teacher_scores(path, filter_)


def test_a_blending_filter_teaches_its_blend_under_another_identity(filter_, tmp_path):
    from _numeric_filter import numeric_filter

    blending = numeric_filter(stage2_weight=0.5)
    assert teacher_identity(blending) != teacher_identity(filter_)
    X = articles(np.array([1.0, 5.0, 9.0]))
    stage1 = blending.predict_stage1(X)
    np.testing.assert_allclose(teacher_scores(blending, X).to_numpy(),
                               np.clip(0.5 * np.c_[[1.0, 5.0, 9.0], [1.0, 5.0, 9.0]] + 0.5 * stage1, 0, 10), atol=1e-5)
    path = _write(tmp_path / "t.jsonl", [_row(filter_, 1, "a0", {"a": 2.0, "b": 2.0})])
    with pytest.raises(TeacherScoresError, match="line 1: written by another Stage 2"):
        read_teacher_scores(path, blending)


def test_missing_or_other_articles_are_refused(filter_, tmp_path):
    X = articles(np.array([2.0, 6.0]))
    one = _write(tmp_path / "one.jsonl", [_row(filter_, 1, "a0", {"a": 2.0, "b": 2.0})])
    with pytest.raises(TeacherScoresError, match="1 rows for 2 articles"):
        read_teacher_scores(one, filter_, articles=X)
    swapped = _write(tmp_path / "swapped.jsonl", [
        _row(filter_, 1, "a1", {"a": 2.0, "b": 2.0}), _row(filter_, 2, "a0", {"a": 6.0, "b": 6.0}),
    ])
    with pytest.raises(TeacherScoresError, match="line 1 scores article 'a1', expected 'a0'"):
        read_teacher_scores(swapped, filter_, articles=X)


def test_disjoint_split_keeps_duplicates_together_and_check_disjoint_refuses_overlap():
    X = articles(np.repeat(np.arange(50.0), 2))
    train, certify = disjoint_split(X, certify_size=0.4, random_state=1)
    assert len(train) + len(certify) == 100 and not set(train) & set(certify)
    train_texts = set(X.iloc[train]["title"])
    assert not train_texts & set(X.iloc[certify]["title"])
    check_disjoint(X.iloc[train].assign(id=[f"t{i}" for i in train]), X.iloc[certify])
    with pytest.raises(ValueError, match="both in the training and the certification"):
        check_disjoint(X.iloc[train], X.iloc[train[:3]].assign(title="new", content="text"))  # same ids
    with pytest.raises(ValueError, match="1 articles are both"):
        check_disjoint(X.iloc[train[:5]], X.iloc[[train[0]]].assign(id="other"))  # same text
    spaced = X.iloc[[train[0]]].assign(id="other", content=lambda f: f["content"] + " ")
    with pytest.raises(ValueError, match="1 articles are both"):  # same text, once normalised
        check_disjoint(X.iloc[train[:5]], spaced)
    assert disjoint_split(X, random_state=1)[1].tolist() == disjoint_split(X, random_state=1)[1].tolist()


def test_distillation_set_drops_rows_without_teacher_scores_and_weighs_sources():
    X_teacher = articles(np.array([1.0, 2.0, 3.0]))
    Y_teacher = pd.DataFrame({"a": [1.0, np.nan, 3.0], "b": [1.0, np.nan, 3.0]})
    X_oracle = articles(np.array([7.0]), start=10)
    Y_oracle = pd.DataFrame({"b": [7.5], "a": [7.0]})
    X, Y, weight, source = make_distillation_set(
        X_teacher, Y_teacher, X_oracle, Y_oracle, teacher_weight=0.5, oracle_weight=2.0
    )
    assert X["id"].tolist() == ["a0", "a2", "a10"]
    np.testing.assert_allclose(Y.to_numpy(), [[1, 1], [3, 3], [7.0, 7.5]])
    np.testing.assert_allclose(weight, [0.5, 0.5, 2.0])
    assert source.tolist() == ["teacher", "teacher", "oracle"]


# --- a teacher file is checked line by line against the unlabelled file (issue 21 item 4) ----


def _unlabelled_and_teacher(filter_, tmp_path, n=6):
    from _teacher_files import write_teacher_file

    X = articles(np.arange(1.0, n + 1))
    unlabelled = tmp_path / "u.jsonl"
    unlabelled.write_text("".join(json.dumps(row) + "\n" for row in X.to_dict("records")))
    teacher = write_teacher_file(tmp_path / "t.jsonl", filter_, X["id"], teacher_scores(filter_, X).to_numpy(),
                                 unlabelled)
    return X, unlabelled, teacher


def test_a_teacher_file_of_the_unlabelled_file_is_read_in_its_order(filter_, tmp_path):
    X, unlabelled, teacher = _unlabelled_and_teacher(filter_, tmp_path)
    scores = read_teacher_scores(teacher, filter_, unlabelled=unlabelled)
    np.testing.assert_allclose(scores["a"], np.arange(1.0, 7.0), atol=1e-6)


def _rewrite(teacher, change):
    lines = teacher.read_text().splitlines(keepends=True)
    teacher.write_text("".join(change(lines)))


def _renamed(lines):
    rows = [json.loads(line) for line in lines]
    rows[3]["id"] = "renamed"
    return [json.dumps(row) + "\n" for row in rows]


def _shifted(lines):
    rows = [json.loads(line) for line in lines]
    for row in rows[2:]:
        row["line"] += 1
    return [json.dumps(row) + "\n" for row in rows]


def _renumbered(lines):  # reversed, and each row given the line number of its position
    rows = [json.loads(line) for line in reversed(lines)]
    for number, row in enumerate(rows, start=1):
        row["line"] = number
    return [json.dumps(row) + "\n" for row in rows]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda lines: lines[::-1], "t.jsonl: line 1: is the row of input line 6, not 1"),  # tac
        (lambda lines: lines[:3] + lines[2:], "t.jsonl: line 4: is the row of input line 3, not 4"),
        (lambda lines: lines[:5], "t.jsonl: has 5 rows for the 6 lines of .*u.jsonl: it misses lines"),
        (_renamed, "t.jsonl: line 4: scores article 'renamed', but line 4 of .*u.jsonl is 'a3'"),
        (_shifted, "t.jsonl: line 3: is the row of input line 4, not 3"),
        (_renumbered, "t.jsonl: line 1: scores article 'a5', but line 1 of .*u.jsonl is 'a0'"),
    ],
    ids=["tac", "duplicated", "truncated", "id-renamed", "lines-shifted", "reversed-renumbered"],
)
def test_a_teacher_file_out_of_line_is_refused_naming_file_and_line(filter_, tmp_path, change, message):
    _, unlabelled, teacher = _unlabelled_and_teacher(filter_, tmp_path)
    _rewrite(teacher, change)
    with pytest.raises(TeacherScoresError, match=message):
        read_teacher_scores(teacher, filter_, unlabelled=unlabelled)


def test_a_teacher_file_of_another_input_or_without_sidecar_is_refused(filter_, tmp_path):
    X, unlabelled, teacher = _unlabelled_and_teacher(filter_, tmp_path)
    # Same ids, same line count, one text changed: only the sidecar's input hash tells.
    X.loc[2, "content"] = "Another article body entirely."
    unlabelled.write_text("".join(json.dumps(row) + "\n" for row in X.to_dict("records")))
    with pytest.raises(TeacherScoresError, match=r"t.jsonl: scored another input: its sidecar covers 6 lines"):
        read_teacher_scores(teacher, filter_, unlabelled=unlabelled)
    sidecar = tmp_path / "t.jsonl.meta.json"
    sidecar.unlink()
    with pytest.raises(TeacherScoresError, match=r"t.jsonl: has no sidecar .*t.jsonl.meta.json"):
        read_teacher_scores(teacher, filter_, unlabelled=unlabelled)
    import os

    os.mkfifo(sidecar)  # opened without blocking, and refused
    with pytest.raises(TeacherScoresError, match="is not a regular file"):
        read_teacher_scores(teacher, filter_, unlabelled=unlabelled)


def test_a_sidecar_of_a_run_without_all_stage2_is_refused(filter_, tmp_path):
    _, unlabelled, teacher = _unlabelled_and_teacher(filter_, tmp_path)
    sidecar = tmp_path / "t.jsonl.meta.json"
    record = json.loads(sidecar.read_text())
    record["options"]["all_stage2"] = False
    sidecar.write_text(json.dumps(record))
    with pytest.raises(TeacherScoresError, match="not scored with --all-stage2"):
        read_teacher_scores(teacher, filter_, unlabelled=unlabelled)


def test_articles_given_in_python_are_checked_by_line_too(filter_, tmp_path):
    X = articles(np.array([2.0, 6.0]))
    shifted = _write(tmp_path / "t.jsonl", [
        _row(filter_, 2, "a0", {"a": 2.0, "b": 2.0}), _row(filter_, 3, "a1", {"a": 6.0, "b": 6.0}),
    ])
    with pytest.raises(TeacherScoresError, match="t.jsonl: line 1: is the row of input line 2, not 1"):
        read_teacher_scores(shifted, filter_, articles=X)


@pytest.mark.slow
def test_score_all_stage2_writes_a_teacher_file_calibrate_accepts_and_tac_breaks(
    seece_with_tiny_stage2, tmp_path, capsys
):
    """The real `score --all-stage2 -o` output and sidecar, end to end."""
    import shutil

    from hybrid_estimators.cli import main
    from hybrid_estimators.datasets import make_articles

    folder = tmp_path / "seece"
    shutil.copytree(seece_with_tiny_stage2, folder)
    X, _ = make_articles(8, random_state=4)
    X["id"] = [f"u{i}" for i in range(len(X))]
    unlabelled = tmp_path / "u.jsonl"
    unlabelled.write_text("".join(json.dumps(row) + "\n" for row in X[["id", "title", "content"]].to_dict("records")))
    teacher = tmp_path / "t.jsonl"
    assert main(["score", "--filter", str(folder), "--all-stage2", str(unlabelled), "-o", str(teacher),
                 "--batch-size", "4", "--no-progress", "--quiet"]) == 0
    calibrate = ["calibrate", "--filter", str(folder), str(unlabelled), "--reference", "stage2",
                 "--teacher-scores", str(teacher), "--target-recall", "0.5", "--confidence", "0.5", "--record-only"]
    assert main(calibrate) == 0
    capsys.readouterr()
    teacher.write_text("".join(reversed(teacher.read_text().splitlines(keepends=True))))
    assert main(calibrate) == 2
    assert "t.jsonl: line 1: is the row of input line 8, not 1" in capsys.readouterr().err
