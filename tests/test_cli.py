"""The ``hybrid-estimators`` command: score, resume, train-probe, calibrate, info, benchmark."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline

from hybrid_estimators.cli import main
from hybrid_estimators.scoring import (
    ScoredLine,
    count_lines,
    parse_line,
    read_chunks,
    score_chunk,
)
from hybrid_estimators.datasets import make_articles
from hybrid_estimators.embedding import E5Embedder
from hybrid_estimators.filters import FilterSpec, load_filter, save_filter
from hybrid_estimators.metrics import is_medium_plus
from hybrid_estimators.prefilter import Prefilter
from hybrid_estimators.probe import make_probe
from hybrid_estimators.router import HybridRouterRegressor
from hybrid_estimators.text import ArticleText

BATCH = 4
METRICS = {"cv_mae_weighted_average": 0.5, "n_articles": 60}
OUTPUT_KEYS = [
    "line", "id", "scores", "weighted_average", "normalised", "tier", "stage_used",
    "stage1_estimate", "gatekeeper_applied", "blocked_by", "error",
]


@pytest.fixture(scope="module")
def filter_dir(tmp_path_factory, minilm_path):
    """A Stage-1-only filter (MiniLM + small probe) fitted on 60 synthetic articles."""
    X, Y = make_articles(60, random_state=0)
    stage1 = make_pipeline(
        ArticleText(),
        E5Embedder(minilm_path, prefix="", show_progress_bar=False),
        make_probe((32,)),
    ).fit(X, Y)
    weights = {"energy_progress": 0.5, "health_benefit": 0.25, "economic_impact": 0.25}
    router = HybridRouterRegressor(
        FrozenEstimator(stage1), None, weights, threshold=4.5
    ).fit(X, Y)
    spec = FilterSpec.from_dict({
        "name": "demo",
        "version": "v1",
        "dimensions": weights,
        "prefilter": {"min_length": 10, "block_keywords": {"sports": ["football"]}},
        "hybrid_inference": {"embedding_model": minilm_path, "embedding_prefix": "", "stage2": None},
    })
    folder = tmp_path_factory.mktemp("filters") / "demo" / "v1"
    return save_filter(router, folder, spec, training_data=(X, Y), metrics=METRICS)


@pytest.fixture(scope="module")
def good_articles():
    X, _ = make_articles(8, random_state=3)
    return X


@pytest.fixture(scope="module")
def input_file(tmp_path_factory, good_articles):
    """Good articles mixed with every kind of bad line; line -> what it is."""
    good = [json.dumps(row).encode() for row in good_articles.to_dict("records")]
    lines = [
        good[0],
        b"{not json",
        good[1],
        json.dumps({"id": "no-fields", "body": "no title, no content"}).encode(),
        b"",
        json.dumps({"id": "big", "title": "Grid", "content": "solar grid " * 100_000}).encode(),
        json.dumps({"id": "sport", "title": "Football final", "content": "A late goal won the football cup."}).encode(),
        json.dumps({"id": "null-title", "title": None, "content": "Some text."}).encode(),
        b"[1, 2, 3]",
        good[2],
        b"\xff\xfe not utf-8",
        good[3],
        good[4],
        json.dumps({"id": "content-only", "content": "Wind turbines and heat pumps."}).encode(),
        good[5],
        good[6],
        good[7],
    ]
    path = tmp_path_factory.mktemp("input") / "articles.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture(scope="module")
def clean_output(tmp_path_factory, filter_dir, input_file):
    """Bytes of one uninterrupted ``score -o`` run."""
    out = tmp_path_factory.mktemp("clean") / "scores.jsonl"
    status = main(["score", "--filter", str(filter_dir), str(input_file), "-o", str(out),
                   "--batch-size", str(BATCH), "--quiet"])
    assert status == 0
    return out.read_bytes()


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory):
    """A labelled folder the filter above never saw: (folder, X, Y)."""
    X, Y = make_articles(60, random_state=5)
    return write_labelled_folder(tmp_path_factory.mktemp("labelled") / "demo", X, Y), X, Y


def rows_of(data):
    return [json.loads(line) for line in data.decode().splitlines()]


def write_labelled_folder(folder, X, Y, name="demo"):
    folder.mkdir(parents=True)
    records = X.to_dict("records")
    for record, scores in zip(records, Y.to_dict("records")):
        record["scores"] = scores
    (folder / "articles.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    dimensions = {"energy_progress": 0.5, "health_benefit": 0.25, "economic_impact": 0.25}
    (folder / "filter.yaml").write_text(yaml.safe_dump({"name": name, "dimensions": dimensions}))
    return folder


# --- score ------------------------------------------------------------------


def test_score_writes_one_row_per_input_line_in_order(clean_output, input_file, filter_dir, good_articles):
    rows = rows_of(clean_output)
    assert len(rows) == count_lines(input_file) == 17
    assert [row["line"] for row in rows] == list(range(1, 18))
    assert all(list(row) == OUTPUT_KEYS for row in rows)

    errors = {row["line"]: row["error"] for row in rows if row["error"]}
    assert sorted(errors) == [2, 4, 5, 8, 9, 11]
    assert all(message.startswith(f"line {line}") for line, message in errors.items())
    assert "not JSON" in errors[2]
    assert "(id='no-fields')" in errors[4] and "neither 'title' nor 'content'" in errors[4]
    assert "empty line" in errors[5]
    assert "'title' is None/NaN" in errors[8]
    assert "expected a JSON object" in errors[9]
    assert "not UTF-8" in errors[11]
    for line in errors:
        assert rows[line - 1]["scores"] is None and rows[line - 1]["tier"] is None

    blocked = rows[6]
    assert (blocked["id"], blocked["blocked_by"], blocked["error"]) == ("sport", "keyword:sports", None)
    assert blocked["scores"] is None and blocked["weighted_average"] is None

    big, content_only = rows[5], rows[13]
    assert big["error"] is None and big["scores"] is not None
    assert content_only["error"] is None and content_only["scores"] is not None

    good_lines = [1, 3, 10, 12, 13, 15, 16, 17]
    assert [rows[line - 1]["id"] for line in good_lines] == good_articles["id"].tolist()
    expected = load_filter(filter_dir).predict_report(good_articles[["title", "content"]])
    for row, (_, report) in zip((rows[line - 1] for line in good_lines), expected.iterrows()):
        assert row["scores"] == pytest.approx(
            {name: report[name] for name in ("energy_progress", "health_benefit", "economic_impact")},
            abs=1e-4,
        )
        assert row["weighted_average"] == pytest.approx(report["weighted_average"], abs=1e-4)
        assert row["tier"] == report["tier"]
        assert row["stage_used"] == "stage1"  # stage2: null routes nothing
        assert row["stage1_estimate"] == pytest.approx(report["stage1_estimate"], abs=1e-4)


def test_score_prints_a_table_and_a_summary(filter_dir, input_file, capsys):
    status = main(["score", "--filter", str(filter_dir), str(input_file), "--batch-size", str(BATCH)])
    assert status == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["line", "id", "tier", "stage", "w.avg", "ms/art", "blocked_by", "/", "error"]
    assert len(lines) == 1 + 17
    assert [int(line.split()[0]) for line in lines[1:]] == list(range(1, 18))
    assert "line 2: not JSON" in lines[2]
    assert "blocked: keyword:sports" in lines[7]
    first = lines[1].split()
    assert first[1] == "synthetic-00000" and first[3] == "1"
    assert float(first[5]) > 0  # ms per article
    assert "lines=17 scored=10 stage2=0 blocked=1 errors=6" in captured.err


def test_score_jsonl_to_stdout_matches_the_output_file(filter_dir, input_file, clean_output, capsys):
    status = main(["score", "--filter", str(filter_dir), str(input_file), "--format", "jsonl",
                   "--batch-size", str(BATCH)])
    assert status == 0
    assert capsys.readouterr().out.encode() == clean_output


def test_score_with_output_still_prints_the_table_unless_quiet(filter_dir, input_file, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    main(["score", "--filter", str(filter_dir), str(input_file), "-o", str(out)])
    assert len(capsys.readouterr().out.splitlines()) == 18
    main(["score", "--filter", str(filter_dir), str(input_file), "-o", str(out), "--quiet"])
    assert capsys.readouterr().out == ""
    assert len(out.read_bytes().splitlines()) == 17


def test_stage1_only_does_not_load_stage2(filter_dir, input_file, tmp_path, clean_output, capsys):
    with_stage2 = tmp_path / "with_stage2"
    shutil.copytree(filter_dir, with_stage2)
    config = yaml.safe_load((with_stage2 / "config.yaml").read_text())
    config["hybrid_inference"]["stage2"] = {"base_model": str(tmp_path / "no-such-model")}
    (with_stage2 / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    assert main(["score", "--filter", str(with_stage2), str(input_file), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("hybrid-estimators: error: cannot load filter")

    out = tmp_path / "scores.jsonl"
    status = main(["score", "--filter", str(with_stage2), str(input_file), "-o", str(out),
                   "--stage1-only", "--batch-size", str(BATCH), "--quiet"])
    assert status == 0
    assert out.read_bytes() == clean_output


@pytest.mark.parametrize(
    "raw, message",
    [
        (b'{"id": NaN, "title": "t"}', "line 3: not JSON: NaN is not valid JSON"),
        (b"[" * 100_000, "line 3: not JSON: maximum recursion depth"),
        (b'"just a string"', "line 3: expected a JSON object (an article), got str"),
        (b'{"id": 7, "title": 5}', "line 3 (id=7): field 'title' must be a string, got int."),
        (b'{"id": "x", "title": "", "content": " "}', "line 3 (id='x') has neither title nor content."),
    ],
)
def test_parse_line_names_the_line_and_the_problem(raw, message):
    row = parse_line(3, raw)
    assert row.article is None and row.error.startswith(message)
    json.loads(row.to_json())


def test_parse_line_keeps_what_scoring_and_the_prefilter_need():
    row = parse_line(1, '\ufeff{"id": 1, "content": "Heat pumps.", "language": "de", "url": "u"}'.encode())
    assert (row.id, row.error) == (1, None)
    assert row.article == {"title": "", "content": "Heat pumps.", "language": "de"}


class _FailingRouter:
    """A router whose predict_report fails on any chunk holding 'boom'."""

    dimension_names_ = ["a"]
    prefilter_ = Prefilter()

    def predict_report(self, X):
        if X["content"].str.contains("boom").any():
            raise RuntimeError("cannot score boom")
        return pd.DataFrame({
            "a": np.ones(len(X)), "weighted_average": 1.0, "tier": "low", "stage_used": "stage1",
            "stage1_estimate": 1.0, "gatekeeper_applied": False,
        })


def test_a_row_that_fails_scoring_does_not_fail_its_chunk():
    raws = [b'{"title": "t", "content": "fine"}', b'{"title": "t", "content": "boom"}',
            b'{"title": "t", "content": "fine too"}']
    rows = score_chunk(_FailingRouter(), [parse_line(i, raw) for i, raw in enumerate(raws, 7)])
    assert [row.weighted_average for row in rows] == [1.0, None, 1.0]
    assert rows[1].error == "line 8: scoring failed: RuntimeError: cannot score boom"


# --- resume -----------------------------------------------------------------


@pytest.mark.parametrize("cut_line", [9, 12])  # inside a chunk; at a chunk boundary
def test_resume_after_a_killed_run_gives_the_clean_bytes(
    filter_dir, input_file, clean_output, tmp_path, cut_line
):
    # A killed run has flushed whole chunks and may have been cut mid-line.
    complete = b"".join(clean_output.splitlines(keepends=True)[:cut_line])
    partial = clean_output.splitlines(keepends=True)[cut_line][:37]
    out = tmp_path / "scores.jsonl"
    out.write_bytes(complete + partial)
    status = main(["score", "--filter", str(filter_dir), str(input_file), "-o", str(out),
                   "--resume", "--batch-size", str(BATCH), "--quiet"])
    assert status == 0
    assert out.read_bytes() == clean_output


def test_resume_after_a_run_on_the_first_part_of_the_input(
    filter_dir, input_file, clean_output, tmp_path
):
    head = tmp_path / "head.jsonl"
    head.write_bytes(b"".join(input_file.read_bytes().splitlines(keepends=True)[: 2 * BATCH]))
    out = tmp_path / "scores.jsonl"
    args = ["--filter", str(filter_dir), "-o", str(out), "--batch-size", str(BATCH), "--quiet"]
    assert main(["score", str(head), *args]) == 0
    assert main(["score", str(input_file), "--resume", *args]) == 0
    assert out.read_bytes() == clean_output
    assert main(["score", str(input_file), "--resume", *args]) == 0  # nothing left to do
    assert out.read_bytes() == clean_output


def test_resume_refuses_an_output_of_another_input(filter_dir, input_file, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    out.write_text('{"line": 1}\n{"line": 7}\n')
    status = main(["score", "--filter", str(filter_dir), str(input_file), "-o", str(out), "--resume"])
    assert status == 2
    assert "not an output of this command" in capsys.readouterr().err
    assert out.read_text() == '{"line": 1}\n{"line": 7}\n'


@settings(max_examples=12, deadline=None)
@given(cut=st.floats(0, 1))
def test_resume_keeps_exactly_the_complete_lines(filter_dir, input_file, clean_output, tmp_path_factory, cut):
    # Through the public path (score --resume): the complete lines of an
    # interrupted output are kept, a partial last one dropped, none doubled.
    cut_at = int(cut * len(clean_output))
    out = tmp_path_factory.mktemp("resume") / "out.jsonl"
    out.write_bytes(clean_output[:cut_at])
    status = main(["score", "--filter", str(filter_dir), str(input_file), "-o", str(out),
                   "--resume", "--batch-size", str(BATCH), "--quiet", "--no-progress"])
    assert status == 0
    assert out.read_bytes() == clean_output


@settings(max_examples=100, deadline=None)
@given(content=st.binary(max_size=300), batch_size=st.integers(1, 5))
def test_every_input_line_becomes_exactly_one_row(tmp_path_factory, content, batch_size):
    path = tmp_path_factory.mktemp("lines") / "in.jsonl"
    path.write_bytes(content)
    with open(path, "rb") as file:
        chunks = list(read_chunks(file, batch_size))
    numbers = [number for chunk in chunks for number, _ in chunk]
    assert numbers == list(range(1, count_lines(path) + 1))
    assert all(len(chunk) <= batch_size for chunk in chunks)
    for number, raw in (pair for chunk in chunks for pair in chunk):
        row = parse_line(number, raw)
        assert row.line == number
        assert (row.article is None) != (row.error is None)
        assert row.error is None or row.error.startswith(f"line {number}")
        json.loads(row.to_json())


# --- fatal errors -------------------------------------------------------------


def test_fatal_errors_exit_2_with_one_clear_line(filter_dir, input_file, tmp_path, capsys):
    tampered = tmp_path / "tampered"
    shutil.copytree(filter_dir, tampered)
    probe = tampered / "probe" / "embedding_probe.skops"
    probe.write_bytes(probe.read_bytes()[:-10] + b"0123456789")
    cases = [
        (["score", "--filter", str(tmp_path / "missing"), str(input_file)], "does not exist"),
        (["score", "--filter", str(tmp_path), str(input_file)], "it has no config.yaml"),
        (["score", "--filter", str(tampered), str(input_file)], "does not match"),
        (["score", "--filter", str(filter_dir), str(tmp_path / "missing.jsonl")],
         "cannot read " + str(tmp_path / "missing.jsonl") + ": No such file"),
        (["score", "--filter", str(filter_dir), str(tmp_path)], "Is a directory"),
        (["score", "--filter", str(filter_dir), str(input_file), "--resume"], "--resume needs -o"),
        (["score", "--filter", str(filter_dir), str(input_file), "-o", str(input_file)],
         "must not be the input"),
        (["score", "--filter", str(filter_dir), str(input_file), "--backend", "openvino-int8"],
         "add --calibration FILE.jsonl"),
        (["score", "--filter", str(filter_dir), str(input_file), "--backend", "openvino-int8",
          "--calibration", str(tmp_path / "missing.jsonl")], "cannot read --calibration"),
        (["score", "--filter", str(filter_dir), str(input_file), "--backend", "openvino-int8",
          "--calibration", str(tampered / "config.yaml")], "has no valid article"),
        (["score", "--filter", str(filter_dir), str(input_file), "--backend", "openvino", "--ray"],
         "--backend and --dtype work without --ray"),
        (["info", "--filter", str(tmp_path / "missing")], "does not exist"),
        (["train-probe", str(tmp_path), "-o", str(tmp_path / "out")], "not a labelled folder"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("hybrid-estimators: error: ") and expected in err, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err, err
    assert main(["score", "--filter"]) == 2  # argparse: usage error
    assert "usage:" in capsys.readouterr().err


def _openvino_installed():
    try:
        return importlib.util.find_spec("optimum.intel") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(_openvino_installed(), reason="the openvino extra is installed")
def test_a_backend_whose_extra_is_missing_says_what_to_install(filter_dir, input_file, capsys):
    assert main(["score", "--filter", str(filter_dir), str(input_file), "--backend", "openvino"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "hybrid_estimators[openvino]"' in err and "Traceback" not in err


@pytest.mark.skipif(not _openvino_installed(), reason='needs pip install "hybrid_estimators[openvino]"')
@pytest.mark.parametrize("backend", ["openvino", "openvino-int8"])
def test_a_fast_backend_scores_the_same_lines_with_close_scores(
    backend, filter_dir, input_file, clean_output, tmp_path, monkeypatch
):
    monkeypatch.setenv("HYBRID_ESTIMATORS_HOME", str(tmp_path / "home"))
    out = tmp_path / "scores.jsonl"
    argv = ["score", "--filter", str(filter_dir), str(input_file), "-o", str(out), "--quiet",
            "--batch-size", str(BATCH), "--backend", backend, "--calibration", str(input_file)]
    assert main(argv) == 0
    fast, reference = rows_of(out.read_bytes()), rows_of(clean_output)
    assert [(r["line"], r["error"], r["blocked_by"]) for r in fast] == [
        (r["line"], r["error"], r["blocked_by"]) for r in reference
    ]
    scored = [(f, r) for f, r in zip(fast, reference) if r["weighted_average"] is not None]
    differences = [abs(f["weighted_average"] - r["weighted_average"]) for f, r in scored]
    assert len(scored) == 10 and max(differences) < (0.05 if backend == "openvino" else 0.5)


# --- info ---------------------------------------------------------------------


def test_info_shows_dimensions_weights_and_metrics(filter_dir, minilm_path, capsys):
    assert main(["info", "--filter", str(filter_dir)]) == 0
    out = capsys.readouterr().out
    for expected in (
        "demo/v1", "energy_progress  0.500", "health_benefit   0.250", "economic_impact  0.250",
        "high >= 7, medium >= 4, low >= 0", "threshold   4.5", minilm_path,
        "stage2      none (Stage 1 only)", "'sports': ['football']", "MLPRegressor(32,): 384 inputs -> 3 outputs",
        "cv_mae_weighted_average  0.5000", "n_articles               60", "training    60 articles",
    ):
        assert expected in out, expected
    assert main(["info", "--filter", str(filter_dir), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["metrics"] == METRICS
    assert list(info["dimensions"]) == ["energy_progress", "health_benefit", "economic_impact"]
    assert info["probe"]["n_outputs"] == 3 and info["probe_error"] is None


def test_info_reports_a_tampered_probe(filter_dir, tmp_path, capsys):
    tampered = tmp_path / "tampered"
    shutil.copytree(filter_dir, tampered)
    (tampered / "probe" / "embedding_probe.skops").write_bytes(b"\x80\x04 pickle")
    assert main(["info", "--filter", str(tampered)]) == 1
    assert "probe       INVALID:" in capsys.readouterr().out


# --- train-probe and calibrate --------------------------------------------------


def test_train_probe_saves_a_filter_that_beats_the_mean(minilm_path, labelled_folder, tmp_path, capsys):
    data, X, Y = labelled_folder
    out = tmp_path / "filters" / "demo" / "v2"
    status = main(["train-probe", str(data), "-o", str(out), "--version", "v2",
                   "--embedding-model", minilm_path, "--prefix", "", "--hidden-layer-sizes", "64",
                   "--cv", "3", "--no-progress"])
    assert status == 0
    assert f"saved filter demo/v2 to {out}" in capsys.readouterr().out
    router = load_filter(out)
    metrics = router.metadata["metrics"]
    assert metrics["n_articles"] == 60 and metrics["cv_folds"] == 3
    assert metrics["cv_mae_weighted_average"] < metrics["cv_mae_weighted_average_baseline"]
    assert {f"cv_mae_{name}" for name in Y.columns} <= set(metrics)
    assert router.spec.weights == {"energy_progress": 0.5, "health_benefit": 0.25, "economic_impact": 0.25}
    assert router.predict(X.head(2)).shape == (2, 3)

    # Calibrating on its own training data refits the probe out of fold.
    status = main(["calibrate", "--filter", str(out), str(data), "--cv", "auto",
                   "--target-recall", "0.8", "--confidence", "0.8", "--no-progress"])
    assert status == 0
    assert "out-of-fold (3-fold CV)" in capsys.readouterr().out


def test_train_probe_at_a_head_tail_budget_records_it_and_info_shows_it(minilm_path, labelled_folder, tmp_path, capsys):
    data, X, _ = labelled_folder
    out = tmp_path / "budget"
    status = main(["train-probe", str(data), "-o", str(out), "--embedding-model", minilm_path, "--prefix", "",
                   "--probe", "ridge", "--max-seq-length", "48", "--head-tail", "20", "20", "--cv", "3",
                   "--no-progress"])
    assert status == 0
    hybrid = load_filter(out).spec.hybrid_inference
    assert (hybrid["max_seq_length"], hybrid["embedding_head_tail"]) == (48, [20, 20])
    assert load_filter(out).metadata["embedding_budget"] == {"max_seq_length": 48, "head_tail": [20, 20]}
    capsys.readouterr()
    assert main(["info", "--filter", str(out)]) == 0
    assert "max_seq_length 48, head+tail 20+20" in capsys.readouterr().out


def test_calibrate_on_held_out_data_writes_a_threshold_that_keeps_recall(
    filter_dir, labelled_folder, tmp_path, capsys
):
    data, X, Y = labelled_folder
    folder = tmp_path / "filter"
    shutil.copytree(filter_dir, folder)
    status = main(["calibrate", "--filter", str(folder), str(data),
                   "--target-recall", "0.85", "--confidence", "0.8", "--no-progress"])
    assert status == 0
    out = capsys.readouterr().out
    assert "held-out (prefit)" in out and "target_met          True" in out

    hybrid = yaml.safe_load((folder / "config.yaml").read_text())["hybrid_inference"]
    assert (hybrid["target_recall"], hybrid["confidence"]) == (0.85, 0.8)
    threshold = hybrid["threshold"]
    assert 0 < threshold < 10 and f"wrote threshold {threshold:.4f}" in out
    router = load_filter(folder)
    medium_plus = is_medium_plus(Y.to_numpy(), router.weights_, tiers=router.tiers_)
    recall = np.mean(router.routing_scores(X[["title", "content"]])[medium_plus] >= threshold)
    assert recall >= 0.85


def _two_stage_copy(filter_dir, folder):
    """A copy of `filter_dir` with a Stage 2 section and a (never loaded) adapter folder."""
    from safetensors.numpy import save_file

    shutil.copytree(filter_dir, folder)
    (folder / "model").mkdir()
    (folder / "model" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    save_file({"base_model.model.score.weight": np.zeros((3, 8), np.float32)},
              str(folder / "model" / "adapter_model.safetensors"))
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["hybrid_inference"]["stage2"] = {"base_model": "org/base-model", "adapter": "model",
                                            "head_tail": [64, 64], "max_length": 128}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def _teacher_files(filter_dir, tmp_path):
    """A two-stage filter, 4 unlabelled articles and its teacher file (with sidecar)."""
    from _teacher_files import write_teacher_file

    folder = _two_stage_copy(filter_dir, tmp_path / "demo")
    filter_ = load_filter(folder)
    X, _ = make_articles(4, random_state=3)
    X["id"] = [f"u{i}" for i in range(len(X))]
    unlabelled = tmp_path / "u.jsonl"
    unlabelled.write_text("".join(json.dumps(row) + "\n" for row in X[["id", "title", "content"]].to_dict("records")))
    scores = np.full((len(X), len(filter_.dimension_names_)), 5.0)
    return folder, unlabelled, write_teacher_file(tmp_path / "t.jsonl", filter_, X["id"], scores, unlabelled)


def test_train_probe_and_calibrate_refuse_a_teacher_file_out_of_line(filter_dir, tmp_path, capsys):
    folder, unlabelled, teacher = _teacher_files(filter_dir, tmp_path)
    lines = teacher.read_text().splitlines(keepends=True)
    teacher.write_text("".join(reversed(lines)))  # tac
    calibrate = ["calibrate", "--filter", str(folder), str(unlabelled), "--reference", "stage2",
                 "--teacher-scores", str(teacher)]
    assert main(calibrate) == 2
    assert "t.jsonl: line 1: is the row of input line 4, not 1" in capsys.readouterr().err
    train = ["train-probe", "--teacher-scores", str(teacher), "--unlabelled", str(unlabelled),
             "--filter", str(folder), "-o", str(tmp_path / "distilled"), "--no-progress"]
    teacher.write_text("".join(lines[:2] + lines[1:3]))  # line 2 twice, line 4 lost
    assert main(train) == 2
    assert "t.jsonl: line 3: is the row of input line 2, not 3" in capsys.readouterr().err
    assert not (tmp_path / "distilled").exists()


def test_calibrate_against_stage2_refuses_training_articles_with_a_trailing_space(filter_dir, tmp_path, capsys):
    from _teacher_files import write_teacher_file

    folder = _two_stage_copy(filter_dir, tmp_path / "demo")
    trained, _ = make_articles(60, random_state=0)  # filter_dir's training articles
    others, _ = make_articles(6, random_state=11)
    X = pd.concat([trained.head(6).assign(content=lambda f: f["content"] + " "), others], ignore_index=True)
    X["id"] = [f"u{i}" for i in range(len(X))]
    unlabelled = tmp_path / "u.jsonl"
    unlabelled.write_text("".join(json.dumps(row) + "\n" for row in X[["id", "title", "content"]].to_dict("records")))
    teacher = write_teacher_file(tmp_path / "t.jsonl", load_filter(folder), X["id"], np.full((12, 3), 5.0), unlabelled)
    calibrate = ["calibrate", "--filter", str(folder), str(unlabelled), "--reference", "stage2",
                 "--teacher-scores", str(teacher), "--target-recall", "0.5", "--confidence", "0.5"]
    assert main(calibrate) == 2
    assert "6 of the 12 articles of" in capsys.readouterr().err
    assert main([*calibrate, "--allow-training-articles"]) == 0
    captured = capsys.readouterr()
    assert "in sample: 6 of them training articles" in captured.out
    assert "are among the training articles" in captured.err


def test_calibrate_on_the_filters_own_training_articles_refuses_unless_allowed(seece, tmp_path, capsys):
    """40 of the shipped seece filter's training articles, each with a trailing space (Stage 1 only)."""
    X, Y, spec = seece
    folder = tmp_path / "seece"
    shutil.copytree(Path(__file__).resolve().parents[1] / "filters" / "seece_energy_tech" / "v1", folder)
    data = tmp_path / "data"
    data.mkdir()
    records = X.head(40).assign(content=lambda f: f["content"] + " ").to_dict("records")
    for record, scores in zip(records, Y.head(40).to_dict("records")):
        record["scores"] = scores
    (data / "articles.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (data / "filter.yaml").write_text(yaml.safe_dump({"name": spec["name"], "dimensions": spec["dimensions"],
                                                      "tiers": spec["tiers"]}))
    calibrate = ["calibrate", "--filter", str(folder), str(data), "--no-progress", "--record-only"]
    assert main(calibrate) == 2
    assert "40 of the 40 articles of" in capsys.readouterr().err
    assert main([*calibrate, "--allow-training-articles"]) == 0
    captured = capsys.readouterr()
    assert "prefit, in sample: 40 of them training articles" in captured.out
    assert "40 of the 40 articles of" in captured.err and "optimistic (in sample)" in captured.err


