"""`gradlint verify nb.ipynb`: the code cells run in order as one script (IPython lines dropped, with a
note), the patch is the notebook's own fixes applied to its cells, and the report names cells."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from gradlint.notebook import notebook_script
from gradlint.verify.notebook import in_cells

DIVISION = "    y = out / out.norm(dim=-1, keepdim=True)"
CELLS = [
    new_markdown_cell("# A tiny model"),
    new_code_cell("%time import torch\n!pip list\nimport torch\ntorch.manual_seed(0)"),
    new_code_cell("model = torch.nn.Linear(4, 4, bias=False)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
                  "x = torch.randn(8, 4)\nx[0] = 0  # a zero row: its output's norm is 0\nprint('cell 3 ran')",
                  outputs=[new_output("stream", name="stdout", text="cell 3 ran\n")], execution_count=3),
    new_code_cell("for step in range(20):\n    out = model(x)\n" + DIVISION + "\n"
                  "    loss = y.pow(2).sum()\n    opt.zero_grad()\n    loss.backward()\n    opt.step()"),
]


def verify(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("gradlint")
    cli = [str(script), "verify"] if script.exists() else [sys.executable, "-m", "gradlint.verify.command"]
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1")
    return subprocess.run([*cli, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("notebook")
    nbformat.write(new_notebook(cells=CELLS), folder / "nb.ipynb")
    before = (folder / "nb.ipynb").read_bytes()
    proc = verify("nb.ipynb", "--steps", "5", "--json", "--keep", "fixed", "--report", "report.html",
                  cwd=folder)
    assert (folder / "nb.ipynb").read_bytes() == before, "verify never writes the user's notebook"
    return proc, json.loads(proc.stdout), folder


def _check(run: dict, key: str) -> dict:
    return next(c for c in run["checks"] if c["key"] == key)


def test_the_cells_run_in_order_with_ipython_lines_dropped_and_noted(run):
    proc, result, _ = run
    assert result["notebook"] == {"code_cells": 3, "not_run": [
        "cell 2, line 1: `%time import torch` not run (IPython)",
        "cell 2, line 2: `!pip list` not run (IPython)"]}
    assert "cell 3 ran" in result["original"]["stdout_tail"]
    assert "Package" not in result["original"]["stdout_tail"]  # `!pip list` never ran


def test_the_nan_origin_names_the_cell_and_the_rule_that_fixes_it(run):
    _, result, folder = run
    nonfinite = _check(result["original"], "nonfinite")
    assert nonfinite["status"] == "fail"
    assert "at nb.ipynb, cell 4, line 3" in nonfinite["summary"]
    site = result["original"]["trace"]["site"]
    assert (site["file"], site["cell"], site["line"], site["code"]) == ("nb.ipynb", 4, 3, DIVISION.strip())
    [rule] = result["original"]["trace"]["rules"]
    assert (rule["code"], rule["file"], rule["cell"], rule["line"], rule["fixed"]) == ("GL001", "nb.ipynb", 4, 3, True)
    report = (folder / "report.html").read_text()
    assert "<code>nb.ipynb, cell 4, line 3</code>" in report and "<code>!pip list</code> not run" in report


def test_the_patch_is_the_notebooks_fixes_in_its_cells_and_the_fixed_run_is_healthy(run):
    proc, result, folder = run
    [patched_file] = result["patch"]["files"]
    assert (patched_file["path"], patched_file["codes"]) == ("nb.ipynb", {"GL001": 1})
    assert patched_file["diff"].startswith("--- a/nb.ipynb (cell 4)\n+++ b/nb.ipynb (cell 4)\n")
    assert "+    y = torch.nn.functional.normalize(out, dim=-1, eps=1e-6)" in patched_file["diff"]
    assert _check(result["patched"], "nonfinite")["status"] == "ok"
    assert "non-finite values" in result["verdict"]["fixed"]
    assert proc.returncode == 0 and result["healthy"]
    kept = nbformat.read(folder / "fixed" / "nb.ipynb", as_version=4)
    assert [cell.source for cell in kept.cells][:3] == [cell.source for cell in CELLS][:3]
    assert "normalize(out, dim=-1, eps=1e-6)" in kept.cells[3].source
    assert kept.cells[2].outputs[0]["text"] == "cell 3 ran\n"


def test_an_invalid_notebook_is_a_clear_error_and_nothing_runs(tmp_path):
    pytest.importorskip("torch")
    bad = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
           "cells": [{"cell_type": "code", "source": "open('executed', 'w')"}]}  # no outputs: invalid
    (tmp_path / "bad.ipynb").write_text(json.dumps(bad))
    proc = verify("bad.ipynb", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("gradlint verify: error: bad.ipynb: not a valid nbformat 4 notebook")
    assert not (tmp_path / "executed").exists()


def test_tracebacks_and_sites_of_the_script_are_told_in_cells():
    script = notebook_script(nbformat.writes(new_notebook(cells=CELLS)))
    real = "/home/me/nb.ipynb"
    row = script.text.splitlines().index(DIVISION) + 1
    record = {"error": {"traceback": f'  File "{real}", line {row}, in <module>\nZeroDivisionError'},
              "trace": {"site": {"file": real, "line": row, "context": [
                  {"line": r, "code": script.text.splitlines()[r - 1]} for r in range(row - 3, row + 1)]}},
              "other": {"file": "/home/me/util.py", "line": row}}
    located = in_cells(record, real, script)
    assert located["error"]["traceback"].startswith(f'  File "{real}", cell 4, line 3, in <module>')
    site = located["trace"]["site"]
    assert (site["cell"], site["line"]) == (4, 3)
    assert [entry["line"] for entry in site["context"]] == [1, 2, 3]  # the rows of cell 3 are left out
    assert located["other"] == {"file": "/home/me/util.py", "line": row}
