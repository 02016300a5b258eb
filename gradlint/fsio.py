"""Reading sources byte-exactly and writing them back atomically.

A file comes back with the same encoding, BOM and line endings it had; only the fixed spans differ.
A write goes to a temporary file in the same directory, keeps the mode, and replaces the original with
`os.replace`, so an interrupted run leaves either the old file or the new one, never half of each.
"""

from __future__ import annotations

import codecs
import io
import os
import stat
import tempfile
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


def read_source(path: Union[str, Path]) -> Source:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SourceError("No such file or directory") from None
    except IsADirectoryError:
        raise SourceError("Is a directory") from None
    except OSError as error:
        raise SourceError(error.strerror or str(error)) from None
    text, encoding, bom = decode(raw)
    return Source(path, raw, text, encoding, bom)


def atomic_write(path: Union[str, Path], data: bytes, expected: bytes) -> None:
    """Replace `path` with `data` if it still holds `expected`; the original is untouched on any error."""
    real = Path(os.path.realpath(path))  # a symlink keeps pointing at the (now fixed) file
    try:
        info = real.stat()
        current = real.read_bytes()
    except OSError as error:
        raise WriteError(f"cannot read back before writing: {error.strerror or error}") from None
    if current != expected:
        raise WriteError("changed on disk while gradlint ran; not written")
    mode = stat.S_IMODE(info.st_mode)
    # As root, os.access says yes to everything: the mode bits are the user's intent.
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(real, os.W_OK):
        raise WriteError("file is read-only; not written")
    fd, temp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".gradlint-tmp", dir=real.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, real)
    except BaseException as error:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise WriteError(f"cannot write: {error.strerror or error}") from None
        raise
