"""Articles in, model-ready strings out: :class:`ArticleText` and :func:`as_texts`."""

import functools
import hashlib
import math
import numbers
import re
import unicodedata
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

ARTICLE_FIELDS = ("title", "content")
#: Article columns that are not text to embed: :class:`ArticleText` never
#: warns that it leaves them out.
METADATA_COLUMNS = frozenset({
    "id", "uuid", "guid", "line", "language", "lang", "url", "link", "source",
    "source_name", "source_id", "domain", "feed", "author", "authors", "byline",
    "date", "time", "timestamp", "published", "published_at", "publishedAt",
    "published_date", "created_at", "updated_at", "category", "categories", "section",
    "tags", "keywords", "country", "region", "image", "image_url", "scores", "label",
    "labels", "split", "tier", "blocked_by", "error",
})
_WORD = re.compile(r"\S+")


def _is_missing(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def _row_name(position, row_id):
    return f"row {position}" + ("" if _is_missing(row_id) else f" (id={row_id!r})")


def as_frame(X):
    """Return `X` as a DataFrame of articles or text cells.

    Accepts a DataFrame, a list of dicts (articles), a 1-D sequence of
    strings (one text a row, column ``text``) or a 2-D array (one text cell a
    column). A 1-D sequence that is not all strings raises a ValueError, as
    scikit-learn estimators do for 1-D ``X``; so do empty and sparse input.

    See Also
    --------
    as_texts : One text per row of the same input.

    Examples
    --------
    >>> as_frame(["first text", "second text"])
              text
    0   first text
    1  second text
    >>> as_frame([{"title": "A title", "content": "Its body."}]).columns.tolist()
    ['title', 'content']
    """
    if isinstance(X, pd.Series):
        X = X.to_list()
    if isinstance(X, (list, tuple)) and X and all(isinstance(r, Mapping) for r in X):
        # object columns: pandas' str dtype (pyarrow) refuses lone surrogates.
        X = pd.DataFrame(list(X), dtype=object)
    if isinstance(X, pd.DataFrame):
        if len(X) == 0:
            raise ValueError("Found array with 0 sample(s); at least 1 article is required.")
        return X
    array = check_array(
        X, dtype=None, ensure_2d=False, ensure_all_finite=False, accept_sparse=False
    )
    if array.ndim == 1:
        bad = [i for i, value in enumerate(array) if not isinstance(value, str)]
        if bad:
            raise ValueError(
                "Expected a 2-D array, a DataFrame, a list of article dicts or a "
                f"1-D sequence of strings; row {bad[0]} of the 1-D input is "
                f"{array[bad[0]]!r}. Reshape your data with X.reshape(-1, 1) if it has a "
                "single feature."
            )
        return pd.DataFrame({"text": array.astype(object)}, dtype=object)
    return pd.DataFrame(array.astype(object), dtype=object)


def _article_text(position, row_id, fields, separator):
    parts = []
    for name, value in fields.items():
        if _is_missing(value):
            raise ValueError(
                f"{_row_name(position, row_id)}: field {name!r} is None/NaN; use an "
                "empty string for an absent field."
            )
        if not isinstance(value, str):
            raise ValueError(
                f"{_row_name(position, row_id)}: field {name!r} must be a string, "
                f"got {type(value).__name__}."
            )
        if value.strip():
            parts.append(value.strip())
    if not parts:
        raise ValueError(
            f"{_row_name(position, row_id)} has neither {' nor '.join(fields)}."
        )
    return separator.join(parts)


def _cell_text(position, row_id, cells, separator):
    parts = []
    for column, value in cells.items():
        if _is_missing(value):
            raise ValueError(f"{_row_name(position, row_id)}: column {column!r} is None/NaN.")
        if isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real):
            raise ValueError(
                f"{_row_name(position, row_id)}: column {column!r}: Complex data not "
                "supported."
            )
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not np.isfinite(value):
                raise ValueError(
                    f"{_row_name(position, row_id)}: column {column!r} is {value}."
                )
            value = str(value)
        if not isinstance(value, str):
            raise ValueError(
                f"{_row_name(position, row_id)}: column {column!r} must be text, got "
                f"{type(value).__name__}."
            )
        parts.append(value)
    return separator.join(parts)


