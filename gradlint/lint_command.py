"""`gradlint check` and `gradlint fix`: the command line made into settings, a run, output and an exit code.

As in ruff: the command line's settings (`--select`, `--exclude`, `--config KEY=VALUE`, ...) apply over
every file's configuration; `--config FILE` replaces the configuration files, `--isolated` ignores them.
Findings go to stdout; warnings and errors, one line each, to stderr (with `fix` and `--diff`, the diff
goes to stdout and the summary to stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional

from .cli import EXIT_CLEAN, EXIT_ERROR, EXIT_FINDINGS
from .config import Anchored, ConfigError, Configuration, PerFileIgnore, parse_override
from .selection import RuleSelection

NO_FILES = "No Python files found under the given path(s)"


def _cli_configuration(args: argparse.Namespace, cwd: Path) -> Configuration:
    """The settings given as flags (`--select`, `--exclude`, ...), relative to the current folder."""
    def anchored(patterns, flag):
        return tuple(Anchored(cwd, p, flag) for p in patterns)

    def per_file(pairs, flag):
        return tuple(PerFileIgnore(Anchored(cwd, pattern, f"{flag} `{pattern}`"), tuple(codes))
                     for pattern, codes in pairs)

    selection = RuleSelection(
        select=tuple(args.select) if args.select is not None else None,
        extend_select=tuple(args.extend_select or ()), ignore=tuple(args.ignore or ()),
        fixable=tuple(args.fixable) if args.fixable is not None else None,
        extend_fixable=tuple(args.extend_fixable or ()), unfixable=tuple(args.unfixable or ()))
    return Configuration(
        selections=() if selection.is_empty() else (selection,),
        unsafe_fixes=args.unsafe_fixes,
        exclude=anchored(args.exclude, "--exclude") if args.exclude is not None else None,
        extend_exclude=anchored(args.extend_exclude or (), "--extend-exclude"),
        respect_gitignore=args.respect_gitignore,
        force_exclude=args.force_exclude,
        per_file_ignores=(per_file(args.per_file_ignores, "--per-file-ignores")
                          if args.per_file_ignores is not None else None),
        extend_per_file_ignores=per_file(args.extend_per_file_ignores or (), "--extend-per-file-ignores"),
    )


def _config_arguments(values: list[str], isolated: bool, cwd: Path) -> tuple[Optional[Path], Configuration]:
    """`--config`: at most one file (ruff's rule), and any number of `KEY = VALUE` overrides, later ones winning."""
    config_file: Optional[Path] = None
    overrides = Configuration()
    for value in values:
        candidate = Path(os.path.expandvars(os.path.expanduser(value)))
        if candidate.is_file():
            if isolated:
                raise ConfigError(f"--config {value}: a configuration file cannot be used with --isolated, "
                                  "which ignores every configuration file")
            if config_file is not None:
                raise ConfigError(f"only one configuration file can be given: --config {config_file} or "
                                  f"--config {value}")
            config_file = candidate
            continue
        if value.endswith(".toml") and "=" not in value:
            raise ConfigError(f"--config {value}: configuration file not found")
        overrides = parse_override(value, cwd).combine(overrides)
    return config_file, overrides


def run_lint(args: argparse.Namespace) -> int:
    from .discovery import PathNotFound
    from .reporters import Report, canonical_format, needs_edits, printable, render
    from .reporters.terminal import use_color
    from .runner import RunOptions, display_path, run
    from .settings import Resolver
    from .stdin_command import reads_stdin, run_stdin

    started = time.perf_counter()
    cwd = Path.cwd()
    say = _Messages(args)
    stdin = reads_stdin(args)
    args.paths = args.paths or ([] if stdin else ["."])
    try:
        fmt = canonical_format(args.output_format or "full")
    except ValueError as error:  # GRADLINT_OUTPUT_FORMAT, which argparse does not check
        say.error(f"GRADLINT_OUTPUT_FORMAT: {error}")
        return EXIT_ERROR
    diff_mode = args.diff or (args.command == "fix" and not args.write)
    fix_only = bool(args.fix_only) and not diff_mode
    write = not diff_mode and (fix_only or (args.command == "check" and bool(args.fix))
                               or (args.command == "fix" and args.write))
    try:
        config_file, overrides = _config_arguments(args.config, args.isolated, cwd)
        resolver = Resolver(cwd, _cli_configuration(args, cwd).combine(overrides), config_file, args.isolated)
        if args.show_files or args.show_settings:
            return _show(args, resolver, cwd)
        if stdin:
            return run_stdin(args, resolver, cwd, say, fmt, fix=write or diff_mode, diff=bool(args.diff))
        options = RunOptions(use_cache=not args.no_cache, cache_dir=args.cache_dir, fix=write or diff_mode,
                             write=write, jobs=args.jobs, edits=needs_edits(fmt) and not fix_only)
        result = run(args.paths, resolver, options, cwd)
        unsafe = _unsafe_fixes(resolver, result.settings)
    except ConfigError as error:
        say.error(str(error))
        return EXIT_ERROR
    except PathNotFound as error:
        say.error(f"{printable(str(error))}: No such file or directory")
        return EXIT_ERROR

    if result.files == 0:
        result.warnings.insert(0, NO_FILES)
    say.verbose(resolver, result, started, cwd, display_path)
    mode = "diff" if diff_mode else "write" if write else "check"
    report = Report(result.findings, cwd, unsafe, result.fixed, mode, args.statistics, args.quiet,
                    color=use_color(args.color), fixes=result.fixes if args.show_fixes else None)

    if diff_mode:
        for diff in result.diffs:
            say.out(diff if diff.endswith("\n") else diff + "\n", end="")
        file_errors = [f for f in result.findings if f.is_file_error]  # files that cannot be fixed: say why
        stderr_report = Report(file_errors, cwd, unsafe, color=use_color(args.color, sys.stderr), quiet=True)
        if file_errors:
            say.err(render("concise", stderr_report))
        if not args.quiet:
            say.err(render("concise", Report(result.findings, cwd, unsafe, result.fixed, "diff",
                                             color=use_color(args.color, sys.stderr),
                                             fixes=result.fixes if args.show_fixes else None)))
        say.problems(result)
        if result.errors:
            return EXIT_ERROR
        fixable = [f for f in result.findings if f.fixable(unsafe)]
        return EXIT_FINDINGS if (result.diffs or fixable or file_errors) and not args.exit_zero else EXIT_CLEAN

    if fix_only:
        report.command = "fix-only"
    try:
        output = render("concise" if fix_only else fmt, report)
    except ValueError as error:  # --statistics with a format that cannot show counts, as in ruff
        say.error(str(error))
        return EXIT_ERROR
    if output:
        say.out(output)
    say.problems(result)
    if result.errors:
        return EXIT_ERROR
    if args.exit_zero:
        return EXIT_CLEAN
    if args.exit_non_zero_on_fix and result.fixed_files:
        return EXIT_FINDINGS
    return EXIT_FINDINGS if result.findings and not fix_only else EXIT_CLEAN


def _unsafe_fixes(resolver, used) -> bool:
    """Whether the `[*]` marks and the hints count unsafe fixes: as the files' settings say if they
    agree, else as the current folder's (ruff's choice for all)."""
    said = {settings.unsafe_fixes for settings in used}
    return said.pop() if len(said) == 1 else resolver.default().unsafe_fixes


def _show(args: argparse.Namespace, resolver, cwd: Path) -> int:
    """`--show-files` (every file a run would check, absolute, sorted) and `--show-settings` (the
    settings of the first of them), as ruff prints them."""
    from .discovery import discover

    found = discover(args.paths, resolver)
    for warning in found.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    files = sorted(Path(os.path.abspath(path)) for path in found.files)
    if args.show_files:
        print("\n".join(str(path) for path in files))
        return EXIT_CLEAN
    if not files:
        print(f"error: {NO_FILES}", file=sys.stderr)
        return EXIT_ERROR
    print(f"Resolved settings for: {files[0]}")
    print(resolver.settings_for(files[0]).describe())
    return EXIT_CLEAN


class _Messages:
    """Where each kind of output goes, and what `--quiet`, `--silent` and `--verbose` keep of it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def out(self, text: str, end: str = "\n") -> None:
        if not self.args.silent:
            sys.stdout.write(text + end)

    def err(self, text: str) -> None:
        if not self.args.silent and text:
            print(text, file=sys.stderr)

    def warn(self, text: str) -> None:
        if not (self.args.quiet or self.args.silent):
            from .reporters import one_line

            print(f"warning: {one_line(text)}", file=sys.stderr)

    def error(self, text: str) -> None:
        from .reporters import one_line

        print(f"error: {one_line(text)}", file=sys.stderr)

    def problems(self, result) -> None:
        from .runner import print_errors

        quiet = self.args.quiet or self.args.silent
        print_errors(result.errors, () if quiet else result.warnings)

    def verbose(self, resolver, result, started: float, cwd: Path, display_path) -> None:
        if not self.args.verbose or self.args.silent:
            return
        for settings in result.settings:
            where = settings.config_file or "no configuration file: defaults"
            print(f"debug: settings from {where} (root {display_path(settings.root, cwd) or '.'})", file=sys.stderr)
        cached = result.files - result.checked
        files = f"{result.files} file{'' if result.files == 1 else 's'}"
        print(f"debug: {files}: {result.checked} checked ({result.how}), {cached} from the cache, "
              f"in {time.perf_counter() - started:.3f} s", file=sys.stderr)
