"""Rewrite the numbers README.md and docs/*.md quote from result files, from those files.

    python scripts/refresh_doc_numbers.py [--check]

A quoted number carries its source in an HTML comment right after it
(``0.784<!-- from: PATH KEY [x100] -->``, see ``tests/test_doc_numbers.py``,
which fails while a page quotes a stale one). Each is replaced by the
file's value at the decimals the page shows, its sign written as before
(a Unicode minus stays one, a shown ``+`` stays). The words around a
number are not touched: read every changed line (the script lists them)
for prose the new value contradicts ("better", "within", ...).
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_doc_numbers import PAGES, QUOTED, lookup  # noqa: E402  (the test's own parser)


def formatted(match, value):
    """`value` as the test reads it back (``f"{value:.{decimals}f}"``), in the page's sign style."""
    text = match["number"]
    decimals = len(text.split(".")[1]) if "." in text else 0
    number = f"{value:.{decimals}f}"
    if number.startswith("-"):
        return ("−" if "−" in text else "-") + number[1:]
    return ("+" if text.startswith("+") else "") + number


def refresh(page):
    """The page's text with every quoted number from its source, and the (old, new) pairs that changed."""
    text, changed, sources = page.read_text(encoding="utf-8"), [], {}

    def replace(match):
        path = match["path"]
        if path not in sources:
            sources[path] = json.loads((ROOT / path).read_text(encoding="utf-8"))
        value = lookup(sources[path], match["key"])
        value = 100 * value if match["scale"] else value
        new = formatted(match, value)
        if new != match["number"]:
            changed.append((match["key"], match["number"], new))
        return match[0].replace(match["number"] + match["percent"], new + match["percent"], 1)

    return QUOTED.sub(replace, text), changed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only list the stale numbers; exit 1 if any")
    args = parser.parse_args()
    stale = 0
    for page in PAGES:
        text, changed = refresh(page)
        for key, old, new in changed:
            print(f"{page.relative_to(ROOT)}: {key}: {old} -> {new}")
        stale += len(changed)
        if changed and not args.check:
            page.write_text(text, encoding="utf-8")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
