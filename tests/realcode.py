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
