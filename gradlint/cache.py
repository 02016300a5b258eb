"""A result cache keyed by file content, like ruff's: a warm run reads and hashes files and nothing more.

One JSON file per settings key (gradlint version and code, selected rules, rule options, per-file
ignores) in a folder gradlint owns, mapping each file's path to (content digest, findings, warnings):
a hit shows the same findings and warnings (an invalid noqa directive) as the run that filled it. A key change
starts a new file; a content change misses for that file alone. The warm path imports neither libcst nor
any rule.

The cache is data, never code: JSON, each entry checked field by field when it is read; an entry that
is not exactly what gradlint writes is a miss. Whoever can write the folder can make gradlint forget or
invent findings, as with any cache, but cannot make it run anything.

The folder is gradlint's alone: gradlint creates it (with a `.gitignore` and a `CACHEDIR.TAG`), or it
already holds only what gradlint writes there. A folder that holds anything else (a project, a symlink)
is refused and the run goes on without a cache; nothing in it is read or written. Writes into the folder
never follow a symlink.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Optional

from . import __version__
from .diagnostics import SAFE, UNSAFE, Edit, Finding, Fix, Location

_FORMAT = 4  # 3: an entry holds the file's warnings too; 4: findings and edits carry their notebook cell
_GITIGNORE = b"# Created by gradlint\n*\n"
_CACHEDIR_TAG = b"Signature: 8a477f597d28d172789f06886806bc55\n# gradlint's result cache\n"
_MARKERS = {".gitignore": _GITIGNORE, "CACHEDIR.TAG": _CACHEDIR_TAG}
_DATA_FILE = re.compile(r"^[0-9a-f]{24}\.(json|pickle)$")  # .pickle: gradlint 0.1's format, removed
_TEMP_FILE = re.compile(r"^[0-9a-f]{24}\.(?P<pid>\d+)\.tmp$")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class CacheRefused(Exception):
    """The cache folder is not one gradlint may use; the run goes on without a cache."""


def digest(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=16).digest()


def _code_fingerprint() -> str:
    """Size and mtime of gradlint's own modules (subpackages too: the training-loop analysis lives in
    `gradlint/flow`), so an edited rule invalidates results (editable installs)."""
    parts = [__version__]
    package = Path(__file__).parent
    folders = [package] + sorted(p for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    spec = importlib.util.find_spec("gradlint.rules")
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(p) for p in spec.submodule_search_locations]
    for folder in folders:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith(".py"):
                info = entry.stat()
                parts.append(f"{entry.name}:{info.st_size}:{info.st_mtime_ns}")
    return "|".join(parts)


def settings_key(selection: dict[str, Any]) -> str:
    text = json.dumps([_FORMAT, _code_fingerprint(), selection], sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


# -- findings as JSON data --------------------------------------------------------------------------

def _location_data(loc: Location) -> list:
    return [loc.row, loc.column]


def finding_data(f: Finding) -> list:
    fix = None
    if f.fix is not None:
        fix = [f.fix.applicability, f.fix.message,
               [[e.content, *_location_data(e.location), *_location_data(e.end_location), e.cell]
                for e in f.fix.edits]]
    return [f.code, f.message, *_location_data(f.location), *_location_data(f.end_location), f.rule_name,
            list(f.noqa_rows), fix, f.cell]


def _int(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("not a count")
    return value


def _cell(value: Any) -> Optional[int]:
    """A notebook cell's number, or None (a Python file)."""
    return None if value is None else _int(value)


def _str(value: Any) -> str:
    if type(value) is not str:
        raise ValueError("not a string")
    return value


def finding_from_data(data: Any, filename: str) -> Finding:
    """The Finding `finding_data` wrote; ValueError for anything else."""
    if type(data) is not list or len(data) != 10:
        raise ValueError("not a finding")
    code, message, row, column, end_row, end_column, rule_name, noqa_rows, fix_data, cell = data
    fix = None
    if fix_data is not None:
        if type(fix_data) is not list or len(fix_data) != 3 or type(fix_data[2]) is not list:
            raise ValueError("not a fix")
        applicability, fix_message, edits_data = fix_data
        if applicability not in (SAFE, UNSAFE):
            raise ValueError("not an applicability")
        edits = []
        for edit in edits_data:
            if type(edit) is not list or len(edit) != 6:
                raise ValueError("not an edit")
            edits.append(Edit(_str(edit[0]), Location(_int(edit[1]), _int(edit[2])),
                              Location(_int(edit[3]), _int(edit[4])), _cell(edit[5])))
        fix = Fix(applicability, _str(fix_message), tuple(edits))
    if type(noqa_rows) is not list:
        raise ValueError("not rows")
    return Finding(code=_str(code), message=_str(message), filename=filename,
                   location=Location(_int(row), _int(column)), end_location=Location(_int(end_row), _int(end_column)),
                   fix=fix, rule_name=_str(rule_name), noqa_rows=tuple(_int(r) for r in noqa_rows), cell=_cell(cell))


# -- the folder -------------------------------------------------------------------------------------

