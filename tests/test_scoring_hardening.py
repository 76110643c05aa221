"""``score``: nothing lost, nothing silent.

Every input line gets exactly one row whatever its bytes; ``--resume``
refuses an output of another input, filter or run; the table shows what a
terminal would act on escaped; line endings, visible length, ``--columns``,
``ms/art`` and the progress options.
"""

import fcntl
import json
import os
import re
import shutil
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline

import hybrid_estimators.cli.score as score_module
from hybrid_estimators.cli import main
from hybrid_estimators.datasets import make_articles
from hybrid_estimators.embedding import E5Embedder
from hybrid_estimators.filters import FilterSpec, load_filter, save_filter
from hybrid_estimators.prefilter import Prefilter
from hybrid_estimators.probe import make_probe
from hybrid_estimators.router import HybridRouterRegressor
from hybrid_estimators.scoring import (
    UNWRITABLE_ID,
    ScoredLine,
    count_lines,
    iter_lines,
    parse_line,
    read_chunks,
    score_lines,
    split_lines,
    writable_id,
)
from hybrid_estimators.text import ArticleText

BATCH = 3
DIMENSIONS = ["energy_progress", "health_benefit", "economic_impact"]
WEIGHTS = {"energy_progress": 0.5, "health_benefit": 0.25, "economic_impact": 0.25}
GOOD = {"id": "good", "title": "Grid battery", "content": "Solar panels cut emissions."}
#: Lone surrogates and escape sequences: text that cannot be written as is.
ODD_TEXT = ["\ud800", "\udfff", "a\ud83dz", "\x1b[31mred\x07", "\u202eevil", "\u200b" * 3, "é中"]


@pytest.fixture(scope="module")
def filter_dir(tmp_path_factory, minilm_path):
    """A Stage-1-only filter (MiniLM + small probe) with min_length 10 and a keyword."""
    X, Y = make_articles(40, random_state=0)
    stage1 = make_pipeline(
        ArticleText(), E5Embedder(minilm_path, prefix="", show_progress_bar=False), make_probe((16,))
    ).fit(X, Y)
    router = HybridRouterRegressor(FrozenEstimator(stage1), None, WEIGHTS, threshold=4.5).fit(X, Y)
    spec = FilterSpec.from_dict({
        "name": "demo",
        "version": "v1",
        "dimensions": WEIGHTS,
        "prefilter": {"min_length": 10, "block_keywords": {"sports": ["football"]}},
        "hybrid_inference": {"embedding_model": minilm_path, "embedding_prefix": "", "stage2": None},
    })
    return save_filter(router, tmp_path_factory.mktemp("filters") / "demo" / "v1", spec)


def _line(article):
    return json.dumps(article, ensure_ascii=True).encode()


@pytest.fixture(scope="module")
def articles_file(tmp_path_factory):
    """Two good articles around the two ids that used to end the run, and one more."""
    X, _ = make_articles(4, random_state=7)
    good = [_line(row) for row in X.to_dict("records")]
    lines = [
        good[0],
        b'{"id":"\\ud800","title":"Grid battery","content":"Solar panels cut emissions."}',
        b'{"id":1e400,"title":"t"}',
        good[1],
        good[2],
        good[3],
        _line({"id": "last", "title": "Heat pumps", "content": "Heat pumps heat homes."}),
    ]
    path = tmp_path_factory.mktemp("in") / "articles.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def rows_of(path):
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]


def score(filter_dir, *argv):
    return main(["score", "--filter", str(filter_dir), *map(str, argv), "--batch-size", str(BATCH),
                 "--no-progress"])


