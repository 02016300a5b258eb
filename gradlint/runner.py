"""A run over many files: discover, read and hash, answer from the cache, lint and fix the rest.

Each file has the settings of its closest configuration file (`settings.Resolver`): its rules, rule
options, per-file ignores, fix policy and cache. Only a cache miss imports libcst and the rules. Files
are linted (and fixed) in forked worker processes on a deep stack (`workers`): a file that crashes the
parser costs that file, never the run. Workers are forked after the rules are imported, so they start
warm. A small run of small files is linted in this process (`workers.in_process_is_safe`).

One file never stops the run: what goes wrong with a file becomes a one-line error naming it (exit 2),
and the other files are checked and fixed as usual.
"""

from __future__ import annotations

import difflib
import gc
import os
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

from .cache import Cache, CacheRefused, digest, settings_key
from .diagnostics import IO_ERROR, SYNTAX_ERROR, Finding, file_error
from .discovery import discover
from .fsio import SourceError, WriteError, atomic_write, declared_encoding_error, read_regular, read_source
from .notebook import is_notebook
from .reporters import one_line, printable
from .selection import FixPolicy, matches
from .settings import Resolver, Settings
from .workers import (
    Crashed,
    cpu_count,
    fork_available,
    in_process_is_safe,
    run_here,
    run_in_process,
    run_isolated,
)

PARALLEL_FILES = 12  # more than one worker pays for itself from this many files...
PARALLEL_BYTES = 1_000_000  # ...holding this much source (open_clip's 450 kB runs faster in one)


@dataclass
class RunOptions:
    use_cache: bool = True
    cache_dir: Optional[str] = None  # --cache-dir or GRADLINT_CACHE_DIR: any folder gradlint owns
    fix: bool = False  # compute fixes for files with fixable findings
    write: bool = False  # write them (else produce diffs)
    jobs: Optional[int] = None
    edits: bool = True  # compute each fix's edits (the formats that show them need them)


@dataclass
class RunResult:
    findings: list[Finding] = field(default_factory=list)
    fixed: int = 0
    fixed_files: list[str] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # written to stderr; they make the exit code 2
    warnings: list[str] = field(default_factory=list)  # written to stderr; the exit code is unchanged
    files: int = 0
    fixes: dict[str, Counter] = field(default_factory=dict)  # file -> (code, name) -> fixes applied
    settings: list = field(default_factory=list)  # the Settings of the files checked, one each
    checked: int = 0  # files linted or fixed (the others came from the cache)
    how: str = "nothing to do"  # where they were checked: "in this process" or "in N worker processes"


@dataclass(frozen=True)
class Profile:
    """What a worker needs of one file's settings."""

    rules: tuple
    options: dict
    policy: FixPolicy
    unsafe: bool


# -- one file (in a worker process) -------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    display: str
    path: str
    lint: bool  # False: the cache has its findings, only fix it
    fix: bool
    write: bool
    may_write: bool  # False for a link met in a walk that points outside the paths given
    profile: int = 0  # index of its settings' Profile
    skip: tuple[str, ...] = ()  # per-file-ignores selectors that apply to this file


@dataclass
class Outcome:
    findings: Optional[list[Finding]] = None  # None: keep the cached ones
    warnings: list[str] = field(default_factory=list)  # the file's own (a malformed noqa): cached with it
    digest: Optional[bytes] = None  # of the bytes the findings are for (what was read, or written)
    fixed: int = 0
    fixes: Optional[Counter] = None  # rule code -> fixes applied
    diff: Optional[str] = None
    error: Optional[str] = None
    warning: Optional[str] = None  # about this run's handling of the file (a link not written)


_WORKER: dict = {}  # profiles and edits: set before workers fork


def _rules_for(job: Job, profile: Profile) -> list:
    return [r for r in profile.rules if not any(matches(r.code, s) for s in job.skip)]


def check_file(job: Job) -> Outcome:
    """Lint one file (and fix it, if asked and fixable). Never raises: a problem is the outcome's error."""
    try:
        return _check_file(job)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # one broken file must not stop the run (a native parser's panic is a
        return Outcome(error=f"{job.display}: internal error: {type(error).__name__}: {error}")  # BaseException)


