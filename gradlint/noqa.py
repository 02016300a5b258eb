"""Suppression comments, read as ruff reads them.

- `# noqa` on a line silences every finding there; `# noqa: GL001, GL005` only those codes. Codes are
  upper-case letters then digits: `# noqa: GL` (a prefix) or `# noqa:` lists no code, silences nothing
  and gets a warning, as does `#noqaGL001`.
- `# gradlint: noqa` on a line of its own silences the whole file; `# gradlint: noqa: GL001` one rule in
  the whole file.

Only comments count: `"# noqa"` in a string is text. Each line
directive records the codes it silenced, for the unused-noqa check (GL100).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

from .diagnostics import Edit, Location

EXAMPLE = "(e.g., `# noqa: GL001, GL005`)"
MISSING_CODES = f"expected a comma-separated list of codes {EXAMPLE}."
INVALID_SUFFIX = f"expected `:` followed by a comma-separated list of codes {EXAMPLE}."
INVALID_CODE_SUFFIX = "expected code to consist of uppercase letters followed by digits only (e.g. `GL001`)"
MISSING_ITEM = "expected rule code between commas"
MISSING_DELIMITER = "expected comma or space delimiter between codes"

_FILE_PREFIX = "gradlint"


class _LexError(Exception):
    pass


@dataclass(frozen=True)
class Code:
    code: str
    column: int  # 1-based, in the row
    end_column: int  # exclusive


@dataclass
class Directive:
    """A `# noqa` comment on one row."""

    row: int
    column: int  # 1-based column of its `#`
    end_column: int  # exclusive: after the last code (after `noqa` for a blanket directive)
    codes: Optional[tuple[Code, ...]]  # None: blanket, silences every code
    line: str  # the row's text, without its line ending
    used: set = field(default_factory=set)  # the codes it silenced

    def silences(self, code: str) -> bool:
        return self.codes is None or any(c.code == code for c in self.codes)


@dataclass(frozen=True)
class _Lexed:
    start: int  # 0-based offset of the `#` in the comment
    end: int  # exclusive offset of the directive's end
    codes: Optional[tuple[tuple[str, int, int], ...]]  # (code, start, end) offsets in the comment
    warnings: tuple[str, ...]


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _lex_directive(comment: str, start: int, i: int) -> _Lexed:
    """`i` is just after `noqa`: a blanket directive, or `:` and a list of codes (ruff's lexer)."""
    if i >= len(comment) or comment[i] == "#":
        return _Lexed(start, i, None, ())
    if comment[i] != ":":
        if not comment[i].isspace():
            raise _LexError(INVALID_SUFFIX)  # "noqa" glued to a code
        j = _skip_space(comment, i)
        if j >= len(comment) or comment[j] != ":":
            return _Lexed(start, i, None, ())  # `# noqa because ...`
        i = j
    i += 1
    codes: list[tuple[str, int, int]] = []
    warnings: list[str] = []
    joined = False
    while i < len(comment):
        i = _skip_space(comment, i)
        if i >= len(comment):
            break
        if comment[i] == ",":
            warnings.append(MISSING_ITEM)
            i += 1
            continue
        if not ("A" <= comment[i] <= "Z"):
            break  # the directive's reason, in words
        code_start = i
        while i < len(comment) and "A" <= comment[i] <= "Z":
            i += 1
        if i >= len(comment) or not comment[i].isdigit():
            if joined:
                raise _LexError(INVALID_CODE_SUFFIX)
            break  # a prefix ("GL") or a capitalised word: no more codes
        while i < len(comment) and comment[i].isdigit():
            i += 1
        codes.append((comment[code_start:i], code_start, i))
        if i >= len(comment):
            break
        following = comment[i]
        if following == ",":
            i += 1
            joined = False
        elif following.isspace() or following == "#":
            joined = False
        elif "A" <= following <= "Z":
            warnings.append(MISSING_DELIMITER)
            joined = True
        else:
            raise _LexError(INVALID_CODE_SUFFIX)
    if not codes:
        raise _LexError(MISSING_CODES)
    return _Lexed(start, codes[-1][2], tuple(codes), tuple(warnings))


def _lex(comment: str, prefix: Optional[str]) -> Optional[_Lexed]:
    """The first `# noqa` (prefix None) or `# <prefix>: noqa` directive in a comment, if any."""
    i = 0
    while True:
        start = comment.find("#", i)
        if start < 0:
            return None
        i = _skip_space(comment, start + 1)
        if prefix is not None:
            if not comment.startswith(prefix, i):
                continue
            i = _skip_space(comment, i + len(prefix))
            if i >= len(comment) or comment[i] != ":":
                continue
            i = _skip_space(comment, i + 1)
        if comment[i:i + 4].lower() == "noqa":
            return _lex_directive(comment, start, i + 4)


# A string literal (skipped whole, so that a `#` inside it is text) or a comment. Prefixes (r, b, f) need
# no care: a backslash escapes the next quote in raw strings too. 10x faster than `tokenize` (measured on
# the files of timm, transformers, lightning and open_clip that mention noqa, with the same comments found).
_STRING_OR_COMMENT = re.compile(
    r"'''(?:[^'\\]|\\.|'(?!''))*'''"
    r'|"""(?:[^"\\]|\\.|"(?!""))*"""'
    r"|'(?:[^'\\\r\n]|\\.)*'"
    r'|"(?:[^"\\\r\n]|\\.)*"'
    r"|(?P<comment>#[^\r\n]*)", re.S)
_NEWLINE = re.compile(r"\r\n?|\n")


def _comments(text: str) -> Iterable[tuple[int, int, str, str]]:
    """(row, 0-based column, comment, row text) of each comment that mentions noqa."""
    starts = None
    for match in _STRING_OR_COMMENT.finditer(text):
        comment = match.group("comment")
        if comment is None or "noqa" not in comment.lower():
            continue
        if starts is None:
            starts = [0, *(m.end() for m in _NEWLINE.finditer(text))]
        row = bisect.bisect_right(starts, match.start())
        line_end = starts[row] if row < len(starts) else len(text)
        line = text[starts[row - 1]:line_end].rstrip("\r\n")
        yield row, match.start() - starts[row - 1], comment, line


class NoqaDirectives:
    """The `# noqa` and `# gradlint: noqa` directives of one file, and the warnings they deserve."""

    def __init__(self, text: str, path: str) -> None:
        self.lines: dict[int, Directive] = {}
        self.file_all = False  # a file-level directive without codes
        self.file_codes: set[str] = set()  # the codes of file-level directives
        self.warnings: list[str] = []
        if "noqa" not in text.lower():  # lower() and `in`: well under half of a case-insensitive regex search
            return
        for row, column, comment, line in _comments(text):
            self._read(path, row, column, comment, line)

    def _read(self, path: str, row: int, column: int, comment: str, line: str) -> None:
        try:
            exemption = _lex(comment, _FILE_PREFIX)
        except _LexError as error:
            self.warnings.append(f"Invalid `# {_FILE_PREFIX}: noqa` directive at {path}:{row}: {error}")
            return
        if exemption is not None:
            self.warnings.extend(f"Missing or joined rule code(s) at {path}:{row}: {w}" for w in exemption.warnings)
            if line[:column].strip():
                self.warnings.append(
                    f"Unexpected `# {_FILE_PREFIX}: noqa` directive at {path}:{row}. File-level suppression "
                    f"comments must appear on their own line. For line-level suppression, omit the "
                    f"`{_FILE_PREFIX}:` prefix.")
            elif exemption.codes is None:
                self.file_all = True
            else:
                self.file_codes.update(code for code, _, _ in exemption.codes)
            return
        try:
            lexed = _lex(comment, None)
        except _LexError as error:
            self.warnings.append(f"Invalid `# noqa` directive on {path}:{row}: {error}")
            return
        if lexed is None:
            return
        self.warnings.extend(f"Missing or joined rule code(s) at {path}:{row}: {w}" for w in lexed.warnings)
        codes = None if lexed.codes is None else tuple(
            Code(code, column + start + 1, column + end + 1) for code, start, end in lexed.codes)
        self.lines[row] = Directive(row, column + lexed.start + 1, column + lexed.end + 1, codes, line)

    def forget_uses(self) -> None:
        for directive in self.lines.values():
            directive.used.clear()

    def exempts(self, code: str) -> bool:
        """The file-level directives silence `code` everywhere in the file."""
        return self.file_all or code in self.file_codes

    def suppresses(self, code: str, rows: Iterable[int]) -> bool:
        """Whether a directive on one of `rows` (file rows) silences `code`; the directive records it."""
        if self.exempts(code):
            return True
        for row in rows:
            directive = self.lines.get(row)
            if directive is not None and directive.silences(code):
                directive.used.add(code)
                return True
        return False


@dataclass(frozen=True)
class UnusedCodes:
    unmatched: tuple[str, ...]  # enabled, but silenced nothing here
    disabled: tuple[str, ...]  # a rule that is not enabled
    duplicated: tuple[str, ...]
    kept: tuple[str, ...]  # used, or not gradlint's (another linter's code)

    def __bool__(self) -> bool:
        return bool(self.unmatched or self.disabled or self.duplicated)

    def describe(self) -> str:
        parts = [f"{label}: {', '.join(f'`{c}`' for c in codes)}" for label, codes in (
            ("unused", self.unmatched), ("non-enabled", self.disabled), ("duplicated", self.duplicated)) if codes]
        return "; ".join(parts)


def unused_codes(directive: Directive, known: set, enabled: set) -> UnusedCodes:
    """The codes of `directive` that gradlint knows and that silenced nothing. Codes gradlint does not know
    belong to other linters (ruff, flake8 share `# noqa`) and are kept, as ruff keeps codes unknown to it."""
    unmatched, disabled, duplicated, kept, seen = [], [], [], [], set()
    for code in (c.code for c in directive.codes or ()):
        if code in seen:
            duplicated.append(code)
            continue
        seen.add(code)
        if code not in known or code in directive.used:
            kept.append(code)
        elif code in enabled:
            unmatched.append(code)
        else:
            disabled.append(code)
    return UnusedCodes(tuple(unmatched), tuple(disabled), tuple(duplicated), tuple(kept))


def removal_edit(directive: Directive, kept: tuple[str, ...]) -> Edit:
    """The edit that leaves only `kept` in the directive, or removes it (with its reason, up to a next
    `# ...` comment, and the blanks before it when nothing follows)."""
    row, line = directive.row, directive.line
    if kept:
        return Edit(f"# noqa: {', '.join(kept)}", Location(row, directive.column),
                    Location(row, directive.end_column))
    next_comment = line.find("#", directive.end_column - 1)
    if next_comment >= 0:  # `x  # noqa: GL001  # type: ignore` -> `x  # type: ignore`
        return Edit("", Location(row, directive.column), Location(row, next_comment + 1))
    start = len(line[:directive.column - 1].rstrip())
    return Edit("", Location(row, start + 1), Location(row, len(line) + 1))