def test_train_probe_over_an_existing_filter_refuses_unless_force_then_replaces_it_whole(
    minilm_path, filter_dir, labelled_folder, tmp_path, capsys
):
    data, _, _ = labelled_folder
    out = _two_stage_copy(filter_dir, tmp_path / "filters" / "demo")  # with model/, a Stage 2 section
    before = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
    train = ["train-probe", str(data), "-o", str(out), "--embedding-model", minilm_path, "--prefix", "",
             "--probe", "ridge", "--cv", "2", "--no-progress"]
    assert main(train) == 2
    assert f"-o {out} already exists and is not empty" in capsys.readouterr().err
    assert {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()} == before

    assert main([*train, "--force"]) == 0
    assert not (out / "model").exists()  # nothing of the old folder is left behind
    assert yaml.safe_load((out / "config.yaml").read_text())["hybrid_inference"]["stage2"] is None
    assert sorted(path.name for path in out.rglob("*") if path.is_file()) == [
        "README.md", "config.yaml", "embedding_probe.skops", "metadata.json"]
    assert sorted(path.name for path in out.parent.iterdir()) == ["demo"]  # no staging or old copy
    assert load_filter(out).metadata["metrics"]["probe"] == "ridge"

    (tmp_path / "a_file").write_text("x")
    assert main([*train[:2], "-o", str(tmp_path / "a_file"), *train[4:], "--force"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


# --- benchmark ----------------------------------------------------------------


def test_benchmark_says_when_it_is_not_installed(tmp_path, monkeypatch, capsys):
    # An installed package has no benchmarks/: hide the checkout's from imports.
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and Path(p).resolve() != root])
    monkeypatch.delitem(sys.modules, "benchmarks", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["benchmark"]) == 2
    assert "benchmarks are not installed" in capsys.readouterr().err