def no_model_loads(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(score_module, "load_filter_or_fail", fail)


# --- every line gets one row, whatever its bytes ------------------------------


def test_unwritable_ids_are_escaped_and_do_not_end_the_run(filter_dir, articles_file, tmp_path):
    out = tmp_path / "scores.jsonl"
    assert score(filter_dir, articles_file, "-o", out, "-q") == 0
    rows = rows_of(out)
    assert [row["line"] for row in rows] == list(range(1, 8))
    assert rows[1]["id"] == "\\ud800" and rows[1]["error"] is None and rows[1]["scores"]
    assert rows[2]["id"] == "inf" and "min_length" in rows[2]["blocked_by"]
    assert all(row["error"] is None for row in rows)
    clean = out.read_bytes()
    assert score(filter_dir, articles_file, "-o", out, "-q", "--resume") == 0
    assert out.read_bytes() == clean


json_leaves = (
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(st.characters(exclude_categories=()), max_size=6) | st.sampled_from(ODD_TEXT)
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(st.characters(exclude_categories=()), max_size=3), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, note=st.text(st.characters(exclude_categories=()), max_size=20))
def test_to_json_is_total(value, note):
    row = ScoredLine(5, id=value, error=note, blocked_by=note, tier=note)
    text = row.to_json()
    decoded = json.loads(text.encode("utf-8"), parse_constant=pytest.fail)
    assert list(decoded) == list(row.to_record())
    assert decoded["id"] == writable_id(value)
    assert json.loads(row.to_json(ensure_ascii=True)) == decoded


def test_to_json_survives_ids_nested_deeper_than_the_recursion_limit():
    deep = []
    for _ in range(5000):
        deep = [deep]
    row = ScoredLine(1, id=deep, error="x")
    assert json.loads(row.to_json())["id"] == UNWRITABLE_ID
    nested = parse_line(1, b'{"id": ' + b"[" * 300 + b"]" * 300 + b', "title": 5}')
    assert nested.error.startswith("line 1 (id=") and json.loads(nested.to_json())


def _article_line(value, title, raw_id):
    if raw_id is not None:  # numbers json.dumps never writes: 1e400 is inf in Python
        return b'{"id": ' + raw_id.encode() + b', "title": "t", "content": "Solar grid news."}'
    return json.dumps({"id": value, "title": title, "content": "Solar grid news."},
                      ensure_ascii=True, allow_nan=True).encode()


raw_ids = st.sampled_from(["1e400", "-1e400", "1" * 5000, "1e-400", "-0.0", "Infinity", "NaN"])
article_lines = st.builds(
    _article_line, json_values, st.text(st.characters(exclude_categories=()), max_size=12),
    st.none() | raw_ids,
)
any_line = article_lines | st.binary(max_size=40) | st.sampled_from([b"", b"[1]", b"{", b"\xff"])
separators = st.sampled_from([b"\n", b"\r\n", b"\r"])


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(any_line, max_size=6), seps=st.lists(separators, min_size=6, max_size=6),
       end=st.booleans())
def test_parse_line_gives_every_line_one_writable_row(lines, seps, end):
    data = b"".join(line + sep for line, sep in zip(lines, seps))
    if lines and not end:  # no line ending after the last line
        data = data[: -len(seps[len(lines) - 1])]
    rows = [parse_line(number, raw) for chunk in read_chunks(_Reader(data), 2) for number, raw in chunk]
    assert [row.line for row in rows] == list(range(1, len(split_lines(data)) + 1))
    for row in rows:
        assert (row.article is None) != (row.error is None)
        json.loads(row.to_json().encode("utf-8"))


class _Reader:
    """A binary stream that hands out its bytes a few at a time."""

    def __init__(self, data, size=3):
        self.data, self.size = data, size

    def read(self, n=-1):
        chunk, self.data = self.data[: self.size], self.data[self.size :]
        return chunk


# capsys is read (and so emptied) by every example.
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(any_line, min_size=1, max_size=5), seps=st.lists(separators, min_size=5, max_size=5),
       table=st.booleans())
