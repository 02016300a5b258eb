"""Where in the user's code something happened: the innermost frame that is not torch, gradlint or stdlib."""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig
from typing import Optional

_SKIP: Optional[tuple[str, ...]] = None


def _skipped_prefixes() -> tuple[str, ...]:
    global _SKIP
    if _SKIP is None:
        import torch

        here = os.path.dirname(os.path.abspath(__file__))
        stdlib = sysconfig.get_paths().get("stdlib", "")
        _SKIP = tuple(p + os.sep for p in (os.path.dirname(os.path.abspath(torch.__file__)), here, stdlib) if p)
    return _SKIP


def is_user(filename: str) -> bool:
    if filename.startswith("<"):
        return False
    for prefix in _skipped_prefixes():
        if filename.startswith(prefix):
            # Third-party code under the stdlib folder (a non-venv site-packages) is still code to blame.
            return "site-packages" in filename[len(prefix):] or "dist-packages" in filename[len(prefix):]
    return True


def user_frame(depth: int = 1):
    frame = sys._getframe(depth + 1)
    while frame is not None and not is_user(frame.f_code.co_filename):
        frame = frame.f_back
    return frame


def site_of(frame) -> Optional[dict]:
    if frame is None:
        return None
    filename, line = frame.f_code.co_filename, frame.f_lineno
    return {"file": filename, "line": line, "function": frame.f_code.co_name,
            "code": linecache.getline(filename, line).strip()}


def user_site(depth: int = 1) -> Optional[dict]:
    return site_of(user_frame(depth + 1))


def site_key(site: Optional[dict]) -> str:
    return f"{site['file']}:{site['line']}" if site else "?"


def _library(filename: str) -> bool:
    return "site-packages" in filename or "dist-packages" in filename


def chain_of(frame, limit: int = 8) -> tuple:
    """The user's frames that led to `frame`, outermost first, as (file, line, function): the project's own
    code (a library's frames, Lightning's loops, are left out; `frame` itself is kept wherever it is)."""
    out = []
    inner = frame
    while frame is not None:
        name = frame.f_code.co_filename
        if frame is inner or (is_user(name) and not _library(name)):
            out.append((name, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    return tuple(reversed(out[:limit]))


def described(chain: tuple) -> list[dict]:
    """A chain of `chain_of` with each line's code."""
    return [{"file": f, "line": n, "function": fn, "code": linecache.getline(f, n).strip()} for f, n, fn in chain]


def context(site: Optional[dict], around: int = 3) -> list[dict]:
    """The lines around a site (`around` before and after), each {"line", "code"}: from linecache, which holds
    the fixed text the patched run was served (see `imports.remember_source`)."""
    if not site or not site.get("file") or not site.get("line"):
        return []
    lines = linecache.getlines(site["file"])
    first, last = max(1, site["line"] - around), min(len(lines), site["line"] + around)
    return [{"line": n, "code": lines[n - 1].rstrip("\n")} for n in range(first, last + 1)]
