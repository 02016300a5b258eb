"""A run over many files: discover, read and hash, answer from the cache, lint and fix the rest.

Only a cache miss imports libcst and the rules. Files are linted (and fixed) in forked worker processes
on a deep stack (`workers`): a file that crashes the parser costs that file, never the run. Workers are
forked after the rules are imported, so they start warm; a small run uses one.

One file never stops the run: what goes wrong with a file becomes a one-line error naming it (exit 2),
and the other files are checked and fixed as usual.
"""

from __future__ import annotations

import difflib
import gc
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .cache import Cache, CacheRefused, digest, settings_key
from .config import ConfigError, Settings, check_selectors, select_rules, validate_rule_options
from .diagnostics import IO_ERROR, SYNTAX_ERROR, Finding, file_error
from .discovery import Excluder, discover, pattern_spec
from .fsio import SourceError, WriteError, atomic_write, declared_encoding_error, read_regular, read_source
from .reporters import one_line, printable
from .workers import Crashed, cpu_count, fork_available, run_here, run_isolated

PARALLEL_FILES = 12  # more than one worker pays for itself from this many files...
PARALLEL_BYTES = 1_000_000  # ...holding this much source (open_clip's 450 kB runs faster in one)


@dataclass
class RunOptions:
    select: Optional[list[str]] = None
    extend_select: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    use_cache: bool = True
    cache_dir: Optional[str] = None  # --cache-dir or GRADLINT_CACHE_DIR: any folder gradlint owns
    fix: bool = False  # compute fixes for files with fixable findings
    write: bool = False  # write them (else produce diffs)
    unsafe_fixes: bool = False
    jobs: Optional[int] = None
    force_exclude: bool = False  # exclude patterns apply to files named explicitly too
    edits: bool = True  # compute each fix's edits (JSON needs them; the text output does not)


@dataclass
class RunResult:
    findings: list[Finding] = field(default_factory=list)
    fixed: int = 0
    fixed_files: list[str] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # written to stderr; they make the exit code 2
    warnings: list[str] = field(default_factory=list)  # written to stderr; the exit code is unchanged
    files: int = 0


class Selection:
    """The selected rules and their options; resolved (importing libcst) only on a cache miss."""

    def __init__(self, settings: Settings, options: RunOptions) -> None:
        self.edits = options.edits
        self.select = options.select if options.select is not None else settings.select
        self.extend_select = [*settings.extend_select, *options.extend_select]
        self.ignore = [*settings.ignore, *options.ignore]
        self.settings = settings
        self._rules = None
        self._options = None

    def key(self) -> str:
        return settings_key({"select": self.select, "extend": self.extend_select, "ignore": self.ignore,
                             "options": self.settings.rule_options, "edits": self.edits,
                             "per-file-ignores": self.settings.per_file_ignores})

    def resolve(self):
        if self._rules is None:
            from .registry import all_rules

            rules = all_rules()
            self._options = validate_rule_options(self.settings, rules)
            self._rules = select_rules(rules, self.select, self.extend_select, self.ignore)
            for pattern, codes in self.settings.per_file_ignores.items():
                check_selectors(rules, codes, f"{self.settings.config_file}: per-file-ignores `{pattern}`: ")
        return self._rules, self._options


# -- one file (in a worker process) -------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    display: str
    path: str
    lint: bool  # False: the cache has its findings, only fix it
    fix: bool
    write: bool
    may_write: bool  # False for a link met in a walk that points outside the paths given
    skip: tuple[str, ...] = ()  # per-file-ignores selectors that apply to this file


@dataclass
class Outcome:
    findings: Optional[list[Finding]] = None  # None: keep the cached ones
    digest: Optional[bytes] = None  # of the bytes the findings are for (what was read, or written)
    fixed: int = 0
    diff: Optional[str] = None
    error: Optional[str] = None
    warning: Optional[str] = None


_WORKER: dict = {}  # rules, options, edits, unsafe: set before workers fork


def _rules_for(job: Job) -> list:
    from .config import matches_selector

    return [r for r in _WORKER["rules"] if not any(matches_selector(r.code, s) for s in job.skip)]


