"""Griffe extension: Sphinx cross-reference roles in docstrings become links.

The package's docstrings use Sphinx roles (``:class:`~pkg.mod.Name```,
``:func:`name```, ``:meth:`Class.method```, ``:data:``, ``:mod:``,
``:attr:``, ...). mkdocstrings does not understand them; this extension
rewrites them, once the package is loaded, into cross-references that the
mkdocs-autorefs plugin turns into links:

* ``:role:`~pkg.mod.Name``` shows ``Name``, ``:role:`pkg.mod.Name``` shows
  ``pkg.mod.Name`` (as Sphinx does), in code font;
* a name that is not fully qualified is resolved like Python would from the
  object whose docstring it is in (its members, then its parents', then the
  module's members and imports): ``:class:`Prefilter``` in
  ``hybrid_estimators.filters`` links to ``hybrid_estimators.prefilter.Prefilter``
  when that module imports it; ``:mod:`.score``` is relative to the module;
* a target inside the documented package becomes an *optional* autorefs
  reference: a link when some page renders that object, plain inline code
  (never a broken link, never a strict-mode warning) when none does;
* a constant documented by ``#:`` comment lines right above it (Sphinx's
  convention, used throughout the package) gets them as its docstring, so
  that it is rendered and can be linked to;
* a target outside the package (``sklearn.*``, ``numpy``, ...) or one that
  cannot be resolved becomes inline code.

Enabled in ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options``)::

    extensions:
      - docs/_griffe_roles.py:SphinxRoles
"""

from __future__ import annotations

import logging
import re
from html import escape
from typing import Any

import griffe

__all__ = ["SphinxRoles", "ROLE_RE", "rewrite_roles"]

_logger = logging.getLogger("griffe.sphinx_roles")

