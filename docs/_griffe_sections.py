"""Griffe extension: a numpydoc *See Also* section lists links.

Griffe's numpy parser keeps a *See Also* section as an admonition of plain
text: its entries (``name : description``, one a line, as numpydoc writes
them) would run together into one paragraph with no links. This extension
rewrites them, in the loaded copy of each docstring only (the source, and
so the doctests, are unchanged), into a bullet list whose names are Sphinx
roles, which the roles extension listed after it turns into links.

(The *Examples* sections are shown as titled boxes by the template
``docs/_templates/python/readthedocs/docstring/examples.html.jinja``.)

Enabled in ``mkdocs.yml``, before the roles extension::

    extensions:
      - docs/_griffe_sections.py:SeeAlsoLinks
      - docs/_griffe_roles.py:SphinxRoles
"""

from __future__ import annotations

import re
from typing import Any

import griffe

__all__ = ["SeeAlsoLinks", "rewrite_see_also"]

_SEE_ALSO = re.compile(r"^See Also\n-{8}\n", re.MULTILINE)
#: Any numpydoc section header: a title line, then a line of dashes.
_NEXT_HEADER = re.compile(r"^\S[^\n]*\n-{3,}$", re.MULTILINE)
_ENTRY = re.compile(r"^(?P<names>[~.\w][\w.~, ]*?)\s*(?::\s*(?P<text>.*))?$")


class SeeAlsoLinks(griffe.Extension):
    """Rewrite the *See Also* section of every loaded docstring."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the docstrings of `pkg` once its object tree is complete."""
        seen = set()
        stack = [pkg]
        while stack:
            obj = stack.pop()
            if obj.is_alias or id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None and "See Also" in obj.docstring.value:
                value = rewrite_see_also(obj.docstring.value)
                if value != obj.docstring.value:
                    obj.docstring.value = value
                    obj.docstring.__dict__.pop("parsed", None)  # parsed lazily: drop a stale cache
            stack.extend(obj.members.values())

    on_package_loaded = on_package  # the hook's name before Griffe 1.14


def _entries(body):
    items = []
    for line in body.strip("\n").split("\n"):
        entry = None if line.startswith((" ", "\t")) else _ENTRY.match(line)
        if entry is None:  # blank, or a description continued on an indented line
            if items and line.strip():
                items[-1] += " " + line.strip()
            continue
        names = [name.strip() for name in entry["names"].split(",") if name.strip()]
        roles = ", ".join(f":obj:`~{name}`" for name in names)  # shown by their last part
        items.append(f"- {roles}" + (f": {entry['text'].strip()}" if entry["text"] else ""))
    return "\n".join(items) + "\n\n"


def rewrite_see_also(text):
    """`text` with its *See Also* entries as a bullet list of roles.

    Parameters
    ----------
    text : str
        A numpydoc docstring.

    Returns
    -------
    str
        The same docstring, the *See Also* section's entries rewritten;
        everything else unchanged.

    Examples
    --------
    >>> print(rewrite_see_also("Do it.\\n\\nSee Also\\n--------\\nother, more : Do it too.\\n"))
    Do it.
    <BLANKLINE>
    See Also
    --------
    - :obj:`~other`, :obj:`~more`: Do it too.
    <BLANKLINE>
    <BLANKLINE>
    """
    header = _SEE_ALSO.search(text)
    if header is None:
        return text
    following = _NEXT_HEADER.search(text, header.end())
    end = following.start() if following is not None else len(text)
    return text[: header.end()] + _entries(text[header.end() : end]) + text[end:]
