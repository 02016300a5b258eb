"""Which files a run checks: Python files under the given paths, minus what the user and git exclude.

Like ruff: directories named like virtualenvs and caches are skipped, as are `exclude` patterns and
what `.gitignore` files ignore; a file named on the command line is always checked. Symlinked
directories are not followed, so a symlink loop cannot trap the walk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pathspec

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


class PathNotFound(Exception):
    pass


def _spec(patterns: Iterable[str]) -> Optional[pathspec.PathSpec]:
    patterns = [p for p in patterns if p and not p.startswith("#")]
    return pathspec.PathSpec.from_lines(GITIGNORE_SYNTAX, patterns) if patterns else None


@dataclass
class Excluder:
    root: Path
    exclude: Sequence[str] = ()
    respect_gitignore: bool = True
    _user: Optional[pathspec.PathSpec] = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._user = _spec(self.exclude)
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
                lines = (directory / ".gitignore").read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                lines = []
            self._gitignores[directory] = _spec(lines)
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


def _git_chain(start: Path) -> list[Path]:
    """Directories from the enclosing git work tree's root down to `start` (their .gitignores apply)."""
    chain = [start]
    for parent in start.parents:
        chain.append(parent)
        if (parent / ".git").exists():
            return list(reversed(chain))
    if (start / ".git").exists():
        return [start]
    return [start]  # not in a git repository: only .gitignores found during the walk apply


def discover(paths: Sequence[str], excluder: Excluder, force_exclude: bool = False) -> list[Path]:
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists() and not path.is_symlink():
            raise PathNotFound(raw)
        if not path.is_dir():
            resolved = path.absolute()
            if force_exclude and (excluder.user_excluded(Path(os.path.abspath(path)), False)
                                  or any(excluder.user_excluded(parent, True)
                                         for parent in Path(os.path.abspath(path)).parents)):
                continue
            if resolved not in seen:  # named explicitly: always checked (unless --force-exclude)
                seen.add(resolved)
                found.append(path)
            continue
        root = path.absolute()
        chain = _git_chain(root)
        stack = [(path, chain)]
        while stack:
            directory, dir_chain = stack.pop()
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError:
                continue
            subdirs = []
            for entry in entries:
                entry_path = Path(entry.path)
                absolute = Path(os.path.abspath(entry.path))
                if entry.is_dir(follow_symlinks=False):
                    if (entry.name in DEFAULT_EXCLUDE or (absolute / "pyvenv.cfg").exists()
                            or excluder.user_excluded(absolute, True)
                            or excluder.git_ignored(absolute, True, dir_chain)):
                        continue
                    subdirs.append((entry_path, [*dir_chain, absolute]))
                elif entry.name.endswith(PYTHON_SUFFIXES) and entry.is_file():
                    if excluder.user_excluded(absolute, False) or excluder.git_ignored(absolute, False, dir_chain):
                        continue
                    if absolute not in seen:
                        seen.add(absolute)
                        found.append(entry_path)
            stack.extend(reversed(subdirs))
    return found