def _open_folder(folder: Path, create: bool) -> Optional[int]:
    """A descriptor of the cache folder, created with its markers if absent; None if absent and not
    `create`. CacheRefused if the folder is a link or holds anything gradlint does not write there."""
    created = False
    if create:
        try:
            os.makedirs(folder.parent, exist_ok=True)
            os.mkdir(folder, 0o755)
            created = True
        except FileExistsError:
            pass
        except OSError:
            return None  # a read-only project: checked, just never warm
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise CacheRefused(f"cannot use cache folder {folder}: {error.strerror or error}") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise CacheRefused(f"cache folder {folder} is {'a symbolic link' if stat.S_ISLNK(info.st_mode) else 'not a folder'}; "
                           "gradlint only uses a folder of its own")
    try:
        fd = os.open(folder, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
    except OSError as error:
        raise CacheRefused(f"cannot use cache folder {folder}: {error.strerror or error}") from None
    try:
        _check_owned(fd, folder, fresh=created)
        if create:
            _write_markers(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_owned(fd: int, folder: Path, fresh: bool) -> None:
    names = os.listdir(fd)
    if fresh or not names:
        return
    foreign = []
    for name in sorted(names):
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue
        ours = stat.S_ISREG(info.st_mode) and (
            name in _MARKERS or _DATA_FILE.match(name) is not None or _TEMP_FILE.match(name) is not None)
        if not ours:
            foreign.append(name)
    tag_ok = "CACHEDIR.TAG" in names and _read_at(fd, "CACHEDIR.TAG", len(_CACHEDIR_TAG) + 1) == _CACHEDIR_TAG
    if foreign or not tag_ok:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        why = f"it holds files gradlint did not write ({shown})" if foreign else "it has no gradlint CACHEDIR.TAG"
        raise CacheRefused(f"cache folder {folder} is not gradlint's: {why}; not used (choose a new or empty folder)")


def _read_at(fd: int, name: str, limit: int) -> Optional[bytes]:
    try:
        handle = os.open(name, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0), dir_fd=fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            return None
        chunks = []
        while limit < 0 or sum(map(len, chunks)) < limit:
            chunk = os.read(handle, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(handle)


def _write_new(fd: int, name: str, data: bytes) -> None:
    """Create `name` in the folder (never through a link, never over an existing file)."""
    handle = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644, dir_fd=fd)
    with os.fdopen(handle, "wb") as out:
        out.write(data)


def _write_markers(fd: int) -> None:
    for name, content in _MARKERS.items():
        try:
            _write_new(fd, name, content)
        except FileExistsError:
            pass


def _clean(fd: int) -> None:
    """Remove gradlint 0.1's pickles (never read: a pickle can run code) and temp files of dead runs."""
    for name in os.listdir(fd):
        temp = _TEMP_FILE.match(name)
        stale = name.endswith(".pickle") and _DATA_FILE.match(name) is not None
        if temp is not None:
            from .fsio import process_alive

            stale = not process_alive(int(temp.group("pid")))
        if stale:
            try:
                os.unlink(name, dir_fd=fd)
            except OSError:
                pass


class Cache:
    def __init__(self, folder: Path, key: str) -> None:
        """CacheRefused if `folder` exists and is not gradlint's."""
        self.folder = folder
        self.key = key
        self.name = f"{key}.json"
        self._entries: dict[str, Any] = {}
        self._dirty = False
        fd = _open_folder(folder, create=False)
        if fd is None:
            return
        try:
            raw = _read_at(fd, self.name, -1)
        finally:
            os.close(fd)
        if raw is None:
            return
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if type(data) is dict and data.get("format") == _FORMAT and data.get("key") == key \
                and type(data.get("files")) is dict:
            self._entries = data["files"]

    def get(self, path: str, content_digest: bytes) -> Optional[tuple[list[Finding], list[str]]]:
        """(findings, warnings) of the file at `path` with this content; None for a miss."""
        entry = self._entries.get(path)
        if type(entry) is not list or len(entry) != 3 or entry[0] != content_digest.hex() \
                or type(entry[1]) is not list or type(entry[2]) is not list:
            return None
        try:
            return [finding_from_data(item, path) for item in entry[1]], [_str(item) for item in entry[2]]
        except (ValueError, TypeError):
            return None  # not what gradlint writes: a miss, and the entry is replaced

    def put(self, path: str, content_digest: bytes, findings: list[Finding], warnings: list[str] = ()) -> None:
        self._entries[path] = [content_digest.hex(), [finding_data(f) for f in findings], list(warnings)]
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        try:
            fd = _open_folder(self.folder, create=True)
        except CacheRefused:
            return
        if fd is None:
            return
        try:
            _clean(fd)
            temp = f"{self.key}.{os.getpid()}.tmp"
            try:
                os.unlink(temp, dir_fd=fd)
            except FileNotFoundError:
                pass
            data = json.dumps({"format": _FORMAT, "key": self.key, "files": self._entries},
                              separators=(",", ":")).encode()
            _write_new(fd, temp, data)
            os.replace(temp, self.name, src_dir_fd=fd, dst_dir_fd=fd)
        except OSError:
            pass  # a read-only project still gets checked; it just stays cold
        finally:
            os.close(fd)