def check_file(job: Job) -> Outcome:
    """Lint one file (and fix it, if asked and fixable). Never raises: a problem is the outcome's error."""
    try:
        return _check_file(job)
    except Exception as error:  # one broken file must not stop the run; its error is shown
        return Outcome(error=f"{job.display}: internal error: {type(error).__name__}: {error}")


def libcst_round_trips(text: str) -> bool:
    """Whether LibCST's tree of `text` prints back as `text`. Fixes are printed from that tree; where it
    drops text (LibCST 1.x loses indented comment lines before a CRLF comment at the end of a module),
    a fix would drop it too."""
    import libcst as cst

    return cst.parse_module(text).code == text


def _check_file(job: Job) -> Outcome:
    from .engine import FixBrokeCode, LibCSTCannotParse, fix_text, lint_text

    try:
        source = read_source(job.path)
    except SourceError as error:
        return Outcome(findings=[file_error(IO_ERROR, job.display, f"Failed to read {job.display}: {error}")])
    encoding_error = declared_encoding_error(source.raw)
    if encoding_error is not None:
        if source.bom:
            encoding_error += " (the file starts with a UTF-8 byte order mark but declares another encoding)"
        return Outcome(findings=[file_error(SYNTAX_ERROR, job.display, f"SyntaxError: {encoding_error}")],
                       digest=digest(source.raw))
    rules = _rules_for(job)
    outcome = Outcome(digest=digest(source.raw))
    try:
        if job.lint:
            outcome.findings = lint_text(source.text, job.display, rules, _WORKER["options"], edits=_WORKER["edits"])
            if not any(f.fixable(_WORKER["unsafe"]) for f in outcome.findings):
                return outcome
        if not job.fix:
            return outcome
        if not job.may_write:
            outcome.warning = (f"{job.display}: a symbolic link met in the walk that points outside the paths "
                               "given; not fixed (name it on the command line to fix it)")
            return outcome
        if not libcst_round_trips(source.text):
            outcome.error = (f"{job.display}: not fixed: LibCST does not give this file back byte for byte "
                             "(a LibCST bug), so a fix could lose text")
            return outcome
        fixed = fix_text(source.text, job.display, rules, _WORKER["options"], unsafe=_WORKER["unsafe"])
    except LibCSTCannotParse as error:
        return Outcome(error=f"{job.display}: not checked: {error}")
    except RecursionError:
        return Outcome(error=f"{job.display}: not checked: nested too deeply for LibCST's tree "
                             f"(over {sys.getrecursionlimit()} levels), though Python accepts it")
    except FixBrokeCode as error:
        outcome.error = (f"{job.display}: a fix produced code that does not parse; file left as it was "
                         f"(please report this): {error}")
        return outcome
    if fixed.text == source.text:
        return outcome
    if not job.write:
        # Without --write the findings stay (they are still in the file); the diff shows the fix.
        outcome.diff = "".join(difflib.unified_diff(
            source.text.splitlines(keepends=True), fixed.text.splitlines(keepends=True),
            fromfile=f"a/{printable(job.display)}", tofile=f"b/{printable(job.display)}"))
        outcome.fixed = fixed.fixed
        return outcome
    try:
        data = source.encode(fixed.text)
        atomic_write(source.path, data, source.raw)
    except (WriteError, UnicodeEncodeError) as error:
        outcome.error = f"{job.display}: {error}"
        return outcome
    outcome.findings, outcome.digest, outcome.fixed = fixed.remaining, digest(data), fixed.fixed
    return outcome


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


def _init_spawned_worker(codes: list[str], options: dict, edits: bool, unsafe: bool) -> None:
    from .registry import all_rules

    _WORKER.update(rules=[r for r in all_rules() if r.code in codes], options=options, edits=edits, unsafe=unsafe)


def _map(jobs: list[Job], jobs_count: Optional[int]) -> list:
    _tune_gc()
    sizes = [_size(job.path) for job in jobs]
    many = len(jobs) >= PARALLEL_FILES and sum(sizes) >= PARALLEL_BYTES
    workers = max(1, min(jobs_count or cpu_count(), len(jobs))) if many else 1
    order = sorted(range(len(jobs)), key=lambda i: -sizes[i])  # biggest first: no long file left at the end
    if fork_available():
        return run_isolated(check_file, jobs, workers, order)
    if workers == 1:
        return run_here(check_file, jobs)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    codes = [rule.code for rule in _WORKER["rules"]]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(),
                             initializer=_init_spawned_worker,
                             initargs=(codes, _WORKER["options"], _WORKER["edits"], _WORKER["unsafe"])) as pool:
        return list(pool.map(check_file, jobs, chunksize=2))


