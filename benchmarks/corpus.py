"""Real PyTorch code to test and time gradlint on, never committed: pinned packages from PyPI and pinned
GitHub snapshots, both listed in `tests/verdicts/corpora.toml` (the one place where corpora are pinned).

`python benchmarks/corpus.py` fetches the PyPI ones and lists what is available. A corpus is named
`pypi:<key>` or `gh:<owner>/<name>`; `corpus_root(name)` gives its folder or raises `CorpusUnavailable`.

- PyPI: wheels are fetched with `pip download --no-deps` into a cache outside the repository
  (`$GRADLINT_CORPUS_DIR`, default `~/.cache/gradlint/corpus`) and their `.py` files unpacked beside them
  (`corpus_dir(key)`).
- GitHub: CI cannot reach GitHub, so snapshots are never fetched here; one is used when
  `$GRADLINT_REPOS_DIR/<owner>+<name>/` exists at the pinned commit, as its `.git` or a line
  `<owner>+<name> <commit>` of `$GRADLINT_REPOS_DIR/COMMITS.txt` says.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

PINS = Path(__file__).resolve().parent.parent / "tests" / "verdicts" / "corpora.toml"
PYPI, GITHUB = "pypi:", "gh:"


def _pins() -> tuple[dict, dict]:
    data = tomllib.loads(PINS.read_text(encoding="utf-8"))
    pypi = {key: tuple(spec.split("==")) for key, spec in data.get("pypi", {}).items()}
    return pypi, dict(data.get("github", {}))


# PyPI key -> (project, pinned version); GitHub "owner/name" -> pinned commit
CORPORA, SNAPSHOTS = _pins()
ALL_CORPORA = tuple([PYPI + key for key in CORPORA] + [GITHUB + repo for repo in SNAPSHOTS])


class CorpusUnavailable(RuntimeError):
    """The corpus cannot be had here: no network for PyPI, no snapshot (or another commit) for GitHub."""


def corpus_root(name: str) -> Path:
    """The folder of corpus `pypi:<key>` or `gh:<owner>/<name>`."""
    if name.startswith(PYPI) and name[len(PYPI):] in CORPORA:
        return corpus_dir(name[len(PYPI):])
    if name.startswith(GITHUB) and name[len(GITHUB):] in SNAPSHOTS:
        return snapshot_dir(name[len(GITHUB):])
    raise KeyError(f"unknown corpus {name!r}: pin it in {PINS.name} ({', '.join(ALL_CORPORA)})")


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gradlint" / "corpus"
    return Path(os.environ.get("GRADLINT_CORPUS_DIR", default))


def corpus_dir(name: str) -> Path:
    """The unpacked `.py` files of PyPI corpus `name`, downloading the wheel on first use."""
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


def snapshot_dir(repo: str) -> Path:
    """`$GRADLINT_REPOS_DIR/<owner>+<name>`, if it holds GitHub repository `repo` at its pinned commit."""
    base = os.environ.get("GRADLINT_REPOS_DIR")
    if not base:
        raise CorpusUnavailable("GRADLINT_REPOS_DIR is not set (a folder of <owner>+<name> snapshots)")
    folder = Path(base) / repo.replace("/", "+")
    if not folder.is_dir():
        raise CorpusUnavailable(f"no snapshot of {repo} at {folder}")
    pinned, commit = SNAPSHOTS[repo], _snapshot_commit(folder)
    if commit is None:
        raise CorpusUnavailable(f"cannot tell the commit of {folder}: no .git, no line in {Path(base) / 'COMMITS.txt'}")
    if commit != pinned:
        raise CorpusUnavailable(f"{folder} is at {commit}; the verdicts are for {pinned}")
    return folder


def _snapshot_commit(folder: Path):
    if (folder / ".git").exists():
        result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.strip()
    try:
        lines = (folder.parent / "COMMITS.txt").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) == 2 and fields[0] == folder.name:
            return fields[1]
    return None


def _find_wheel(folder: Path, project: str, version: str):
    stem = project.replace("-", "_").lower()
    for wheel in folder.glob("*.whl"):
        if wheel.name.lower().startswith(f"{stem}-{version}-"):
            return wheel
    return None


if __name__ == "__main__":
    for key in sys.argv[1:] or ALL_CORPORA:
        try:
            path = corpus_root(key if ":" in key else PYPI + key)
        except CorpusUnavailable as error:
            print(f"{key:36} unavailable: {error}")
            continue
        files = list(path.rglob("*.py"))
        lines = sum(f.read_bytes().count(b"\n") for f in files)
        print(f"{key:36} {len(files):5} files {lines:9} lines  {path}")