def libcst_round_trips(text: str) -> bool:
    """Whether LibCST's tree of `text` prints back as `text`. Fixes are printed from that tree; where it
    drops text (LibCST 1.x loses indented comment lines before a CRLF comment at the end of a module),
    a fix would drop it too."""
    import libcst as cst

    return cst.parse_module(text).code == text


def _check_file(job: Job) -> Outcome:
    from .engine import fix_text, lint_file

    try:
        source = read_source(job.path)
    except SourceError as error:
        return Outcome(findings=[file_error(IO_ERROR, job.display, f"Failed to read {job.display}: {error}")])
    if is_notebook(job.path):  # JSON: no coding declaration
        profile = _WORKER["profiles"][job.profile]
        return _check_notebook(job, source, _rules_for(job, profile), profile)
    encoding_error = declared_encoding_error(source.raw)
    if encoding_error is not None:
        if source.bom:
            encoding_error += " (the file starts with a UTF-8 byte order mark but declares another encoding)"
        return Outcome(findings=[file_error(SYNTAX_ERROR, job.display, f"SyntaxError: {encoding_error}")],
                       digest=digest(source.raw))
    profile = _WORKER["profiles"][job.profile]
    rules = _rules_for(job, profile)

    def lint() -> tuple:
        linted = lint_file(source.text, job.display, rules, profile.options, edits=_WORKER["edits"])
        findings = [profile.policy.adjust(f) for f in linted.findings] if profile.policy else linted.findings
        return findings, linted.warnings

    def fix():
        if not libcst_round_trips(source.text):
            return ("not fixed: LibCST does not give this file back byte for byte (a LibCST bug), so a fix "
                    "could lose text")
        return fix_text(source.text, job.display, rules, profile.options, unsafe=profile.unsafe,
                        policy=profile.policy or None)

    return _lint_and_fix(job, source, profile, lint, fix, "file")


def _lint_and_fix(job: Job, source, profile: Profile, lint, fix, kind: str) -> Outcome:
    """`lint()` -> (findings, warnings) when the job lints, then `fix()` -> the fixed outcome (or why the
    file is not fixed) when it fixes and there is something to fix; LibCST's limits and a fix that breaks
    the code become the file's error, and the `kind` of file ("file", "notebook") is left as it was."""
    from .engine import FixBrokeCode, LibCSTCannotParse

    outcome = Outcome(digest=digest(source.raw))
    try:
        if job.lint:
            outcome.findings, outcome.warnings = lint()
            if not any(f.fixable(profile.unsafe) for f in outcome.findings):
                return outcome
        if not job.fix:
            return outcome
        if not job.may_write:
            outcome.warning = (f"{job.display}: a symbolic link met in the walk that points outside the paths "
                               "given; not fixed (name it on the command line to fix it)")
            return outcome
        fixed = fix()
        if isinstance(fixed, str):
            outcome.error = f"{job.display}: {fixed}"
            return outcome
    except LibCSTCannotParse as error:
        return Outcome(error=f"{job.display}: not checked: {error}")
    except RecursionError:
        return Outcome(error=f"{job.display}: not checked: nested too deeply for LibCST's tree "
                             f"(over {sys.getrecursionlimit()} levels), though Python accepts it")
    except FixBrokeCode as error:
        outcome.error = (f"{job.display}: a fix produced code that does not parse; {kind} left as it was "
                         f"(please report this): {error}")
        return outcome
    return _fixed(job, source, fixed, outcome)


def _fixed(job: Job, source, fixed, outcome: Outcome) -> Outcome:
    """The fixed text's diff (without --write: the findings stay, they are still in the file), or the
    file written atomically with its remaining findings."""
    if fixed.text == source.text:
        return outcome
    if not job.write:
        outcome.diff = "".join(difflib.unified_diff(
            source.text.splitlines(keepends=True), fixed.text.splitlines(keepends=True),
            fromfile=f"a/{printable(job.display)}", tofile=f"b/{printable(job.display)}"))
        outcome.fixed, outcome.fixes = fixed.fixed, _applied(fixed.initial, fixed.remaining)
        return outcome
    try:
        data = source.encode(fixed.text)
        atomic_write(source.path, data, source.raw)
    except (WriteError, UnicodeEncodeError) as error:
        outcome.error = f"{job.display}: {error}"
        return outcome
    outcome.findings, outcome.digest, outcome.fixed = fixed.remaining, digest(data), fixed.fixed
    outcome.fixes = _applied(fixed.initial, fixed.remaining)
    return outcome