def display_path(path: Path, cwd: Path) -> str:
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(cwd).as_posix()
    except ValueError:
        return absolute.as_posix()


def _per_file_skips(settings: Settings):
    """path -> the per-file-ignores selectors that apply to it."""
    if not settings.per_file_ignores:
        return lambda path: ()
    where = f"{settings.config_file}: per-file-ignores"
    specs = [(pattern_spec([pattern], where), tuple(codes)) for pattern, codes in settings.per_file_ignores.items()]

    def skips(path: Path) -> tuple[str, ...]:
        try:
            rel = Path(os.path.abspath(path)).relative_to(settings.root).as_posix()
        except ValueError:
            rel = path.name
        out: list[str] = []
        for spec, codes in specs:
            if spec.match_file(rel) or spec.match_file(path.name):
                out.extend(codes)
        return tuple(dict.fromkeys(out))

    return skips


def _open_cache(settings: Settings, options: RunOptions, key: str, result: RunResult) -> Optional[Cache]:
    if not options.use_cache:
        return None
    folder = Path(os.path.abspath(options.cache_dir)) if options.cache_dir else settings.cache_path
    try:
        return Cache(folder, key)
    except CacheRefused as error:
        result.errors.append(str(error))
        return None


def run(paths: Sequence[str], settings: Settings, options: RunOptions, cwd: Path) -> RunResult:
    try:
        excluder = Excluder(settings.root, [*settings.exclude, *settings.extend_exclude], settings.respect_gitignore,
                            where=f"{settings.config_file}: exclude")
        skips = _per_file_skips(settings)
    except ValueError as error:  # a pattern git would ignore
        raise ConfigError(str(error)) from None
    found = discover(paths, excluder, force_exclude=options.force_exclude)
    selection = Selection(settings, options)
    result = RunResult(files=len(found.files), warnings=list(found.warnings), errors=list(found.errors))
    cache = _open_cache(settings, options, selection.key(), result)

    per_file: dict[str, list[Finding]] = {}
    jobs: list[Job] = []
    for path in found.files:
        display = display_path(path, cwd)
        cached = None
        if cache is not None:
            try:
                cached = cache.get(display, digest(read_regular(path)))
            except SourceError:
                cached = None
        fixable = cached is not None and any(f.fixable(options.unsafe_fixes) for f in cached)
        if cached is not None:
            per_file[display] = cached
        if cached is None or (options.fix and fixable):
            jobs.append(Job(display, str(path), lint=cached is None, fix=options.fix, write=options.write,
                            may_write=path not in found.outside_links, skip=skips(path)))

    if jobs:
        rules, rule_options = selection.resolve()
        _WORKER.update(rules=rules, options=rule_options, edits=options.edits, unsafe=options.unsafe_fixes)
        for job, outcome in zip(jobs, _map(jobs, options.jobs)):
            _take(job, outcome, per_file, result, cache)

    for display in sorted(per_file):
        result.findings.extend(per_file[display])
    result.findings.sort(key=Finding.sort_key)
    result.diffs.sort()
    result.fixed_files.sort()
    if cache is not None:
        cache.save()
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
        per_file[job.display] = outcome.findings
        if cache is not None and outcome.digest is not None:
            cache.put(job.display, outcome.digest, outcome.findings)
    if outcome.diff is not None:
        result.diffs.append(outcome.diff)
    if outcome.fixed or outcome.diff is not None:
        result.fixed += outcome.fixed
        result.fixed_files.append(job.display)


def print_errors(errors: Sequence[str], warnings: Sequence[str] = ()) -> None:
    for warning in warnings:
        print(f"warning: {one_line(warning)}", file=sys.stderr)
    for error in errors:
        print(f"error: {one_line(error)}", file=sys.stderr)
