import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from hybrid_estimators import ArticleText, as_texts, make_articles
from hybrid_estimators.text import truncate_head_tail


@pytest.fixture
def articles():
    return pd.DataFrame(
        {
            "id": ["a1", "a2", "a3"],
            "title": ["Wind farm opens", "", "Heat pumps"],
            "content": ["It powers 5000 homes.", "Only content here.", ""],
            "language": ["en", "en", "de"],
        }
    )


def test_joins_title_and_content_and_accepts_an_empty_one(articles):
    texts = ArticleText().fit_transform(articles)
    assert texts.shape == (3, 1)
    assert texts[:, 0].tolist() == [
        "Wind farm opens\n\nIt powers 5000 homes.",
        "Only content here.",
        "Heat pumps",
    ]


def test_accepts_dicts_strings_and_arrays_alike(articles):
    records = articles.to_dict("records")
    assert as_texts(records) == as_texts(articles)
    assert as_texts(["one text", "two"]) == ["one text", "two"]
    assert as_texts(np.array([["a", "b"], ["c", "d"]], dtype=object)) == ["a\n\nb", "c\n\nd"]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"id": "x9", "title": "", "content": ""}, r"row 1 \(id='x9'\) has neither title nor content"),
        ({"id": "x9", "title": None, "content": "text"}, r"row 1 \(id='x9'\): field 'title' is None/NaN"),
        ({"id": "x9", "title": "t", "content": float("nan")}, r"row 1 \(id='x9'\): field 'content' is None/NaN"),
        ({"id": "x9", "title": 42, "content": "text"}, r"row 1 \(id='x9'\): field 'title' must be a string, got int"),
        ({"id": "x9", "title": ["a"], "content": "text"}, r"field 'title' must be a string, got list"),
    ],
)
def test_bad_rows_are_named(row, message):
    good = {"id": "ok", "title": "fine", "content": "fine"}
    with pytest.raises(ValueError, match=message):
        ArticleText().fit_transform([good, row])


def test_row_without_id_is_named_by_position():
    with pytest.raises(ValueError, match=r"^row 0 has neither"):
        as_texts([{"title": "", "content": ""}])


def test_odd_unicode_passes_through():
    odd = "Control\x07 chars, mixed 中文 العربية Ελληνικά, lone surrogate \ud800 end"
    out = ArticleText().fit_transform([{"title": odd, "content": "x"}])
    assert out[0, 0].startswith(odd)


def test_head_tail_keeps_both_ends_verbatim():
    text = "one two\nthree four five six"
    assert truncate_head_tail(text, 2, 2) == "one two [...] five six"
    assert truncate_head_tail(text, 10, 10) == text
    assert truncate_head_tail(text, 0, 1) == " [...] six"


def test_head_tail_counts_tokenizer_tokens(minilm_path):
    text = "unbelievably " * 300
    out = truncate_head_tail(text, 5, 5, tokenizer=_tokenizer(minilm_path))
    assert out.count("[...]") == 1
    assert len(out) < 200


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_head_tail_is_validated():
    with pytest.raises(ValueError, match="head_tail"):
        ArticleText(head_tail=(0, 0)).fit([{"title": "a", "content": "b"}])


def test_pandas_output_and_feature_names(articles):
    out = ArticleText().set_output(transform="pandas").fit_transform(articles)
    assert isinstance(out, pd.DataFrame)
    assert out.columns.tolist() == ["text"]
    assert out.index.equals(articles.index)


def test_text_properties_the_numeric_checks_cannot_assert():
    """Pickle, idempotent fit, order and subset invariance, with string equality."""
    X, _ = make_articles(20, random_state=0)
    transformer = ArticleText(head_tail=(5, 5)).fit(X)
    expected = transformer.transform(X)
    restored = pickle.loads(pickle.dumps(transformer))
    assert (restored.transform(X) == expected).all()
    assert (clone(transformer).fit(X).fit(X).transform(X) == expected).all()
    order = np.random.RandomState(0).permutation(len(X))
    assert (transformer.transform(X.iloc[order]) == expected[order]).all()
    assert (transformer.transform(X.iloc[:7]) == expected[:7]).all()


def test_a_megabyte_article_is_fine():
    content = "word " * 200_000
    out = ArticleText(head_tail=(256, 256)).fit_transform([{"title": "t", "content": content}])
    assert len(out[0, 0].split()) == 256 + 256 + 1  # the marker "[...]" is a word


def test_articles_may_carry_other_columns_at_transform(articles):
    transformer = ArticleText().fit(articles)
    slim = articles[["content", "title"]]
    assert (transformer.transform(slim) == transformer.transform(articles)).all()
    with pytest.raises(ValueError, match="features"):
        ArticleText().fit(np.array([["a", "b"]], dtype=object)).transform(np.array([["a"]], dtype=object))


# --- no text column is dropped silently ---------------------------------------------


def test_an_unknown_text_column_is_named_in_a_warning(articles):
    X = pd.DataFrame({"id": ["a", "b"], "title": ["Wind", "Heat"], "body": ["It blows.", "Pumps."]})
    with pytest.warns(UserWarning, match=r"leaves out the text column\(s\) \['body'\].*text_columns=\('title', 'body'\)"):
        texts = ArticleText().fit_transform(X)
    assert texts[:, 0].tolist() == ["Wind", "Heat"]  # documented: what there is of the text columns
    with pytest.warns(UserWarning, match="'body'"):
        ArticleText().fit(articles).transform(X)


