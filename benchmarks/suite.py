"""The precision suite: judged verdicts on what gradlint reports in pinned real code, and a run against them.

Verdicts live in `tests/verdicts/<CODE>.tsv`, one file per rule (see `tests/verdicts/README.md`): `#`
comments, blank lines, and one line per judged finding, TAB-separated:

    <corpus>    <path>:<line>    TRUE|FALSE|DEBATABLE    <one-line reason>

`<corpus>` is `pypi:<key>` or `gh:<owner>/<name>` as pinned in `tests/verdicts/corpora.toml`; `<path>` is
relative to the corpus root, `/`-separated.

`tests/verdicts/to-fix/<CODE>.tsv` lists, as `<corpus>\t<path>:<line>`, the FALSE findings its rule still
reports and is yet to stop reporting: those are tolerated (and counted as FALSE); any other FALSE finding
fails, and so does a line there whose finding is gone (delete it: the list only shrinks). A run lints every file of a corpus that `gradlint check` would
(same discovery) with every rule, and `Comparison` sets what it found against the verdicts. Used by
`tests/test_precision_suite.py` and `benchmarks/precision.py`.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from benchmarks.corpus import ALL_CORPORA, corpus_root

VERDICTS = Path(__file__).resolve().parent.parent / "tests" / "verdicts"
TO_FIX = VERDICTS / "to-fix"
KINDS = ("TRUE", "FALSE", "DEBATABLE")
JUDGE = "TRUE|FALSE|DEBATABLE"  # what an engineer replaces in a line the test proposes


class VerdictFileError(ValueError):
    """A verdict line that cannot be read; the message starts with `file:line`."""


@dataclass(frozen=True)
class Verdict:
    corpus: str
    path: str
    row: int
    code: str
    verdict: str
    reason: str
    where: str  # "tests/verdicts/GL001.tsv:12"

    @property
    def key(self) -> tuple[str, str, int, str]:
        return self.corpus, self.path, self.row, self.code

    def line(self) -> str:
        return verdict_line(self.corpus, self.path, self.row, self.verdict, self.reason)


def verdict_line(corpus: str, path: str, row: int, verdict: str, reason: str) -> str:
    return f"{corpus}\t{path}:{row}\t{verdict}\t{reason}"


def verdict_file(code: str, folder: Path = VERDICTS) -> str:
    return _shown(folder / f"{code}.tsv")


def _shown(path: Path) -> str:
    try:
        return path.relative_to(VERDICTS.parent.parent).as_posix()
    except ValueError:
        return str(path)


def load_verdicts(folder: Path = VERDICTS) -> dict[tuple, Verdict]:
    """(corpus, path, row, code) -> Verdict, from every `<CODE>.tsv` of `folder`."""
    verdicts: dict[tuple, Verdict] = {}
    for file in sorted(folder.glob("*.tsv")):
        code = file.stem
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            where = f"{_shown(file)}:{number}"
            verdict = _parse(line, code, where)
            if verdict.key in verdicts:
                raise VerdictFileError(f"{where}: judged twice (also {verdicts[verdict.key].where})")
            verdicts[verdict.key] = verdict
    return verdicts


def load_to_fix(folder: Path = TO_FIX) -> dict[tuple, str]:
    """(corpus, path, row, code) -> "file:line" of every FALSE finding a rule is allowed to report for now."""
    to_fix: dict[tuple, str] = {}
    for file in sorted(folder.glob("*.tsv")):
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            where = f"{_shown(file)}:{number}"
            fields = [field.strip() for field in line.split("\t")]
            path, _, row = fields[-1].rpartition(":")
            if len(fields) != 2 or fields[0] not in ALL_CORPORA or not path or not row.isdigit():
                raise VerdictFileError(f"{where}: want <corpus> TAB <path>:<line>, got {line!r}")
            key = (fields[0], path, int(row), file.stem)
            if key in to_fix:
                raise VerdictFileError(f"{where}: listed twice (also {to_fix[key]})")
            to_fix[key] = where
    return to_fix


def _parse(line: str, code: str, where: str) -> Verdict:
    fields = line.split("\t")
    if len(fields) != 4:
        raise VerdictFileError(f"{where}: want 4 TAB-separated fields (corpus, path:line, verdict, reason), "
                               f"got {len(fields)}: {line!r}")
    corpus, location, verdict, reason = (field.strip() for field in fields)
    path, _, row = location.rpartition(":")
    if corpus not in ALL_CORPORA:
        raise VerdictFileError(f"{where}: unknown corpus {corpus!r} (pinned: {', '.join(ALL_CORPORA)})")
    if not path or not row.isdigit():
        raise VerdictFileError(f"{where}: want <path>:<line>, got {location!r}")
    if verdict not in KINDS:
        raise VerdictFileError(f"{where}: verdict {verdict!r} is not one of {', '.join(KINDS)}")
    if not reason:
        raise VerdictFileError(f"{where}: a verdict needs its reason")
    return Verdict(corpus, path, int(row), code, verdict, reason, where)


# -- linting a corpus ---------------------------------------------------------------------------------

# What a per-file check returns: ([(row, code, message)], [problem, ...]).
FileCheck = Callable[[str, str, list], tuple[list, list]]
_RULES: list = []


def lint_file(text: str, rel: str, rules: list) -> tuple[list, list]:
    """The file's findings as `gradlint check` reports them (file errors such as E999 left out)."""
    from gradlint.engine import lint_text

    return [(f.location.row, f.code, f.message)
            for f in lint_text(text, rel, rules, edits=False) if not f.is_file_error], []