def as_texts(X, *, fields=ARTICLE_FIELDS, separator="\n\n"):
    """Turn articles or text cells into one string per row.

    Parameters
    ----------
    X : DataFrame, list of dict, 1-D sequence of str or 2-D array
        With any of `fields` among its columns (keys), each row is an
        article: its fields, which must be strings (an empty string is fine,
        None/NaN is not), are joined by `separator`, and a row with none of
        them non-empty is refused. Otherwise every cell of a row is text
        (numbers are formatted with ``str``) and the cells are joined.
    fields : tuple of str, default=("title", "content")
        Article fields, in the order they are joined.
    separator : str, default="\\n\\n"
        Put between the parts of a row.

    Returns
    -------
    texts : list of str

    Raises
    ------
    ValueError
        Naming the row (position, and ``id`` when X has one) and the field.

    See Also
    --------
    ArticleText : The same join as a scikit-learn transformer, with head+tail.
    text_hashes : Hashes of the same texts, to compare articles.

    Examples
    --------
    >>> as_texts([{"title": "Solar record", "content": "Output doubled."}])
    ['Solar record\\n\\nOutput doubled.']
    >>> as_texts(["already one string"])
    ['already one string']
    """
    frame = as_frame(X)
    ids = frame["id"].to_list() if "id" in frame.columns else [None] * len(frame)
    article_fields = [name for name in fields if name in frame.columns]
    if article_fields:
        records = frame[article_fields].to_dict("records")
        return [
            _article_text(i, row_id, record, separator)
            for i, (row_id, record) in enumerate(zip(ids, records))
        ]
    records = frame.to_dict("records")
    return [
        _cell_text(i, row_id, record, separator)
        for i, (row_id, record) in enumerate(zip(ids, records))
    ]


def special_tokens_around(tokenizer):
    """The special token ids a tokenizer puts before and after a text's own.

    See Also
    --------
    truncate_head_tail : Leaves room for these tokens in its budget.

    Examples
    --------
    >>> from transformers import AutoTokenizer
    >>> from hybrid_estimators.models import offline_e5_small
    >>> tokenizer = AutoTokenizer.from_pretrained(offline_e5_small())
    >>> special_tokens_around(tokenizer)  # <s> ... </s>
    ([0], [2])
    """
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    start = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
    return full[:start], full[start + len(plain) :]


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def token_spans(texts, tokenizer=None):
    """Character spans of each text's tokens, all texts in one tokenizer call.

    Tokens are whitespace-separated words, or a Hugging Face fast
    tokenizer's tokens. A lone surrogate, which no tokenizer accepts, is
    read as U+FFFD: one character for one, so the spans still index `texts`.

    See Also
    --------
    truncate_head_tail : Cuts a text at these spans.

    Examples
    --------
    >>> token_spans(["Solar  power grows"])
    [[(0, 5), (7, 12), (13, 18)]]
    """
    if tokenizer is None:
        return [[match.span() for match in _WORD.finditer(text)] for text in texts]
    encodable = [_LONE_SURROGATE.sub("\ufffd", text) for text in texts]
    encoding = tokenizer(
        encodable, add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    return encoding["offset_mapping"]


def check_head_tail(head_tail, where="head_tail"):
    """The package's one check of a head+tail token budget.

    Parameters
    ----------
    head_tail : pair of int or None
        Tokens kept from the start and from the end of a text.
    where : str, default="head_tail"
        How the error names the value.

    Returns
    -------
    head_tail : tuple of (int, int) or None

    Raises
    ------
    ValueError
        Unless `head_tail` is None or two non-negative integers, not both 0.

    Examples
    --------
    >>> check_head_tail([256, 256])
    (256, 256)
    >>> check_head_tail((0, 0))
    Traceback (most recent call last):
    ...
    ValueError: head_tail must be two non-negative token counts, not both 0, or None; got (0, 0).
    """
    if head_tail is None:
        return None
    if (
        isinstance(head_tail, (str, bytes))
        or not hasattr(head_tail, "__len__")
        or len(head_tail) != 2
        or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0 for n in head_tail)
        or sum(head_tail) == 0
    ):
        raise ValueError(
            f"{where} must be two non-negative token counts, not both 0, or None; got {head_tail!r}."
        )
    return int(head_tail[0]), int(head_tail[1])


