"""A result cache keyed by file content, like ruff's: a warm run reads and hashes files and nothing more.

One pickle per settings key (gradlint version and code, selected rules, rule options) under the project's
`.gradlint_cache/`, mapping each file's absolute path to (content digest, findings). A key change starts
a new file; a content change misses for that file alone. The warm path imports neither libcst nor any rule.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
from pathlib import Path
from typing import Any, Optional

from . import __version__

_FORMAT = 1


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


class Cache:
    def __init__(self, folder: Path, key: str) -> None:
        self.folder = folder
        self.file = folder / f"{key}.pickle"
        self._entries: dict[str, tuple[bytes, list]] = {}
        self._dirty = False
        try:
            with open(self.file, "rb") as handle:
                self._entries = pickle.load(handle)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError):
            self._entries = {}

    def get(self, path: str, content_digest: bytes) -> Optional[list]:
        entry = self._entries.get(path)
        if entry is not None and entry[0] == content_digest:
            return entry[1]
        return None

    def put(self, path: str, content_digest: bytes, findings: list) -> None:
        self._entries[path] = (content_digest, findings)
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            marker = self.folder / ".gitignore"
            if not marker.exists():
                marker.write_text("# Created by gradlint\n*\n")
                (self.folder / "CACHEDIR.TAG").write_text(
                    "Signature: 8a477f597d28d172789f06886806bc55\n# gradlint's result cache\n")
            temp = self.file.with_suffix(f".{os.getpid()}.tmp")
            with open(temp, "wb") as handle:
                pickle.dump(self._entries, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temp, self.file)
        except OSError:
            pass  # a read-only project still gets checked; it just stays cold
