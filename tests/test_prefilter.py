"""The prefilter's minimum length counts visible characters."""

import pytest

from hybrid_estimators.prefilter import Prefilter, visible_length


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Grid battery", 11),
        ("  tabs\tand\nnewlines\r\n", 15),
        ("\u200b" * 30, 0),  # zero-width space
        ("\u200c\u200d\u2060\ufeff\u00ad", 0),  # joiners, word joiner, BOM, soft hyphen
        ("\u202e\u200f\u2066", 0),  # bidi controls
        ("\x00\x07\x1b\x7f\x85", 0),  # C0 and C1 controls
        ("\u3000\u00a0\u2028", 0),  # ideographic and no-break spaces, line separator
        ("\u3164\u115f\u2800\ufe0f\U000e0041", 0),  # Hangul filler, blank Braille, selector, tag
        ("\ue000\ud800", 0),  # private use, lone surrogate
        ("e\u0301", 2),  # a combining mark is part of what shows
        ("हिन्दी", 6),
        ("中文 العربية", 9),
    ],
)
def test_visible_length_counts_what_shows(text, expected):
    assert visible_length(text) == expected


def test_visible_length_stops_at_stop():
    assert visible_length("x" * 1000, stop=10) == 10


def test_min_length_blocks_invisible_articles():
    prefilter = Prefilter(min_length=10)
    articles = [
        {"title": "\u200b" * 30, "content": "\u2060" * 30},
        {"title": "Grid\u200b", "content": "\u3000 batt"},  # 8 visible
        {"title": "Grid", "content": "battery!!"},
    ]
    assert prefilter.blocked_by(articles) == ["min_length:10", "min_length:10", None]
    assert Prefilter().blocked_by([{"title": "", "content": "\u200b"}]) == [None]  # no minimum
