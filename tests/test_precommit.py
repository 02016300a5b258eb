"""The README's pre-commit snippet, run by pre-commit in a user's project: fix, then report the rest once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SNIPPET = re.search(r"```yaml\n(- repo: https://github.com/gradlint/gradlint\n.*?)```", README, re.S).group(1)
NOTEBOOK_DEFECT = "import torch\nx = torch.zeros(3, 4)\ny = x / x.norm(dim=-1, keepdim=True)"
DEFECT = ("import torch\n\n\ndef embed(x):\n    return x / x.norm(dim=-1, keepdim=True)\n\n\n"
          "def make(model):\n    return torch.optim.Adam(model.parameters(), weight_decay=1e-4)\n")


def _pre_commit() -> list:
    exe = Path(sys.executable).with_name("pre-commit")
    if exe.exists():
        return [str(exe)]
    if shutil.which("pre-commit"):
        return ["pre-commit"]
    pytest.skip("pre-commit is not installed (pip install -e '.[test]')")


def _env(tmp_path: Path) -> dict:
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    return env


def _snapshot_of_this_tree(tmp_path: Path, env: dict) -> tuple[Path, str]:
    """A git repository holding this working tree as one commit: what a `rev:` of a release would name."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            env=env)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    copy = tmp_path / "gradlint-release"
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "release"]):
        subprocess.run(["git", *args], cwd=copy, check=True, capture_output=True, env=env)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=copy, check=True, capture_output=True, text=True,
                         env=env).stdout.strip()
    return copy, sha


def test_readme_snippet_fixes_then_reports_the_rest_once(tmp_path):
    pre_commit = _pre_commit()
    env = _env(tmp_path)
    release, sha = _snapshot_of_this_tree(tmp_path, env)
    project = tmp_path / "user-project"
    project.mkdir()
    config = SNIPPET.replace("https://github.com/gradlint/gradlint", str(release))
    config = re.sub(r"rev: \S+", f"rev: {sha}", config)
    (project / ".pre-commit-config.yaml").write_text("repos:\n" + "".join(f"  {line}\n" for line in config.splitlines()))

    def git(*args):
        subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, env=env)

    def run():
        done = subprocess.run([*pre_commit, "run", "--all-files"], cwd=project, capture_output=True, text=True,
                              env=env, timeout=600)
        return done.returncode, done.stdout + done.stderr

    git("init", "-q")
    (project / "embed.py").write_text(DEFECT)
    notebook = new_notebook(cells=[new_markdown_cell("# Embed"), new_code_cell(NOTEBOOK_DEFECT)])
    notebook.cells[1].outputs = [new_output("stream", text="done\n")]
    nbformat.write(notebook, project / "embed.ipynb")  # as Jupyter saves it
    git("add", "-A")

    code, output = run()
    assert code == 1 and "files were modified by this hook" in output, output
    assert "normalize(x, dim=-1, eps=1e-6)" in (project / "embed.py").read_text()
    fixed = nbformat.read(project / "embed.ipynb", as_version=4)  # the hook found the notebook and fixed its cell
    assert fixed.cells[1].source.endswith("y = torch.nn.functional.normalize(x, dim=-1, eps=1e-6)")
    assert fixed.cells[1].outputs == notebook.cells[1].outputs and fixed.cells[0] == notebook.cells[0]
    assert output.count("GL003") == 1 and "GL001" not in output, output  # the rest, reported once
    # Inside the hook the hint is about the hook's args, never a flag to type.
    assert "`args: [--fix, --unsafe-fixes]` on this hook" in output and "option" not in output, output

    git("add", "-A")
    code, output = run()
    assert code == 1 and "files were modified" not in output and output.count("GL003") == 1, output
