"""Rule-based prefilter: articles it blocks are reported, never dropped."""

import re
import unicodedata
from dataclasses import dataclass, field

from .text import as_frame

#: Unicode categories that draw nothing: controls, format characters
#: (zero-width spaces and joiners, BOM, soft hyphen, bidi marks, tags),
#: surrogates, private use, unassigned, and the separators (spaces).
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
#: Characters of other categories that draw nothing either: variation
#: selectors, the combining grapheme joiner, Hangul fillers, Khmer
#: inherent vowels and the blank Braille pattern.
INVISIBLE_CHARACTERS = frozenset(
    [chr(c) for c in range(0xFE00, 0xFE10)]
    + [chr(c) for c in range(0xE0100, 0xE01F0)]
    + ["\u034f", "\u115f", "\u1160", "\u17b4", "\u17b5", "\u2800", "\u3164", "\uffa0"]
)


def _is_visible(character):
    if " " < character < "\x7f":  # printable ASCII, the common case
        return True
    return (
        character not in INVISIBLE_CHARACTERS
        and unicodedata.category(character) not in INVISIBLE_CATEGORIES
    )


def visible_length(text, stop=None):
    """Number of visible characters of `text`, counting up to `stop` at most.

    Whitespace, controls, format characters (zero-width spaces and joiners,
    BOM, soft hyphen, bidi marks), surrogates, private-use and unassigned
    code points, variation selectors and a few blank letters (Hangul
    fillers, the blank Braille pattern) are not counted; letters, digits,
    punctuation, symbols and combining marks are (a combining mark is part
    of what a word shows in many scripts).

    Parameters
    ----------
    text : str
    stop : int or None, default=None
        Stop counting at this many (enough to compare with a minimum).

    Returns
    -------
    n_visible : int

    See Also
    --------
    Prefilter : Blocks articles shorter than ``min_length`` by this length.

    Examples
    --------
    >>> visible_length("Grid\\u200b\\u200b battery\\n")
    11
    >>> visible_length("\\u200b" * 30)
    0
    """
    count = 0
    for character in text:
        if _is_visible(character):
            count += 1
            if count == stop:
                break
    return count


@dataclass
class Prefilter:
    """Block articles before scoring, by rules or by any callable.

    A blocked article keeps its row in every output, with the rule's reason
    in ``blocked_by`` and no scores.

    Parameters
    ----------
    block_keywords : dict of str to list of str
        Reason -> words or phrases; an article whose title or content holds
        one (case-insensitive, whole words) is blocked with that reason.
    block_patterns : dict of str to str
        Reason -> regular expression searched in title and content.
    languages : list of str or None
        Allowed ``language`` values; None allows all. Articles without a
        language are allowed.
    min_length : int
        Minimum number of visible characters of title + content (see
        :func:`visible_length`: whitespace, zero-width and other invisible
        characters do not count).
    rules : list of callable
        Each takes an article dict and returns a reason (str) or None.

    See Also
    --------
    hybrid_estimators.filters.Filter : Applies it before any stage.
    hybrid_estimators.filters.FilterSpec : Builds it from a config's
        ``prefilter`` section.

    Examples
    --------
    >>> prefilter = Prefilter(block_keywords={"sports": ["football"]}, min_length=10)
    >>> prefilter.blocked_by([
    ...     {"title": "Football final", "content": "A late goal."},
    ...     {"title": "Grid", "content": "A new battery plant opened."},
    ...     {"title": "", "content": "Short"},
    ... ])
    ['keyword:sports', None, 'min_length:10']
    """

    block_keywords: dict = field(default_factory=dict)
    block_patterns: dict = field(default_factory=dict)
    languages: list = None
    min_length: int = 0
    rules: list = field(default_factory=list)

    def __post_init__(self):
        self._keyword_patterns = {
            reason: re.compile(
                r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE
            )
            for reason, words in self.block_keywords.items()
            if words
        }
        self._regex_patterns = {}
        for reason, pattern in self.block_patterns.items():
            try:
                self._regex_patterns[reason] = re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"prefilter.block_patterns[{reason!r}]: invalid regular expression "
                    f"{pattern!r}: {error}"
                ) from None

    @classmethod
    def from_config(cls, config):
        """Build from a filter config's ``prefilter`` section (a dict or None)."""
        config = dict(config or {})
        unknown = set(config) - {"block_keywords", "block_patterns", "languages", "min_length"}
        if unknown:
            raise ValueError(f"prefilter: unknown keys {sorted(unknown)}.")
        return cls(**config)

    def blocked_by(self, X):
        """The reason each article is blocked, or None where it passes.

        Parameters
        ----------
        X : DataFrame or list of dict
            Articles with ``title``, ``content`` and optionally ``language``.

        Returns
        -------
        reasons : list of str or None
        """
        frame = as_frame(X)
        return [self._reason(article) for article in frame.to_dict("records")]

    def _reason(self, article):
        text = " ".join(
            value for value in (article.get("title"), article.get("content"))
            if isinstance(value, str)
        )
        if self.min_length > 0 and visible_length(text, stop=self.min_length) < self.min_length:
            return f"min_length:{self.min_length}"
        language = article.get("language")
        if self.languages is not None and isinstance(language, str) and language not in self.languages:
            return f"language:{language}"
        for reason, pattern in self._keyword_patterns.items():
            if pattern.search(text):
                return f"keyword:{reason}"
        for reason, pattern in self._regex_patterns.items():
            if pattern.search(text):
                return f"pattern:{reason}"
        for rule in self.rules:
            reason = rule(article)
            if reason:
                return str(reason)
        return None
