import json
import os

import numpy as np
import pytest

from hybrid_estimators.datasets import SCORE_PER_SIGNAL, SYNTHETIC_SIGNALS, load_articles, make_articles


def test_make_articles_scores_are_the_known_function_of_words():
    X, Y = make_articles(50, random_state=1)
    assert X.shape == (50, 4) and Y.shape == (50, len(SYNTHETIC_SIGNALS))
    for (_, article), (_, scores) in zip(X.iterrows(), Y.iterrows()):
        text = article.title + " " + article.content
        for dimension, signals in SYNTHETIC_SIGNALS.items():
            assert scores[dimension] == SCORE_PER_SIGNAL * sum(s in text for s in signals)
    assert Y.to_numpy().min() == 0 and Y.to_numpy().max() == 10


def test_make_articles_is_reproducible():
    a, ya = make_articles(10, random_state=3)
    b, yb = make_articles(10, random_state=3)
    assert a.equals(b) and ya.equals(yb)
    assert not make_articles(10, random_state=4)[0].equals(a)


def test_load_articles_reads_a_labelled_folder(tmp_path):
    (tmp_path / "filter.yaml").write_text("name: t\ndimensions:\n  b: 0.5\n  a: 0.5\n")
    rows = [{"id": "x", "title": "T", "content": "C", "language": "en", "scores": {"a": 1, "b": 2}}]
    (tmp_path / "articles.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    X, Y, spec = load_articles(tmp_path)
    assert X.to_dict("records") == [{"id": "x", "title": "T", "content": "C", "language": "en"}]
    assert Y.columns.tolist() == ["b", "a"] and Y.to_numpy().tolist() == [[2.0, 1.0]]
    assert spec["tiers"] == {"high": 7.0, "medium": 4.0, "low": 0.0}


def test_load_articles_names_a_line_without_a_score(tmp_path):
    (tmp_path / "filter.yaml").write_text("name: t\ndimensions:\n  a: 1.0\n")
    (tmp_path / "articles.jsonl").write_text(json.dumps({"id": "q", "scores": {}}) + "\n")
    with pytest.raises(ValueError, match=r"articles.jsonl:1 \(id='q'\) has no score for \['a'\]"):
        load_articles(tmp_path)


@pytest.mark.parametrize(
    "config, message",
    [
        ("", r"filter.yaml: is empty"),
        ("- a\n- b\n", r"filter.yaml: is a list, not a mapping"),
        ("name: t\ndimensions: abc\n", r"filter.yaml: dimensions must be a non-empty mapping"),
        ("name: t\ndimensions: &d {a: 1}\nother: *d\n", r"filter.yaml.*alias"),
    ],
)
def test_a_bad_filter_yaml_is_an_error_naming_it(tmp_path, config, message):
    (tmp_path / "filter.yaml").write_text(config)
    (tmp_path / "articles.jsonl").write_text(json.dumps({"id": "q", "scores": {"a": 1}}) + "\n")
    with pytest.raises(ValueError, match=message):
        load_articles(tmp_path)


@pytest.mark.parametrize("scores", ["high", {"a": "high"}, [1]])
def test_a_score_that_is_not_a_number_names_the_line(tmp_path, scores):
    (tmp_path / "filter.yaml").write_text("name: t\ndimensions:\n  a: 1.0\n")
    (tmp_path / "articles.jsonl").write_text(json.dumps({"id": "q", "scores": scores}) + "\n")
    with pytest.raises(ValueError, match=r"articles.jsonl:1 \(id='q'\).*scores"):
        load_articles(tmp_path)


@pytest.mark.parametrize("name", ["filter.yaml", "articles.jsonl"])
def test_a_labelled_file_that_is_a_fifo_or_a_device_is_refused(tmp_path, name):
    (tmp_path / "filter.yaml").write_text("name: t\ndimensions:\n  a: 1.0\n")
    (tmp_path / "articles.jsonl").write_text(json.dumps({"id": "q", "scores": {"a": 1}}) + "\n")
    (tmp_path / name).unlink()
    os.mkfifo(tmp_path / name)  # nobody writes: a plain open would hang
    with pytest.raises(ValueError, match=rf"{name}.*FIFO, not a regular file"):
        load_articles(tmp_path)
    (tmp_path / name).unlink()
    (tmp_path / name).symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=rf"{name}.*not a regular file"):
        load_articles(tmp_path)


def test_shared_seece_data(seece):
    X, Y, spec = seece
    assert len(X) == len(Y) == 295
    assert list(Y.columns) == list(spec["dimensions"])
    assert set(X.language) >= {"en", "nl"}
    assert np.isclose(sum(spec["dimensions"].values()), 1.0)
