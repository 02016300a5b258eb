"""The tools gradlint is measured against, each pinned from PyPI in its own venv outside the repository.

TorchFix pins libcst<1.6 and Fixit wants a newer one, so each peer gets its own venv under
``~/.cache/gradlint/bench-venvs/<name>`` (``$GRADLINT_BENCH_DIR`` overrides the folder). The slow peers'
timings (minutes per corpus) are kept in ``peer-timings.json`` beside the venvs, keyed by tool version,
corpus version, Python and CPU count, and reused until ``--refresh-peers``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import venv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from .measure import Measurement


@dataclass(frozen=True)
class Peer:
    name: str  # venv folder and table label
    label: str
    requirement: str  # pinned
    command: Callable[[Path, Path], list]  # (venv, corpus path) -> argv
    slow: bool  # timings cached across runs


def _bin(venv_dir: Path, name: str) -> str:
    return str(venv_dir / ("Scripts" if os.name == "nt" else "bin") / name)


PEERS = {
    "torchfix": Peer("torchfix", "TorchFix 0.7.0 --select ALL", "torchfix==0.7.0",
                     lambda v, p: [_bin(v, "torchfix"), "--select", "ALL", str(p)], slow=True),
    "fixit": Peer("fixit", "Fixit 2.2.1 lint", "fixit==2.2.1",
                  lambda v, p: [_bin(v, "fixit"), "lint", str(p)], slow=True),
    "ruff": Peer("ruff", "ruff 0.17.6", "ruff==0.17.6",
                 lambda v, p: [_bin(v, "ruff"), "check", "--select", "ALL", "--exit-zero", "--quiet", str(p)],
                 slow=False),
}


def bench_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gradlint" / "bench-venvs"
    return Path(os.environ.get("GRADLINT_BENCH_DIR", default))


def ensure_venv(peer: Peer, log: Callable[[str], None] = print) -> Path:
    """The peer's venv, created and filled with the pinned requirement on first use."""
    folder = bench_root() / peer.name
    marker = folder / f".installed-{peer.requirement}"
    if marker.exists():
        return folder
    log(f"installing {peer.requirement} into {folder} ...")
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    result = subprocess.run([_bin(folder, "python"), "-m", "pip", "install", "--quiet",
                             "--disable-pip-version-check", peer.requirement],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip install {peer.requirement} failed:\n{result.stderr[-2000:]}")
    marker.touch()
    return folder


def workdir(name: str) -> Path:
    """A cwd (and cache home) for a tool's runs, outside the repository: no config of ours is found."""
    folder = bench_root() / "work" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _timings_file() -> Path:
    return bench_root() / "peer-timings.json"


def timing_key(peer: Peer, corpus: str, corpus_version: str) -> str:
    return (f"{peer.requirement}|{corpus}=={corpus_version}|py{platform.python_version()}"
            f"|cpus{_cpus()}")


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_cached(key: str) -> Optional[dict]:
    try:
        return json.loads(_timings_file().read_text()).get(key)
    except (OSError, ValueError):
        return None


def store_cached(key: str, runs: list[Measurement], files: int) -> None:
    path = _timings_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[key] = {"runs": [asdict(m) for m in runs], "files": files,
                 "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "python": sys.version.split()[0]}
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(data, indent=1))
    temp.replace(path)


def measurements_of(entry: dict) -> list[Measurement]:
    return [Measurement(**m) for m in entry["runs"]]