def test_articles_without_any_text_column_are_refused():
    X = pd.DataFrame({"id": ["a"], "headline": ["Grid battery"], "body": ["It stores 2 GWh."]})
    with pytest.raises(ValueError, match=r"none of the text columns 'title', 'content'.*text_columns=\('headline', 'body'\)"):
        ArticleText().fit(X)
    with pytest.raises(ValueError, match="none of the text columns"):
        ArticleText().fit(X[["id"]].assign(title="t")).transform(X)
    texts = ArticleText(text_columns=("headline", "body")).fit_transform(X)
    assert texts[0, 0] == "Grid battery\n\nIt stores 2 GWh."


def test_metadata_and_numbers_are_no_text_to_warn_about(articles):
    X = articles.assign(url="https://x", source="feed", published_at="2025-01-01", words=[1, 2, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ArticleText().fit_transform(X)
        ArticleText().fit_transform(articles[["id", "content"]].iloc[:2])  # one of them is enough
        ArticleText().fit_transform(pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}))  # text cells


@pytest.mark.parametrize("text_columns", [(), ("title", 3), ("title", "title")])
def test_text_columns_are_validated(text_columns, articles):
    with pytest.raises(ValueError, match="text_columns"):
        ArticleText(text_columns=text_columns).fit(articles)
    with pytest.raises(ValueError, match="text_columns"):
        ArticleText(text_columns="title").fit(articles)  # a string, not a tuple


def test_head_tail_loads_its_tokenizer_once_in_fit(minilm_path, monkeypatch):
    from transformers import AutoTokenizer

    loads = []
    real = AutoTokenizer.from_pretrained

    def counting(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", counting)
    from hybrid_estimators import text

    text._load_tokenizer_cached.cache_clear()  # loaded once per process: start from none
    step = ArticleText(head_tail=(3, 2), tokenizer=minilm_path).fit(["x"])
    texts = [step.transform(["one two three four five six seven eight"])[0, 0] for _ in range(3)]
    assert loads == [minilm_path]
    assert texts[0] == "one two three [...] seven eight"
    assert ArticleText(head_tail=None, tokenizer=minilm_path).fit(["x"]) and loads == [minilm_path]


def test_head_tail_keeps_a_lone_surrogate_that_no_tokenizer_accepts(minilm_path):
    step = ArticleText(head_tail=(2, 2), tokenizer=minilm_path).fit(["x"])
    text = "alpha \ud800beta gamma delta epsilon zeta \udfffeta"
    out = step.transform([text])[0, 0]
    assert out.startswith("alpha \ud800") and out.endswith("\udfffeta") and "[...]" in out


@pytest.fixture(scope="module")
def minilm_head_tail(minilm_path):
    return ArticleText(head_tail=(4, 3), tokenizer=minilm_path).fit(["x"])


def test_head_tail_cuts_nothing_when_the_kept_tokens_cover_the_whole_text(minilm_head_tail):
    text = "0:0:총0"  # found by hypothesis: 총 is several tokens of one character
    assert minilm_head_tail.transform([text])[0, 0] == text


@given(text=st.text(st.characters(exclude_categories=()), max_size=80))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_head_tail_with_a_tokenizer_keeps_both_ends_of_any_text(minilm_head_tail, text):
    out = minilm_head_tail.transform([text])[0, 0]
    if out == text:
        return
    head, _, tail = out.partition(" [...] ")
    assert text.startswith(head) and text.endswith(tail)  # cut only in the middle, never re-encoded
    assert len(head) + len(tail) < len(text)


# --- overlap checks compare normalised text (issue 21 item 5) ---------------------------------


def test_text_hashes_see_through_spacing_case_and_unicode_forms():
    from hybrid_estimators.text import text_hashes

    original = {"title": "Solar Record", "content": "Output doubled in 2024."}
    variants = [
        {"title": "Solar Record", "content": "Output doubled in 2024. "},  # one trailing space
        {"title": "SOLAR record", "content": "Output  doubled\nin 2024."},  # case, whitespace
        {"title": "Ｓｏｌａｒ Record", "content": "Output\u00a0doubled in 2024.\u200b"},  # NFKC, invisible
        {"title": "Solar", "content": "Record Output doubled in 2024."},  # a word moved between fields
    ]
    hashes = text_hashes([original, *variants])
    assert set(hashes) == {hashes[0]}
    assert text_hashes([{"title": "Solar Record", "content": "Output tripled in 2024."}])[0] != hashes[0]
    exact = text_hashes([original, variants[0]], normalised=False)
    assert exact[0] != exact[1]  # the old scheme: one space made another article


def test_recorded_articles_match_either_scheme():
    from hybrid_estimators.text import recorded_articles, text_hashes

    trained = [{"title": "Wind", "content": "A new farm."}, {"title": "Heat", "content": "Pumps sell."}]
    asked = [{"title": "Wind", "content": "A new farm. "}, {"title": "Heat", "content": "Pumps sell."},
             {"title": "Grid", "content": "Batteries."}]
    np.testing.assert_array_equal(recorded_articles(asked, text_hashes(trained)), [True, True, False])
    # A filter saved with exact hashes still catches exact copies (and only those).
    np.testing.assert_array_equal(
        recorded_articles(asked, text_hashes(trained, normalised=False)), [False, True, False]
    )


def test_article_text_pickles_without_its_tokenizer(minilm_path):
    """The tokenizer is reloaded by path after unpickling, never carried in the pickle."""
    import pickle

    X = [{"title": "Wind farms", "content": "A new offshore wind farm opened today " * 20}]
    article_text = ArticleText(head_tail=(8, 8), tokenizer=minilm_path).fit(X)
    before = article_text.transform(X)
    data = pickle.dumps(article_text)
    assert b"tokenizer.json" not in data and len(data) < 20_000
    restored = pickle.loads(data)
    assert "_tokenizer" not in restored.__dict__
    np.testing.assert_array_equal(restored.transform(X), before)