def _run(job: tuple[FileCheck, str, str]):
    from gradlint.fsio import read_source

    check, root, rel = job
    try:
        findings, problems = check(read_source(os.path.join(root, rel)).text, rel, _RULES)
    except Exception as error:  # report every file, not only the first
        findings, problems = [], [f"{type(error).__name__}: {error}"]
    return rel, findings, problems


@dataclass
class Scan:
    corpus: str
    files: int
    found: dict  # (path, row, code) -> message
    problems: dict  # path -> [problem]


def corpus_files(root: Path) -> list[str]:
    """The files `gradlint check <root>` checks, relative to `root`."""
    from gradlint.discovery import discover
    from gradlint.settings import Resolver

    return sorted(path.relative_to(root).as_posix() for path in discover([str(root)], Resolver(root, isolated=True)).files)


def scan(corpus: str, check: FileCheck = lint_file) -> Scan:
    """Run `check` (a module-level function) with every rule over every file of `corpus`, in forked workers
    where there are several cores. Raises CorpusUnavailable."""
    from gradlint.registry import all_rules

    root = corpus_root(corpus)
    _RULES[:] = all_rules()
    jobs = [(check, str(root), rel) for rel in corpus_files(root)]
    if "fork" in multiprocessing.get_all_start_methods() and (os.cpu_count() or 1) > 1:
        with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
            results = pool.map(_run, jobs, chunksize=4)
    else:
        results = [_run(job) for job in jobs]
    found = {(rel, row, code): message for rel, findings, _ in results for row, code, message in findings}
    problems = {rel: problems for rel, _, problems in results if problems}
    return Scan(corpus, len(jobs), found, problems)


# -- a scan against the verdicts -------------------------------------------------------------------------

