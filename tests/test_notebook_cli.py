"""`gradlint check`, `fix` and `fix --write` on Jupyter notebooks, as a user runs them: findings named by
cell, every output format, fixes written into the changed cell only, an unreadable notebook left alone.

Notebooks are written with nbformat's writer, as Jupyter saves them, so byte preservation is checked
against what Jupyter itself would write for the fixed notebook.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

NORMALIZED = "y = torch.nn.functional.normalize(x, dim=-1, eps=1e-6)"


def notebook(*sources, outputs=True):
    """A notebook as Jupyter holds it: a markdown cell first, then code cells with outputs and ids."""
    cells = [new_markdown_cell("# Embeddings")]
    for source in sources:
        cell = new_code_cell(source, execution_count=len(cells))
        if outputs:
            cell.outputs = [new_output("stream", name="stdout", text=f"ran cell {len(cells) + 1}\n")]
        cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


SOURCES = ("%matplotlib inline\nimport torch",
           "x = torch.zeros(3, 4)\ny = x / x.norm(dim=-1, keepdim=True)\n"
           "z = x / x.norm(dim=-1, keepdim=True)  # noqa: GL001",
           "model = torch.nn.Linear(4, 4)\nopt = torch.optim.Adam(model.parameters(), weight_decay=1e-2)")


@pytest.fixture
def project(tmp_path):
    nbformat.write(notebook(*SOURCES), tmp_path / "train.ipynb")
    return tmp_path


def test_check_names_the_cell_and_the_row_in_it_and_honours_noqa_per_line(gradlint, project):
    code, out, err = gradlint(project, "check", "train.ipynb", "--no-cache")
    assert code == 1
    lines = out.splitlines()
    # cell 1 is markdown; `%matplotlib` parses; row 3 of cell 3 is silenced by its noqa comment
    assert lines[0].startswith("train.ipynb:cell 3:2:5: GL001 [*] Division by a norm")
    assert lines[1].startswith("train.ipynb:cell 4:2:7: GL003 ")
    assert "Found 2 errors." in out and "cell 3:3" not in out


def test_check_dot_finds_notebooks_and_include_decides(gradlint, project):
    (project / "model.py").write_text("import torch\n")
    code, out, _ = gradlint(project, "check", ".", "--no-cache")
    assert code == 1 and "train.ipynb:cell 3:2:5: GL001" in out
    code, out, _ = gradlint(project, "check", ".", "--show-files")
    assert [line.rsplit("/", 1)[1] for line in out.splitlines()] == ["model.py", "train.ipynb"]
    (project / "pyproject.toml").write_text('[tool.gradlint]\ninclude = ["*.py"]\n')
    code, out, _ = gradlint(project, "check", ".", "--no-cache")
    assert code == 0 and "All checks passed!" in out
    (project / "pyproject.toml").write_text('[tool.gradlint]\ninclude = ["*.py"]\nextend-include = ["train.*"]\n')
    code, out, _ = gradlint(project, "check", ".", "--show-files")
    assert [line.rsplit("/", 1)[1] for line in out.splitlines()] == ["model.py", "train.ipynb"]


def test_per_file_ignores_apply_to_notebooks(gradlint, project):
    (project / "pyproject.toml").write_text('[tool.gradlint]\nper-file-ignores = { "*.ipynb" = ["GL001"] }\n')
    code, out, _ = gradlint(project, "check", ".", "--no-cache")
    assert code == 1 and "GL001" not in out and "train.ipynb:cell 4:2:7: GL003" in out


def test_the_full_format_frames_the_cells_own_lines(gradlint, project, monkeypatch):
    monkeypatch.delenv("GRADLINT_OUTPUT_FORMAT")
    code, out, _ = gradlint(project, "check", "train.ipynb", "--no-cache", "--select", "GL001")
    assert code == 1
    assert " --> train.ipynb:cell 3:2:5" in out
    assert "1 | x = torch.zeros(3, 4)\n2 | y = x / x.norm(dim=-1, keepdim=True)" in out
    assert f"2 + {NORMALIZED}" in out


def test_a_second_check_from_the_cache_keeps_the_cells(gradlint, project):
    first = gradlint(project, "check", "train.ipynb")
    assert gradlint(project, "check", "train.ipynb", "--output-format", "json")[0] == 1
    assert gradlint(project, "check", "train.ipynb") == first


@pytest.mark.parametrize("fmt", ["json", "json-lines"])
def test_json_carries_the_cell_with_rows_counted_in_it(gradlint, project, fmt):
    code, out, _ = gradlint(project, "check", "train.ipynb", "--no-cache", "--output-format", fmt)
    findings = json.loads(out) if fmt == "json" else [json.loads(line) for line in out.splitlines()]
    first = findings[0]
    assert (first["code"], first["cell"], first["location"], first["noqa_row"]) == (
        "GL001", 3, {"row": 2, "column": 5}, 2)
    assert first["filename"] == str(project / "train.ipynb")
    assert first["fix"]["edits"][0]["location"] == {"row": 2, "column": 5}


def test_ci_formats_say_the_cell(gradlint, project):
    def output(fmt):
        return gradlint(project, "check", "train.ipynb", "--no-cache", "--select", "GL001", "--output-format", fmt)[1]

    # GitHub: a file annotation (the .ipynb's own lines are JSON), the message says where in which cell
    assert output("github").strip() == ("::error title=gradlint (GL001),file=train.ipynb::train.ipynb:cell 3:2:5: "
                                        "GL001 " + output("concise").split(" GL001 [*] ")[1].splitlines()[0])
    assert output("pylint").startswith("train.ipynb:1: [GL001] cell 3:2:5: Division by a norm")
    [issue] = json.loads(output("gitlab"))
    assert issue["description"].startswith("GL001: cell 3:2:5: ")
    assert issue["location"]["positions"]["begin"] == {"line": 1, "column": 1}
    [result] = json.loads(output("sarif"))["runs"][0]["results"]
    assert result["properties"] == {"cell": 3, "row": 2, "column": 5, "endRow": 2, "endColumn": 37}
    assert result["message"]["text"].startswith("cell 3:2:5: ")
    assert "region" not in result["locations"][0]["physicalLocation"]
    failure = ET.fromstring(output("junit")).find(".//failure")
    assert failure.text.startswith("cell 3, line 2, col 5, Division by a norm")


def test_fix_shows_a_diff_and_writes_nothing(gradlint, project):
    before = (project / "train.ipynb").read_bytes()
    code, out, err = gradlint(project, "fix", "train.ipynb", "--no-cache")
    assert code == 1
    assert f'-    "y = x / x.norm(dim=-1, keepdim=True)\\n",\n+    "{NORMALIZED}\\n",' in out
    assert (project / "train.ipynb").read_bytes() == before


def test_fix_write_changes_only_the_fixed_cells_source_byte_for_byte(gradlint, project):
    original = nbformat.read(project / "train.ipynb", as_version=4)
    code, out, err = gradlint(project, "fix", "--write", "train.ipynb", "--no-cache", "--unsafe-fixes")
    assert code == 0 and "Found 2 errors (2 fixed, 0 remaining)." in out
    # The file is what Jupyter's own writer gives for the notebook with the two cells' sources fixed:
    # outputs, ids, metadata, key order, indent and the final newline as they were.
    original.cells[2].source = SOURCES[1].replace("y = x / x.norm(dim=-1, keepdim=True)", NORMALIZED)
    original.cells[3].source = SOURCES[2].replace("optim.Adam(", "optim.AdamW(")
    nbformat.write(original, project / "expected.ipynb")
    assert (project / "train.ipynb").read_bytes() == (project / "expected.ipynb").read_bytes()


def test_fix_write_keeps_every_other_byte_and_a_second_fix_changes_nothing(gradlint, project):
    path = project / "train.ipynb"
    before = path.read_text()
    gradlint(project, "fix", "--write", "train.ipynb", "--no-cache")
    after = path.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines())
    assert changed == [('    "y = x / x.norm(dim=-1, keepdim=True)\\n",', f'    "{NORMALIZED}\\n",')]
    assert after.endswith("}\n") == before.endswith("}\n")
    code, out, _ = gradlint(project, "fix", "--write", "train.ipynb", "--no-cache")
    assert path.read_text() == after and code == 1 and "train.ipynb:cell 4:2:7: GL003" in out  # unsafe: left


@pytest.mark.parametrize("content, reason", [
    ("{not json", "not valid JSON"),
    ('{"cells": [], "nbformat": 3, "nbformat_minor": 0, "metadata": {}}', "nbformat 4"),
])
def test_an_unreadable_notebook_is_one_clear_error_and_left_untouched(gradlint, tmp_path, content, reason):
    (tmp_path / "broken.ipynb").write_text(content)
    for command in (["check"], ["fix", "--write"]):
        code, out, err = gradlint(tmp_path, *command, "broken.ipynb", "--no-cache")
        assert code == 1
        assert out.startswith("broken.ipynb:1:1: E902 Failed to read broken.ipynb: ") and reason in out
        assert (tmp_path / "broken.ipynb").read_text() == content


def test_a_syntax_error_is_reported_in_its_cell_and_nothing_is_fixed(gradlint, tmp_path):
    nbformat.write(notebook("import torch\nx = torch.zeros(3)\ny = x / x.norm(dim=-1, keepdim=True)",
                            "def broken(:\n    pass"), tmp_path / "nb.ipynb")
    before = (tmp_path / "nb.ipynb").read_bytes()
    code, out, _ = gradlint(tmp_path, "fix", "--write", "nb.ipynb", "--no-cache")
    assert code == 1 and out.startswith("nb.ipynb:cell 3:1:12: E999 SyntaxError")
    assert (tmp_path / "nb.ipynb").read_bytes() == before
