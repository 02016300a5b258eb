"""Which files a run checks: the files under the given paths that `include` names (Python files and
Jupyter notebooks by default), minus what the user and git exclude.

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
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import pathspec

from .fsio import is_temp_file, remove_stale_temp_files
from .patterns import gitignore_spec

if TYPE_CHECKING:
    from .settings import Resolver

DEFAULT_EXCLUDE = (
    ".bzr", ".direnv", ".eggs", ".git", ".git-rewrite", ".hg", ".ipynb_checkpoints", ".mypy_cache",
    ".nox", ".pants.d", ".pyenv", ".pytest_cache", ".pytype", ".ruff_cache", ".svn", ".tox", ".venv",
    ".vscode", "__pypackages__", "_build", "buck-out", "dist", "node_modules", "site-packages", "venv",
    ".gradlint_cache",
)


class PathNotFound(Exception):
    pass


# -- .gitignore files ---------------------------------------------------------------------------------

class GitIgnores:
    """The `.gitignore` files of the folders a walk meets, each read once."""

    def __init__(self) -> None:
        self._specs: dict[Path, Optional[pathspec.PathSpec]] = {}

    def of(self, directory: Path) -> Optional[pathspec.PathSpec]:
        if directory not in self._specs:
            try:
                with open(directory / ".gitignore", "rb") as handle:  # a FIFO here would be odd, not fatal
                    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                        raise OSError("not a regular file")
                    lines = handle.read().decode("utf-8", errors="replace").splitlines()
            except OSError:
                lines = []
            self._specs[directory] = gitignore_spec(lines)
        return self._specs[directory]

    def ignored(self, path: Path, is_dir: bool, chain: Sequence[Path]) -> bool:
        ignored = False
        for base in chain:  # outermost first; a deeper .gitignore can re-include with `!`
            spec = self.of(base)
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


def _force_excluded(path: Path, resolver: "Resolver") -> bool:
    """`force-exclude`: a path named on the command line that its folder's settings exclude, or that
    lies in a folder they exclude."""
    absolute = Path(os.path.abspath(path))
    settings = resolver.for_folder(absolute.parent)
    return settings.force_exclude and (settings.excludes(absolute, os.path.isdir(absolute))
                                       or any(settings.excludes(parent, True) for parent in absolute.parents))


def _named_file(raw: str, path: Path, found: Discovery) -> Optional[str]:
    """The real path of a file named on the command line, or None if it is skipped."""
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


def discover(paths: Sequence[str], resolver: Optional["Resolver"] = None) -> Discovery:
    """The files to check under `paths`, each folder excluding by its own settings (`resolver`'s; by
    default those of the current folder's configuration files)."""
    if resolver is None:
        from .settings import Resolver

        resolver = Resolver(Path.cwd())
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
    gitignores = GitIgnores()
    for raw in paths:
        path = Path(raw)
        if _force_excluded(path, resolver):
            continue
        if not os.path.isdir(path):
            real = _named_file(raw, path, found)
            if real is not None:
                add(path, real)
                named_folders.add(os.path.dirname(os.path.abspath(path)))
            continue
        _walk(path, resolver, gitignores, found, add, links)
    for folder in named_folders:  # what a killed `fix --write` of these files left
        remove_stale_temp_files(folder)
    for link, real in links:
        if real in real_of:
            continue  # the file itself is checked
        if not _inside(real, roots):
            found.outside_links.add(link)
        add(link, real)
    return found


def _walk(path: Path, resolver: "Resolver", gitignores: GitIgnores, found: Discovery, add, links: list) -> None:
    """Each folder's entries are excluded by the folder's settings (a subfolder with a configuration file
    of its own is excluded, or not, by its parent's, as in ruff)."""
    root = Path(os.path.abspath(path))
    real_root = os.path.realpath(path)
    # Only folders with a .gitignore are kept in a chain (a path 5 000 folders deep stays linear).
    stack = [(path, root, [d for d in _git_chain(root) if gitignores.of(d)])]
    while stack:
        directory, absolute_directory, dir_chain = stack.pop()
        settings = resolver.for_folder(absolute_directory)
        chain = dir_chain if settings.respect_gitignore else ()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            found.errors.append(f"{directory}: cannot list this folder ({_reason(error)}); not checked")
            continue
        subdirs, temps = [], []
        for entry in entries:
            entry_path = Path(entry.path)
            absolute = absolute_directory / entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if (entry.name in DEFAULT_EXCLUDE or os.path.lexists(absolute / "pyvenv.cfg")
                            or settings.excludes(absolute, True) or gitignores.ignored(absolute, True, chain)):
                        continue
                    has_rules = gitignores.of(absolute) is not None
                    subdirs.append((entry_path, absolute, [*dir_chain, absolute] if has_rules else dir_chain))
                    continue
                if entry.name.startswith(".") and is_temp_file(entry.name):
                    temps.append(entry.name)
                    continue
                if not settings.includes(absolute) or not entry.is_file():
                    continue
            except OSError as error:  # a link loop, a name too long to stat
                found.warnings.append(f"{entry_path}: {_reason(error)}; skipped")
                continue
            if settings.excludes(absolute) or gitignores.ignored(absolute, False, chain):
                continue
            if entry.is_symlink():
                links.append((entry_path, os.path.realpath(entry.path)))
            else:  # folder links are not followed, so this file's real path is the walk root's plus its own
                add(entry_path, os.path.join(real_root, os.path.relpath(absolute, root)))
        if temps:
            remove_stale_temp_files(directory, temps)
        stack.extend(reversed(subdirs))
