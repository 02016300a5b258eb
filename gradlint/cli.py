"""The command line, shaped like ruff's: `gradlint check`, `gradlint fix`, `gradlint rule`, `gradlint verify`.

Exit codes: 0 clean, 1 findings (or, for `fix` without `--write`, something to fix), 2 usage or
internal error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import __version__

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _codes(text: str) -> list[str]:
    codes = [part.strip() for part in text.split(",")]
    if not all(codes):
        raise argparse.ArgumentTypeError(f"expected comma-separated rule codes or prefixes, like GL001,GL005; "
                                         f"got {text!r}")
    return codes


def _add_lint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", default=["."], metavar="PATH",
                        help="files or directories to check (default: .)")
    parser.add_argument("--select", type=_codes, action="extend", default=None, metavar="CODES",
                        help="comma-separated rule codes or prefixes to enable (ALL for every rule)")
    parser.add_argument("--extend-select", type=_codes, action="extend", default=[], metavar="CODES",
                        help="rules to enable in addition to those selected")
    parser.add_argument("--ignore", type=_codes, action="extend", default=[], metavar="CODES",
                        help="rules to disable")
    parser.add_argument("--unsafe-fixes", action="store_true",
                        help="include fixes that may change behaviour beyond the defect")
    parser.add_argument("--output-format", choices=("text", "json", "sarif", "github"), default="text")
    parser.add_argument("--statistics", action="store_true", help="count findings per rule")
    parser.add_argument("--exit-zero", action="store_true", help="exit 0 even if findings remain")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    parser.add_argument("--cache-dir", metavar="DIR", default=os.environ.get("GRADLINT_CACHE_DIR") or None,
                        help="the cache folder, any folder gradlint owns (default: .gradlint_cache in the "
                             "project; also GRADLINT_CACHE_DIR)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="a pyproject.toml to use")
    parser.add_argument("-q", "--quiet", action="store_true", help="print findings only, no summary")
    parser.add_argument("--jobs", type=int, metavar="N", help="worker processes (default: one per core)")
    parser.add_argument("--force-exclude", action="store_true",
                        help="apply `exclude` to files named on the command line too (for pre-commit)")


def build_parser(with_verify_options: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradlint", description="Find, fix and prove numerical-stability mistakes in PyTorch training code.")
    parser.add_argument("--version", action="version", version=f"gradlint {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser("check", help="report findings")
    _add_lint_options(check)
    check.add_argument("--fix", action="store_true", help="apply fixes, like `gradlint fix --write`")

    fix = commands.add_parser("fix", help="show (or with --write, apply) fixes")
    _add_lint_options(fix)
    fix.add_argument("--write", action="store_true", help="write the fixes to the files")

    rule = commands.add_parser("rule", help="explain a rule")
    rule.add_argument("rule", nargs="?", metavar="RULE", help="a code (GL001) or name")
    rule.add_argument("--all", action="store_true", help="explain every rule")

    verify = commands.add_parser("verify", help="run a training script, original and fixed, with health checks")
    if with_verify_options:  # only when asked for: the check path stays light
        from .verify import command as verify_command

        verify_command.add_arguments(verify)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_verify_options="verify" in argv)
    args = parser.parse_args(argv)
    try:
        if args.command in ("check", "fix"):
            return _lint(args)
        if args.command == "rule":
            return _rule(args, parser)
        if args.command == "verify":
            from .verify import command as verify_command

            return verify_command.run(args)
        parser.print_help()
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_CLEAN


def _lint(args: argparse.Namespace) -> int:
    from .config import ConfigError, find_config, load_settings
    from .discovery import PathNotFound
    from .reporters import Report, printable, render
    from .runner import RunOptions, print_errors, run

    cwd = Path.cwd()
    write = args.command == "check" and args.fix or args.command == "fix" and args.write
    try:
        if args.config is not None and not args.config.is_file():
            raise ConfigError(f"config file not found: {args.config}")
        config = args.config or find_config(Path(args.paths[0]) if Path(args.paths[0]).exists() else cwd)
        settings = load_settings(config, cwd)
        options = RunOptions(select=args.select, extend_select=args.extend_select, ignore=args.ignore,
                             use_cache=not args.no_cache, cache_dir=args.cache_dir,
                             fix=write or args.command == "fix", write=write,
                             unsafe_fixes=args.unsafe_fixes, jobs=args.jobs, force_exclude=args.force_exclude,
                             edits=args.output_format == "json")
        result = run(args.paths, settings, options, cwd)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except PathNotFound as error:
        print(f"error: {printable(str(error))}: No such file or directory", file=sys.stderr)
        return EXIT_ERROR

    mode = "write" if write else ("diff" if args.command == "fix" else "check")
    if mode == "diff" and args.output_format == "text":
        for diff in result.diffs:
            sys.stdout.write(diff if diff.endswith("\n") else diff + "\n")
        fixable = [f for f in result.findings if f.fixable(args.unsafe_fixes)]
        file_errors = [f for f in result.findings if f.is_file_error]  # files that cannot be fixed: say why
        if file_errors:
            print(render("text", Report(file_errors, cwd, quiet=True)), file=sys.stderr)
        if not args.quiet:
            print(render("text", Report(result.findings, cwd, args.unsafe_fixes, result.fixed, "diff")),
                  file=sys.stderr)
        print_errors(result.errors, result.warnings)
        if result.errors:
            return EXIT_ERROR
        return EXIT_FINDINGS if (fixable or file_errors) and not args.exit_zero else EXIT_CLEAN

    report = Report(result.findings, cwd, args.unsafe_fixes, result.fixed, mode, args.statistics, args.quiet)
    output = render(args.output_format, report)
    if output:
        print(output)
    print_errors(result.errors, result.warnings)
    if result.errors:
        return EXIT_ERROR
    return EXIT_FINDINGS if result.findings and not args.exit_zero else EXIT_CLEAN


def _rule(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .docs import explain
    from .registry import all_rules, rule_by_code_or_name

    if args.all:
        print("\n\n".join(explain(rule) for rule in all_rules()))
        return EXIT_CLEAN
    if not args.rule:
        print("error: name a rule (`gradlint rule GL001`) or pass --all", file=sys.stderr)
        return EXIT_ERROR
    rule = rule_by_code_or_name(args.rule)
    if rule is None:
        known = ", ".join(r.code for r in all_rules())
        print(f"error: unknown rule `{args.rule}` (rules: {known})", file=sys.stderr)
        return EXIT_ERROR
    print(explain(rule))
    return EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())
