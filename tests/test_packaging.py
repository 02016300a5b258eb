"""The package as PyPI would ship it: built without warnings, installed in a fresh venv without torch."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import tomllib

import gradlint

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    pytest.importorskip("build", reason="pip install -e '.[test]' installs `build`")
    out = tmp_path_factory.mktemp("dist")
    # PYTHONDONTWRITEBYTECODE (set on some machines) makes setuptools warn that it skips byte-compiling.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout + done.stderr


def _fresh_venv(path: Path, *install: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    python = path / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", *install], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def test_build_gives_a_wheel_and_an_sdist_without_warnings(dist):
    out, log = dist
    version = PYPROJECT["project"]["version"]
    assert sorted(p.name for p in out.iterdir()) == [f"gradlint-{version}-py3-none-any.whl",
                                                   f"gradlint-{version}.tar.gz"]
    assert "warning" not in log.lower(), [line for line in log.splitlines() if "warning" in line.lower()]
    with zipfile.ZipFile(out / f"gradlint-{version}-py3-none-any.whl") as wheel:
        names = wheel.namelist()
        metadata = wheel.read(f"gradlint-{version}.dist-info/METADATA").decode()
    assert "gradlint/py.typed" in names and f"gradlint-{version}.dist-info/licenses/LICENSE" in names
    assert "gradlint/rules/unguarded_norm_division.py" in names
    assert "License-Expression: MIT" in metadata and "Classifier: Typing :: Typed" in metadata
    for label in ("Homepage", "Source", "Issues", "Changelog"):
        assert f"Project-URL: {label}, https://github.com/gradlint/gradlint" in metadata
    with tarfile.open(out / f"gradlint-{version}.tar.gz") as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "rules/unused_noqa.py"} <= members
    # Tests need the repository (fixtures, git, pre-commit): none ship, rather than some that cannot run.
    assert not any(name.startswith(("tests/", "fixtures/", "benchmarks/")) for name in members)


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installs_without_torch_and_checks_the_fixtures(dist, kind, tmp_path):
    out, _ = dist
    artifact = next(out.glob("*.whl" if kind == "wheel" else "*.tar.gz"))
    python = _fresh_venv(tmp_path / "venv", str(artifact))
    gradlint_exe = python.parent / "gradlint"
    done = subprocess.run([str(gradlint_exe), "check", "--no-cache", "fixtures"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and " --> fixtures/transformer/model.py:20:13\n" in done.stdout, done.stderr
    assert done.stdout.startswith("GL001 [*] Division by a norm"), done.stdout
    probe = ("import importlib.util, gradlint\n"
             "assert importlib.util.find_spec('torch') is None\n"
             "try:\n    gradlint.watch\nexcept ImportError as error:\n    print(error)\n")
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "pip install 'gradlint[verify]'" in done.stdout


def test_versions_agree():
    """pyproject, the package, the CHANGELOG's latest entry and the README's pre-commit `rev:` name one release."""
    version = PYPROJECT["project"]["version"]
    assert gradlint.__version__ == version
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert changelog.split("\n## ", 1)[1].startswith(version + "\n")
    assert f"rev: v{version}\n" in (ROOT / "README.md").read_text()
