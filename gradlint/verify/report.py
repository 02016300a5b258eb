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
    details = ([f"  {check.code}"] if check.code else []) + list(check.details)
    for detail in details:
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
    considered = patch.get("considered") or []
    imported = f"the {len(considered)} project file(s) the run imported" if considered else "the run's files"
    if not files:
        lines = [f"patch: no fix applies to {imported}"]
    else:
        codes = ", ".join(f"{code} x{n}" if n > 1 else code for code, n in patch["codes"].items())
        where = ", ".join(f["path"] for f in files)
        lines = [f"patch: {patch['fixed']} fix(es) ({codes or 'formatting'}) in {where}, of {imported}"]
    remaining = [r for f in files for r in f.get("remaining", [])]
    if remaining:
        lines.append(f"not fixed (unsafe or no fix): {', '.join(sorted({r.split()[0] for r in remaining}))}")
    lines += [f"patch error: {e}" for e in patch.get("errors", []) + errors]
    return lines


def _changed(check: Check) -> bool:
    """Did the patched run's own evidence change for this check? A clip that never cut changed nothing."""
    if check.key == "clipping":
        return bool(check.data.get("cut")) or check.data.get("cut") is None and check.data.get("clipped", 0) > 0
    return True


def verdict(original: list[Check], patched: list[Check], healthy: bool, exit_code: int, reason: str = "",
            notes: tuple = (), patched_ran: bool = True) -> dict:
    """The verdict as data and as lines. A fix is claimed only from the runs: a check that failed or warned in
    the original and is ok in the patched run, where the patched run differs from the original (`notes`
    say when it does not: identical runs, patched files never imported) and the check's own evidence moved
    (a clip that cut)."""
    before = {c.key: c for c in original}
    improved = [c for c in patched if c.status == OK and before.get(c.key) and before[c.key].status in (FAIL, WARN)]
    lines = []
    fixed, unproven = [], []
    if patched_ran and not notes:
        fixed = [c.title for c in improved if _changed(c)]
        unproven = [c for c in improved if not _changed(c)]
    worse = [c.title for c in patched if c.status in (FAIL, WARN) and before.get(c.key)
             and before[c.key].status == OK]
    failing = [c.title for c in patched if c.status == FAIL]
    warnings = [c.title for c in patched if c.status == WARN]
    lines += list(notes)
    if fixed:
        lines.append("fixed by the patch: " + ", ".join(fixed))
    for c in unproven:
        lines.append(f"{c.title}: added by the patch, but it never cut in this run (the gradient norm stayed "
                     "below max_norm): no effect to show")
    if worse:
        lines.append("worse after the patch: " + ", ".join(worse))
    run = "the patched run" if patched_ran else "the run"
    warned = (f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''} ({', '.join(warnings)})"
              if warnings else "")
    if exit_code == 2:
        status = "none"
        lines.append("verdict: none, " + (reason or "the patched code did not run to the end"))
    elif healthy:
        status = "healthy"
        lines.append(f"verdict: {run} passes with {warned}: no check failed" if warned
                     else f"verdict: {run} is healthy")
    else:
        status = "unhealthy"
        lines.append(f"verdict: {run} is not healthy: {', '.join(failing)} failed"
                     + (f"; and {warned}" if warned else ""))
    return {"status": status, "exit_code": exit_code, "fixed": fixed, "worse": worse, "failing": failing,
            "warnings": warnings, "notes": list(notes), "reason": reason if exit_code == 2 else "", "lines": lines}
