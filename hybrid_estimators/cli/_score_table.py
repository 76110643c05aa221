"""The ``--format table`` lines of ``hybrid-estimators score`` and its summary counts."""

import sys

from ..scoring import describe_id
from ._common import CommandError

TABLE_COLUMNS = (  # header, width, alignment
    ("line", 6, ">"),
    ("id", 28, "<"),
    ("tier", 8, "<"),
    ("stage", 6, "<"),
    ("w.avg", 6, ">"),
    ("ms/art", 7, ">"),
    ("blocked_by / error", 0, "<"),
)
#: Where ``--columns`` puts the dimensions' scores: after ``w.avg``.
DIMENSIONS_AFTER = "w.avg"
MAX_NOTE = 70


def _escaped(character):
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text):
    """`text` on one line, with what a terminal would act on or hide escaped.

    Runs of whitespace become one space; controls (escape sequences
    included), format characters (bidi overrides, zero-width characters),
    lone surrogates and unassigned code points become ``\\xNN``,
    ``\\uNNNN`` or ``\\UNNNNNNNN``.

    Examples
    --------
    >>> printable("a\\x1b[31mred\\nline")
    'a\\\\x1b[31mred line'
    """
    text = " ".join(text.split())
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _cell(value, width, align, limit=MAX_NOTE):
    """`value` in a cell of `width`; text is cut with "…", a number (right-aligned) never."""
    width_or_limit = width or limit
    text = "-" if value is None else printable(str(value)[: 4 * width_or_limit + 16])
    if len(text) > width_or_limit and align != ">":
        text = text[: width_or_limit - 1] + "…"
    return f"{text:{align}{width}}" if width else text


def _columns(dimensions):
    columns = []
    for column in TABLE_COLUMNS:
        columns.append(column)
        if column[0] == DIMENSIONS_AFTER:
            columns.extend((name, max(5, len(name)), ">") for name in dimensions)
    return columns


def table_header(dimensions=()):
    """The table's header, with a column per dimension in `dimensions`."""
    return "  ".join(_cell(name, width, align) for name, width, align in _columns(dimensions))


def _number(value):
    return None if value is None else f"{value:.2f}"


def table_line(row, ms_per_article=None, dimensions=()):
    """One table line for `row`; `ms_per_article` defaults to the row's own share."""
    note = row.error or (f"blocked: {row.blocked_by}" if row.blocked_by else "")
    stage = None if row.stage_used is None else row.stage_used.replace("stage", "")
    if ms_per_article is None and row.seconds is not None:
        ms_per_article = 1000 * row.seconds
    scores = row.scores or {}
    values = [row.line, row.id, row.tier, stage, _number(row.weighted_average)]
    values += [_number(scores.get(name)) for name in dimensions]
    values += [None if ms_per_article is None else f"{ms_per_article:.1f}", note]
    return "  ".join(
        _cell(value, width, align)
        for value, (_, width, align) in zip(values, _columns(dimensions))
    ).rstrip()


def _table_dimensions(columns, dimensions):
    """The dimensions ``--columns`` asks for, checked against the filter's."""
    if columns is None:
        return ()
    names = [name.strip() for name in columns.split(",") if name.strip()]
    if names in (["scores"], ["all"]):
        return tuple(dimensions)
    unknown = [name for name in names if name not in dimensions]
    if unknown or not names:
        raise CommandError(
            f"--columns: unknown dimension(s) {unknown or [columns]}; this filter has "
            f"{', '.join(dimensions)} (or say --columns scores for all of them)"
        )
    return tuple(names)



#: Width of one filter's cell in the several-filter table: "tier stage w.avg".
FILTER_CELL = 22


def _filter_cell(result):
    if result is None:
        return _cell(None, FILTER_CELL, "<")
    if result.stage_used is None:
        outcome = f"blocked: {result.blocked_by}" if result.blocked_by else f"error: {result.error}"
        return _cell(outcome, FILTER_CELL, "<")
    stage = result.stage_used.replace("stage", "")
    return f"{result.tier or '-':<8}  {stage:<5}  {result.weighted_average:>5.2f}".ljust(FILTER_CELL)


def multi_table_header(names):
    """The several-filter table's header: ``line``, ``id``, then a cell per filter."""
    cells = [_cell("line", 6, ">"), _cell("id", 28, "<")]
    cells += [_cell(f"{name}: tier stage w.avg", FILTER_CELL, "<") for name in names]
    return "  ".join(cells + ["error"]).rstrip()


def _multi_table_line(row, names=None):
    """One line of the several-filter table (the line's error, if any, in the last cell)."""
    names = list(row.results) if names is None else names
    cells = [_cell(row.line, 6, ">"), _cell(printable(describe_id(row.id)) if row.id is not None else None, 28, "<")]
    cells += [_filter_cell(row.results.get(name)) for name in names]
    return "  ".join(cells + [_cell(row.error or "", 0, "<")]).rstrip()



class _Counts:
    """What ``score``'s summary line counts: lines, scored, Stage 2, blocked, errors."""

    def __init__(self):
        self.lines = self.scored = self.stage2 = self.skipped = self.blocked = self.errors = 0
        self.seconds = 0.0

    def add(self, row):
        self.lines += 1
        self.skipped += row.stage_used == "stage1"
        self.errors += row.error is not None
        self.blocked += row.blocked_by is not None and row.error is None
        self.scored += row.weighted_average is not None
        self.stage2 += row.stage_used == "stage2"

    def timing(self):
        """Wall-clock time of the run, in all and per line and scored article."""
        per_line = 1000 * self.seconds / max(self.lines, 1)
        per_scored = f", {1000 * self.seconds / self.scored:.1f} ms per scored article" if self.scored else ""
        return f"{self.seconds:.2f} s, {per_line:.1f} ms per line{per_scored}"

    def __str__(self):
        return (
            f"lines={self.lines} scored={self.scored} stage2={self.stage2} "
            f"blocked={self.blocked} errors={self.errors}"
        )


def _emit(text, progress):
    """Print a line to stdout without breaking the progress bar on stderr."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    text = text.encode(encoding, "backslashreplace").decode(encoding)
    if progress.disable:
        print(text, file=sys.stdout, flush=True)
    else:
        progress.write(text, file=sys.stdout)


def _is_utf8(stream):
    import codecs

    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name == "utf-8"
    except LookupError:
        return False


def _progress_bar(n_total, n_done, args):
    from tqdm.auto import tqdm

    return tqdm(
        total=n_total,
        initial=n_done,
        unit="line",
        desc="scoring",
        file=sys.stderr,
        disable=True if args.no_progress else None,  # None: only on a terminal
    )


class _MultiCounts:
    """The summary counts of a several-filter run: the lines, and each filter's as for one filter."""

    def __init__(self, names):
        self.lines = self.errors = 0
        self.seconds = 0.0
        self.filters = {name: _Counts() for name in names}

    def add(self, row):
        self.lines += 1
        self.errors += row.error is not None
        if row.error is not None:
            return
        for name, counts in self.filters.items():
            counts.add(row.results[name])

    def describe(self, where=""):
        """``lines=N filters=K{where} errors=E; name/version: scored=... stage2=... blocked=... errors=...; ...``"""
        per_filter = "; ".join(
            f"{name}: scored={c.scored} stage2={c.stage2} blocked={c.blocked} errors={c.errors}"
            for name, c in self.filters.items()
        )
        return f"lines={self.lines} filters={len(self.filters)}{where} errors={self.errors}; {per_filter}"
