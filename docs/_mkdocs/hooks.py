"""MkDocs hooks: the home page is the README, and links out of docs/ keep working.

- ``docs/index.md`` holds a marker that is replaced by ``README.md`` at build
  time, so the home page and the README never drift apart.
- ``docs/reference/buttress.md`` holds a marker replaced by a table of everything
  ``buttress`` exports, each name linked to its entry in the reference page of
  the module that defines it. A name that no reference page documents fails the
  strict build, so a new export cannot go undocumented.
- Pages are written to be read on GitHub too, so they may link to files outside
  ``docs/``: to the README (``../README.md#configuration``), the changelog or the
  benchmarks. On the site such a link points to the home page for the README and
  to the file on GitHub for anything else. The README's own links to ``docs/x.md``
  become links to the page ``x.md``.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import Any

import griffe

MARKER = "<!-- include: README.md -->"
EXPORTS = re.compile(r"^<!-- exports: (?P<module>[\w.]+) -->$", re.MULTILINE)
DIRECTIVE = re.compile(r"^::: (?P<module>[\w.]+)\s*$", re.MULTILINE)
ROLE = re.compile(r":[a-z]+:`~?(?:[^`<]*<)?(?P<target>[^`>]+)>?`")
_log = logging.getLogger("mkdocs.hooks.buttress")
REPOSITORY = "https://github.com/buttress-dev/buttress/blob/main/"
# Code (a fenced block or an inline span), left as it is; or the "](target)" of a
# link whose target is relative (no scheme, not a bare #anchor), maybe with #anchor.
LINK = re.compile(
    r"(?P<code>^[ \t]*(?P<fence>```|~~~).*?^[ \t]*(?P=fence)|`[^`\n]*`)"
    r"|\]\((?![a-zA-Z][a-zA-Z0-9+.-]*:|#)(?P<path>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)",
    re.DOTALL | re.MULTILINE,
)


def rewrite_links(markdown: str, source: str) -> str:
    """Point the relative links of ``source`` (a path from the repository root) into the site.

    ``source`` is ``README.md`` or ``docs/<page>.md``; the result is the page's
    Markdown as it would read if it lived at ``docs/<page>.md`` (the README at
    ``docs/index.md``).
    """
    page = "docs/index.md" if source == "README.md" else source
    page_dir = posixpath.dirname(page)

    def fix(match: re.Match[str]) -> str:
        if match["code"]:
            return match["code"]
        path, anchor = match["path"], match["anchor"] or ""
        target = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        if target == "README.md":
            target = "docs/index.md"
        if target.startswith("docs/"):
            return f"]({posixpath.relpath(target, page_dir)}{anchor})"
        return f"]({REPOSITORY}{target}{anchor})"

    return LINK.sub(fix, markdown)


def _package(src: Path, name: str) -> griffe.Module:
    module = griffe.load(name, search_paths=[str(src)])
    assert isinstance(module, griffe.Module)
    return module


def _summary(obj: griffe.Object) -> str:
    """The first paragraph of ``obj``'s docstring on one line, its reST roles as code."""
    text = obj.docstring.value if obj.docstring else ""
    first = " ".join(text.split("\n\n", 1)[0].split())
    first = ROLE.sub(lambda m: f"`{m['target'].rsplit('.', 1)[-1]}`", first)
    return first.replace("``", "`").replace("|", "\\|")


def _final_path(module: griffe.Module, name: str) -> str | None:
    """Where ``module.name`` is defined, or ``None`` if ``module`` has no such member."""
    try:
        member = module[name]
        return member.final_target.path if member.is_alias else member.path
    except (KeyError, griffe.AliasResolutionError):
        return None


def exports_table(root: Path, module_name: str) -> str:
    """``module_name``'s exports, grouped by the reference page that documents each.

    A name's home is a documented module that exports the same object, preferring
    the one it is defined in (``RetryScheduled`` lives with ``Retry``, though
    :mod:`buttress.events` lists it too). Names that no other page documents are
    documented here, one ``:::`` block each.
    """
    package = _package(root / "src", module_name.partition(".")[0])

    def load(path: str) -> griffe.Module:
        found = package if path == package.path else package[path.partition(".")[2]]
        assert isinstance(found, griffe.Module)
        return found

    documented = sorted(
        {
            match["module"]
            for page in (root / "docs" / "reference").rglob("*.md")
            for match in DIRECTIVE.finditer(page.read_text())
        }
        - {module_name}
    )
    module = load(module_name)
    groups: dict[str, list[str]] = {}
    here: list[str] = []
    for name in module.exports or ():
        defined_at = _final_path(module, name)
        if defined_at is None:
            _log.warning("%s.__all__ names %r, which griffe cannot resolve", module_name, name)
            continue
        homes = [
            m
            for m in documented
            if name in (load(m).exports or ()) and _final_path(load(m), name) == defined_at
        ]
        if homes:
            home = max(homes, key=lambda m: (defined_at.startswith(f"{m}."), len(m)))
        else:
            home = module_name
            here.append(name)
        groups.setdefault(home, []).append(
            f"| [`{name}`][{home}.{name}] | {_summary(module[name].final_target)} |"
        )

    def heading(home: str) -> str:
        link = "(#documented-here)" if home == module_name else f"[{home}]"
        return f"### [`{home}`]{link}\n\n| name | what it is |\n|---|---|\n"

    tables = "\n\n".join(heading(home) + "\n".join(rows) for home, rows in sorted(groups.items()))
    if not here:
        return tables
    blocks = "\n\n".join(
        f"::: {module_name}.{name}\n"
        "    options:\n"
        "      show_root_heading: true\n"
        "      show_root_full_path: false\n"
        "      heading_level: 3"
        for name in here
    )
    return f"{tables}\n\n## Documented here\n\n{blocks}"


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    root = Path(config["config_file_path"]).parent
    if MARKER in markdown:
        readme = rewrite_links((root / "README.md").read_text(), "README.md")
        markdown = markdown.replace(MARKER, readme)
    markdown = EXPORTS.sub(lambda m: exports_table(root, m["module"]), markdown)
    return rewrite_links(markdown, f"docs/{page.file.src_uri}")
