"""Reporters: one small module per output format, all fed the same findings.

`full` is ruff's default (each finding with a code frame and its fix as a diff), `concise` one line a
finding. `text` is the name `concise` had before; ruff removed its own `text` format in 0.8.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..diagnostics import Finding
from .terminal import COLOR_CHOICES, in_pre_commit, printable, use_color

__all__ = ["ALIASES", "COLOR_CHOICES", "FORMATS", "Report", "canonical_format", "needs_edits", "one_line",
           "position", "printable", "render", "rule_url", "use_color"]

FORMATS = ("full", "concise", "json", "json-lines", "junit", "gitlab", "pylint", "sarif", "github")
ALIASES = {"text": "concise"}
# The formats that show each fix's edits: the runner computes edits only for these (a rewrite per fix).
FORMATS_WITH_EDITS = frozenset({"full", "json", "json-lines"})
DOCS_URL = "https://github.com/gradlint/gradlint/blob/main/docs/rules.md#{name}-{code}"
LONGEST_PATH_SHOWN = 300


@dataclass
class Report:
    findings: Sequence[Finding]
    cwd: Path
    unsafe_fixes: bool = False
    fixed: int = 0
    command: str = "check"  # "check", "diff" (fix without --write), "write" or "fix-only"
    statistics: bool = False
    quiet: bool = False
    color: bool = field(default_factory=use_color)  # `use_color(args.color)`; by default from stdout and env
    pre_commit: bool = field(default_factory=in_pre_commit)  # hints name hooks, not flags
    fixes: Optional[dict] = None  # `--show-fixes`: file -> Counter of (code, name) -> fixes applied
    texts: dict = field(default_factory=dict)  # file -> its text, where the file on disk is not it (stdin)

    @property
    def lists_findings(self) -> bool:
        """Whether the text formats list the findings: not when a diff is the listing (`fix`, `--diff`),
        nor with `--fix-only`, which reports only what it fixed."""
        return self.command not in ("diff", "fix-only")


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


def position(f: Finding) -> str:
    """`row:column`, or in a notebook `cell 3:row:column` (rows counted in the cell), as ruff writes it."""
    where = f"{f.location.row}:{f.location.column}"
    return f"cell {f.cell}:{where}" if f.cell is not None else where


def rule_url(code: str, name: str) -> Optional[str]:
    """The rule's section of docs/rules.md (GitHub's anchor for `# name (CODE)`)."""
    return DOCS_URL.format(code=code.lower(), name=name) if code.startswith("GL") else None


def canonical_format(fmt: str) -> str:
    fmt = ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r} (formats: {', '.join(FORMATS)})")
    return fmt


def needs_edits(fmt: str) -> bool:
    """Whether `fmt` shows fix edits (RunOptions.edits): the others only need each fix's applicability."""
    return canonical_format(fmt) in FORMATS_WITH_EDITS


def render(fmt: str, report: Report) -> str:
    """The output for `report` in `fmt`. With `report.statistics`, ruff's counts per rule: a table for
    `full` and `concise`, a JSON list for `json`; other formats raise ValueError, as in ruff."""
    fmt = canonical_format(fmt)
    if report.statistics:
        from . import statistics

        return statistics.render(fmt, report)
    module = importlib.import_module(f".{fmt.replace('-', '_')}", __name__)
    return module.render(report)
