"""The rule that would have caught a non-finite value: gradlint's own findings on the lines of its origin
and of the calls that led there. Torch-free (runs in the parent, on the user's files as they are on disk).
"""

from __future__ import annotations

import os
from typing import Optional


def _lines(trace: dict) -> list[tuple[str, int, Optional[int]]]:
    """(file, line, cell) of the origin's site first, then the call chain's, innermost first; the cell of
    a notebook's site (None in a source file), whose line counts in the cell."""
    sites = [trace.get("site") or {}] + list(reversed(trace.get("chain") or []))
    out: list[tuple[str, int, Optional[int]]] = []
    for site in sites:
        key = (site.get("file"), site.get("line"), site.get("cell"))
        if key[0] and key[1] and key not in out:
            out.append(key)
    return out


def rules_at(trace: Optional[dict], fixed_codes: dict, cwd: Optional[str] = None) -> list[dict]:
    """Findings on the origin's line and the lines of its call chain: [{"code", "rule", "message", "file",
    "line", "fixed"}]; `fixed` says whether the patch removed findings of that code from that file
    (`fixed_codes`: file as shown -> {code: count})."""
    if not trace or not trace.get("site"):
        return []
    from gradlint.documents import lint_document
    from gradlint.registry import all_rules

    rules = all_rules()
    found: list[dict] = []
    by_file: dict[str, list] = {}
    for file, line, cell in _lines(trace):
        path = file if os.path.isabs(file) else os.path.join(cwd or os.getcwd(), file)
        if file not in by_file:
            try:
                with open(path, encoding="utf-8") as f:
                    by_file[file] = lint_document(f.read(), path, rules)  # a notebook: by cell
            except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
                by_file[file] = []
        for finding in by_file[file]:
            # on the line, or a short statement around it (not a loop or a function that merely contains it)
            if finding.cell == cell and finding.location.row <= line <= finding.end_location.row <= finding.location.row + 4:
                found.append({"code": finding.code, "rule": finding.rule_name, "message": finding.message,
                              "file": file, "line": finding.location.row, "cell": finding.cell,
                              "fixed": bool((fixed_codes.get(file) or {}).get(finding.code))})
    return found
