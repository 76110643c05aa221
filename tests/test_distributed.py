"""score_dataset and ``score --ray`` on a local 2-CPU Ray: the CLI's rows, none lost."""

import json
import pickle
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray.data")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import ray  # noqa: E402
from sklearn.frozen import FrozenEstimator  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from hybrid_estimators.cli import main  # noqa: E402
from hybrid_estimators.datasets import make_articles  # noqa: E402
from hybrid_estimators.distributed import (  # noqa: E402
    MULTI_OUTPUT_COLUMNS,
    OUTPUT_COLUMNS,
    _loaded_filters,
    _loaded_scorer,
    score_dataset,
)
from hybrid_estimators.embedding import E5Embedder  # noqa: E402
from hybrid_estimators.filters import FilterSpec, load_filter, save_filter  # noqa: E402
from hybrid_estimators.probe import make_probe, make_ridge_probe  # noqa: E402
from hybrid_estimators.router import HybridRouterRegressor  # noqa: E402
from hybrid_estimators.text import ArticleText  # noqa: E402

BATCH = 4
WEIGHTS = {"energy_progress": 0.5, "health_benefit": 0.25, "economic_impact": 0.25}
ERROR_LINES = [2, 4, 5, 8, 10]
NUMBERS = ("scores", "weighted_average", "stage1_estimate")


@pytest.fixture(scope="module")
def local_ray():
    # The workers import the tests' helpers (_numeric_filter) as the driver does.
    tests = str(Path(__file__).resolve().parent)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": tests}})
    yield
    ray.shutdown()


def minilm_stage1(minilm_path, regressor):
    embedder = E5Embedder(minilm_path, prefix="", show_progress_bar=False)
    return make_pipeline(ArticleText(), embedder, regressor)


@pytest.fixture(scope="module")
def filter_dir(tmp_path_factory, minilm_path):
    """A Stage-1-only filter (MiniLM + small probe) with a keyword prefilter."""
    X, Y = make_articles(40, random_state=0)
    stage1 = FrozenEstimator(minilm_stage1(minilm_path, make_probe((32,))).fit(X, Y))
    router = HybridRouterRegressor(stage1, None, WEIGHTS).fit(X, Y)
    spec = FilterSpec.from_dict({
        "name": "demo",
        "version": "v1",
        "dimensions": WEIGHTS,
        "prefilter": {"block_keywords": {"sports": ["football"]}},
        "hybrid_inference": {"embedding_model": minilm_path, "embedding_prefix": "", "stage2": None},
    })
    return save_filter(router, tmp_path_factory.mktemp("filters") / "demo" / "v1", spec)


@pytest.fixture(scope="module")
def second_filter_dir(tmp_path_factory, minilm_path):
    """Another filter on the same embedder: other dimensions, no prefilter."""
    weights = {"relevance": 0.6, "depth": 0.4}
    X, Y = make_articles(40, random_state=1)
    Y = Y.iloc[:, :2].set_axis(list(weights), axis=1)
    stage1 = FrozenEstimator(minilm_stage1(minilm_path, make_ridge_probe()).fit(X, Y))
    router = HybridRouterRegressor(stage1, None, weights).fit(X, Y)
    spec = FilterSpec.from_dict({
        "name": "other",
        "version": "v2",
        "dimensions": weights,
        "hybrid_inference": {"embedding_model": minilm_path, "embedding_prefix": "", "stage2": None},
    })
    return save_filter(router, tmp_path_factory.mktemp("filters") / "other" / "v2", spec)


@pytest.fixture(scope="module")
def good_articles():
    return make_articles(8, random_state=3)[0]


@pytest.fixture(scope="module")
def input_file(tmp_path_factory, good_articles):
    """Good articles (one with an int id, one CRLF line) among every kind of bad line."""
    good = [json.dumps(row).encode() for row in good_articles.to_dict("records")]
    lines = [
        good[0],
        b"{not json",
        good[1] + b"\r",
        json.dumps({"id": "no-fields", "body": "no title, no content"}).encode(),
        b"",
        json.dumps({"id": "sport", "title": "Football", "content": "A late football goal."}).encode(),
        good[2],
        b"[1, 2, 3]",
        json.dumps({"id": 7, "content": "Wind turbines and heat pumps."}).encode(),
        b"\xff\xfe not utf-8",
        *good[3:],
    ]
    path = tmp_path_factory.mktemp("input") / "articles.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture(scope="module")