#: ``:role:`target``` or ``:py:role:`title <target>```, on one line.
ROLE_RE = re.compile(
    r":(?:py:)?(?P<role>class|func|meth|data|mod|attr|exc|obj|const|type):`(?P<body>[^`\n]+)`"
)
_TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")
_NAME = re.compile(r"^\.?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _member(collection, path):
    """The object at a dotted `path`, through aliases, or None (no alias resolution)."""
    parts = path.split(".")
    try:
        obj = collection.members[parts[0]]
    except KeyError:
        return None
    for depth, part in enumerate(parts[1:], start=2):
        if obj.is_alias:
            target = obj.target_path
            if target == ".".join(parts[: depth - 1]):
                return None
            obj = _member(collection, target)
            if obj is None:
                return None
        if part not in obj.members:
            return None
        obj = obj.members[part]
    return obj


def _canonical(collection, path, _seen=None):
    """The path of the object an alias at `path` points to (`path` when not an alias)."""
    _seen = set() if _seen is None else _seen
    obj = _member(collection, path)
    if obj is None or not obj.is_alias or path in _seen:
        return path
    _seen.add(path)
    return _canonical(collection, obj.target_path, _seen)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in the docstrings of the loaded packages.

    Parameters
    ----------
    packages : list of str, optional
        Top-level packages whose objects may be linked to (default: the
        package being loaded).
    """

    def __init__(self, packages: list[str] | None = None) -> None:
        super().__init__()
        self.packages = set(packages or ())

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader | None = None, **kwargs: Any) -> None:
        """Rewrite every docstring of `pkg` once its object tree is complete."""
        packages = self.packages or {pkg.name}
        collection = pkg.modules_collection
        seen = set()
        stack = [pkg]
        while stack:
            obj = stack.pop()
            if obj.is_alias or id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.is_attribute and obj.docstring is None:
                _attach_doc_comment(obj, loader)
            if obj.docstring is not None and ":" in obj.docstring.value:
                value = rewrite_roles(
                    obj.docstring.value,
                    lambda name, obj=obj: _resolve(name, obj, collection, packages),
                )
                if value != obj.docstring.value:
                    obj.docstring.value = value
                    obj.docstring.__dict__.pop("parsed", None)  # parsed lazily: drop a stale cache
            stack.extend(obj.members.values())

    # Griffe < 1.14 names the hook on_package_loaded; running both is harmless
    # (a second pass finds no role and no undocumented commented constant).
    on_package_loaded = on_package


def _attach_doc_comment(attribute, loader):
    """Give `attribute` the ``#:`` comment lines right above it as its docstring.

    The package documents its constants the Sphinx way (``#: Largest probe
    file, in bytes.`` above ``MAX_PROBE_BYTES = ...``); Griffe only reads
    docstrings, so without this those constants would not be rendered (and
    links to them would have no target).
    """
    if attribute.parent is None or not (attribute.parent.is_module or attribute.parent.is_class):
        return
    if attribute.lineno is None or not hasattr(attribute.filepath, "read_text"):
        return
    try:
        lines = attribute.lines_collection[attribute.filepath]
    except (KeyError, AttributeError):
        try:
            lines = attribute.filepath.read_text(encoding="utf-8").splitlines()
        except OSError:
            return
    number = attribute.lineno - 1  # 0-based index of the assignment
    if not 0 < number <= len(lines):
        return
    indent = len(lines[number]) - len(lines[number].lstrip())
    comment = []
    index = number - 1
    while index >= 0:
        line = lines[index]
        stripped = line.strip()
        if not stripped.startswith("#:") or len(line) - len(line.lstrip()) != indent:
            break
        comment.append(stripped[2:].removeprefix(" "))
        index -= 1
    if not comment:
        return
    attribute.docstring = griffe.Docstring(
        "\n".join(reversed(comment)),
        lineno=index + 2,
        endlineno=number,
        parent=attribute,
        parser=loader.docstring_parser if loader is not None else None,
        parser_options=loader.docstring_options if loader is not None else None,
    )


def _resolve(name, obj, collection, packages):
    """The path of `name` seen from `obj`, or None when it is not an object of `packages`."""
    if not _NAME.match(name):
        return None
    if name.startswith("."):  # relative to the enclosing scopes: .score in hybrid_estimators.cli
        scope = obj
        while scope is not None:
            if scope.is_module or scope.is_class:
                candidate = f"{scope.path}{name}"
                if _member(collection, candidate) is not None:
                    return _inside(collection, candidate, packages)
            scope = scope.parent
        return None
    first, _, rest = name.partition(".")
    if first in packages and _member(collection, name) is not None:
        return _inside(collection, name, packages)
    try:
        base = obj.resolve(first)
    except griffe.NameResolutionError:
        return None
    except Exception as error:  # noqa: BLE001 - a docs build must not fail on one docstring
        _logger.debug("%s: cannot resolve %r: %s", obj.path, name, error)
        return None
    path = f"{base}.{rest}" if rest else base
    if _member(collection, path) is None:
        return None
    return _inside(collection, path, packages)


def _inside(collection, path, packages):
    """`path` when it (or what it aliases) belongs to `packages`, else None."""
    if path.split(".", 1)[0] not in packages:
        return None
    if _canonical(collection, path).split(".", 1)[0] not in packages:
        return None  # e.g. hybrid_estimators.router.check_is_fitted is sklearn's
    return path


def rewrite_roles(text, resolve):
    """Replace the Sphinx roles in `text`.

    Parameters
    ----------
    text : str
        A docstring.
    resolve : callable
        ``resolve(name) -> str or None``: the identifier to link to, or
        None for inline code.

    Returns
    -------
    str
        `text` with each role replaced by an optional autorefs reference or
        inline code. In code (a literal block after ``::``, a fenced block)
        a role becomes its plain title; doctest lines are left alone.
    """
    out = []
    fence = None  # the fence that opened the current fenced block
    literal = None  # indentation of the line that ended with "::"
    for line in text.split("\n"):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if literal is not None and stripped and indent <= literal:
            literal = None
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            out.append(line)
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            out.append(ROLE_RE.sub(_plain, line))
            continue
        if stripped.startswith((">>>", "... ")) or stripped == "...":
            out.append(line)
            continue
        if literal is not None:
            out.append(ROLE_RE.sub(_plain, line))
            continue
        out.append(ROLE_RE.sub(lambda match: _replacement(match, resolve), line))
        if stripped.endswith("::"):
            literal = indent
    return "\n".join(out)


def _title_and_target(match):
    body = match["body"].strip()
    titled = _TITLED.match(body)
    if titled:
        return titled["title"], titled["target"].strip().lstrip("~")
    target = body.lstrip("~")
    if body.startswith("~"):
        return target.rsplit(".", 1)[-1], target
    return target.lstrip("."), target


def _plain(match):
    return _title_and_target(match)[0]


def _replacement(match, resolve):
    title, target = _title_and_target(match)
    identifier = resolve(target)
    code = f"`{title}`"  # Markdown inline code: no emphasis inside (__init__)
    if identifier is None:
        return code
    return f'<autoref identifier="{escape(identifier)}" optional>{code}</autoref>'