def test_score_writes_one_row_per_line_for_any_input(
    filter_dir, tmp_path_factory, capsys, lines, seps, table
):
    folder = tmp_path_factory.mktemp("fuzz")
    path, out = folder / "in.jsonl", folder / "out.jsonl"
    path.write_bytes(b"".join(line + sep for line, sep in zip(lines, seps)))
    argv = [path] if table else [path, "-o", out, "-q"]
    assert score(filter_dir, *argv) == 0
    captured = capsys.readouterr()
    n_lines = count_lines(path)
    if table:
        shown = captured.out.split("\n")[1:-1]
        assert [int(line.split()[0]) for line in shown] == list(range(1, n_lines + 1))
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b\u202e]", captured.out)
        return
    rows = rows_of(out)
    assert [row["line"] for row in rows] == list(range(1, n_lines + 1))
    for row, raw in zip(rows, split_lines(path.read_bytes())):
        assert row["id"] == writable_id(parse_line(row["line"], raw).id)


# --- line endings ---------------------------------------------------------------


def _reference_lines(data):
    lines = re.split(rb"\r\n|\r|\n", data)
    return lines[:-1] if lines[-1] == b"" else lines


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=60) | st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n"])).map(b"".join),
       block=st.integers(1, 7))
def test_every_reader_splits_lines_alike(tmp_path_factory, data, block):
    path = tmp_path_factory.mktemp("split") / "in.jsonl"
    path.write_bytes(data)
    expected = _reference_lines(data)
    assert split_lines(data) == expected
    assert list(iter_lines(_Reader(data, block))) == expected
    assert count_lines(path) == len(expected)
    pa = pytest.importorskip("pyarrow")
    from hybrid_estimators.distributed import RAW, _jsonl_chunks

    # Ray reads a file in the chunks of the plain path: the same lines, numbered alike.
    (table,) = _jsonl_chunks(pa.table({"bytes": pa.array([data], pa.binary())}), batch_size=block)
    assert [line for chunk in table[RAW].to_pylist() for line in chunk] == expected
    assert table["line"].to_pylist() == list(range(1, len(expected) + 1, block))
    assert all(len(chunk) <= block for chunk in table[RAW].to_pylist())


def test_cr_only_line_endings_keep_articles_apart(filter_dir, tmp_path):
    path, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    a = {"id": "a", "title": "Grid battery", "content": "Solar panels cut emissions."}
    b = {"id": "b", "title": "Wind farm", "content": "Turbines power homes."}
    path.write_bytes(_line(a) + b"\r" + _line(b) + b"\r")
    assert score(filter_dir, path, "-o", out, "-q") == 0
    rows = rows_of(out)
    assert [(row["id"], row["error"]) for row in rows] == [("a", None), ("b", None)]


# --- resume refuses what is not its own ----------------------------------------------


@pytest.fixture
def scored(filter_dir, articles_file, tmp_path):
    """An output of `articles_file` cut inside its third chunk, and its full bytes."""
    out = tmp_path / "scores.jsonl"
    assert score(filter_dir, articles_file, "-o", out, "-q") == 0
    full = out.read_bytes()
    out.write_bytes(b"".join(full.splitlines(keepends=True)[:4]) + b'{"line": 5, "id"')
    return out, full