@dataclass
class Comparison:
    scan: Scan
    verdicts: dict  # (path, row, code) -> Verdict, this corpus's only
    to_fix: dict  # (path, row, code) -> where it is listed, this corpus's only

    @classmethod
    def of(cls, scan: Scan, verdicts: dict[tuple, Verdict], to_fix: Optional[dict] = None) -> Comparison:
        return cls(scan, {key[1:]: v for key, v in verdicts.items() if key[0] == scan.corpus},
                   {key[1:]: where for key, where in (to_fix or {}).items() if key[0] == scan.corpus})

    def _judged(self, kind: str, reported: bool) -> list[Verdict]:
        return [v for key, v in sorted(self.verdicts.items())
                if v.verdict == kind and (key in self.scan.found) == reported]

    @property
    def false_reported(self) -> list[Verdict]:
        """FALSE findings reported and not on the to-fix list: a rule regressed."""
        return [v for v in self._judged("FALSE", True) if v.key[1:] not in self.to_fix]

    @property
    def false_to_fix(self) -> list[Verdict]:
        """FALSE findings reported and on the to-fix list: tolerated for now."""
        return [v for v in self._judged("FALSE", True) if v.key[1:] in self.to_fix]

    @property
    def stale_to_fix(self) -> list[tuple[str, str]]:
        """(where, key) of to-fix lines that are not a reported FALSE finding (any more)."""
        reported_false = {v.key[1:] for v in self._judged("FALSE", True)}
        return [(where, key) for key, where in sorted(self.to_fix.items()) if key not in reported_false]

    @property
    def true_missing(self) -> list[Verdict]:
        return self._judged("TRUE", False)

    @property
    def debatable_gone(self) -> list[Verdict]:
        return self._judged("DEBATABLE", False)

    @property
    def unjudged(self) -> list[tuple[str, int, str, str]]:
        """(path, row, code, message) of each finding without a verdict."""
        return [(*key, message) for key, message in sorted(self.scan.found.items()) if key not in self.verdicts]

    @property
    def failed(self) -> bool:
        return bool(self.false_reported or self.stale_to_fix or self.true_missing or self.unjudged)

    def explain(self) -> str:
        """What changed against the verdicts, and the verdict-file line to add, change or remove for each."""
        corpus, parts = self.scan.corpus, []
        if self.false_reported:
            parts.append(f"{corpus}: reported, but judged FALSE: make the rule stop reporting it (if the "
                         "verdict itself is wrong, change it on its line and say why):")
            parts += [f"  {v.where}: {v.line()}" for v in self.false_reported]
        if self.stale_to_fix:
            parts.append(f"{corpus}: no longer a reported FALSE finding, delete the line from the to-fix list:")
            parts += [f"  {where}: {corpus}\t{path}:{row}" for where, (path, row, _) in self.stale_to_fix]
        if self.true_missing:
            parts.append(f"{corpus}: judged TRUE, no longer reported: a lost true finding. If the rule now "
                         "reports it on another line, move the verdict there; if it was never a defect, "
                         "judge it again; else the rule must find it again. The line:")
            parts += [f"  {v.where}: {v.line()}" for v in self.true_missing]
        if self.unjudged:
            parts.append(f"{corpus}: findings with no verdict: open each in its file, judge it as the "
                         "repository's maintainer would (TRUE, FALSE or DEBATABLE, with the reason) and add "
                         "its line (the `#` line above it is the finding's message; keeping it is optional):")
            for path, row, code, message in self.unjudged:
                parts.append(f"  add to {verdict_file(code)}:\n    # {code} {message}\n"
                             f"    {self.unjudged_line(path, row)}")
        if self.debatable_gone:
            parts.append(f"{corpus}: judged DEBATABLE, no longer reported (fine, nothing to do; the lines stay "
                         "and judge the finding if it comes back):")
            parts += [f"  {v.where}: {v.line()}" for v in self.debatable_gone]
        if self.false_to_fix:
            parts.append(f"{corpus}: {len(self.false_to_fix)} FALSE findings still reported, tolerated while "
                         f"they are on the to-fix list ({_shown(TO_FIX)}/<CODE>.tsv).")
        return "\n".join(parts)

    def unjudged_line(self, path: str, row: int) -> str:
        return verdict_line(self.scan.corpus, path, row, JUDGE, "<why, as the repository's maintainer sees it>")

    def counts(self, code: str) -> dict[str, int]:
        """findings, TRUE, FALSE, DEBATABLE, unjudged (all among what was found) and missed (TRUE not found)."""
        found = [key for key in self.scan.found if key[2] == code]
        kinds = [self.verdicts[key].verdict if key in self.verdicts else "unjudged" for key in found]
        counts = {"findings": len(found), **{kind: kinds.count(kind) for kind in (*KINDS, "unjudged")}}
        counts["missed"] = sum(1 for v in self.true_missing if v.code == code)
        return counts


def precision(counts: dict[str, int]) -> Optional[float]:
    """Strict precision: TRUE / all findings (DEBATABLE and unjudged count against); None without findings."""
    return counts["TRUE"] / counts["findings"] if counts["findings"] else None
