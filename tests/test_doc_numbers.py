"""Numbers the guide quotes from result files are those files' numbers.

A quoted number carries its source in an HTML comment right after it
(invisible on the rendered page)::

    0.784<!-- from: filters/seece_energy_tech/v1/probe/metadata.json evaluation.comparison.all.stage1_mae.value -->

``PATH KEY`` names a JSON file of the repository and a dotted key in it
(list items by index); ``x100`` after the key compares a percentage with
a share. The number in the text must equal the file's value rounded to
the decimals the text shows, so a re-recorded filter or benchmark whose
numbers changed fails here until the page says the new ones.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: A number (ASCII or Unicode minus), an optional %, then its source comment.
QUOTED = re.compile(
    r"(?P<number>[-−+]?\d+(?:\.\d+)?)(?P<percent>%?)<!-- from: (?P<path>\S+) (?P<key>\S+)(?P<scale> x100)? -->"
)


def quoted_numbers():
    found = []
    for page in PAGES:
        for match in QUOTED.finditer(page.read_text(encoding="utf-8")):
            found.append(pytest.param(match, id=f"{page.name}:{match['key']}"))
    return found


def lookup(data, key):
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def test_pages_quote_sourced_numbers():
    """The mechanism is in use: the README's evidence table is sourced."""
    readme = [match for match in QUOTED.finditer((ROOT / "README.md").read_text(encoding="utf-8"))]
    assert len(readme) >= 8


def test_a_stale_number_is_caught():
    text = "0.999<!-- from: filters/seece_energy_tech/v1/probe/metadata.json evaluation.n -->"
    match = QUOTED.search(text)
    assert float(match["number"]) != lookup(_load(match["path"]), match["key"])


def _load(path):
    return json.loads((ROOT / path).read_text(encoding="utf-8"))


@pytest.mark.parametrize("match", quoted_numbers())
def test_quoted_number_matches_its_source(match):
    text = match["number"].replace("−", "-").lstrip("+")
    decimals = len(text.split(".")[1]) if "." in text else 0
    value = lookup(_load(match["path"]), match["key"])
    if match["scale"]:
        value = 100 * value
    assert text == f"{value:.{decimals}f}", f"{match['number']} quotes {match['path']} {match['key']} = {value!r}"