def test_benchmark_runs_python_m_benchmarks(tmp_path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "__main__.py").write_text(
        "import pathlib, sys\npathlib.Path('ran.txt').write_text(' '.join(sys.argv[1:]))\nsys.exit(3)\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", "--quick", "stage1"]) == 3
    assert (tmp_path / "ran.txt").read_text() == "--quick stage1"


# --- the installed entry point ------------------------------------------------


def test_installed_entry_point_resumes_in_a_new_process(filter_dir, input_file, clean_output, tmp_path):
    script = Path(sys.executable).parent / "hybrid-estimators"
    if not script.exists():
        pytest.skip("the hybrid-estimators script is not installed (pip install -e .)")
    # Cut after the 1 MB article's chunk, in the middle of line 14: the new
    # process re-embeds lines 13-16 and must write the same bytes.
    kept = clean_output.splitlines(keepends=True)
    out = tmp_path / "scores.jsonl"
    out.write_bytes(b"".join(kept[:13]) + kept[13][:50])
    result = subprocess.run(
        [str(script), "score", "--filter", str(filter_dir), str(input_file), "-o", str(out),
         "--resume", "--batch-size", str(BATCH)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == clean_output
    table = result.stdout.splitlines()
    assert table[0].split()[:3] == ["line", "id", "tier"]
    assert [int(line.split()[0]) for line in table[1:]] == [14, 15, 16, 17]
    assert "lines=4 scored=4 stage2=0 blocked=0 errors=0 (resumed after line 13)" in result.stderr
