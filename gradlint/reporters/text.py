"""ruff's terminal shape: `path:row:col: CODE message [*]`, then a summary that says how to fix."""

from __future__ import annotations

import os
import sys
from collections import Counter

from . import Report, printable


def _colors() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def render(report: Report) -> str:
    color = _colors()
    bold = (lambda s: f"\x1b[1m{s}\x1b[0m") if color else (lambda s: s)
    red = (lambda s: f"\x1b[1;31m{s}\x1b[0m") if color else (lambda s: s)
    cyan = (lambda s: f"\x1b[36m{s}\x1b[0m") if color else (lambda s: s)
    findings = report.findings
    lines = []
    if report.statistics:
        counts = Counter(f.code for f in findings)
        fixable = {f.code for f in findings if f.fixable(report.unsafe_fixes)}
        names = {f.code: f.rule_name for f in findings}
        for code, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            mark = "[*]" if code in fixable else "[ ]"
            lines.append(f"{count:>5}\t{red(code)}\t{mark} {names[code]}")
    elif report.command != "diff":  # with a diff, the diff is the listing
        for f in findings:
            mark = f" {cyan('[*]')}" if f.fixable(report.unsafe_fixes) else ""
            code = f"{red(f.code)} " if f.code else ""
            lines.append(f"{bold(printable(f.filename))}:{f.location.row}:{f.location.column}: {code}"
                         f"{printable(f.message)}{mark}")
    if report.quiet:
        return "\n".join(lines)
    lines.extend(_summary(report))
    return "\n".join(lines)


def _summary(report: Report) -> list[str]:
    findings = report.findings
    remaining = len(findings)
    safe = sum(1 for f in findings if f.fixable(False))
    hidden = sum(1 for f in findings if f.fixable(True) and not f.fixable(False))
    if report.command == "diff":
        fixable = safe + (hidden if report.unsafe_fixes else 0)
        return [f"Would fix {_plural(fixable, 'error')}." if fixable else "No errors would be fixed."]
    if report.command == "write" and report.fixed:
        out = [f"Found {_plural(remaining + report.fixed, 'error')} ({report.fixed} fixed, {remaining} remaining)."]
    elif remaining == 0:
        return ["All checks passed!"]
    else:
        out = [f"Found {_plural(remaining, 'error')}."]
    hidden_note = f"{_plural(hidden, 'hidden fix').replace('fixs', 'fixes')} can be enabled with the `--unsafe-fixes` option"
    if report.command == "check":
        command = "gradlint fix --write --unsafe-fixes" if report.unsafe_fixes else "gradlint fix --write"
        fixable = safe + (hidden if report.unsafe_fixes else 0)
        if fixable:
            note = f" ({hidden_note})" if hidden and not report.unsafe_fixes else ""
            out.append(f"[*] {fixable} fixable with `{command}`{note}.")
        elif hidden:
            out.append(f"No fixes available ({hidden_note}).")
    elif hidden and not report.unsafe_fixes:
        out.append(f"No fixes applied to {_plural(hidden, 'error')} ({hidden_note}).")
    return out
