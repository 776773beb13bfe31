"""The docs keep up with the code: every setting in the README's table, every link resolving."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from lsp_server.settings import Settings, camel, parse_settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # images too: ![alt](path)
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)


def _prose(page: Path) -> str:
    """A page without its code blocks, where brackets and parentheses are not links."""
    return FENCED.sub("", page.read_text(encoding="utf-8"))


def _settings_rows() -> dict[str, list[str]]:
    """The README's settings table: wire key -> its cells (key, type, default, meaning)."""
    section = README.read_text(encoding="utf-8").split("\n## Settings\n", 1)[1]
    rows: dict[str, list[str]] = {}
    for line in section.split("\n## ", 1)[0].splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and (key := re.fullmatch(r"`(\w+)`", cells[0])):
            rows[key.group(1)] = cells
    return rows


def _on_the_wire(value: Any) -> Any:
    """A default as a client sends it: JSON, where tuples are lists."""
    return list(value) if isinstance(value, tuple) else value


def test_every_setting_has_a_readme_row_with_its_default() -> None:
    defaults = Settings()
    accepted = {camel(f.name): _on_the_wire(getattr(defaults, f.name)) for f in fields(Settings)}
    rows = _settings_rows()
    assert sorted(set(accepted) - set(rows)) == [], "settings without a row in README.md"
    assert sorted(set(rows) - set(accepted)) == [], "README.md rows for settings that do not exist"
    for key, default in accepted.items():
        shown = f"`{json.dumps(default)}`"
        assert shown in rows[key][2], f"README.md: {key}'s default should read {shown}"
        # the documented key and default are what the server takes, without a warning
        assert parse_settings({key: default}) == (defaults, [])


def _anchors(page: Path) -> set[str]:
    """GitHub's ids for a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    titles = HEADING.findall(_prose(page))
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in titles}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(CODE_SPAN.sub("", _prose(page))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, "\n".join(broken)


def test_readme_reads_in_five_minutes() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move detail into docs/"
