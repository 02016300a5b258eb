"""Reporters: one small module per output format, all fed the same findings."""

from __future__ import annotations

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