def _refused(capsys, *expected):
    err = capsys.readouterr().err
    assert err.startswith("hybrid-estimators: error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err


def test_resume_refuses_an_output_of_a_changed_input(filter_dir, articles_file, scored, tmp_path, capsys):
    out, _ = scored
    kept = out.read_bytes()
    changed = tmp_path / "changed.jsonl"
    lines = articles_file.read_bytes().splitlines(keepends=True)
    changed.write_bytes(b"".join([lines[0], lines[3], lines[2], lines[1], *lines[4:]]))
    assert score(filter_dir, changed, "-o", out, "-q", "--resume") == 2
    _refused(capsys, "cannot resume", "another input")
    assert out.read_bytes() == kept

    os.unlink(f"{out}.meta.json")  # no sidecar: the rows' ids tell
    assert score(filter_dir, changed, "-o", out, "-q", "--resume") == 2
    _refused(capsys, "cannot resume", "line 2 has id", "another input")
    assert out.read_bytes() == kept


def test_resume_without_a_sidecar_checks_ids_and_continues(filter_dir, articles_file, scored, capsys):
    out, full = scored
    os.unlink(f"{out}.meta.json")
    assert score(filter_dir, articles_file, "-o", out, "-q", "--resume") == 0
    assert out.read_bytes() == full
    assert "no sidecar" in capsys.readouterr().err


@pytest.mark.parametrize("change", ["version", "probe", "dimensions", "stage1-only"])
def test_resume_refuses_another_filter_or_options(filter_dir, articles_file, scored, tmp_path, capsys, change):
    out, _ = scored
    other = tmp_path / "other"
    shutil.copytree(filter_dir, other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    metadata = json.loads((other / "probe" / "metadata.json").read_text())
    if change == "version":
        config["version"] = "v2"
    elif change == "probe":
        metadata["probe_sha256"] = "0" * 64
    elif change == "dimensions":
        config["dimensions"] = {"energy_progress": 0.5, "other": 0.5}
    (other / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (other / "probe" / "metadata.json").write_text(json.dumps(metadata))
    extra = ["--stage1-only"] if change == "stage1-only" else []
    folder = filter_dir if change == "stage1-only" else other
    assert score(folder, articles_file, "-o", out, "-q", "--resume", *extra) == 2
    expected = {"version": "demo/v2", "probe": "probe_sha256", "dimensions": "dimensions",
                "stage1-only": "--stage1-only"}[change]
    _refused(capsys, "cannot resume", expected)


@pytest.mark.parametrize("field, value, named", [
    (("tiers", "medium"), 2.0, "config.tiers.medium"),
    (("hybrid_inference", "threshold"), 3.0, "config.hybrid_inference.threshold"),
    (("prefilter", "min_length"), 12, "config.prefilter.min_length"),
    (("dimensions", "energy_progress"), 0.6, "config.dimensions.energy_progress"),
])
def test_resume_refuses_a_filter_whose_config_changed(
    filter_dir, articles_file, scored, tmp_path, capsys, monkeypatch, field, value, named
):
    # Issue 21 item 1: a copy of the filter with tiers.medium 4.0 -> 2.0 (or any field that
    # changes an output) mixed rows scored under two configs; the field is named.
    out, _ = scored
    kept = out.read_bytes()
    other = tmp_path / "other"
    shutil.copytree(filter_dir, other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    section, key = field
    config[section][key] = value
    (other / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    no_model_loads(monkeypatch)
    assert score(other, articles_file, "-o", out, "-q", "--resume") == 2
    _refused(capsys, "cannot resume", named)
    assert out.read_bytes() == kept


def test_resume_refuses_another_batch_size(filter_dir, articles_file, scored, capsys, monkeypatch):
    out, _ = scored
    no_model_loads(monkeypatch)
    assert main(["score", "--filter", str(filter_dir), str(articles_file), "-o", str(out), "-q",
                 "--resume", "--batch-size", str(BATCH + 1), "--no-progress"]) == 2
    _refused(capsys, "cannot resume", "--batch-size 3, this run has 4")


def test_resume_refuses_rows_computed_by_another_runtime(filter_dir, articles_file, scored, capsys, monkeypatch):
    """--backend auto may resolve differently on another machine: rows of two configurations never mix."""
    out, _ = scored
    kept = out.read_bytes()
    sidecar_path = f"{out}.meta.json"
    with open(sidecar_path) as file:
        sidecar = json.load(file)
    sidecar["options"]["runtime"]["demo/v1"]["stage1"] = "openvino-bf16"  # as written on a bf16 machine
    with open(sidecar_path, "w") as file:
        json.dump(sidecar, file)
    no_model_loads(monkeypatch)
    assert score(filter_dir, articles_file, "-o", out, "-q", "--resume") == 2
    _refused(capsys, "cannot resume", "Stage 1 on openvino-bf16", "would be on torch",
             "pass --backend openvino-bf16 to resume it")
    assert out.read_bytes() == kept


def test_resume_refuses_an_output_without_sidecar_of_another_filter(
    filter_dir, articles_file, scored, tmp_path, capsys
):
    out, _ = scored
    os.unlink(f"{out}.meta.json")
    other = tmp_path / "other"
    shutil.copytree(filter_dir, other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["dimensions"] = {"energy_progress": 0.5, "other": 0.5}
    (other / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert score(other, articles_file, "-o", out, "-q", "--resume") == 2
    _refused(capsys, "another filter")


def test_a_second_run_on_the_same_output_is_refused(filter_dir, articles_file, scored, monkeypatch, capsys):
    out, full = scored
    kept = out.read_bytes()
    lock = os.open(f"{out}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(lock, b"4242\n")
        no_model_loads(monkeypatch)
        for extra in (["--resume"], []):
            assert score(filter_dir, articles_file, "-o", out, "-q", *extra) == 2
            _refused(capsys, "being written by another run", "pid 4242")
            assert out.read_bytes() == kept
    finally:
        os.close(lock)
    monkeypatch.undo()
    assert score(filter_dir, articles_file, "-o", out, "-q", "--resume") == 0
    assert out.read_bytes() == full
    assert not os.path.exists(f"{out}.lock")  # released and removed


def test_the_sidecar_says_what_the_output_was_scored_from(filter_dir, articles_file, tmp_path):
    out = tmp_path / "scores.jsonl"
    assert score(filter_dir, articles_file, "-o", out, "-q") == 0
    sidecar = json.loads((tmp_path / "scores.jsonl.meta.json").read_text())
    import hashlib

    digest = hashlib.sha256(b"".join(line + b"\n" for line in split_lines(articles_file.read_bytes())))
    assert sidecar["format"] == "hybrid-estimators-score/2"
    assert sidecar["input"] == {"path": str(articles_file), "lines": 7, "sha256": digest.hexdigest()}
    metadata = json.loads((filter_dir / "probe" / "metadata.json").read_text())
    config = sidecar["filter"].pop("config")
    assert sidecar["filter"] == {"name": "demo", "version": "v1", "probe_sha256": metadata["probe_sha256"],
                                 "adapter_sha256": None, "dimensions": DIMENSIONS}
    assert config["tiers"] == {"high": 7.0, "medium": 4.0, "low": 0.0}
    assert config["hybrid_inference"]["threshold"] == 4.5 and config["prefilter"]["min_length"] == 10
    from hybrid_estimators import __version__

    assert sidecar["options"] == {
        "stage1_only": False, "backend": "auto", "dtype": "auto",
        "runtime": {"demo/v1": {"stage1": "torch", "stage2": None}},  # what auto resolved to: nothing recorded
        "batch_size": BATCH, "all_stage2": False, "audit": None, "audit_seed": 0, "package_version": __version__,
    }


def test_a_ray_run_writes_the_sidecar_of_the_whole_input(filter_dir, articles_file, tmp_path):
    import argparse

    out = tmp_path / "scores.jsonl"
    assert score(filter_dir, articles_file, "-o", out, "-q") == 0
    sidecar = tmp_path / "scores.jsonl.meta.json"
    expected = sidecar.read_bytes()
    sidecar.unlink()
    args = argparse.Namespace(input=articles_file, output=out, filter=filter_dir, stage1_only=False,
                              backend="auto", dtype="auto", calibration=None, batch_size=BATCH, all_stage2=False)
    args.runtime = score_module.resolve_runtime(args)
    score_module._write_ray_sidecar(args, score_module._filter_identity(filter_dir))
    assert sidecar.read_bytes() == expected


# --- input and output compared as files (issue 21, items 2, 3, 10) ------------------


def _feed_fifo(path, data):
    import threading

    def write():
        with open(path, "wb") as fifo:
            fifo.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def test_a_named_pipe_input_is_read_once_and_every_line_scored(filter_dir, articles_file, tmp_path):
    # `score ... <(cat in.jsonl)` used to count the lines by re-opening the pipe, draining it.
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    writer = _feed_fifo(fifo, articles_file.read_bytes())
    out = tmp_path / "out.jsonl"
    assert score(filter_dir, fifo, "-o", out, "-q") == 0
    writer.join(5)
    reference = tmp_path / "reference.jsonl"
    assert score(filter_dir, articles_file, "-o", reference, "-q") == 0
    assert len(rows_of(out)) == 7 and out.read_bytes() == reference.read_bytes()


def test_resume_with_a_pipe_input_is_refused(filter_dir, articles_file, tmp_path, monkeypatch, capsys):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    writer = _feed_fifo(fifo, articles_file.read_bytes())
    no_model_loads(monkeypatch)
    assert score(filter_dir, fifo, "-o", tmp_path / "out.jsonl", "-q", "--resume") == 2
    _refused(capsys, "--resume needs an input that is a regular file")
    writer.join(5)


class _Stdin:
    def __init__(self, file):
        self.buffer = file


def test_stdin_read_from_the_output_file_is_refused_before_truncating(
    filter_dir, articles_file, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "v.jsonl"
    out.write_bytes(articles_file.read_bytes())
    no_model_loads(monkeypatch)
    with open(out, "rb") as stdin:
        monkeypatch.setattr("sys.stdin", _Stdin(stdin))
        assert score(filter_dir, "-", "-o", out, "-q") == 2
    _refused(capsys, "must not be the input", "standard input")
    assert out.read_bytes() == articles_file.read_bytes()


def test_a_device_output_gets_no_sidecar_beside_it(filter_dir, articles_file):
    assert score(filter_dir, articles_file, "-o", os.devnull, "-q", "--stage1-only") == 0
    assert not os.path.exists(f"{os.devnull}.meta.json") and not os.path.exists(f"{os.devnull}.lock")


def test_a_symlink_to_the_output_shares_its_lock_and_sidecar(
    filter_dir, articles_file, tmp_path, monkeypatch, capsys
):
    out, link = tmp_path / "real.jsonl", tmp_path / "link.jsonl"
    link.symlink_to(out)
    assert score(filter_dir, articles_file, "-o", link, "-q") == 0
    assert (tmp_path / "real.jsonl.meta.json").exists() and not (tmp_path / "link.jsonl.meta.json").exists()
    full = out.read_bytes()
    capsys.readouterr()
    lock = os.open(f"{out}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        no_model_loads(monkeypatch)
        assert score(filter_dir, articles_file, "-o", link, "-q", "--resume") == 2
        _refused(capsys, "being written by another run")
    finally:
        os.close(lock)
    monkeypatch.undo()
    out.write_bytes(b"".join(full.splitlines(keepends=True)[:2]))
    assert score(filter_dir, articles_file, "-o", link, "-q", "--resume") == 0
    assert out.read_bytes() == full and "no sidecar" not in capsys.readouterr().err


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_an_output_linked_to_the_input_is_refused_before_loading(
    filter_dir, articles_file, tmp_path, monkeypatch, capsys, link
):
    data = articles_file.read_bytes()
    out = tmp_path / "out.jsonl"
    (os.link if link == "hard" else os.symlink)(articles_file, out)
    no_model_loads(monkeypatch)
    for extra in ([], ["--resume"]):
        assert score(filter_dir, articles_file, "-o", out, *extra) == 2
        _refused(capsys, "must not be the input")
    assert articles_file.read_bytes() == data


@pytest.mark.parametrize("where", ["missing folder", "a folder", "under a file"])
def test_output_folder_problems_are_reported_before_loading(
    filter_dir, articles_file, tmp_path, monkeypatch, capsys, where
):
    out = {
        "missing folder": tmp_path / "missing" / "out.jsonl",
        "a folder": tmp_path,
        "under a file": articles_file / "out.jsonl",
    }[where]
    no_model_loads(monkeypatch)
    assert score(filter_dir, articles_file, "-o", out) == 2
    _refused(capsys, f"cannot write {out}")


# --- the table ------------------------------------------------------------------------


def test_the_table_escapes_what_a_terminal_would_act_on(filter_dir, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    ids = ["\x1b[2J\x1b[31mred", "bell\x07", "\u202eevil", "zero\u200bwidth", "\ud800", "é中"]
    path.write_bytes(b"\n".join(_line({**GOOD, "id": row_id}) for row_id in ids))
    assert score(filter_dir, path) == 0
    out = capsys.readouterr().out
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b\u202e]", out)
    cells = [line.split()[1] for line in out.splitlines()[1:]]
    assert cells == ["\\x1b[2J\\x1b[31mred", "bell\\x07", "\\u202eevil", "zero\\u200bwidth", "\\ud800", "é中"]


def test_columns_shows_the_dimensions_scores(filter_dir, articles_file, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    assert score(filter_dir, articles_file, "-o", out, "--columns", "scores") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:8] == ["line", "id", "tier", "stage", "w.avg", *DIMENSIONS]
    for line, row in zip(lines[1:], rows_of(out)):
        shown = line.split()[5:8]
        scores = row["scores"] or dict.fromkeys(DIMENSIONS)  # a blocked row shows -
        assert shown == [f"{scores[name]:.2f}" if scores[name] is not None else "-" for name in DIMENSIONS]

    assert score(filter_dir, articles_file, "--columns", "health_benefit") == 0
    assert capsys.readouterr().out.splitlines()[0].split()[5] == "health_benefit"
    assert score(filter_dir, articles_file, "--columns", "nope") == 2
    _refused(capsys, "unknown dimension", "energy_progress, health_benefit, economic_impact")


def test_ms_per_article_is_each_rows_share(filter_dir, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([_line(GOOD), b"{bad", _line({**GOOD, "title": "", "content": "short"})]))
    assert main(["score", "--filter", str(filter_dir), str(path), "--batch-size", "3"]) == 0
    captured = capsys.readouterr()
    ms = [float(line.split()[5]) for line in captured.out.splitlines()[1:]]
    assert ms[0] > 1 and ms[1] < 0.5 * ms[0] and ms[2] < 0.5 * ms[0]
    assert re.search(r"lines=3 scored=1 .*; \d+\.\d+ s, \d+\.\d ms per line, \d+\.\d ms per scored", captured.err)


class _SlowRouter:
    """predict_report takes 0.2 s; the article titled 'routed' goes to Stage 2."""

    dimension_names_ = ["a"]
    stage2_ = "stage 2"

    def predict_report(self, X):
        time.sleep(0.2)
        routed = X["title"].eq("routed").to_numpy()
        return pd.DataFrame({
            "a": np.ones(len(X)), "weighted_average": 1.0, "tier": "low",
            "stage_used": np.where(routed, "stage2", "stage1"), "stage1_estimate": 1.0,
            "gatekeeper_applied": False, "blocked_by": None,
        })


def test_score_lines_shares_the_chunk_time_by_stage(monkeypatch):
    import hybrid_estimators.router

    monkeypatch.setattr(hybrid_estimators.router, "measured_seconds_per_row", lambda stage: 0.15)
    chunk = [(1, _line(GOOD)), (2, b"{bad"), (3, _line({**GOOD, "title": "routed"}))]
    rows = score_lines(_SlowRouter(), chunk)
    stage1, bad, routed = (row.seconds for row in rows)
    assert bad < 0.01
    assert routed - stage1 == pytest.approx(0.15, abs=0.005)  # Stage 2 on top (and parsing)
    assert stage1 > 0 and sum(row.seconds for row in rows) >= 0.2  # the chunk's time, shared


# --- progress bars ---------------------------------------------------------------------


class _Stage2(BaseEstimator):
    def __init__(self, show_progress_bar=True):
        self.show_progress_bar = show_progress_bar


@pytest.mark.parametrize("option", ["-q", "--no-progress"])
def test_quiet_keeps_the_bars_no_progress_hides_all(filter_dir, articles_file, tmp_path, monkeypatch, option):
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as transformers_logging

    import tqdm.auto

    stage2, seen = _Stage2(), {}
    real_load = score_module.load_filter_or_fail

    def load(*args, **kwargs):
        seen["weights_bar"] = transformers_logging.is_progress_bar_enabled()
        seen["hub_bar"] = not are_progress_bars_disabled()
        router = real_load(*args, **kwargs)
        router.stage2 = FrozenEstimator(stage2)  # its parameters only: stage2_ stays None
        return router

    class Bar(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            seen["disable"] = kwargs.get("disable")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(score_module, "load_filter_or_fail", load)
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    out = tmp_path / "out.jsonl"
    argv = ["score", "--filter", str(filter_dir), str(articles_file), "-o", str(out), "-v", option]
    assert main(argv) == 0
    hidden = option == "--no-progress"
    assert seen["disable"] is (True if hidden else None)  # None: shown on a terminal
    assert stage2.show_progress_bar is not hidden
    assert seen["weights_bar"] is not hidden and seen["hub_bar"] is not hidden
    assert transformers_logging.is_progress_bar_enabled()  # restored


# --- the prefilter counts what shows ------------------------------------------------------


def test_an_article_of_zero_width_characters_is_blocked(filter_dir, tmp_path):
    path, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    path.write_bytes(b"\n".join([
        _line({"id": "zw", "title": "\u200b" * 30, "content": "\u2060\ufeff" * 10}),
        _line({"id": "ok", "title": "Grid", "content": "battery"}),
    ]))
    assert score(filter_dir, path, "-o", out, "-q") == 0
    rows = rows_of(out)
    assert rows[0]["blocked_by"] == "min_length:10" and rows[0]["scores"] is None
    assert rows[1]["blocked_by"] is None and rows[1]["scores"] is not None
    assert Prefilter(min_length=10).blocked_by([{"title": "\u200b" * 30, "content": ""}]) == ["min_length:10"]


def test_load_filter_reads_the_same_dimensions_as_the_sidecar(filter_dir):
    assert load_filter(filter_dir).dimension_names_ == DIMENSIONS


# --- memory of a line bounded by what the stages read (issue 21, item 7) ---------------


def test_a_huge_text_keeps_only_what_a_stage_can_read():
    from hybrid_estimators.scoring import CUT_MARK, KEEP_CHARS, MAX_TOKENS_READ

    head, middle, tail = "h" * KEEP_CHARS, "m" * (3 * KEEP_CHARS), "t" * KEEP_CHARS
    row = parse_line(1, _line({"id": "big", "title": "Grid", "content": head + middle + tail}))
    assert row.error is None and row.article["title"] == "Grid"
    assert row.article["content"] == head + CUT_MARK + tail
    # The bound is generous: every token a stage may read from either end fits in what is kept.
    assert KEEP_CHARS >= MAX_TOKENS_READ * 50 >= 4 * 512 * 50


def test_a_line_over_the_maximum_is_an_error_row(monkeypatch, filter_dir, tmp_path):
    import hybrid_estimators.scoring

    monkeypatch.setattr(hybrid_estimators.scoring, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "in.jsonl"
    path.write_bytes(_line({**GOOD, "content": "x" * 2000}) + b"\n" + _line(GOOD) + b"\n")
    out = tmp_path / "out.jsonl"
    assert score(filter_dir, path, "-o", out, "-q") == 0
    rows = rows_of(out)
    assert len(rows) == 2 and "longer than the 1000 a line may have" in rows[0]["error"]
    assert rows[1]["error"] is None and rows[1]["weighted_average"] is not None


def test_scores_of_a_cut_text_do_not_depend_on_its_middle(filter_dir):
    from hybrid_estimators.scoring import KEEP_CHARS, score_chunk

    words = ("solar grid battery storage wind " * (KEEP_CHARS // 10))[: 3 * KEEP_CHARS]
    rows = [parse_line(i, _line({"title": "Grid", "content": words[:KEEP_CHARS] + middle + words[-KEEP_CHARS:]}))
            for i, middle in enumerate(["policy " * 40000, "energy " * 30000], 1)]
    scored = score_chunk(load_filter(filter_dir), rows)
    assert scored[0].scores == scored[1].scores and scored[0].blocked_by is None


def test_a_number_wider_than_its_column_is_never_cut():
    from hybrid_estimators.cli.score import table_line

    row = ScoredLine(1234567, id="a", weighted_average=5.0, tier="medium", stage_used="stage2", seconds=117.128)
    line = table_line(row)
    assert line.split()[0] == "1234567" and "117128.0" in line and "…" not in line
