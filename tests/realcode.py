"""Scanning a downloaded package's files with a per-file check, in forked workers where there are cores."""

from __future__ import annotations

import multiprocessing
import os
from typing import Callable, Sequence


def scan(check_file: Callable, jobs: Sequence) -> tuple[set, dict]:
    """`check_file(job) -> (relative path, [(row, code), ...], problem or None)` over `jobs`:
    returns the set of (path, row, code) found and the problems by path."""
    if "fork" in multiprocessing.get_all_start_methods() and (os.cpu_count() or 1) > 1:
        with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
            results = pool.map(check_file, jobs, chunksize=8)
    else:
        results = [check_file(job) for job in jobs]
    found = {(rel, row, code) for rel, findings, _ in results for row, code in findings}
    problems = {rel: problem for rel, _, problem in results if problem}
    return found, problems


def lint_and_fix(text: str, rel: str, rules: list, codes) -> tuple[list, object]:
    """([(row, code)] of `codes` found in `text`, problem or None): a file with findings must come out
    of `fix --unsafe-fixes` compiling, and a second fix must change nothing."""
    from gradlint.engine import fix_text, lint_text

    findings, problem = [], None
    try:
        findings = [(f.location.row, f.code) for f in lint_text(text, rel, rules) if f.code in codes]
        if findings:
            fixed = fix_text(text, rel, rules, unsafe=True)
            compile(fixed.text, rel, "exec")
            if fix_text(fixed.text, rel, rules, unsafe=True).text != fixed.text:
                problem = "the fix is not idempotent"
    except Exception as error:  # report every file, not only the first
        problem = f"{type(error).__name__}: {error}"
    return findings, problem
