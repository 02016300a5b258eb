"""Which files a run checks: Python files under the given paths, minus what the user and git exclude.

Like ruff: directories named like virtualenvs and caches are skipped, as are `exclude` patterns and
what `.gitignore` files ignore; a file named on the command line is always checked (unless
`--force-exclude`). A symlinked directory met in a walk is not followed (so a symlink loop cannot trap
the walk); a symlinked file is. Each file is checked once: a link to a file the walk also reaches is
dropped in favour of the file itself.

Symlinks and writes: a file named on the command line is fixed through its link, wherever the link
points (the user named it). A link met in a walk whose target lies outside the paths given is checked
but never rewritten: `fix --write` says so and leaves it (ruff writes through such a link; a fix must not
reach outside what the user asked it to fix).

The walk never stops on one entry: a link loop is skipped with a warning; a folder that cannot be
listed (no permission, a path longer than the system allows) is an error that names it, and the walk
goes on. A FIFO, socket or device named on the command line is skipped with a warning, never opened.

`.gitignore` lines are read as git reads them: a line git ignores (`/`, `!`, a trailing backslash)
matches nothing, and a reversed range (`[z-a]`) matches its first character. In `exclude` patterns such
lines are configuration errors: they can only be a mistake.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pathspec

from .fsio import is_temp_file, remove_stale_temp_files

DEFAULT_EXCLUDE = (
    ".bzr", ".direnv", ".eggs", ".git", ".git-rewrite", ".hg", ".ipynb_checkpoints", ".mypy_cache",
    ".nox", ".pants.d", ".pyenv", ".pytest_cache", ".pytype", ".ruff_cache", ".svn", ".tox", ".venv",
    ".vscode", "__pypackages__", "_build", "buck-out", "dist", "node_modules", "site-packages", "venv",
    ".gradlint_cache",
)
PYTHON_SUFFIXES = (".py", ".pyi")
# pathspec 1.x calls git's syntax "gitignore"; older releases only know "gitwildmatch".
try:
    pathspec.util.lookup_pattern("gitignore")
    GITIGNORE_SYNTAX = "gitignore"
except KeyError:
    GITIGNORE_SYNTAX = "gitwildmatch"
_PATTERN = pathspec.util.lookup_pattern(GITIGNORE_SYNTAX)


class PathNotFound(Exception):
    pass


class InvalidPattern(ValueError):
    """A pattern git would ignore or cannot read; the message says why."""


# -- patterns, as git reads them --------------------------------------------------------------------

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


# -- excluding --------------------------------------------------------------------------------------

@dataclass
class Excluder:
    root: Path
    exclude: Sequence[str] = ()
    respect_gitignore: bool = True
    where: str = "exclude"
    _user: Optional[pathspec.PathSpec] = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._user = pattern_spec(self.exclude, self.where)
        self._gitignores: dict[Path, Optional[pathspec.PathSpec]] = {}

    def user_excluded(self, path: Path, is_dir: bool) -> bool:
        if self._user is None:
            return False
        try:
            rel = path.relative_to(self.root).as_posix()
        except ValueError:
            return False  # patterns are relative to the project root
        return self._user.match_file(rel + "/" if is_dir else rel)

    def gitignore_for(self, directory: Path) -> Optional[pathspec.PathSpec]:
        if directory not in self._gitignores:
            try:
                with open(directory / ".gitignore", "rb") as handle:  # a FIFO here would be odd, not fatal
                    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                        raise OSError("not a regular file")
                    lines = handle.read().decode("utf-8", errors="replace").splitlines()
            except OSError:
                lines = []
            self._gitignores[directory] = gitignore_spec(lines)
        return self._gitignores[directory]

    def git_ignored(self, path: Path, is_dir: bool, chain: Sequence[Path]) -> bool:
        if not self.respect_gitignore:
            return False
        ignored = False
        for base in chain:  # outermost first; a deeper .gitignore can re-include with `!`
            spec = self.gitignore_for(base)
            if spec is None:
                continue
            rel = path.relative_to(base).as_posix() + ("/" if is_dir else "")
            for pattern in spec.patterns:
                if pattern.include is None:
                    continue
                if pattern.match_file(rel) is not None:
                    ignored = bool(pattern.include)
        return ignored


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _git_chain(start: Path) -> list[Path]:
    """Directories from the enclosing git work tree's root down to `start` (their .gitignores apply)."""
    chain = [start]
    for parent in start.parents:
        chain.append(parent)
        if _exists(parent / ".git"):
            return list(reversed(chain))
    return [start]  # not in a git repository: only .gitignores found during the walk apply


