"""Quality verdicts in every command: a near-constant filter is flagged by each, once, in the same words.

The filter is trained from the CLI on generated articles whose scores do not
depend on their text (so the probe can only learn the mean), as issue 22's
reproduction did with real data.
"""

import contextlib
import io
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from hybrid_estimators.calibration import TunedThresholdRouterCV
from hybrid_estimators.cli import main
from hybrid_estimators.datasets import make_articles
from hybrid_estimators.exceptions import FilterQualityWarning
from hybrid_estimators.filters import load_filter, quality_verdicts

DIMENSIONS = {"energy_progress": 0.5, "health_benefit": 0.25, "economic_impact": 0.25}
NO_BETTER = "Stage 1 is no better than predicting the mean"


def _write_labelled(folder, X, Y):
    folder.mkdir(parents=True)
    records = X.to_dict("records")
    for record, scores in zip(records, Y.to_dict("records")):
        record["scores"] = scores
    (folder / "articles.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "filter.yaml").write_text(yaml.safe_dump({"name": "flat", "dimensions": DIMENSIONS}))
    return folder


@pytest.fixture(scope="module")
def flat_labelled(tmp_path_factory):
    """45 articles whose scores are 5.5 +- noise, whatever the text: nothing to learn."""
    X, _ = make_articles(45, random_state=11)
    rng = np.random.default_rng(0)
    Y = pd.DataFrame(5.5 + rng.normal(scale=0.4, size=(45, 3)), columns=list(DIMENSIONS))
    return _write_labelled(tmp_path_factory.mktemp("flat") / "flat", X, Y), X


@pytest.fixture(scope="module")
def flat_run(flat_labelled, minilm_path, tmp_path_factory):
    """train-probe --strict on the flat folder: (status, stdout, stderr, filter folder).

    Module-scoped (capsys is not): stdout and stderr are captured by hand.
    """
    data, _ = flat_labelled
    out = tmp_path_factory.mktemp("filters") / "flat" / "v1"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["train-probe", str(data), "-o", str(out), "--embedding-model", minilm_path,
                       "--prefix", "", "--probe", "ridge", "--cv", "3", "--no-progress", "--strict"])
    return status, stdout.getvalue(), stderr.getvalue(), out


def _verdict_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("hybrid-estimators: filter flat/v1: ")]


def test_train_probe_flags_a_near_constant_probe_and_strict_exits_2_after_saving(flat_run):
    status, out, err, folder = flat_run
    assert status == 2
    assert (folder / "probe" / "metadata.json").is_file()  # written before the strict exit
    lines = _verdict_lines(err)
    assert any(NO_BETTER in line or "barely beats" in line for line in lines), err
    assert any("routing score's standard deviation" in line for line in lines), err
    assert "--strict: " in err and "written all the same" in err
    # Every number beside its baseline: tier accuracy beside the majority tier, MAEs beside the mean.
    assert "cv_tier_accuracy" in out and "(majority tier " in out
    for name in ("weighted_average", *DIMENSIONS):
        assert any(line.startswith(f"cv_mae_{name} ") and "(mean " in line for line in out.splitlines()), name
    assert "cv_tier_accuracy_baseline" not in out