def cli_rows(tmp_path_factory, filter_dir, input_file):
    """Rows of the plain (non-Ray) ``score`` command."""
    out = tmp_path_factory.mktemp("cli") / "scores.jsonl"
    args = ["score", "--filter", str(filter_dir), str(input_file), "-o", str(out), "--quiet"]
    assert main([*args, "--batch-size", str(BATCH)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def hybrid_router(minilm_path):
    """Stage 1 a MiniLM probe, Stage 2 another MiniLM pipeline; half the articles routed."""
    X, Y = make_articles(40, random_state=0)
    stage1 = minilm_stage1(minilm_path, make_probe((32,)))
    stage2 = minilm_stage1(minilm_path, Ridge(alpha=10.0))
    router = HybridRouterRegressor(stage1, stage2, WEIGHTS, threshold=0.0).fit(X, Y)
    X_test = make_articles(12, random_state=4)[0]
    router.set_params(threshold=float(np.median(router.routing_scores(X_test))))
    return router, X_test


def sorted_rows(dataset):
    return sorted(dataset.take_all(), key=lambda row: row["line"])


def assert_same_rows(actual, expected):
    assert [row["line"] for row in actual] == [row["line"] for row in expected]
    for got, want in zip(actual, expected):
        assert list(got) == list(want) == list(OUTPUT_COLUMNS)
        exact = [key for key in OUTPUT_COLUMNS if key not in NUMBERS]
        assert {key: got[key] for key in exact} == {key: want[key] for key in exact}
        assert (got["scores"] is None) == (want["scores"] is None)
        if want["scores"] is not None:
            assert list(got["scores"]) == list(want["scores"])
            # Rows hold 4 decimals, as the CLI's: a last digit may round apart.
            np.testing.assert_allclose(
                [*got["scores"].values(), got["weighted_average"], got["stage1_estimate"]],
                [*want["scores"].values(), want["weighted_average"], want["stage1_estimate"]],
                rtol=1e-5, atol=1.5e-4,
            )


def test_a_filter_on_a_jsonl_file_gives_the_cli_rows(local_ray, filter_dir, input_file, cli_rows):
    rows = sorted_rows(score_dataset(filter_dir, input_file, batch_size=BATCH))

    assert [row["line"] for row in rows] == list(range(1, 16))  # none lost
    assert_same_rows(rows, cli_rows)
    errors = {row["line"]: row["error"] for row in rows if row["error"] is not None}
    assert sorted(errors) == ERROR_LINES
    assert all(message.startswith(f"line {line}") for line, message in errors.items())
    assert "not JSON" in errors[2] and "empty line" in errors[5] and "not UTF-8" in errors[10]
    assert "(id='no-fields')" in errors[4] and "expected a JSON object" in errors[8]
    assert (rows[5]["id"], rows[5]["blocked_by"]) == ("sport", "keyword:sports")
    assert rows[8]["id"] == 7 and rows[8]["scores"] is not None  # an int id stays an int


def test_a_router_with_stage2_on_a_dataset_matches_predict(local_ray, hybrid_router):
    router, X = hybrid_router
    rows = sorted_rows(score_dataset(router, ray.data.from_pandas(X), batch_size=BATCH))

    assert [row["line"] for row in rows] == list(range(1, len(X) + 1))
    assert [row["id"] for row in rows] == X["id"].tolist()
    assert all(row["error"] is None and row["blocked_by"] is None for row in rows)
    routed = router.route(X)
    assert 0 < routed.sum() < len(X)
    assert [row["stage_used"] == "stage2" for row in rows] == routed.tolist()
    np.testing.assert_allclose(
        [list(row["scores"].values()) for row in rows], router.predict(X), rtol=1e-5, atol=1.5e-4
    )


def test_a_parquet_file_is_numbered_by_row_and_bad_rows_are_reported(
    local_ray, filter_dir, good_articles, tmp_path
):
    bad = pd.DataFrame({"id": ["blank", "missing"], "title": ["", None], "content": [" ", None]})
    table = pd.concat([good_articles, bad], ignore_index=True)
    path = tmp_path / "articles.parquet"
    table.to_parquet(path)

    rows = sorted_rows(score_dataset(str(filter_dir), path, batch_size=BATCH, concurrency=1))

    assert [row["id"] for row in rows] == table["id"].tolist()
    assert rows[-2]["error"].startswith("line 9 (id='blank')")
    assert rows[-1]["error"].startswith("line 10 (id='missing')")
    expected = load_filter(filter_dir).predict(good_articles[["title", "content"]])
    np.testing.assert_allclose(
        [list(row["scores"].values()) for row in rows[:-2]], expected, rtol=1e-5, atol=1.5e-4
    )


def test_score_on_ray_writes_the_rows_of_the_plain_command(
    local_ray, filter_dir, input_file, cli_rows, tmp_path, capsys
):
    out = tmp_path / "scores.jsonl"
    args = ["score", "--filter", str(filter_dir), str(input_file), "-o", str(out), "--quiet"]
    assert main([*args, "--batch-size", str(BATCH), "--ray", "--concurrency", "2"]) == 0

    assert_same_rows([json.loads(line) for line in out.read_text().splitlines()], cli_rows)
    assert "lines=15 scored=9 stage2=0 blocked=1 errors=5" in capsys.readouterr().err


def assert_same_multi_rows(actual, expected):
    assert [row["line"] for row in actual] == [row["line"] for row in expected]
    for got, want in zip(actual, expected):
        assert list(got) == list(want) == list(MULTI_OUTPUT_COLUMNS)
        assert (got["id"], got["error"]) == (want["id"], want["error"])
        assert list(got["filters"]) == list(want["filters"])
        for name, result in want["filters"].items():
            row = {"line": got["line"], "id": got["id"], **got["filters"][name]}
            assert_same_rows([row], [{"line": want["line"], "id": want["id"], **result}])


def test_several_filters_on_ray_write_the_rows_of_the_plain_command(
    local_ray, filter_dir, second_filter_dir, input_file, tmp_path, capsys
):
    both = ["score", "--filter", str(filter_dir), "--filter", str(second_filter_dir), str(input_file),
            "--batch-size", str(BATCH), "--quiet"]
    plain, on_ray = tmp_path / "plain.jsonl", tmp_path / "ray.jsonl"
    assert main([*both, "-o", str(plain)]) == 0
    assert main([*both, "-o", str(on_ray), "--ray", "--concurrency", "2"]) == 0

    expected = [json.loads(line) for line in plain.read_text().splitlines()]
    rows = [json.loads(line) for line in on_ray.read_text().splitlines()]
    assert_same_multi_rows(rows, expected)
    assert len(rows) == 15 and sorted(row["line"] for row in rows if row["error"]) == ERROR_LINES
    assert list(rows[0]["filters"]) == ["demo/v1", "other/v2"]
    assert list(rows[0]["filters"]["other/v2"]["scores"]) == ["relevance", "depth"]
    assert rows[5]["filters"]["demo/v1"]["blocked_by"] == "keyword:sports"
    assert rows[5]["filters"]["other/v2"]["blocked_by"] is None  # each filter its own prefilter
    assert "lines=15 filters=2 on Ray" in capsys.readouterr().err
    sidecar = json.loads(Path(f"{on_ray}.meta.json").read_text())
    assert sidecar == json.loads(Path(f"{plain}.meta.json").read_text())


def test_score_dataset_takes_several_filters_by_name(
    local_ray, filter_dir, second_filter_dir, input_file, cli_rows
):
    from hybrid_estimators.scoring import MultiScoredLine

    filters = {"first": load_filter(filter_dir), "second": str(second_filter_dir)}
    rows = sorted_rows(score_dataset(filters, input_file, batch_size=BATCH))

    assert [row["line"] for row in rows] == list(range(1, 16))
    assert list(rows[0]) == list(MULTI_OUTPUT_COLUMNS)
    parsed = [MultiScoredLine.from_record(row) for row in rows]
    assert all(list(row.results) == ([] if row.error else ["first", "second"]) for row in parsed)
    first = [row.results["first"].to_record() if row.error is None else cli for row, cli in zip(parsed, cli_rows)]
    assert_same_rows(first, cli_rows)  # the first filter's results are its rows alone
    with pytest.raises(ValueError, match="take one filter"):
        score_dataset([filter_dir, second_filter_dir], input_file, all_stage2=True)


def test_several_filters_are_named_and_refuse_the_same_filter_twice(filter_dir, second_filter_dir, hybrid_router):
    loaded = _loaded_filters([filter_dir, second_filter_dir], stage1_only=True)
    assert list(loaded) == ["demo/v1", "other/v2"]
    with pytest.raises(ValueError, match="demo/v1 is given twice"):
        _loaded_filters([filter_dir, load_filter(filter_dir)], stage1_only=False)
    with pytest.raises(ValueError, match="filter folders or Filters"):
        _loaded_filters([hybrid_router[0]], stage1_only=False)  # a bare router has no name


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ray", "--resume", "-o", "out.jsonl"], "--resume does not work with --ray"),
        (["--concurrency", "3"], "--address and --concurrency need --ray"),
    ],
)
def test_score_refuses_what_ray_cannot_do(filter_dir, input_file, extra, message, capsys):
    assert main(["score", "--filter", str(filter_dir), str(input_file), *extra]) == 2
    assert capsys.readouterr().err.startswith(f"hybrid-estimators: error: {message}")


