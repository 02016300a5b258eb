"""Patterns as git reads a `.gitignore` line, for `.gitignore` files and for the configuration's
`exclude` and `per-file-ignores`.

A line git ignores (`/`, `!`, a trailing backslash) matches nothing in a `.gitignore`, and a reversed
range (`[z-a]`) matches its first character. In the configuration such lines are errors: they can only
be a mistake.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Optional

import pathspec

# pathspec 1.x calls git's syntax "gitignore"; older releases only know "gitwildmatch".
try:
    pathspec.util.lookup_pattern("gitignore")
    GITIGNORE_SYNTAX = "gitignore"
except KeyError:
    GITIGNORE_SYNTAX = "gitwildmatch"
_PATTERN = pathspec.util.lookup_pattern(GITIGNORE_SYNTAX)



class InvalidPattern(ValueError):
    """A pattern git would ignore or cannot read; the message says why."""


_RANGE = re.compile(r"(?<!\\)(.)-(.)")


def _git_ranges(pattern: str) -> str:
    """Rewrite each reversed range in a bracket expression (`[z-a]`) to its first character, which is
    all git's wildmatch matches of it; Python's `re` would refuse the pattern."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if char != "[":
            out.append(char)
            i += 1
            continue
        j = i + 1
        if j < len(pattern) and pattern[j] in "!^":
            j += 1
        if j < len(pattern) and pattern[j] == "]":
            j += 1
        while j < len(pattern) and pattern[j] != "]":
            j += 2 if pattern[j] == "\\" else 1
        if j >= len(pattern):  # no closing bracket: git matches `[` literally
            out.append(char)
            i += 1
            continue
        body = _RANGE.sub(lambda m: m.group(1) if m.group(1) > m.group(2) else m.group(0), pattern[i + 1:j])
        out.append("[" + body + "]")
        i = j + 1
    return "".join(out)


def _ends_in_lone_backslash(text: str) -> bool:
    while text.endswith(" ") and not text.endswith("\\ "):  # git trims unescaped trailing spaces first
        text = text[:-1]
    return (len(text) - len(text.rstrip("\\"))) % 2 == 1


def compile_pattern(line: str) -> Optional[pathspec.Pattern]:
    """One gitignore line as git reads it: None for a blank line or a comment; InvalidPattern for a
    line git ignores (it matches nothing there)."""
    text = line.rstrip("\r\n")
    if not text.strip() or text.startswith("#"):
        return None
    body = text[1:] if text.startswith("!") else text
    if not body.strip().strip("/"):
        raise InvalidPattern(f"`{text}` matches nothing (git ignores it)")
    if _ends_in_lone_backslash(body):
        raise InvalidPattern(f"`{text}` ends in a lone backslash (git ignores it)")
    try:
        pattern = _PATTERN(_git_ranges(text))
    except Exception as error:  # pathspec's errors are of several kinds (re.error, its own)
        raise InvalidPattern(f"`{text}` is not a valid pattern: {error}") from None
    return pattern if pattern.include is not None else None


def gitignore_spec(lines: Iterable[str]) -> Optional[pathspec.PathSpec]:
    """A .gitignore file's patterns; lines git ignores are ignored here too."""
    patterns = []
    for line in lines:
        try:
            pattern = compile_pattern(line)
        except InvalidPattern:
            continue
        if pattern is not None:
            patterns.append(pattern)
    return pathspec.PathSpec(patterns) if patterns else None


def pattern_spec(lines: Iterable[str], where: str) -> Optional[pathspec.PathSpec]:
    """Patterns from the configuration (`exclude`, `per-file-ignores`): a line git would ignore is an
    error (ValueError naming `where`), since it can only be a mistake."""
    patterns = []
    for line in lines:
        try:
            pattern = compile_pattern(line)
        except InvalidPattern as error:
            raise InvalidPattern(f"{where}: pattern {error}") from None
        if pattern is None:
            raise InvalidPattern(f"{where}: pattern `{line}` is empty or a comment")
        patterns.append(pattern)
    return pathspec.PathSpec(patterns) if patterns else None


class AnchoredPatterns:
    """Patterns each relative to its own folder (the configuration file that wrote it; the current folder
    for the command line's), in order, a later `!pattern` re-including what an earlier one excluded in
    the same folder. Matched against absolute paths; a path outside a pattern's folder never matches it."""

    def __init__(self, patterns: Iterable) -> None:
        """`patterns`: items with `base` (a folder), `text` (the pattern) and `where` (for error messages)."""
        groups: dict[tuple[Path, str], list[str]] = {}
        for item in patterns:
            groups.setdefault((item.base, item.where), []).append(item.text)
        self._specs = [(base, spec) for (base, where), lines in groups.items()
                       if (spec := pattern_spec(lines, where)) is not None]

    def __bool__(self) -> bool:
        return bool(self._specs)

    def match(self, path: Path, is_dir: bool = False) -> bool:
        for base, spec in self._specs:
            try:
                rel = path.relative_to(base).as_posix()
            except ValueError:
                continue
            if spec.match_file(rel + "/" if is_dir else rel):
                return True
        return False