def truncate_head_tail(text, head, tail, *, marker=" [...] ", tokenizer=None, spans=None):
    """Keep the first `head` and last `tail` tokens of `text`, joined by `marker`.

    Tokens are whitespace-separated words, or a Hugging Face fast tokenizer's
    tokens when one is given (or their `spans`, from :func:`token_spans`).
    The text between kept tokens is kept verbatim.

    See Also
    --------
    ArticleText : Applies it to every article (``head``, ``tail``).

    Examples
    --------
    >>> truncate_head_tail("one two three four five", 1, 2)
    'one [...] four five'
    """
    if spans is None:
        spans = token_spans([text], tokenizer)[0]
    if len(spans) <= head + tail:
        return text
    head_end = spans[head - 1][1] if head else 0
    tail_start = spans[len(spans) - tail][0] if tail else len(text)
    if not text[head_end:tail_start].strip():
        # Several tokens can share characters (a syllable split into jamo): the
        # kept tokens then cover the whole text and there is nothing to cut.
        return text
    return text[:head_end].rstrip() + marker + text[tail_start:].lstrip()


def _is_articles(X):
    """Whether `X` names its columns itself (a DataFrame or a list of dicts)."""
    if isinstance(X, pd.DataFrame):
        return True
    return isinstance(X, (list, tuple)) and bool(X) and all(isinstance(r, Mapping) for r in X)


def _holds_text(column):
    if column.dtype != object and not pd.api.types.is_string_dtype(column.dtype):
        return False
    return any(isinstance(value, str) for value in column)


def _check_article_columns(frame, text_columns):
    """Refuse articles without any text column; warn about text left out.

    Raises
    ------
    ValueError
        When `frame` has none of `text_columns` but text in other columns.
    """
    columns = [name for name in frame.columns if isinstance(name, str)]
    present = [name for name in text_columns if name in frame.columns]
    other_text = [
        name for name in columns
        if name not in text_columns and name not in METADATA_COLUMNS and _holds_text(frame[name])
    ]
    if not present:
        if other_text or any(_holds_text(frame[name]) for name in columns):
            missing = ", ".join(repr(name) for name in text_columns)
            raise ValueError(
                f"The articles have none of the text columns {missing}; their columns "
                f"are {columns}. Rename them, or pass e.g. "
                f"ArticleText(text_columns={tuple(other_text) or tuple(columns)!r})."
            )
        return
    if other_text:
        warnings.warn(
            f"ArticleText leaves out the text column(s) {other_text}: it joins only "
            f"{present}. To include them pass "
            f"ArticleText(text_columns={tuple(present + other_text)!r}); to silence this, "
            "drop them from X.",
            UserWarning,
            stacklevel=3,
        )


def _folder_state(folder):
    """What identifies a tokenizer folder's content cheaply: its files' names, sizes, mtimes."""
    path = Path(folder)
    if not path.is_dir():
        return None
    return tuple(sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns)
                        for entry in path.iterdir() if entry.is_file()))


def _tokenizer_of(folder):
    """The tokenizer saved in `folder`, loaded once per process and content of the folder."""
    return _load_tokenizer_cached(str(folder), _folder_state(folder))


@functools.lru_cache(maxsize=8)
def _load_tokenizer_cached(folder, state):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


