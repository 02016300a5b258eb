"""Reading sources byte-exactly and writing them back atomically.

A file comes back with the same encoding, BOM and line endings it had; only the fixed spans differ.
A write goes to a temporary file in the same directory, keeps the mode, owner and group, and replaces
the original with `os.replace`, so an interrupted run leaves either the old file or the new one, never
half of each. The temporary file's name carries the writer's process id: one left behind by a killed run
is removed by the next run that meets it (`remove_stale_temp_files`), never one a live run is writing.

Files are opened without blocking and must be regular files: a FIFO or a device named `x.py` is refused,
not waited on.
"""

from __future__ import annotations

import codecs
import errno
import io
import os
import re
import secrets
import stat
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Union

BOM = codecs.BOM_UTF8


class SourceError(Exception):
    """The file cannot be read as Python source (missing, unreadable, not decodable)."""


class WriteError(Exception):
    """The fixed file was not written; the original is untouched."""


@dataclass(frozen=True)
class Source:
    path: Path
    raw: bytes
    text: str
    encoding: str
    bom: bool

    def encode(self, text: str) -> bytes:
        data = text.encode(self.encoding)
        return BOM + data if self.bom else data


def decode(raw: bytes) -> tuple[str, str, bool]:
    """(text, encoding, had_bom). UTF-8 unless a PEP 263 coding cookie says otherwise."""
    bom = raw.startswith(BOM)
    body = raw[len(BOM):] if bom else raw
    try:
        return body.decode("utf-8"), "utf-8", bom
    except UnicodeDecodeError as error:
        utf8_error = error
    if not bom:
        try:
            encoding, _ = tokenize.detect_encoding(io.BytesIO(body).readline)
        except SyntaxError:
            encoding = "utf-8"
        if encoding not in ("utf-8", "utf-8-sig"):
            try:
                return body.decode(encoding), encoding, False
            except (UnicodeDecodeError, LookupError):
                pass
    raise SourceError(f"not valid UTF-8 and no working coding declaration ({utf8_error.reason} at byte "
                      f"{utf8_error.start})")


def read_regular(path: Union[str, Path]) -> bytes:
    """The bytes of a regular file; SourceError for anything else (a FIFO is never waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as error:
        raise SourceError(error.strerror or str(error)) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise SourceError("Is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise SourceError("not a regular file")
        chunks = []
        while True:
            chunk = os.read(fd, max(info.st_size + 1, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as error:
        raise SourceError(error.strerror or str(error)) from None
    finally:
        os.close(fd)


def read_source(path: Union[str, Path]) -> Source:
    path = Path(path)
    raw = read_regular(path)
    text, encoding, bom = decode(raw)
    return Source(path, raw, text, encoding, bom)


def declared_encoding_error(raw: bytes) -> Union[str, None]:
    """CPython's complaint about the file's encoding declaration (a BOM with a latin-1 cookie, an unknown
    codec), or None. Such a file is E999: `python file.py` refuses it."""
    try:
        tokenize.detect_encoding(io.BytesIO(raw).readline)
    except SyntaxError as error:
        return str(error)
    return None


# -- writing ----------------------------------------------------------------------------------------

TEMP_SUFFIX = ".gradlint-tmp"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + "$")
_OLD_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")  # gradlint 0.1
ABANDONED_AFTER_S = 3600  # a temp file without a process id is someone's only after this long


def _temp_name(name: str) -> str:
    return f".{name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, someone else's
    return True


def is_temp_file(name: str) -> bool:
    return name.endswith(TEMP_SUFFIX) and bool(_TEMP_NAME.match(name) or _OLD_TEMP_NAME.match(name))


def remove_stale_temp_files(directory: Union[str, Path], names: Union[list, None] = None) -> None:
    """Remove the temporary files that a killed `fix --write` left in `directory`: ours by name, regular
    files (a link is never followed), and written by a process that no longer runs."""
    try:
        candidates = names if names is not None else [e.name for e in os.scandir(directory)]
    except OSError:
        return
    for name in candidates:
        if not is_temp_file(name):
            continue
        path = os.path.join(directory, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        match = _TEMP_NAME.match(name)
        if match is not None:
            if process_alive(int(match.group("pid"))):
                continue
        elif time.time() - info.st_mtime < ABANDONED_AFTER_S:
            continue
        try:
            os.unlink(path)
        except OSError:
            pass


def atomic_write(path: Union[str, Path], data: bytes, expected: bytes) -> None:
    """Replace `path` with `data` if it still holds `expected`; the original is untouched on any error.

    The new file keeps the old one's mode, owner and group (as root, a plain rewrite would hand a
    `nobody:nogroup` file to root)."""
    real = Path(os.path.realpath(path))  # a symlink keeps pointing at the (now fixed) file
    try:
        info = os.stat(real)
        current = read_regular(real)
    except (OSError, SourceError) as error:
        raise WriteError(f"cannot read back before writing: {getattr(error, 'strerror', None) or error}") from None
    if current != expected:
        raise WriteError("changed on disk while gradlint ran; not written")
    mode = stat.S_IMODE(info.st_mode)
    # As root, os.access says yes to everything: the mode bits are the user's intent.
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(real, os.W_OK):
        raise WriteError("file is read-only; not written")
    temp = real.parent / _temp_name(real.name)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as error:
        reason = "folder is read-only" if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else (
            error.strerror or str(error))
        raise WriteError(f"cannot write: {reason}; not written") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            _keep_owner(handle.fileno(), info)
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, real)
    except BaseException as error:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise WriteError(f"cannot write: {error.strerror or error}; not written") from None
        raise


def _keep_owner(fd: int, info: os.stat_result) -> None:
    """Give the new file the old one's owner and group, as far as this process may (root may; another
    user may at least keep a group it belongs to)."""
    if not hasattr(os, "fchown"):
        return
    mine = os.fstat(fd)
    if (mine.st_uid, mine.st_gid) == (info.st_uid, info.st_gid):
        return
    try:
        os.fchown(fd, info.st_uid, info.st_gid)
    except OSError:
        try:
            os.fchown(fd, -1, info.st_gid)
        except OSError:
            pass
