"""Reporters: one small module per output format, all fed the same findings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..diagnostics import Finding

FORMATS = ("text", "json", "sarif", "github")
DOCS_URL = "https://github.com/gradlint/gradlint/blob/main/docs/rules.md#{name}-{code}"


@dataclass
class Report:
    findings: Sequence[Finding]
    cwd: Path
    unsafe_fixes: bool = False
    fixed: int = 0
    command: str = "check"  # "check", "diff" (fix without --write) or "write"
    statistics: bool = False
    quiet: bool = False


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
LONGEST_PATH_SHOWN = 300


def printable(text: str) -> str:
    """One terminal line: control characters (a newline in a file name, an escape sequence in a string a
    message quotes) are shown escaped, as Python writes them, never sent to the terminal."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), m.group().encode("unicode_escape").decode()), text)


def shorten(path: str) -> str:
    """A path too long to read (5 000 nested folders) shown by its ends."""
    if len(path) <= LONGEST_PATH_SHOWN:
        return path
    keep = LONGEST_PATH_SHOWN // 2 - 10
    return f"{path[:keep]}...({len(path) - 2 * keep} characters)...{path[-keep:]}"


_LONG_WORD = re.compile(r"\S{%d,}" % (LONGEST_PATH_SHOWN + 1))


def one_line(message: str) -> str:
    """An error or warning as one readable line: escaped, with very long paths shortened."""
    return _LONG_WORD.sub(lambda m: shorten(m.group()), printable(message))


def rule_url(code: str, name: str) -> str | None:
    """The rule's section of docs/rules.md (GitHub's anchor for `# name (CODE)`)."""
    return DOCS_URL.format(code=code.lower(), name=name) if code.startswith("GL") else None


def render(fmt: str, report: Report) -> str:
    if fmt == "json":
        from .json import render as json_render

        return json_render(report)
    if fmt == "sarif":
        from .sarif import render as sarif_render

        return sarif_render(report)
    if fmt == "github":
        from .github import render as github_render

        return github_render(report)
    from .text import render as text_render

    return text_render(report)