# -- the walk ---------------------------------------------------------------------------------------

@dataclass
class Discovery:
    files: list[Path] = field(default_factory=list)
    # Links met in a walk whose target lies outside the paths given: checked, never written.
    outside_links: set[Path] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # something under the paths given was not checked


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _inside(real: str, roots: Sequence[str]) -> bool:
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _named_file(raw: str, path: Path, excluder: Excluder, force_exclude: bool, found: Discovery) -> Optional[str]:
    """The real path of a file named on the command line, or None if it is skipped."""
    absolute = Path(os.path.abspath(path))
    if force_exclude and (excluder.user_excluded(absolute, False)
                          or any(excluder.user_excluded(parent, True) for parent in absolute.parents)):
        return None
    try:
        info = os.stat(path)
    except OSError:
        return os.path.realpath(path)  # reading it reports why (E902)
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode)
                else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a regular file")
        found.warnings.append(f"{raw}: {kind}, not a Python file; skipped")
        return None
    return os.path.realpath(path)


def discover(paths: Sequence[str], excluder: Excluder, force_exclude: bool = False) -> Discovery:
    found = Discovery()
    for raw in paths:
        path = Path(raw)
        if not os.path.lexists(path):
            raise PathNotFound(raw)
    roots = [os.path.realpath(raw) for raw in paths]
    real_of: dict[str, Path] = {}  # real path -> the path checked
    links: list[tuple[Path, str]] = []  # links met in walks, decided once every file is known

    def add(entry_path: Path, real: str) -> None:
        if real not in real_of:
            real_of[real] = entry_path
            found.files.append(entry_path)

    named_folders = set()
    for raw in paths:
        path = Path(raw)
        if not os.path.isdir(path):
            real = _named_file(raw, path, excluder, force_exclude, found)
            if real is not None:
                add(path, real)
                named_folders.add(os.path.dirname(os.path.abspath(path)))
            continue
        _walk(path, excluder, found, add, links)
    for folder in named_folders:  # what a killed `fix --write` of these files left
        remove_stale_temp_files(folder)
    for link, real in links:
        if real in real_of:
            continue  # the file itself is checked
        if not _inside(real, roots):
            found.outside_links.add(link)
        add(link, real)
    return found


def _walk(path: Path, excluder: Excluder, found: Discovery, add, links: list) -> None:
    root = Path(os.path.abspath(path))
    real_root = os.path.realpath(path)
    # Only folders with a .gitignore are kept in a chain (a path 5 000 folders deep stays linear).
    stack = [(path, [d for d in _git_chain(root) if excluder.respect_gitignore and excluder.gitignore_for(d)])]
    while stack:
        directory, dir_chain = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            found.errors.append(f"{directory}: cannot list this folder ({_reason(error)}); not checked")
            continue
        subdirs, temps = [], []
        for entry in entries:
            entry_path = Path(entry.path)
            absolute = Path(os.path.abspath(entry.path))
            try:
                if entry.is_dir(follow_symlinks=False):
                    if (entry.name in DEFAULT_EXCLUDE or os.path.lexists(absolute / "pyvenv.cfg")
                            or excluder.user_excluded(absolute, True)
                            or excluder.git_ignored(absolute, True, dir_chain)):
                        continue
                    has_rules = excluder.respect_gitignore and excluder.gitignore_for(absolute) is not None
                    subdirs.append((entry_path, [*dir_chain, absolute] if has_rules else dir_chain))
                    continue
                if entry.name.startswith(".") and is_temp_file(entry.name):
                    temps.append(entry.name)
                    continue
                if not entry.name.endswith(PYTHON_SUFFIXES) or not entry.is_file():
                    continue
            except OSError as error:  # a link loop, a name too long to stat
                found.warnings.append(f"{entry_path}: {_reason(error)}; skipped")
                continue
            if excluder.user_excluded(absolute, False) or excluder.git_ignored(absolute, False, dir_chain):
                continue
            if entry.is_symlink():
                links.append((entry_path, os.path.realpath(entry.path)))
            else:  # folder links are not followed, so this file's real path is the walk root's plus its own
                add(entry_path, os.path.join(real_root, os.path.relpath(absolute, root)))
        if temps:
            remove_stale_temp_files(directory, temps)
        stack.extend(reversed(subdirs))
