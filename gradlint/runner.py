"""A run over many files: discover, read and hash, answer from the cache, lint the rest in parallel, fix.

Only a cache miss imports libcst and the rules. Many misses are linted in worker processes (forked
after the rules are imported, so workers start warm); a few are linted in-process, because a pool costs
more to start than a pre-commit run of three files takes.
"""

from __future__ import annotations

import difflib
import gc
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .cache import Cache, digest, settings_key
from .config import Settings, select_rules, validate_rule_options
from .diagnostics import IO_ERROR, Finding, file_error
from .discovery import Excluder, discover
from .fsio import SourceError, WriteError, atomic_write, read_source

PARALLEL_FILES = 12  # a process pool pays for itself from this many files...
PARALLEL_BYTES = 1_000_000  # ...holding this much source (open_clip's 450 kB runs faster in-process)


@dataclass
class RunOptions:
    select: Optional[list[str]] = None
    extend_select: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    use_cache: bool = True
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
                             "options": self.settings.rule_options, "edits": self.edits})

    def resolve(self):
        if self._rules is None:
            from .registry import all_rules

            rules = all_rules()
            self._options = validate_rule_options(self.settings, rules)
            self._rules = select_rules(rules, self.select, self.extend_select, self.ignore)
        return self._rules, self._options


# -- linting one file (also in worker processes) -----------------------------------------------------

_WORKER: dict = {}


def _lint_job(job: tuple[str, str]) -> tuple[str, Optional[bytes], list[Finding], Optional[str]]:
    """(display, digest of what was read, findings, internal error). Reads the file itself, so that
    the parent keeps no source in memory and the cache stores results for exactly the bytes linted."""
    display, path = job
    try:
        source = read_source(path)
    except SourceError as error:
        return display, None, [file_error(IO_ERROR, display, f"Failed to read {display}: {error}")], None
    try:
        from .engine import lint_text

        findings = lint_text(source.text, display, _WORKER["rules"], _WORKER["options"], edits=_WORKER["edits"])
        return display, digest(source.raw), findings, None
    except Exception as error:  # one broken file must not stop the run; its error is shown
        return display, None, [], f"{display}: internal error: {type(error).__name__}: {error}"