def test_score_on_ray_refuses_stdin(filter_dir, capsys):
    assert main(["score", "--filter", str(filter_dir), "-", "--ray"]) == 2
    assert "--ray reads a file, not stdin" in capsys.readouterr().err


def test_stage1_only_needs_a_filter_not_a_bare_router(hybrid_router):
    router, _ = hybrid_router
    with pytest.raises(ValueError, match="stage2=None"):
        _loaded_scorer(pickle.loads(pickle.dumps(router)), stage1_only=True)


def test_stage1_only_keeps_a_filter_from_routing(filter_dir):
    filter_ = load_filter(filter_dir)
    X, _ = make_articles(20, random_state=4)
    filter_.set_params(threshold=0.0).fit()
    assert filter_.stage2 is None or filter_.route(X).all()
    actors_copy = _loaded_scorer(pickle.loads(pickle.dumps(filter_)), stage1_only=True)
    assert actors_copy.stage2_ is None and not actors_copy.route(X).any()
    assert filter_.threshold == 0.0  # the caller's filter keeps its parameters


def test_without_ray_the_error_names_the_extra(monkeypatch, filter_dir, input_file):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r'pip install "hybrid_estimators\[ray\]"'):
        score_dataset(filter_dir, input_file)



def test_teacher_scores_and_audits_on_ray_are_those_of_the_plain_path(local_ray, tmp_path, capsys):
    from _numeric_filter import articles, numeric_filter
    from hybrid_estimators.audit import RecallAudit
    from hybrid_estimators.teacher import teacher_identity, teacher_scores

    filter_ = numeric_filter(stage2_weight=0.5)
    X = articles(np.linspace(0.5, 9.5, 12))
    path = tmp_path / "articles.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in X.to_dict("records")))

    taught = sorted_rows(score_dataset(filter_, path, batch_size=BATCH, all_stage2=True))
    assert all(row["stage_used"] == "stage2" for row in taught)
    assert all(row["teacher"] == teacher_identity(filter_) for row in taught)
    expected = teacher_scores(filter_, X).to_numpy()
    np.testing.assert_allclose([list(row["scores"].values()) for row in taught], expected, atol=1e-4)

    audited = sorted_rows(score_dataset(filter_, path, batch_size=BATCH, audit_rate=1.0, audit_seed=3))
    skipped = [row for row in audited if row["stage_used"] == "stage1"]
    assert skipped and all(row["audited"] for row in skipped)
    tiers, _ = RecallAudit(filter_, 1.0).stage2_tiers(X.iloc[[row["line"] - 1 for row in skipped]])
    assert [row["audit_tier"] for row in skipped] == list(tiers)
    assert all(row["audited"] is None for row in audited if row["stage_used"] == "stage2")
    plain = [row for row in audited if row["stage_used"] == "stage1"]
    assert [row["scores"] for row in plain] == [row["scores"] for row in skipped]
    with pytest.raises(ValueError, match="not with stage1_only or an audit"):
        score_dataset(filter_, path, all_stage2=True, audit_rate=0.5)


