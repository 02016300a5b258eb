"""Proof on real code: the fix round-trip and the region-reduction check, over whole packages.

Fix round-trip, through the CLI a user runs, on a copy of the files:

1. `gradlint check --unsafe-fixes --output-format json` gives every finding and its fix edits (ruff's shape);
2. `gradlint fix --write --unsafe-fixes` rewrites the copies;
3. every file that compiled before still compiles; only files with a reported fix changed;
4. outside the fix sites not a byte differs: the rewritten file equals the original with the reported edits
   applied, or (when fixes interact across rounds) every changed character lies inside a reported edit;
5. a second `gradlint fix --write --unsafe-fixes` changes nothing.

Region reduction: `lint_text(text, path, rules)` (the engine parses only the matching functions) finds
exactly what `lint_text(..., reduce=False)` (a full parse) finds, file by file; the benchmark also checks
the reduction forced where the engine would have judged it not worth it (`force_reduce=True`).

Used by `tests/test_roundtrip.py` (a fixed subset, in CI) and `benchmarks/bench.py` (every file).
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

GRADLINT = [sys.executable, "-m", "gradlint"]


# -- the fix round-trip ------------------------------------------------------------------------------

@dataclass
class RoundTrip:
    files: int = 0
    findings: int = 0
    fixable_findings: int = 0
    files_with_fixes: int = 0
    changed_files: int = 0
    exact_files: int = 0  # rewritten file == original + reported edits
    contained_files: int = 0  # not equal, but every changed character lies in a reported edit
    by_rule: dict = field(default_factory=dict)  # code -> findings
    problems: list = field(default_factory=list)  # each a bug to report
    seconds: float = 0.0


def _gradlint(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([*GRADLINT, *args], cwd=cwd, capture_output=True, text=True, env=env)


def _line_starts(text: str) -> list[int]:
    starts = [0]
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n" or (c == "\r" and (i + 1 == n or text[i + 1] != "\n")):
            starts.append(i + 1)
        i += 1
    return starts


def _offset(starts: list[int], location: dict) -> int:
    return starts[location["row"] - 1] + location["column"] - 1


def _edit_spans(text: str, findings: list) -> list[tuple[int, int, str]]:
    starts = _line_starts(text) if findings else []
    spans = set()
    for finding in findings:
        for edit in finding["fix"]["edits"]:
            spans.add((_offset(starts, edit["location"]), _offset(starts, edit["end_location"]), edit["content"]))
    return sorted(spans)


def _apply(text: str, spans: list[tuple[int, int, str]]) -> Optional[str]:
    out, cursor = [], 0
    for start, end, content in spans:
        if start < cursor:
            return None  # overlapping edits: the fixes interact; judged by containment instead
        out.append(text[cursor:start])
        out.append(content)
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def _outside_sites(old: str, new: str, spans: list[tuple[int, int, str]]) -> Optional[int]:
    """The first offset in `old` where `new` differs outside every edit span, or None."""
    merged: list[list[int]] = []
    for start, end, _ in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])

    def covered(a: int, b: int) -> bool:
        return any(s <= a and b <= e for s, e in merged)

    old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    old_at = [0]
    for line in old_lines:
        old_at.append(old_at[-1] + len(line))
    new_at = [0]
    for line in new_lines:
        new_at.append(new_at[-1] + len(line))
    lines = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in lines.get_opcodes():
        if tag == "equal":
            continue
        a0, b0 = old_at[i1], new_at[j1]
        chars = difflib.SequenceMatcher(None, old[a0:old_at[i2]], new[b0:new_at[j2]], autojunk=False)
        for ctag, c1, c2, _, _ in chars.get_opcodes():
            if ctag != "equal" and not covered(a0 + c1, a0 + c2):
                return a0 + c1
    return None


def _compiles(data: bytes, path: str) -> Optional[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(data, path, "exec", dont_inherit=True)
        return None
    except (SyntaxError, ValueError) as error:
        return f"{type(error).__name__}: {error}"


def _row_col(text: str, offset: int) -> str:
    row = text.count("\n", 0, offset) + 1
    return f"{row}:{offset - (text.rfind(chr(10), 0, offset) + 1) + 1}"


def fix_roundtrip(sources: Sequence[Path], root: Path, work: Path, select: str = "ALL") -> RoundTrip:
    """Copy `sources` (files under `root`) into `work` and run the round-trip on the copy."""
    started = time.perf_counter()
    tree = work / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    before: dict[str, bytes] = {}
    for source in sources:
        rel = source.relative_to(root).as_posix()
        target = tree / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        before[rel] = target.read_bytes()
    result = RoundTrip(files=len(before))

    def snapshot() -> dict[str, bytes]:
        return {rel: (tree / rel).read_bytes() for rel in before}

    common = ["--select", select, "--unsafe-fixes", "--no-cache"]
    check = _gradlint(["check", str(tree), *common, "--exit-zero", "--output-format", "json"], work)
    if check.returncode != 0:
        result.problems.append(f"`gradlint check` exited {check.returncode}: {check.stderr[-1500:]}")
        return result
    for line in check.stderr.splitlines():
        if line.startswith("error:"):
            result.problems.append(f"check: {line}")
    per_file: dict[str, list] = {}
    resolved = tree.resolve()
    for finding in json.loads(check.stdout or "[]"):
        rel = Path(finding["filename"]).resolve().relative_to(resolved).as_posix()
        per_file.setdefault(rel, []).append(finding)
        result.findings += 1
        result.by_rule[finding["code"]] = result.by_rule.get(finding["code"], 0) + 1
    fixable = {rel: [f for f in fs if f["fix"] and f["fix"]["edits"]] for rel, fs in per_file.items()}
    fixable = {rel: fs for rel, fs in fixable.items() if fs}
    result.fixable_findings = sum(len(fs) for fs in fixable.values())
    result.files_with_fixes = len(fixable)

    fix = _gradlint(["fix", str(tree), *common, "--write"], work)
    if fix.returncode not in (0, 1):
        result.problems.append(f"`gradlint fix --write` exited {fix.returncode}: {fix.stderr[-1500:]}")
    else:
        for line in fix.stderr.splitlines():
            if line.startswith("error:"):
                result.problems.append(f"fix: {line}")
    after = snapshot()

    for rel, old_bytes in before.items():
        new_bytes = after[rel]
        if new_bytes == old_bytes:
            continue
        result.changed_files += 1
        if _compiles(old_bytes, rel) is None:
            broken = _compiles(new_bytes, rel)
            if broken is not None:
                result.problems.append(f"{rel}: does not compile after the fix: {broken}")
        if rel not in fixable:
            result.problems.append(f"{rel}: changed by `fix --write` but no finding reported a fix for it")
            continue
        old, new = old_bytes.decode("utf-8"), new_bytes.decode("utf-8")
        spans = _edit_spans(old, fixable[rel])
        if _apply(old, spans) == new:
            result.exact_files += 1
            continue
        outside = _outside_sites(old, new, spans)
        if outside is None:
            result.contained_files += 1
        else:
            result.problems.append(f"{rel}:{_row_col(old, outside)}: the fix changed code outside every "
                                   f"reported edit: {old[outside:outside + 60]!r}")

    # A file the first run left alone gets the same bytes again, so the second run needs only the others.
    changed = [rel for rel in before if after[rel] != before[rel]]
    if changed:
        again = _gradlint(["fix", *(str(tree / rel) for rel in changed), *common, "--write"], work)
        if again.returncode not in (0, 1):
            result.problems.append(f"second `gradlint fix --write` exited {again.returncode}: "
                                   f"{again.stderr[-1500:]}")
        for rel in changed:
            if (tree / rel).read_bytes() != after[rel]:
                result.problems.append(f"{rel}: a second `fix --write` changed it again (not idempotent)")
    result.seconds = time.perf_counter() - started
    return result


# -- region reduction vs a full parse -----------------------------------------------------------------

def _compare_one(job: tuple[str, str, bool]) -> list[str]:
    from gradlint.engine import lint_text
    from gradlint.registry import all_rules

    path, display, force = job
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    rules = all_rules()
    try:
        full = lint_text(text, display, rules, reduce=False)
        reduced = lint_text(text, display, rules)
        forced = lint_text(text, display, rules, force_reduce=True) if force else full
    except Exception as error:  # a crash is a bug to report, not a reason to stop the check
        return [f"{display}: lint_text raised {type(error).__name__}: {error}"]
    problems = []
    for label, got in (("reduced", reduced), ("forced reduction", forced)):
        if got != full:
            missing = [f"{f.code}@{f.location.row}:{f.location.column}" for f in full if f not in got]
            extra = [f"{f.code}@{f.location.row}:{f.location.column}" for f in got if f not in full]
            problems.append(f"{display}: {label} lint differs from the full parse: "
                            f"missing {missing}, extra {extra}")
    return problems


def reduction_mismatches(files: Sequence[Path], root: Path, jobs: Optional[int] = None,
                         force: bool = False) -> list[str]:
    """Every file where the region-reduced lint (and with `force`, the reduction forced where the engine
    would not reduce) disagrees with the full-parse lint."""
    jobs_list = [(str(f), f.relative_to(root).as_posix(), force) for f in files]
    workers = jobs or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    # Biggest first, so no worker is left with a long file at the end.
    jobs_list.sort(key=lambda job: -os.path.getsize(job[0]))
    if workers <= 1 or len(jobs_list) < 8:
        return [p for job in jobs_list for p in _compare_one(job)]
    import multiprocessing

    from gradlint.registry import all_rules

    all_rules()  # import once, before the fork
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return [p for problems in pool.imap_unordered(_compare_one, jobs_list, chunksize=4) for p in problems]