def _check_notebook(job: Job, source, rules: list, profile: Profile) -> Outcome:
    """A Jupyter notebook: its code cells checked as one module (`documents`), findings in their cells; a
    fix rewrites only the changed cells' `source`. A notebook that cannot be read is one E902 finding
    and is never written."""
    from .documents import fix_document, lint_document

    policy = profile.policy or None

    def lint() -> tuple:
        return lint_document(source.text, job.display, rules, profile.options, edits=_WORKER["edits"],
                             policy=policy), []

    def fix():
        return fix_document(source.text, job.display, rules, profile.options, unsafe=profile.unsafe,
                            policy=policy, edits=_WORKER["edits"])

    return _lint_and_fix(job, source, profile, lint, fix, "notebook")


def _applied(before: list[Finding], after: list[Finding]) -> Counter:
    """Fixes applied per rule (code, name): the findings that fixes made go away (`--show-fixes`)."""
    return Counter((f.code, f.rule_name) for f in before) - Counter((f.code, f.rule_name) for f in after)


# -- many files -------------------------------------------------------------------------------------

def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _tune_gc() -> None:
    """LibCST and ast build millions of short-lived, acyclic objects: reference counting frees them, and
    the cyclic collector's frequent passes over everything imported only cost time (measured: -18 to -29 %
    CPU on timm and transformers). Frozen before forking, the imported objects are also never scanned,
    nor copied into the workers by the collector touching them."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _init_spawned_worker(profiles: list, edits: bool) -> None:
    from .registry import every_rule

    by_code = {rule.code: rule for rule in every_rule()}
    _WORKER.update(profiles=[Profile(tuple(by_code[c] for c in codes), options, policy, unsafe)
                             for codes, options, policy, unsafe in profiles], edits=edits)


def _map(jobs: list[Job], jobs_count: Optional[int], result: RunResult) -> list:
    _tune_gc()
    sizes = [_size(job.path) for job in jobs]
    result.checked, result.how = len(jobs), "in this process"
    if in_process_is_safe(sizes):
        results = run_in_process(check_file, jobs)
        if results is not None:
            return results
    many = len(jobs) >= PARALLEL_FILES and sum(sizes) >= PARALLEL_BYTES
    workers = max(1, min(jobs_count or cpu_count(), len(jobs))) if many else 1
    order = sorted(range(len(jobs)), key=lambda i: -sizes[i])  # biggest first: no long file left at the end
    if fork_available():
        result.how = f"in {workers} worker process{'es' if workers > 1 else ''}"
        return run_isolated(check_file, jobs, workers, order)
    if workers == 1:
        return run_here(check_file, jobs)
    result.how = f"in {workers} worker processes"
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    profiles = [([rule.code for rule in p.rules], p.options, p.policy, p.unsafe) for p in _WORKER["profiles"]]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(),
                             initializer=_init_spawned_worker, initargs=(profiles, _WORKER["edits"])) as pool:
        return list(pool.map(check_file, jobs, chunksize=2))


def display_path(path: Path, cwd: Path) -> str:
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(cwd).as_posix()
    except ValueError:
        return absolute.as_posix()


class _Caches:
    """One cache per settings (a file holds the results of one settings key) in the folder they name."""

    def __init__(self, options: RunOptions, result: RunResult) -> None:
        self._options = options
        self._result = result
        self._open: dict[tuple[Path, str], Optional[Cache]] = {}
        self._of: dict[int, Optional[Cache]] = {}

    def of(self, settings: Settings) -> Optional[Cache]:
        if not self._options.use_cache:
            return None
        if id(settings) not in self._of:
            folder = (Path(os.path.abspath(self._options.cache_dir)) if self._options.cache_dir
                      else settings.cache_path)
            key = settings_key({**settings.key_data(), "edits": self._options.edits})
            if (folder, key) not in self._open:
                try:
                    self._open[folder, key] = Cache(folder, key)
                except CacheRefused as error:
                    if str(error) not in self._result.errors:
                        self._result.errors.append(str(error))
                    self._open[folder, key] = None
            self._of[id(settings)] = self._open[folder, key]
        return self._of[id(settings)]

    def save(self) -> None:
        for cache in self._open.values():
            if cache is not None:
                cache.save()


def run(paths: Sequence[str], resolver: Resolver, options: RunOptions, cwd: Path) -> RunResult:
    """Check (and fix) the Python files under `paths`, each with its own settings. ConfigError for a
    configuration that cannot be used, PathNotFound for a path that does not exist."""
    found = discover(paths, resolver)
    result = RunResult(files=len(found.files), warnings=list(found.warnings), errors=list(found.errors))
    caches = _Caches(options, result)
    per_file: dict[str, tuple[list[Finding], list[str]]] = {}
    pending: list[tuple[Job, Settings]] = []
    for path in found.files:
        display = display_path(path, cwd)
        settings = resolver.settings_for(path)
        if settings not in result.settings:
            result.settings.append(settings)
        cache = caches.of(settings)
        cached = None
        if cache is not None:
            try:
                cached = cache.get(display, digest(read_regular(path)))
            except SourceError:
                cached = None
        fixable = cached is not None and any(f.fixable(settings.unsafe_fixes) for f in cached[0])
        if cached is not None:
            per_file[display] = cached
        if cached is None or (options.fix and fixable):
            job = Job(display, str(path), lint=cached is None, fix=options.fix, write=options.write,
                      may_write=path not in found.outside_links,
                      skip=settings.ignored_selectors(Path(os.path.abspath(path))))
            pending.append((job, settings))

    if pending:
        profiles: dict[int, int] = {}
        _WORKER.update(profiles=[], edits=options.edits)
        jobs = []
        for job, settings in pending:
            if id(settings) not in profiles:
                resolved = settings.resolved
                profiles[id(settings)] = len(_WORKER["profiles"])
                _WORKER["profiles"].append(Profile(resolved.rules, resolved.options, resolved.policy,
                                                   settings.unsafe_fixes))
            jobs.append(replace(job, profile=profiles[id(settings)]))
        for (job, settings), outcome in zip(pending, _map(jobs, options.jobs, result)):
            _take(job, outcome, per_file, result, caches.of(settings))

    for display in sorted(per_file):
        findings, warnings = per_file[display]
        result.findings.extend(findings)
        result.warnings.extend(warnings)
    result.findings.sort(key=Finding.sort_key)
    result.diffs.sort()
    result.fixed_files.sort()
    caches.save()
    return result


def _take(job: Job, outcome, per_file: dict, result: RunResult, cache: Optional[Cache]) -> None:
    if isinstance(outcome, Crashed):
        result.errors.append(f"{job.display}: not checked: gradlint's parser crashed on this file "
                             f"({outcome.describe()}; retried alone); please report this")
        per_file.pop(job.display, None)
        return
    if outcome.error is not None:
        result.errors.append(outcome.error)
    if outcome.warning is not None:
        result.warnings.append(outcome.warning)
    if outcome.findings is not None:
        warnings = outcome.warnings if job.lint else per_file.get(job.display, ([], []))[1]
        per_file[job.display] = (outcome.findings, warnings)
        if cache is not None and outcome.digest is not None:
            cache.put(job.display, outcome.digest, outcome.findings, warnings)
    if outcome.diff is not None:
        result.diffs.append(outcome.diff)
    if outcome.fixed or outcome.diff is not None:
        result.fixed += outcome.fixed
        result.fixed_files.append(job.display)
    if outcome.fixes:
        result.fixes[job.display] = outcome.fixes


def print_errors(errors: Sequence[str], warnings: Sequence[str] = ()) -> None:
    for warning in warnings:
        print(f"warning: {one_line(warning)}", file=sys.stderr)
    for error in errors:
        print(f"error: {one_line(error)}", file=sys.stderr)
