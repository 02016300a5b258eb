"""The hooks users consume, run the way pre-commit runs them: `pre-commit try-repo <this repo>`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFECT = "import torch\n\n\ndef embed(x):\n    return x / x.norm(dim=-1, keepdim=True)\n"


def _pre_commit() -> list:
    exe = Path(sys.executable).with_name("pre-commit")
    if exe.exists():
        return [str(exe)]
    if shutil.which("pre-commit"):
        return ["pre-commit"]
    pytest.skip("pre-commit is not installed (pip install -e '.[test]')")


def test_hooks_fail_on_a_defect_fix_it_and_pass(tmp_path):
    pre_commit = _pre_commit()
    project = tmp_path / "user-project"
    project.mkdir()
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)

    def git(*args):
        subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, env=env)

    def try_repo(hook):
        done = subprocess.run([*pre_commit, "try-repo", str(ROOT), hook, "--all-files"], cwd=project,
                              capture_output=True, text=True, env=env, timeout=600)
        return done.returncode, done.stdout + done.stderr

    git("init", "-q")
    (project / "embed.py").write_text(DEFECT)
    git("add", "embed.py")

    code, output = try_repo("gradlint")
    assert code == 1, output
    assert "embed.py:5:12: GL001" in output

    code, output = try_repo("gradlint-fix")
    assert code == 1 and "files were modified by this hook" in output, output
    assert "normalize(x, dim=-1, eps=1e-6)" in (project / "embed.py").read_text()

    git("add", "embed.py")
    code, output = try_repo("gradlint")
    assert code == 0, output