class ArticleText(TransformerMixin, BaseEstimator):
    """Join each article's title and content into one text, optionally head+tail.

    Stateless: ``fit`` only records the input's columns. Validation is
    strict for articles (see :func:`as_texts`): a row with neither title nor
    content, a None/NaN field or a non-string field raises a ValueError that
    names the row; an empty title or content alone is fine. Odd Unicode is
    passed through untouched.

    No text column is dropped silently. Articles (a DataFrame or a list of
    dicts) must have at least one of `text_columns` (a missing one is then
    an empty string in every row); articles with none of them but with text
    in other columns raise a ValueError naming the missing columns. A
    column of text that is neither in `text_columns` nor known metadata
    (:data:`METADATA_COLUMNS`: ``id``, ``language``, ``url``, ``source``,
    ...) is left out with a UserWarning that names it. A 1-D sequence of
    strings or an array of text cells is joined cell by cell.

    Parameters
    ----------
    text_columns : tuple of str, default=("title", "content")
        Article columns joined into the text, in this order.
    separator : str, default="\\n\\n"
        Put between the fields.
    head_tail : tuple of (int, int) or None, default=None
        Keep only the first and last this many tokens of long texts (the
        seed's Stage 2 used ``(256, 256)``); None keeps everything.
    truncation_marker : str, default=" [...] "
        Put where the middle of a truncated text was cut out.
    tokenizer : str or None, default=None
        Hugging Face tokenizer (hub name or local path, found as
        :func:`~hybrid_estimators.models.resolve_model` finds models) whose
        tokens `head_tail` counts; None counts whitespace-separated words.
        It is loaded once, by ``fit``, and only when `head_tail` is set.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns seen in ``fit``.
    feature_names_in_ : ndarray of str
        Column names seen in ``fit``, when they are all strings.

    See Also
    --------
    as_texts : The plain join, as a function.
    truncate_head_tail : The head+tail cut it applies.
    hybrid_estimators.embedding.E5Embedder : Embeds the texts it returns.
    hybrid_estimators.probe.make_probe : Regresses the scores on the embeddings.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"title": ["Wind farm opens"], "content": ["It powers 5000 homes."]})
    >>> ArticleText().fit_transform(X)
    array([['Wind farm opens\\n\\nIt powers 5000 homes.']], dtype=object)
    >>> ArticleText(head_tail=(2, 1)).fit_transform(X)[0, 0]
    'Wind farm [...] homes.'
    >>> ArticleText(text_columns=("headline", "body")).fit_transform(
    ...     [{"headline": "Grid battery", "body": "It stores 2 GWh."}])
    array([['Grid battery\\n\\nIt stores 2 GWh.']], dtype=object)
    """

    _parameter_constraints = {
        "text_columns": [tuple, list],
        "separator": [str],
        "head_tail": [tuple, list, None],
        "truncation_marker": [str],
        "tokenizer": [str, None],
    }

    def __init__(
        self,
        text_columns=ARTICLE_FIELDS,
        separator="\n\n",
        head_tail=None,
        truncation_marker=" [...] ",
        tokenizer=None,
    ):
        self.text_columns = text_columns
        self.separator = separator
        self.head_tail = head_tail
        self.truncation_marker = truncation_marker
        self.tokenizer = tokenizer

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Record the input's columns; nothing is learned.

        Parameters
        ----------
        X : DataFrame, list of dict, 1-D sequence of str or 2-D array
            Articles.
        y : None
            Ignored.

        Returns
        -------
        self : object
        """
        self._check_text_columns()
        check_head_tail(self.head_tail)
        frame = as_frame(X)
        validate_data(self, frame, reset=True, skip_check_array=True)
        self._texts(X, frame)
        self._tokenizer = self._load_tokenizer()
        return self

    def __getstate__(self):
        # The tokenizer is reloaded by name or path, never pickled (like
        # E5Embedder's model): copies, caches and fingerprints stay small.
        state = self.__dict__.copy()
        state.pop("_tokenizer", None)
        return state

    def _token_spans(self, texts):
        if getattr(self, "_tokenizer", None) is None:
            self._tokenizer = self._load_tokenizer()
        return token_spans(texts, self._tokenizer)

    def _check_text_columns(self):
        columns = list(self.text_columns)
        if not columns or not all(isinstance(name, str) for name in columns):
            raise ValueError(
                f"text_columns must be a non-empty tuple of column names; got "
                f"{self.text_columns!r}."
            )
        if len(set(columns)) != len(columns):
            raise ValueError(f"text_columns has duplicates: {self.text_columns!r}.")

    def _texts(self, X, frame):
        """One string per row of `frame` (`X` as a frame), checking its columns."""
        text_columns = tuple(self.text_columns)
        if _is_articles(X):
            _check_article_columns(frame, text_columns)
        return as_texts(frame, fields=text_columns, separator=self.separator)

    def transform(self, X):
        """Return one text per article.

        Parameters
        ----------
        X : DataFrame, list of dict, 1-D sequence of str or 2-D array
            Articles.

        Returns
        -------
        texts : ndarray of object, shape (n_samples, 1)
        """
        check_is_fitted(self)
        frame = as_frame(X)
        if not any(name in frame.columns for name in self.text_columns):
            # Articles may carry any other columns (id, language, url, ...):
            # only their fields must match, so only plain text cells are
            # checked against what fit saw.
            if _is_articles(X):
                _check_article_columns(frame, tuple(self.text_columns))
            validate_data(self, frame, reset=False, skip_check_array=True)
        texts = self._texts(X, frame)
        if self.head_tail is not None:
            head, tail = self.head_tail
            texts = [
                truncate_head_tail(text, head, tail, marker=self.truncation_marker, spans=spans)
                for text, spans in zip(texts, self._token_spans(texts))
            ]
        return np.asarray(texts, dtype=object).reshape(-1, 1)

    def _load_tokenizer(self):
        if self.head_tail is None or self.tokenizer is None:
            return None
        from .models.resolution import resolve_model

        return _tokenizer_of(resolve_model(self.tokenizer))

    def get_feature_names_out(self, input_features=None):
        """Name of the one output column: ``["text"]``."""
        check_is_fitted(self)
        return np.asarray(["text"], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []  # texts out, whatever comes in
        return tags


def normalised_text(text):
    """`text` as overlap checks compare it: NFKC, case folded, whitespace collapsed.

    Unicode NFKC (compatibility forms such as full-width letters or
    ligatures become their plain letters), case folded, invisible format
    characters (zero-width spaces and joiners, soft hyphens, byte-order
    marks: category Cf) removed, and every run of whitespace one space,
    none at either end. Two copies of an article that differ only by such
    edits (a trailing space, a re-cased title) are one article to
    :func:`text_hashes`.

    See Also
    --------
    text_hashes : Hashes of the normalised texts.

    Examples
    --------
    >>> normalised_text("  Solar\\u00a0RECORD\\u200b \\n\\n ｆｕｌｌ  ")
    'solar record full'
    """
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    text = "".join(character for character in text if unicodedata.category(character) != "Cf")
    return " ".join(text.split())


def _article_field(row, name):
    value = getattr(row, name, "")
    return value if isinstance(value, str) else ""


def text_hashes(X, *, normalised=True):
    """sha256 of each article's title and content, to detect the same article twice.

    Parameters
    ----------
    X : DataFrame or list of dict
        Articles.
    normalised : bool, default=True
        Hash the title and content joined by a space, as
        :func:`normalised_text` (NFKC, case folded, whitespace collapsed),
        so that a trailing space or a re-cased word does not make another
        article. False hashes the exact title and content (joined by
        ``"\\x00"``): the scheme of filters saved before the normalised one
        (their ``training_articles_sha256``); :func:`recorded_articles`
        compares with both.

    Returns
    -------
    hashes : ndarray of str, shape (n_samples,)

    See Also
    --------
    normalised_text : The normalisation hashed.
    recorded_articles : Which articles a recorded hash list holds.
    hybrid_estimators.teacher.check_disjoint : Refuses articles both trained
        and certified on.

    Examples
    --------
    >>> a, b, c = text_hashes([{"title": "A", "content": "x"}, {"title": "a ", "content": " x\\n"},
    ...                        {"title": "A", "content": "y"}])
    >>> a == b, a == c
    (True, False)
    >>> a == text_hashes([{"title": "A", "content": "x"}], normalised=False)[0]
    False
    """
    frame = as_frame(X)
    hashes = []
    for row in frame.itertuples(index=False):
        title, content = _article_field(row, "title"), _article_field(row, "content")
        text = normalised_text(f"{title} {content}") if normalised else f"{title}\x00{content}"
        hashes.append(hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
    return np.asarray(hashes, dtype=object)


def recorded_articles(X, recorded):
    """Which articles of `X` are among `recorded` text hashes (e.g. a filter's training articles).

    An article is recorded when its normalised hash (:func:`text_hashes`)
    or its exact one (``normalised=False``, the scheme of older filters) is
    in `recorded`: both are compared, as a list may hold either scheme and
    sha256 hashes of the two never coincide.

    Parameters
    ----------
    X : DataFrame or list of dict
        Articles.
    recorded : iterable of str
        Text hashes, such as a filter's ``training_articles_sha256``.

    Returns
    -------
    mask : ndarray of bool, shape (n_samples,)

    See Also
    --------
    text_hashes : The hashes compared.
    hybrid_estimators.evaluation.in_sample_articles : The articles a fitted
        router was trained on.

    Examples
    --------
    >>> trained = text_hashes([{"title": "Wind", "content": "A new farm."}])
    >>> recorded_articles([{"title": "WIND", "content": "A new farm. "},
    ...                    {"title": "Wind", "content": "Another farm."}], trained)
    array([ True, False])
    """
    recorded = set(recorded)
    normalised = text_hashes(X)
    exact = text_hashes(X, normalised=False)
    return np.array([a in recorded or b in recorded for a, b in zip(normalised, exact)], dtype=bool)