def test_score_on_ray_refuses_teacher_scores_without_a_stage2(filter_dir, input_file, capsys):
    for extra in (["--all-stage2"], ["--audit", "0.1"]):
        assert main(["score", "--filter", str(filter_dir), str(input_file), "--ray", *extra]) == 2
        assert "needs a filter with a Stage 2" in capsys.readouterr().err


# --- --ray gives the plain path's bytes whatever the batch size (issue 21, item 12) -------


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_ray_writes_the_plain_paths_bytes_whatever_the_batch_size(
    local_ray, filter_dir, second_filter_dir, input_file, tmp_path, batch_size
):
    for filters in ([filter_dir], [filter_dir, second_filter_dir]):
        argv = ["score", *(f"--filter={folder}" for folder in filters), str(input_file), "--quiet",
                "--stage1-only", "--no-progress", "--batch-size", str(batch_size)]
        plain, on_ray = tmp_path / "plain.jsonl", tmp_path / "ray.jsonl"
        # As a fresh process: this one's in-memory caches hold embeddings of other batch sizes.
        _forget_embeddings()
        assert main([*argv, "-o", str(plain)]) == 0
        assert main([*argv, "-o", str(on_ray), "--ray", "--concurrency", "2"]) == 0
        assert on_ray.read_bytes() == plain.read_bytes()