def test_the_same_words_from_load_filter_score_and_calibrate(flat_run, flat_labelled, tmp_path, capsys):
    _, _, train_err, folder = flat_run
    failed = [v.message for v in quality_verdicts(json.loads((folder / "probe" / "metadata.json").read_text()))
              if not v.passed]
    assert failed and all(message in train_err for message in failed)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_filter(folder)
    said = [str(w.message) for w in caught if issubclass(w.category, FilterQualityWarning)]
    assert said == [f"filter flat/v1: {message}" for message in failed]

    _, X = flat_labelled
    articles = tmp_path / "articles.jsonl"
    articles.write_text("".join(json.dumps(r) + "\n" for r in X.head(5).to_dict("records")))
    scores = tmp_path / "scores.jsonl"
    assert main(["score", "--filter", str(folder), str(articles), "-o", str(scores), "--quiet",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert _verdict_lines(err) == [f"hybrid-estimators: filter flat/v1: {m}" for m in failed]  # once each
    assert "FilterQualityWarning" not in err  # never also as a Python warning
    assert main(["score", "--filter", str(folder), str(articles), "-o", str(tmp_path / "s2.jsonl"),
                 "--quiet", "--no-progress", "--strict"]) == 2
    assert len((tmp_path / "s2.jsonl").read_text().splitlines()) == 5  # the rows are written
    assert "--strict: " in capsys.readouterr().err

    data, _ = flat_labelled
    status = main(["calibrate", "--filter", str(folder), str(data), "--target-recall", "0.8",
                   "--confidence", "0.8", "--no-progress", "--strict"])
    err = capsys.readouterr().err
    assert status == 2
    assert "the routing score has no useful spread" in err
    assert "the guarantee then says little: routing nearly everything meets it" in err
    assert all(message.split(" (MEDIUM+")[0].split("calibration at")[0] in err for message in failed)
    assert "threshold" in (folder / "config.yaml").read_text()


def test_tuned_threshold_router_warns_about_a_flat_score_and_a_medium_plus_set():
    """The two calibration warnings, in Python, with numbers the data fixes."""
    from sklearn.dummy import DummyRegressor

    from hybrid_estimators.router import HybridRouterRegressor

    X = pd.DataFrame({"x": np.arange(40.0)})
    Y = np.full((40, 1), 6.0) + np.linspace(-0.1, 0.1, 40)[:, None]
    router = HybridRouterRegressor(DummyRegressor(), None, weights=[1.0], threshold=4.5)
    tuner = TunedThresholdRouterCV(router, cv=2, target_recall=0.8, confidence=0.8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuner.fit(X, Y)
    said = [str(w.message) for w in caught if issubclass(w.category, FilterQualityWarning)]
    assert len(said) == 2, said
    assert "no useful spread" in said[0] and "on the 40 calibration articles" in said[0]
    assert said[1].startswith("100.0% of the calibration articles are MEDIUM+")


# --- --text-columns ----------------------------------------------------------------


def test_score_maps_text_columns_and_never_scores_a_title_alone(flat_run, flat_labelled, tmp_path, capsys):
    _, _, _, folder = flat_run
    _, X = flat_labelled
    articles = X.head(3).to_dict("records")
    as_body = [{"title": a["title"], "body": a["content"], "url": "https://example.org"} for a in articles]
    path = tmp_path / "body.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in [*as_body, articles[0]]))

    plain = tmp_path / "plain.jsonl"
    assert main(["score", "--filter", str(folder), str(path), "-o", str(plain), "--quiet", "--no-progress"]) == 0
    rows = [json.loads(line) for line in plain.read_text().splitlines()]
    assert len(rows) == 4
    for row in rows[:3]:
        assert row["weighted_average"] is None
        assert "has no 'content' field, which the filter reads, but text in ['body']" in row["error"]
        assert "--text-columns body=content" in row["error"]
    assert rows[3]["error"] is None and rows[3]["weighted_average"] is not None

    mapped = tmp_path / "mapped.jsonl"
    assert main(["score", "--filter", str(folder), str(path), "-o", str(mapped), "--quiet", "--no-progress",
                 "--text-columns", "body=content"]) == 0
    rows = [json.loads(line) for line in mapped.read_text().splitlines()]
    assert [row["error"] for row in rows] == [None] * 4
    # The mapped article scores exactly as the same article written with "content".
    assert rows[0]["weighted_average"] == pytest.approx(rows[3]["weighted_average"], abs=1e-9)
    capsys.readouterr()

    assert main(["score", "--filter", str(folder), str(path), "--text-columns", "body=text"]) == 2
    assert "expected FIELD=TARGET pairs with TARGET one of title, content" in capsys.readouterr().err


def test_parse_article_refuses_a_field_mapped_onto_one_it_has():
    from hybrid_estimators.scoring import parse_article

    row = parse_article(7, {"title": "t", "body": "b", "content": "c"}, {"body": "content"})
    assert row.error == "line 7: has both 'body' and 'content', which --text-columns maps 'body' onto"
    row = parse_article(8, {"headline": "h", "body": "b"}, {"headline": "title", "body": "content"})
    assert row.error is None and row.article["title"] == "h" and row.article["content"] == "b"
