"""Which of the user's files a run imported, and serving fixed sources of exactly those to the patched run.

The original run records the project files it imported (`project_files`): Python sources that are not
the standard library, not installed packages (site-packages, dist-packages) and not gradlint. The
parent fixes those files' text (nothing is written next to them) and the patched run gets the fixed
text through an import hook (`PatchedSources`): a meta-path finder in front of the others that lets them
find the module as usual and swaps in a loader serving the fixed text, compiled under the file's own
name. No copy of the tree: data files, relative paths, packages outside the script's folder and
`python -m pkg.mod` with relative imports all stay as they are. `linecache` holds the fixed text, so
tracebacks and reported lines show the code that ran. Torch-free (the harness imports it before torch).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import linecache
import os
import sys
import sysconfig
from typing import Optional

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the gradlint package


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= {os.path.join(p, "lib") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return tuple(os.path.realpath(d) + os.sep for d in dirs if d)


def is_project_file(path: str, library_dirs: Optional[tuple[str, ...]] = None) -> bool:
    """A Python source of the user's: not stdlib, not an installed package, not gradlint's own."""
    if not path.endswith(".py") or not os.path.isfile(path):
        return False
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    if real.startswith(_HERE + os.sep):
        return False
    return not any(real.startswith(d) for d in (library_dirs or _library_dirs()))


def project_files(extra: tuple[str, ...] = (), generated: tuple[str, ...] = ()) -> list[str]:
    """The project files among the imported modules (and `extra`, the script), as real paths, sorted; code
    generated under the `generated` folders (torch.compile's kernels) is not the user's."""
    dirs = _library_dirs() + tuple(os.path.realpath(d) + os.sep for d in generated)
    found = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and is_project_file(path, dirs):
            found.add(os.path.realpath(path))
    found.update(os.path.realpath(p) for p in extra if is_project_file(p, dirs))
    return sorted(found)


def remember_source(path: str, text: str) -> None:
    """Tracebacks and reported lines read `linecache`; an entry without mtime is never checked against the
    file on disk (which holds the original text)."""
    linecache.cache[path] = (len(text), None, text.splitlines(keepends=True), path)


class _FixedLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, text: str, served: set):
        super().__init__(fullname, path)
        self.text, self.served = text, served

    def get_source(self, fullname):
        return self.text

    def get_code(self, fullname):
        self.served.add(self.path)
        remember_source(self.path, self.text)
        return compile(self.text, self.path, "exec", dont_inherit=True)

    def set_data(self, *args, **kwargs):  # never a .pyc of the fixed text next to the user's file
        return None


class PatchedSources(importlib.abc.MetaPathFinder):
    """Serves `sources` (real path -> fixed text) in place of the files; records which were served."""

    def __init__(self, sources: dict[str, str]):
        self.sources = {os.path.realpath(p): t for p, t in sources.items()}
        self.served: set[str] = set()
        self._looking: set[str] = set()  # names being found: another finder that asks the meta path back

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self._looking:
            return None
        self._looking.add(fullname)
        try:
            return self._find_spec(fullname, path, target)
        finally:
            self._looking.discard(fullname)

    def install(self) -> None:
        sys.meta_path.insert(0, self)

    def _find_spec(self, fullname, path, target):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            origin = spec.origin and os.path.realpath(spec.origin)
            text = self.sources.get(origin) if origin else None
            if text is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader):
                spec.loader = _FixedLoader(fullname, spec.origin, text, self.served)
            return spec
        return None

    def text_of(self, path: str) -> Optional[str]:
        return self.sources.get(os.path.realpath(path))
