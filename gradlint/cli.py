"""The command line, shaped like ruff's: `gradlint check`, `gradlint fix`, `gradlint rule`, `gradlint verify`,
`gradlint server`, `gradlint completion`.

Exit codes: 0 clean, 1 findings (or, for `fix` without `--write`, something to fix), 2 usage or
internal error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from . import __version__

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
CODES = "CODES"  # the metavar of options that take rule codes: completion offers the codes there
TEXT_FORMATS = ("text", "json")


def _codes(text: str) -> list[str]:
    codes = [part.strip() for part in text.split(",")]
    if not all(codes):
        raise argparse.ArgumentTypeError(f"expected comma-separated rule codes or prefixes, like GL001,GL005; "
                                         f"got {text!r}")
    return codes


def _pattern_codes(text: str) -> tuple[str, list[str]]:
    """`--per-file-ignores PATTERN:CODES`, as ruff takes it (`tests/*:GL001,GL005`)."""
    pattern, colon, codes = text.rpartition(":")
    if not colon or not pattern.strip():
        raise argparse.ArgumentTypeError(f"expected PATTERN:CODES, like 'tests/*:GL001'; got {text!r}")
    return pattern.strip(), _codes(codes)


def _patterns(text: str) -> list[str]:
    patterns = [part.strip() for part in text.split(",")]
    if not all(patterns):
        raise argparse.ArgumentTypeError(f"expected comma-separated patterns, like build,'*_pb2.py'; got {text!r}")
    return patterns


def _flag_pair(group, name: str, help_yes: str, help_no: Optional[str] = None) -> None:
    """`--name` and `--no-name`, the later one winning (ruff's `--fix`/`--no-fix`)."""
    dest = name.replace("-", "_")
    group.add_argument(f"--{name}", dest=dest, action="store_true", default=None, help=help_yes)
    group.add_argument(f"--no-{name}", dest=dest, action="store_false", help=help_no or argparse.SUPPRESS)


def _add_lint_options(parser: argparse.ArgumentParser, command: str) -> None:
    from .reporters import ALIASES, COLOR_CHOICES, FORMATS

    parser.add_argument("paths", nargs="*", default=None, metavar="PATH",
                        help="files or directories to check (default: .); - reads one file from stdin")
    if command == "check":
        _flag_pair(parser, "fix", "apply fixes, like `gradlint fix --write`")
    else:
        parser.add_argument("--write", action="store_true", help="write the fixes to the files")
    _flag_pair(parser, "unsafe-fixes", "include fixes that may change behaviour beyond the defect",
               "do not apply unsafe fixes, whatever the configuration says")
    _flag_pair(parser, "show-fixes", "list the fixes applied, per file and rule")
    parser.add_argument("--diff", action="store_true",
                        help="write no file; print a diff of each file the fixes would change (exit 1 if any)")
    _flag_pair(parser, "fix-only", "apply fixes but do not report what remains (implies --fix)")
    parser.add_argument("--output-format", choices=(*FORMATS, *ALIASES), metavar="FORMAT",
                        default=os.environ.get("GRADLINT_OUTPUT_FORMAT") or None,
                        help=f"how findings are shown: {', '.join(FORMATS)} (default: full, or GRADLINT_OUTPUT_FORMAT; "
                             "text is concise)")
    parser.add_argument("--statistics", action="store_true", help="count findings per rule")
    parser.add_argument("--exit-zero", action="store_true", help="exit 0 even if findings remain")
    parser.add_argument("--exit-non-zero-on-fix", action="store_true",
                        help="exit 1 if a fix changed a file, even if no finding remains")
    parser.add_argument("--stdin-filename", metavar="PATH",
                        help="read the file from stdin and check it as PATH (its settings, per-file ignores, "
                             "and a notebook if PATH ends in .ipynb)")
    parser.add_argument("--show-files", action="store_true", help="list the files that would be checked, and stop")
    parser.add_argument("--show-settings", action="store_true",
                        help="print the settings used for the first file, and stop")

    rules = parser.add_argument_group("rule selection")
    rules.add_argument("--select", type=_codes, action="extend", default=None, metavar=CODES,
                       help="comma-separated rule codes or prefixes to enable (ALL for every rule)")
    rules.add_argument("--extend-select", type=_codes, action="extend", default=None, metavar=CODES,
                       help="rules to enable in addition to those selected")
    rules.add_argument("--ignore", type=_codes, action="extend", default=None, metavar=CODES,
                       help="rules to disable")
    rules.add_argument("--fixable", type=_codes, action="extend", default=None, metavar=CODES,
                       help="the rules whose fixes may be applied")
    rules.add_argument("--extend-fixable", type=_codes, action="extend", default=None, metavar=CODES,
                       help="rules to make fixable in addition to those fixable")
    rules.add_argument("--unfixable", type=_codes, action="extend", default=None, metavar=CODES,
                       help="rules whose fixes are never applied")
    rules.add_argument("--per-file-ignores", type=_pattern_codes, action="append", default=None,
                       metavar="PATTERN:CODES", help="rules to disable in files matching a pattern "
                       "(relative to the current folder); replaces the configuration's")
    rules.add_argument("--extend-per-file-ignores", type=_pattern_codes, action="append", default=None,
                       metavar="PATTERN:CODES", help="like --per-file-ignores, on top of the configuration's")

    files = parser.add_argument_group("file selection")
    files.add_argument("--exclude", type=_patterns, action="extend", default=None, metavar="PATTERNS",
                       help="gitignore-style patterns of files and folders to skip (relative to the current "
                            "folder); replaces the configuration's `exclude`")
    files.add_argument("--extend-exclude", type=_patterns, action="extend", default=None, metavar="PATTERNS",
                       help="like --exclude, on top of the configuration's")
    _flag_pair(files, "respect-gitignore", "skip what .gitignore files ignore (the default)",
               "check what .gitignore files ignore too")
    _flag_pair(files, "force-exclude", "apply the exclusions to files named on the command line too (for "
                                       "pre-commit)")

    config = parser.add_argument_group("configuration")
    config.add_argument("--config", action="append", default=[], metavar="CONFIG_OPTION",
                        help="a configuration file to use for every file (gradlint.toml or pyproject.toml), or "
                             "a TOML `KEY = VALUE` pair that overrides one setting, like \"select = ['GL001']\"")
    config.add_argument("--isolated", action="store_true", help="ignore every configuration file")
    config.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    config.add_argument("--cache-dir", metavar="DIR", default=os.environ.get("GRADLINT_CACHE_DIR") or None,
                        help="the cache folder, any folder gradlint owns (default: .gradlint_cache in the "
                             "project; also GRADLINT_CACHE_DIR)")
    config.add_argument("--jobs", type=int, metavar="N", help="worker processes (default: one per core)")

    output = parser.add_argument_group("output")
    output.add_argument("-q", "--quiet", action="store_true", help="print findings only: no summary, no warning")
    output.add_argument("-s", "--silent", action="store_true",
                        help="print nothing but errors (the exit code still says whether there are findings)")
    output.add_argument("-v", "--verbose", action="store_true",
                        help="also say which configuration files, how many files, and the time taken")
    output.add_argument("--color", choices=COLOR_CHOICES, default="auto",
                        help="colour the output: auto (a terminal, unless NO_COLOR), always, never")


class _Parser(argparse.ArgumentParser):
    """An unknown flag of a subcommand shows that subcommand's usage, not the top-level one."""

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = self._subcommands.get(getattr(parsed, "command", None)) if hasattr(self, "_subcommands") else None
            (sub or self).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def build_parser(with_verify_options: bool = True) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gradlint", description="Find, fix and prove numerical-stability mistakes in PyTorch training code.")
    parser.add_argument("-V", "--version", action="version", version=f"gradlint {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser("check", help="report findings")
    _add_lint_options(check, "check")

    fix = commands.add_parser("fix", help="show (or with --write, apply) fixes")
    _add_lint_options(fix, "fix")

    rule = commands.add_parser("rule", help="explain a rule")
    rule.add_argument("rule", nargs="?", metavar="RULE", help="a code (GL001) or name")
    rule.add_argument("--all", action="store_true", help="explain every rule")
    rule.add_argument("--output-format", choices=TEXT_FORMATS, default="text", help="text (default) or json")

    commands.add_parser("server", help="run the language server (LSP over stdio, for editors)",
                        description="The Language Server Protocol over stdio: diagnostics, quick fixes and "
                                    "notebooks in your editor. Needs pip install 'gradlint[server]'.")

    completion = commands.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell: bash, zsh or fish")

    verify = commands.add_parser("verify", help="run a training script, original and fixed, with health checks")
    if with_verify_options:  # only when asked for: the check path stays light
        from .verify import command as verify_command

        verify_command.add_arguments(verify)
    parser._subcommands = dict(commands.choices)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_verify_options="verify" in argv or "completion" in argv)
    args = parser.parse_args(argv)
    try:
        if args.command in ("check", "fix"):
            from .lint_command import run_lint

            return run_lint(args)
        if args.command == "rule":
            return _rule(args)
        if args.command == "completion":
            return _completion(args, parser)
        if args.command == "server":
            from .server import main as serve

            return serve()
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


def _rule(args: argparse.Namespace) -> int:
    from . import docs
    from .registry import every_rule, rule_by_code_or_name

    json_output = args.output_format == "json"
    if args.all:
        print(docs.rules_json(every_rule()) if json_output else docs.explain_all(every_rule()))
        return EXIT_CLEAN
    if not args.rule:
        print("error: name a rule (`gradlint rule GL001`) or pass --all", file=sys.stderr)
        return EXIT_ERROR
    rule = rule_by_code_or_name(args.rule)
    if rule is None:
        known = ", ".join(r.code for r in every_rule())
        print(f"error: unknown rule `{args.rule}` (rules: {known})", file=sys.stderr)
        return EXIT_ERROR
    print(docs.rule_json(rule) if json_output else docs.explain(rule))
    return EXIT_CLEAN


def _completion(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .completion import script
    from .registry import every_rule

    sys.stdout.write(script(args.shell, parser, [rule.code for rule in every_rule()]))
    return EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())
