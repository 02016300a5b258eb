"""The terminal side-by-side table, and the JSON document, of one `gradlint verify`. Torch-free."""

from __future__ import annotations

import shutil
import textwrap
from typing import Optional

from .checks import FAIL, NA, OK, WARN, Check

COLORS = {OK: "32", WARN: "33", FAIL: "31", NA: "2"}
LABELS = {OK: "ok", WARN: "WARN", FAIL: "FAIL", NA: "n/a", "info": ""}


def _status(status: str, color: bool) -> str:
    label = f"{LABELS.get(status, status):<4}"
    if color and status in COLORS:
        return f"\x1b[{COLORS[status]}m{label}\x1b[0m"
    return label


def _cell(check: Optional[Check], width: int) -> list[tuple[str, str]]:
    """(status, text) lines of one cell, wrapped to `width` (less the status column)."""
    if check is None:
        return [("", "-")]
    text_width = max(20, width - 5)
    lines: list[tuple[str, str]] = []
    for i, part in enumerate(textwrap.wrap(check.summary, text_width) or [""]):
        lines.append((check.status if i == 0 else "", part))
    for detail in check.details:
        indent = "  " if detail.startswith("  ") else ""
        for part in textwrap.wrap(detail.strip(), text_width - len(indent) - 1):
            lines.append(("", indent + " " + part))
    return lines


def table(original: list[Check], patched: list[Check], color: bool = False, width: Optional[int] = None) -> str:
    width = width or min(max(shutil.get_terminal_size((120, 24)).columns, 90), 160)
    first = 20
    col = (width - first - 4) // 2
    keys = list(dict.fromkeys([c.key for c in original] + [c.key for c in patched]))
    by_key = [{c.key: c for c in original}, {c.key: c for c in patched}]
    titles = {c.key: c.title for c in original + patched}
    out = [f"{'check':<{first}}  {'original':<{col}}  patched", f"{'-' * first}  {'-' * col}  {'-' * col}"]
    for key in keys:
        left, right = _cell(by_key[0].get(key), col), _cell(by_key[1].get(key), col)
        for i in range(max(len(left), len(right))):
            name = titles[key] if i == 0 else ""
            ls, lt = left[i] if i < len(left) else ("", "")
            rs, rt = right[i] if i < len(right) else ("", "")
            lcell = (_status(ls, color) if i == 0 else "    ") + " " + lt
            pad = col - len(lt) - 5
            rcell = (_status(rs, color) if i == 0 else "    ") + " " + rt
            out.append(f"{name:<{first}}  {lcell}{' ' * max(pad, 0)}  {rcell}".rstrip())
    return "\n".join(out)


def patch_lines(patch: dict, errors: list[str]) -> list[str]:
    files = patch.get("files") or []
    if not files:
        lines = ["patched copy: no safe fix applies; the patched run is the original again"]
    else:
        codes = ", ".join(f"{code} x{n}" if n > 1 else code for code, n in patch["codes"].items())
        where = ", ".join(f["path"] for f in files)
        lines = [f"patched copy: {patch['fixed']} fix(es) ({codes or 'formatting'}) in {where}"]
    remaining = [r for f in files for r in f.get("remaining", [])]
    if remaining:
        lines.append(f"not fixed (unsafe or no fix): {', '.join(sorted({r.split()[0] for r in remaining}))}")
    lines += [f"patch error: {e}" for e in patch.get("errors", []) + errors]
    return lines


def verdict(original: list[Check], patched: list[Check], healthy: bool, exit_code: int,
            reason: str = "") -> list[str]:
    before = {c.key: c for c in original}
    fixed = [c.title for c in patched if c.status == OK and before.get(c.key) and before[c.key].status in (FAIL, WARN)]
    worse = [c.title for c in patched if c.status in (FAIL, WARN) and before.get(c.key)
             and before[c.key].status == OK]
    lines = []
    if fixed:
        lines.append("fixed by the patch: " + ", ".join(fixed))
    if worse:
        lines.append("worse after the patch: " + ", ".join(worse))
    failing = [c.title for c in patched if c.status == FAIL]
    if exit_code == 2:
        lines.append("verdict: none, " + (reason or "the patched code did not run to the end"))
    elif healthy:
        lines.append("verdict: the patched run is healthy")
    else:
        lines.append("verdict: the patched run is not healthy: " + ", ".join(failing))
    return lines
