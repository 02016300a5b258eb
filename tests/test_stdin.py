"""`gradlint check -`, `gradlint fix -` and `--stdin-filename`, as an editor or a pipe uses them: the file
comes on stdin, the findings (or the fixed source) go to stdout."""

from __future__ import annotations

import io
import json
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

DEFECT = "import torch\nx = torch.zeros(3)\ny = x / x.norm(dim=-1, keepdim=True)\n"
FIXED = "import torch\nx = torch.zeros(3)\ny = torch.nn.functional.normalize(x, dim=-1, eps=1e-6)\n"
UNSAFE = "import torch\nopt = torch.optim.Adam(params, weight_decay=1e-2)\n"


@pytest.fixture
def piped(monkeypatch, capsysbinary):
    """`piped(cwd, b"input", "check", "-")` -> (exit, stdout bytes, stderr text), the CLI run in-process."""
    from gradlint.cli import main

    monkeypatch.setenv("GRADLINT_OUTPUT_FORMAT", "concise")

    def run(cwd, data: bytes, *args):
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        code = main(list(args))
        out, err = capsysbinary.readouterr()
        return code, out, err.decode()

    return run


def test_check_dash_reads_stdin(piped, tmp_path):
    code, out, _ = piped(tmp_path, DEFECT.encode(), "check", "-")
    assert code == 1 and out.decode().startswith("-:3:5: GL001 [*] Division by a norm")
    assert piped(tmp_path, FIXED.encode(), "check", "-")[:2] == (0, b"All checks passed!\n")


def test_the_stdin_filename_names_the_file_and_picks_its_settings(piped, tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.gradlint]\nper-file-ignores = { "scratch/*" = ["GL001"] }\n')
    code, out, _ = piped(tmp_path, DEFECT.encode(), "check", "--stdin-filename", "src/model.py")
    assert code == 1 and out.decode().startswith("src/model.py:3:5: GL001")
    code, out, _ = piped(tmp_path, DEFECT.encode(), "check", "--stdin-filename", "scratch/try.py")
    assert (code, out) == (0, b"All checks passed!\n")  # per-file-ignores of the named path
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "gradlint.toml").write_text('ignore = ["GL001"]\n')  # the closest configuration wins
    assert piped(tmp_path, DEFECT.encode(), "check", "--stdin-filename", "sub/a.py")[:2] == (0, b"All checks passed!\n")


def test_stdin_filename_reads_stdin_whatever_paths_are_given(piped, tmp_path):
    code, out, err = piped(tmp_path, DEFECT.encode(), "check", "--stdin-filename", "a.py", "other.py")
    assert code == 1 and out.decode().startswith("a.py:3:5: GL001")
    assert "warning: ignoring other.py in favour of standard input" in err


@pytest.mark.parametrize("command", [["fix", "-"], ["check", "--fix", "-"], ["fix", "--write", "-"]])
def test_fix_dash_prints_the_fixed_source_and_the_report_on_stderr(piped, tmp_path, command):
    code, out, err = piped(tmp_path, DEFECT.encode(), *command)
    assert (code, out) == (0, FIXED.encode())
    assert "Found 1 error (1 fixed, 0 remaining)." in err
    assert piped(tmp_path, out, *command)[:2] == (0, FIXED.encode())  # a second fix changes nothing


def test_fix_dash_exits_1_while_findings_remain_and_keeps_the_bytes(piped, tmp_path):
    data = ("# -*- coding: utf-8 -*-\r\n" + UNSAFE.replace("\n", "\r\n")).encode()
    code, out, err = piped(tmp_path, data, "fix", "-")
    assert (code, out) == (1, data)  # an unsafe fix is not applied; CRLF and all, untouched
    assert "-:3:7: GL003" in err and "1 hidden fix can be enabled with the `--unsafe-fixes` option" in err
    code, out, _ = piped(tmp_path, data, "fix", "--unsafe-fixes", "-")
    assert code == 0 and out == data.replace(b"optim.Adam(", b"optim.AdamW(")
    code, out, _ = piped(tmp_path, data, "fix", "--exit-non-zero-on-fix", "--unsafe-fixes", "-")
    assert code == 1


def test_diff_dash_prints_a_diff(piped, tmp_path):
    code, out, _ = piped(tmp_path, DEFECT.encode(), "fix", "--diff", "--stdin-filename", "m.py")
    assert code == 1
    assert b"--- a/m.py\n+++ b/m.py\n" in out and b"+y = torch.nn.functional.normalize" in out


def test_noqa_and_syntax_errors_on_stdin(piped, tmp_path):
    silenced = DEFECT.replace("keepdim=True)", "keepdim=True)  # noqa: GL001")
    assert piped(tmp_path, silenced.encode(), "check", "-")[0] == 0
    code, out, _ = piped(tmp_path, b"def broken(:\n", "check", "-")
    assert code == 1 and out.decode().startswith("-:1:12: E999 SyntaxError")
    code, out, _ = piped(tmp_path, b"def broken(:\n", "fix", "-")
    assert (code, out) == (1, b"def broken(:\n")
    code, out, _ = piped(tmp_path, b"x = '\xff'\n", "check", "-")
    assert code == 1 and out.decode().startswith("-:1:1: E902 Failed to read -: not valid UTF-8")


def notebook_text() -> str:
    nb = new_notebook(cells=[new_markdown_cell("# Try"), new_code_cell(DEFECT.rstrip("\n"), execution_count=1,
                                                                      outputs=[new_output("stream", text="ok\n")])])
    return nbformat.writes(nb) + "\n"


def test_a_stdin_filename_ending_in_ipynb_is_a_notebook(piped, tmp_path):
    text = notebook_text()
    code, out, _ = piped(tmp_path, text.encode(), "check", "--stdin-filename", "try.ipynb", "--output-format", "json")
    [finding] = json.loads(out)
    assert (code, finding["cell"], finding["location"]) == (1, 2, {"row": 3, "column": 5})
    code, out, _ = piped(tmp_path, text.encode(), "fix", "--stdin-filename", "try.ipynb")
    assert code == 0
    fixed = nbformat.reads(text, as_version=4)
    fixed.cells[1].source = FIXED.rstrip("\n")
    assert out.decode() == nbformat.writes(fixed) + "\n"  # only the cell's source changed, as Jupyter writes it


def test_an_invalid_notebook_on_stdin_is_an_error_and_passes_through(piped, tmp_path):
    code, out, _ = piped(tmp_path, b"{not json", "check", "--stdin-filename", "x.ipynb")
    assert code == 1 and out.decode().startswith("x.ipynb:1:1: E902 Failed to read x.ipynb: not valid JSON")
    code, out, err = piped(tmp_path, b"{not json", "fix", "--stdin-filename", "x.ipynb")
    assert (code, out) == (1, b"{not json") and "E902" in err
