"""Real PyTorch code to test and time gradlint on: pinned packages from PyPI, never committed.

`python benchmarks/corpus.py` fetches them all; tests and benchmarks call `corpus_dir(name)`.
Wheels are fetched with `pip download --no-deps` into a cache outside the repository
(`$GRADLINT_CORPUS_DIR`, default `~/.cache/gradlint/corpus`) and their `.py` files unpacked beside them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

# name -> (PyPI project, pinned version)
CORPORA = {
    "open_clip": ("open-clip-torch", "3.3.0"),
    "timm": ("timm", "1.0.31"),
    "transformers": ("transformers", "5.24.0"),
    "lightning": ("lightning", "2.6.6"),
}


class CorpusUnavailable(RuntimeError):
    """The package could not be downloaded (no network, say)."""


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gradlint" / "corpus"
    return Path(os.environ.get("GRADLINT_CORPUS_DIR", default))


def corpus_dir(name: str) -> Path:
    """The unpacked `.py` files of corpus `name`, downloading the wheel on first use."""
    project, version = CORPORA[name]
    root = cache_root()
    target = root / "src" / f"{name}-{version}"
    done = target / ".complete"
    if done.exists():
        return target
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = _find_wheel(wheels, project, version)
    if wheel is None:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--dest", str(wheels), f"{project}=={version}"]
        result = subprocess.run(command, capture_output=True, text=True)
        wheel = _find_wheel(wheels, project, version)
        if result.returncode != 0 or wheel is None:
            raise CorpusUnavailable(f"pip download {project}=={version} failed:\n{result.stderr[-2000:]}")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.endswith(".py") and ".dist-info/" not in member:
                archive.extract(member, target)
    done.touch()
    return target


def python_files(name: str) -> list[Path]:
    return sorted(corpus_dir(name).rglob("*.py"))


def _find_wheel(folder: Path, project: str, version: str):
    stem = project.replace("-", "_").lower()
    for wheel in folder.glob("*.whl"):
        if wheel.name.lower().startswith(f"{stem}-{version}-"):
            return wheel
    return None


if __name__ == "__main__":
    for key in sys.argv[1:] or CORPORA:
        path = corpus_dir(key)
        files = list(path.rglob("*.py"))
        lines = sum(f.read_bytes().count(b"\n") for f in files)
        print(f"{key:14} {len(files):5} files {lines:9} lines  {path}")