def _forget_embeddings():
    import hybrid_estimators.embedding
    from hybrid_estimators.router import clear_cache

    hybrid_estimators.embedding._MEMORY_CACHE._items.clear()
    clear_cache()


def test_the_ray_table_gives_each_rows_own_share_and_a_whole_first_cell(
    local_ray, filter_dir, input_file, capsys
):
    argv = ["score", "--filter", str(filter_dir), str(input_file), "--no-progress", "--batch-size", str(BATCH)]
    assert main([*argv, "--ray", "--concurrency", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["line", "id"]
    cells = {int(line[:6]): line for line in lines[1:]}
    assert sorted(cells) == list(range(1, 16))
    ms = {number: float(line[64:71]) for number, line in cells.items() if line[64:71].strip() not in ("", "-")}
    # An error row costs only its parsing, far less than a scored row's share of the embedding;
    # a total divided by the line number would make it the largest.
    assert max(ms[line] for line in ERROR_LINES) < min(ms[line] for line in (1, 3, 7))


def test_the_several_filter_table_has_a_header_and_the_one_filter_counts(
    filter_dir, second_filter_dir, input_file, capsys
):
    argv = ["score", "--filter", str(filter_dir), "--filter", str(second_filter_dir), str(input_file),
            "--no-progress", "--batch-size", str(BATCH)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    header, *rows = captured.out.splitlines()
    assert header.split()[:2] == ["line", "id"] and "demo/v1:" in header and "other/v2:" in header
    assert len(rows) == 15 and not any(re.search(r"[a-z]+/[12]/\d", row) for row in rows)  # no medium/1/5.34
    assert "lines=15 filters=2 errors=5; demo/v1: scored=9 stage2=0 blocked=1 errors=0; " \
           "other/v2: scored=10 stage2=0 blocked=0 errors=0" in captured.err


def test_skip_rate_of_rows_is_compared_with_the_filters_record():
    import warnings

    from hybrid_estimators.distributed import skip_rate
    from hybrid_estimators.exceptions import FilterQualityWarning

    from _numeric_filter import numeric_filter

    filter_ = numeric_filter(threshold=4.0)
    filter_.metadata = {"calibration": {"threshold": 4.0, "expected_skip_rate": 0.31}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = skip_rate(filter_, [{"stage_used": "stage2"}] * 40 + [{"stage_used": None}])
        near = skip_rate(filter_, [{"stage_used": "stage2"}] * 28 + [{"stage_used": "stage1"}] * 12)
    assert (summary["observed"], summary["expected"], summary["outside"]) == (0.0, 0.31, True)
    assert near["outside"] is False and near["observed"] == 0.3
    assert [w.category for w in caught] == [FilterQualityWarning]
    assert "skipped Stage 2 for 0.0% of 40" in str(caught[0].message)
