"""The lines under the findings in the terminal formats: how many, and how to fix them.

Inside a pre-commit hook the user cannot type a flag: the hint names the `gradlint-fix` hook and the
hook's `args:` instead of a command line.
"""

from __future__ import annotations

from . import Report
from .terminal import Style

FIX_HOOK = "gradlint-fix"


def plural(n: int, word: str) -> str:
    suffix = "" if n == 1 else ("es" if word.endswith("x") else "s")
    return f"{n} {word}{suffix}"


def _hidden_note(hidden: int, report: Report, where: str) -> str:
    fixes = plural(hidden, "hidden fix")
    if report.pre_commit:
        return f"{fixes} can be enabled with `args: [--unsafe-fixes]` on {where}"
    return f"{fixes} can be enabled with the `--unsafe-fixes` option"


def summary_lines(report: Report, style: Style) -> list[str]:
    findings = report.findings
    remaining = len(findings)
    safe = sum(1 for f in findings if f.fixable(False))
    hidden = sum(1 for f in findings if f.fixable(True) and not f.fixable(False))
    fixable = safe + (hidden if report.unsafe_fixes else 0)
    if report.command == "diff":
        return [f"Would fix {plural(fixable, 'error')}." if fixable else "No errors would be fixed."]
    if report.command == "write" and report.fixed:
        out = [f"Found {plural(remaining + report.fixed, 'error')} ({report.fixed} fixed, {remaining} remaining)."]
    elif remaining == 0:
        return [style.green("All checks passed!")]
    else:
        out = [f"Found {plural(remaining, 'error')}."]
    mark = f"[{style.cyan('*')}]"
    if report.command == "check":
        if report.pre_commit:
            how = f"the `{FIX_HOOK}` hook" + (" and `args: [--unsafe-fixes]`" if report.unsafe_fixes else "")
            where = f"the `{FIX_HOOK}` hook"
        else:
            how = "`gradlint fix --write --unsafe-fixes`" if report.unsafe_fixes else "`gradlint fix --write`"
            where = ""
        if fixable:
            note = f" ({_hidden_note(hidden, report, where)})" if hidden and not report.unsafe_fixes else ""
            out.append(f"{mark} {fixable} fixable with {how}{note}.")
        elif hidden:
            out.append(f"No fixes available ({_hidden_note(hidden, report, where)}).")
    elif hidden and not report.unsafe_fixes:
        out.append(f"No fixes applied to {plural(hidden, 'error')} ({_hidden_note(hidden, report, 'this hook')}).")
    return out