def _init_worker(codes: list[str], options: dict, edits: bool) -> None:
    from .registry import all_rules

    _WORKER.update(rules=[r for r in all_rules() if r.code in codes], options=options, edits=edits)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _tune_gc() -> None:
    """LibCST and ast build millions of short-lived, acyclic objects: reference counting frees them, and
    the cyclic collector's frequent passes over everything imported only cost time (measured: -18 to -29 %
    CPU on timm and transformers). Frozen before forking, the imported objects are also never scanned,
    nor copied into the workers by the collector touching them."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _map(jobs: list, jobs_count: Optional[int]) -> list:
    _tune_gc()
    workers = max(1, min(jobs_count or _cpu_count(), len(jobs)))
    sizes = [_size(job[1]) for job in jobs]
    if workers == 1 or len(jobs) < PARALLEL_FILES or sum(sizes) < PARALLEL_BYTES:
        return [_lint_job(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork starts workers with libcst and the rules already imported; elsewhere they import them once.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    codes = [rule.code for rule in _WORKER["rules"]]
    # Biggest files first, so no worker is left with a long file at the end.
    order = sorted(range(len(jobs)), key=lambda i: -sizes[i])
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(codes, _WORKER["options"], _WORKER["edits"])) as pool:
        results = list(pool.map(_lint_job, [jobs[i] for i in order], chunksize=2))
    by_index = dict(zip(order, results))
    return [by_index[i] for i in range(len(jobs))]


# -- the run ----------------------------------------------------------------------------------------

def display_path(path: Path, cwd: Path) -> str:
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(cwd).as_posix()
    except ValueError:
        return absolute.as_posix()


def _per_file_filter(settings: Settings) -> Callable[[Path, Finding], bool]:
    if not settings.per_file_ignores:
        return lambda path, finding: True
    import pathspec

    from .config import matches_selector
    from .discovery import GITIGNORE_SYNTAX

    specs = [(pathspec.PathSpec.from_lines(GITIGNORE_SYNTAX, [pattern]), codes)
             for pattern, codes in settings.per_file_ignores.items()]

    def keep(path: Path, finding: Finding) -> bool:
        try:
            rel = Path(os.path.abspath(path)).relative_to(settings.root).as_posix()
        except ValueError:
            rel = path.name
        for spec, codes in specs:
            if (spec.match_file(rel) or spec.match_file(path.name)) and any(
                    matches_selector(finding.code, c) for c in codes):
                return False
        return True

    return keep


def run(paths: Sequence[str], settings: Settings, options: RunOptions, cwd: Path) -> RunResult:
    excluder = Excluder(settings.root, [*settings.exclude, *settings.extend_exclude], settings.respect_gitignore)
    files = discover(paths, excluder, force_exclude=options.force_exclude)
    selection = Selection(settings, options)
    cache = Cache(settings.cache_path, selection.key()) if options.use_cache else None
    result = RunResult(files=len(files))

    per_file: dict[str, list[Finding]] = {}
    paths_by_display: dict[str, Path] = {}
    misses: list[tuple[str, str]] = []
    for path in files:
        display = display_path(path, cwd)
        paths_by_display[display] = path
        cached = None
        if cache is not None:
            try:
                cached = cache.get(display, digest(path.read_bytes()))
            except OSError:
                cached = None
        if cached is not None:
            per_file[display] = cached
        else:
            misses.append((display, str(path)))

    if misses:
        rules, rule_options = selection.resolve()
        _WORKER.update(rules=rules, options=rule_options, edits=options.edits)
        for display, content_digest, findings, error in _map(misses, options.jobs):
            if error is not None:
                result.errors.append(error)
                continue
            per_file[display] = findings
            if cache is not None and content_digest is not None:
                cache.put(display, content_digest, findings)

    if options.fix:
        _fix_files(per_file, paths_by_display, selection, options, result, cache)

    keep = _per_file_filter(settings)
    for display in sorted(per_file):
        path = paths_by_display[display]
        result.findings.extend(f for f in per_file[display] if f.is_file_error or keep(path, f))
    result.findings.sort(key=Finding.sort_key)
    if cache is not None:
        cache.save()
    return result


def _fix_files(per_file, paths_by_display, selection, options, result, cache) -> None:
    todo = [d for d, findings in per_file.items() if any(f.fixable(options.unsafe_fixes) for f in findings)]
    if not todo:
        return
    from .engine import FixBrokeCode, fix_text

    rules, rule_options = selection.resolve()
    for display in sorted(todo):
        try:
            source = read_source(paths_by_display[display])
            outcome = fix_text(source.text, display, rules, rule_options, unsafe=options.unsafe_fixes)
        except SourceError as error:
            result.errors.append(f"{display}: {error}")
            continue
        except FixBrokeCode as error:
            result.errors.append(f"{display}: a fix produced code that does not parse; file left as it was "
                                 f"(please report this): {error}")
            continue
        except Exception as error:
            result.errors.append(f"{display}: internal error while fixing: {type(error).__name__}: {error}")
            continue
        if outcome.text == source.text:
            continue
        if options.write:
            try:
                data = source.encode(outcome.text)
                atomic_write(source.path, data, source.raw)
            except (WriteError, UnicodeEncodeError) as error:
                result.errors.append(f"{display}: {error}")
                continue
            if cache is not None:
                cache.put(display, digest(data), outcome.remaining)
            per_file[display] = outcome.remaining
        else:
            # Without --write the findings stay (they are still in the file); the diff shows the fix.
            result.diffs.append("".join(difflib.unified_diff(
                source.text.splitlines(keepends=True), outcome.text.splitlines(keepends=True),
                fromfile=f"a/{display}", tofile=f"b/{display}")))
        result.fixed += outcome.fixed
        result.fixed_files.append(display)


def print_errors(errors: Sequence[str]) -> None:
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
