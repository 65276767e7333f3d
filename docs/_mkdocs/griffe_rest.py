"""A griffe extension: render the reST roles of buttress's docstrings as links.

The docstrings are written for readers of the source and for ``help()``: they use
Sphinx roles (``:class:`~buttress.Retry```, ``:meth:`CircuitBreaker.isolate```) and
double-backquoted literals. Markdown renders the literals as code already; this
extension turns each role into an mkdocstrings cross-reference, resolved in the
scope of the object whose docstring it is (as Python would resolve the name),
turns reST's ``::`` before a literal block into a plain colon, and drops reST's
escaped spaces (``\\ ``).

The references are *optional*: one whose target is not in the API reference (a
builtin, a private helper) renders as code, not as a broken link or a warning.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(
    r":(?:py:)?(?P<role>class|func|meth|attr|data|mod|exc|obj|const):"
    r"`(?P<tilde>~)?(?P<body>[^`]+)`"
)
TITLED = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$")
LITERAL_BLOCK = re.compile(r"(?<=\S)::$", re.MULTILINE)
# reST's escaped space, which joins markup to a word: ``Exception``\ s.
ESCAPED_SPACE = re.compile(r"\\ ")
CALLABLE_ROLES = {"func", "meth"}


def _resolve(obj: griffe.Object, target: str) -> str:
    """The full path of ``target`` as seen from ``obj``, or ``target`` unchanged."""
    if target.startswith("buttress.") or target == "buttress":
        return target
    head, _, rest = target.partition(".")
    try:
        path = obj.resolve(head)
    except griffe.NameResolutionError:
        return target
    if not rest:
        return path
    # ``time.sleep`` inside a class with a ``time`` method means the module: only
    # a module or a class can be the head of a dotted name.
    root = obj
    while root.parent is not None:
        root = root.parent
    if not path.startswith(f"{root.path}."):
        return f"{path}.{rest}"  # an imported module, e.g. ``time``
    try:
        found = root[path.removeprefix(f"{root.path}.")]
    except (KeyError, ValueError, griffe.AliasResolutionError):
        return target
    return f"{path}.{rest}" if found.is_module or found.is_class else target


def _link(obj: griffe.Object, match: re.Match[str]) -> str:
    body = match["body"].strip()
    titled = TITLED.match(body)
    if titled:
        title, target = titled["title"], titled["target"]
    else:
        target = body
        title = target.rsplit(".", 1)[-1] if match["tilde"] else target
        if match["role"] in CALLABLE_ROLES:
            title += "()"
    identifier = html.escape(_resolve(obj, target), quote=True)
    code = f"<code>{html.escape(title)}</code>"
    return f'<autoref identifier="{identifier}" optional>{code}</autoref>'


def _convert(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        text = ROLE.sub(lambda m: _link(obj, m), obj.docstring.value)
        obj.docstring.value = ESCAPED_SPACE.sub("", LITERAL_BLOCK.sub(":", text))
    for member in obj.members.values():
        if not member.is_alias:
            _convert(member)  # type: ignore[arg-type]


class ReSTRoles(griffe.Extension):
    """Convert reST roles to cross-references once a whole package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name == "buttress":
            _convert(pkg)
