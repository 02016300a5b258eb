"""`gradlint check -` and `gradlint fix -`: one document read from stdin, as ruff reads it.

`--stdin-filename PATH` names the document: its settings and per-file ignores are those of PATH (the
file need not exist), a PATH ending in `.ipynb` makes it a Jupyter notebook, and findings carry PATH.
With `--stdin-filename`, stdin is read whatever paths are given (ruff's rule; they are ignored with a
warning). Without it the document is Python named `-`.

Checking prints the findings as for a file. Fixing (`fix -`, `check --fix -`) prints the fixed source on
stdout, byte for byte the input where nothing changed, and what remains (the report) on stderr; the exit
code is 1 when findings remain, 0 when none do (as `ruff check --fix -`). `--diff` prints a diff instead.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path

from .cli import EXIT_CLEAN, EXIT_ERROR, EXIT_FINDINGS
from .fsio import SourceError, decode

STDIN = "-"


def reads_stdin(args: argparse.Namespace) -> bool:
    return bool(args.stdin_filename) or args.paths == [STDIN]


def run_stdin(args: argparse.Namespace, resolver, cwd: Path, say, fmt: str, *, fix: bool, diff: bool) -> int:
    """Check (or fix) stdin with the settings of `--stdin-filename`. ConfigError for a broken configuration."""
    from .reporters import Report, render
    from .reporters.terminal import use_color
    from .runner import display_path

    ignored = [path for path in args.paths if path != STDIN]
    if args.stdin_filename and ignored:
        say.warn(f"ignoring {', '.join(ignored)} in favour of standard input (--stdin-filename)")
    raw = sys.stdin.buffer.read()
    name = args.stdin_filename
    if name:
        absolute = Path(os.path.abspath(name))
        settings = resolver.settings_for(absolute)
        display = display_path(absolute, cwd)
        skip = settings.ignored_selectors(absolute)
        if settings.force_exclude and settings.excludes_file_or_parent(absolute):
            if fix and not diff:
                sys.stdout.buffer.write(raw)  # an excluded file passes through unchanged
            return EXIT_CLEAN
    else:
        settings, display, skip = resolver.default(), STDIN, ()
    from .selection import matches

    resolved = settings.resolved
    rules = [rule for rule in resolved.rules if not any(matches(rule.code, s) for s in skip)]
    unsafe = settings.unsafe_fixes
    try:
        text, encoding, bom = decode(raw)
    except SourceError as error:
        return _unreadable(args, raw, display, str(error), fmt, cwd, unsafe, fix=fix, diff=diff)

    fixed_text, findings, fixed_count, fixes = _process(text, display, rules, resolved, unsafe, fix, say)
    if findings is None:
        return EXIT_ERROR
    color_out, color_err = use_color(args.color), use_color(args.color, sys.stderr)
    applied = {display: fixes} if args.show_fixes and fixes else None
    if not fix:
        say.out(render(fmt, Report(findings, cwd, unsafe, 0, "check", args.statistics, args.quiet, color=color_out,
                                   texts={display: text})))
        return EXIT_CLEAN if args.exit_zero or not findings else EXIT_FINDINGS
    if diff:
        if fixed_text != text:
            say.out("".join(difflib.unified_diff(text.splitlines(keepends=True), fixed_text.splitlines(keepends=True),
                                                 fromfile=f"a/{display}", tofile=f"b/{display}")), end="")
        if not args.quiet:
            say.err(render("concise", Report(findings, cwd, unsafe, fixed_count, "diff", color=color_err,
                                             fixes=applied, texts={display: text})))
        fixable = [f for f in findings if f.fixable(unsafe)]
        return EXIT_FINDINGS if (fixed_text != text or fixable) and not args.exit_zero else EXIT_CLEAN
    data = fixed_text.encode(encoding) if fixed_text != text else raw
    sys.stdout.buffer.write((b"\xef\xbb\xbf" if bom and fixed_text != text else b"") + data)
    sys.stdout.flush()
    report = render("concise" if args.fix_only else fmt,
                    Report(findings, cwd, unsafe, fixed_count, "fix-only" if args.fix_only else "write",
                           args.statistics, args.quiet, color=color_err, fixes=applied, texts={display: fixed_text}))
    say.err(report)
    if args.exit_zero:
        return EXIT_CLEAN
    if args.exit_non_zero_on_fix and fixed_text != text:
        return EXIT_FINDINGS
    return EXIT_FINDINGS if findings and not args.fix_only else EXIT_CLEAN


def _process(text: str, display: str, rules: list, resolved, unsafe: bool, fix: bool, say):
    """(the fixed text, the findings that remain, how many were fixed, fixes per rule); findings None
    after an error (said on stderr)."""
    from collections import Counter

    from .documents import fix_document, lint_document
    from .engine import FixBrokeCode, LibCSTCannotParse

    policy = resolved.policy or None
    try:
        if not fix:
            return text, lint_document(text, display, rules, resolved.options, policy=policy), 0, None
        outcome = fix_document(text, display, rules, resolved.options, unsafe=unsafe, policy=policy)
    except LibCSTCannotParse as error:
        say.error(f"{display}: not checked: {error}")
    except RecursionError:
        say.error(f"{display}: not checked: nested too deeply for LibCST's tree "
                  f"(over {sys.getrecursionlimit()} levels), though Python accepts it")
    except FixBrokeCode as error:
        say.error(f"{display}: a fix produced code that does not parse; nothing fixed (please report this): "
                  f"{error}")
    else:
        fixes = (Counter((f.code, f.rule_name) for f in outcome.initial)
                 - Counter((f.code, f.rule_name) for f in outcome.remaining))
        return outcome.text, outcome.remaining, outcome.fixed, fixes
    return text, None, 0, None


def _unreadable(args, raw: bytes, display: str, reason: str, fmt: str, cwd: Path, unsafe: bool, *, fix: bool,
                diff: bool) -> int:
    """Input that is not text: one E902 finding; a fix gives the input back unchanged."""
    from .diagnostics import IO_ERROR, file_error
    from .reporters import Report, render
    from .reporters.terminal import use_color

    finding = file_error(IO_ERROR, display, f"Failed to read {display}: {reason}")
    stream = sys.stderr if fix else sys.stdout
    if fix and not diff:
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
    print(render("concise" if fix else fmt, Report([finding], cwd, unsafe, color=use_color(args.color, stream))),
          file=stream)
    return EXIT_CLEAN if args.exit_zero else EXIT_FINDINGS
