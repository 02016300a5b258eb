"""Jupyter notebooks: findings located in cells, fixes written into the changed cells' source only.

Notebooks are written with nbformat's writer, which formats them exactly as Jupyter saves them; one test
also uses real notebooks of the pinned repositories (GRADLINT_REPOS_DIR; skipped without them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from gradlint.documents import fix_document, lint_document
from gradlint.notebook import CellEditError, CellModule, notebook_script
from gradlint.registry import all_rules

RULES = all_rules()


def jupyter(*cells, **metadata) -> str:
    """A notebook as Jupyter saves it (nbformat's writer: indent 1, sorted keys, trailing newline)."""
    notebook = new_notebook(cells=list(cells))
    notebook.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                              **metadata})
    return nbformat.writes(notebook) + "\n"  # Jupyter's contents manager ends the file with a newline


def code(source: str, **kwargs):
    return new_code_cell(source, **kwargs)


def found(text: str, path: str = "nb.ipynb") -> list[tuple]:
    return [(f.cell, f.location.row, f.location.column, f.code) for f in lint_document(text, path, RULES)]


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(old) == len(new), "lines were added or removed"
    return [(a, b) for a, b in zip(old, new) if a != b]


TRAINING = jupyter(
    new_markdown_cell("# Train\nA small model."),
    code("%matplotlib inline\n!pip install -q torch\nimport torch", execution_count=1),
    code("%%capture\nmodel = torch.nn.Linear(4, 4)\nopt = torch.optim.Adam(model.parameters(), weight_decay=1e-2)",
         execution_count=2, outputs=[new_output("stream", name="stdout", text="héllo wörld\n")]),
    code("x = torch.zeros(3, 4)\ny = x / x.norm(dim=-1, keepdim=True)\ny?", execution_count=3),
    code("z = x / x.norm(dim=-1, keepdim=True)  # noqa: GL001\nfiles = !ls\n%time w = x / x.norm(dim=-1)"),
    code("%%bash\necho $((x / x.norm()))"),
)


def test_findings_are_located_in_cells_numbered_as_on_screen():
    # cell 1 is markdown; magics, `!pip`, `y?` and the `%%bash` cell do not break the parse.
    assert found(TRAINING) == [(3, 3, 7, "GL003"), (4, 2, 5, "GL001")]


def test_a_future_import_at_the_top_of_a_later_cell_is_legal():
    # vit-pytorch's examples/cats_and_dogs.ipynb: `!pip install` first, `from __future__` on top of cell 2. A
    # kernel compiles each cell alone; one not on top of its cell is an error there, as in a file.
    first = code("!pip -q install vit_pytorch")
    later = code("from __future__ import print_function\n\nimport torch\nx = torch.ones(2, 3)\n"
                 "y = x / x.norm(dim=-1, keepdim=True)")
    assert found(jupyter(first, later)) == [(2, 5, 5, "GL001")]
    fixed = fix_document(jupyter(first, later), "nb.ipynb", RULES, unsafe=True)
    assert fixed.remaining == [] and "normalize(x" in fixed.text
    late = code("import torch\nfrom __future__ import print_function")
    assert [(f.cell, f.code) for f in lint_document(jupyter(first, late), "nb.ipynb", RULES)] == [(2, "E999")]


def test_noqa_works_per_line_and_magic_lines_are_not_checked():
    # cell 5: the noqa'd division is silent, and `%time w = x / x.norm(...)` is IPython, left alone.
    assert all(cell != 5 for cell, *_ in found(TRAINING))


def test_fix_rewrites_only_the_changed_lines_of_the_changed_cells():
    outcome = fix_document(TRAINING, "nb.ipynb", RULES, unsafe=True)
    assert changed_lines(TRAINING, outcome.text) == [
        ('    "opt = torch.optim.Adam(model.parameters(), weight_decay=1e-2)"\n',
         '    "opt = torch.optim.AdamW(model.parameters(), weight_decay=1e-2)"\n'),
        ('    "y = x / x.norm(dim=-1, keepdim=True)\\n",\n',
         '    "y = torch.nn.functional.normalize(x, dim=-1, eps=1e-6)\\n",\n'),
    ]
    assert outcome.fixed == 2 and outcome.remaining == []
    assert fix_document(outcome.text, "nb.ipynb", RULES, unsafe=True).text == outcome.text  # idempotent


def test_safe_fix_leaves_the_unsafe_finding_and_the_magics():
    outcome = fix_document(TRAINING, "nb.ipynb", RULES)
    fixed = nbformat.reads(outcome.text, as_version=4)
    assert [f.code for f in outcome.remaining] == ["GL003"]
    assert fixed.cells[1].source == "%matplotlib inline\n!pip install -q torch\nimport torch"
    assert fixed.cells[3].source == "x = torch.zeros(3, 4)\ny = torch.nn.functional.normalize(x, dim=-1, eps=1e-6)\ny?"
    assert fixed.cells[2].outputs[0].text == "héllo wörld\n"


SETUP = ("import torch\nfrom torch.nn.utils import clip_grad_norm_\n"
         "model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1))\n"
         "opt = torch.optim.SGD(model.parameters(), lr=0.1)")


def test_routine_rules_see_the_cells_in_order_as_one_script():
    # What the model holds (a Dropout) and that clipping is imported but never called are facts of cell 1.
    text = jupyter(
        code(SETUP),
        code("for epoch in range(3):\n    model.train()\n    for x in data:\n        loss = model(x).sum()\n"
             "        loss.backward()\n        opt.step()\n    with torch.no_grad():\n        out = model(x_test)"),
    )
    findings = {f.code: f for f in lint_document(text, "nb.ipynb", RULES)}
    assert sorted(findings) == ["GL004", "GL005"]
    assert (findings["GL004"].cell, findings["GL004"].location.row) == (2, 8)
    assert "`torch.no_grad()` (cell 2, line 7)" in findings["GL004"].message
    assert (findings["GL005"].cell, findings["GL005"].location.row) == (2, 6)
    assert "`loss.backward()` (cell 2, line 5)" in findings["GL005"].message
    # Evaluation after `model.eval()` in an earlier cell is fine: the kernel ran it first.
    train = code("model.train()\nfor x in train_loader:\n    model(x).sum().backward()\n    opt.step()")
    evaluate = code("with torch.no_grad():\n    for x in val_loader:\n        out = model(x)")
    assert [(cell, c) for cell, _, _, c in found(jupyter(code(SETUP), train, evaluate)) if c == "GL004"] == [(3, "GL004")]
    assert [c for *_, c in found(jupyter(code(SETUP), train, code("model.eval()"), evaluate)) if c == "GL004"] == []


def test_the_inserted_statement_lands_in_the_cell_of_the_statement_it_guards():
    # `opt.step()` opens cell 3: the clipping goes at the top of cell 3, not at the end of cell 2.
    text = jupyter(code(SETUP), code("model.train()\nloss = model(x).sum()\nloss.backward()"), code("opt.step()"))
    fixed = nbformat.reads(fix_document(text, "nb.ipynb", RULES, unsafe=True).text, as_version=4)
    assert [cell.source for cell in fixed.cells] == [
        SETUP,
        "model.train()\nloss = model(x).sum()\nloss.backward()",
        "clip_grad_norm_(model.parameters(), max_norm=1.0)\nopt.step()",
    ]


def test_an_import_a_fix_needs_goes_to_the_imports_cell():
    text = jupyter(
        code("from torch.optim import Adam"),
        code("opt = Adam(params, weight_decay=1e-2)"),
    )
    fixed = nbformat.reads(fix_document(text, "nb.ipynb", RULES, unsafe=True).text, as_version=4)
    assert [cell.source for cell in fixed.cells] == [
        "from torch.optim import Adam\nfrom torch.optim import AdamW", "opt = AdamW(params, weight_decay=1e-2)"]


@pytest.mark.parametrize("cell_source, masked", [
    ("!pip install torch", True),
    ("if x:\n    %time f()", True),
    ("files = !ls -la", True),
    ("torch.norm?", True),
    ("??torch.norm", True),
    ("pip install torch", True),  # automagic
    ("!pip install \\\n    torch", True),
    ("y = (a\n     % b)", False),  # a modulo continuing a bracket
    ('doc = """\n%s of the data\n"""', False),  # text of a string
    ("ls = [1]\nls", False),  # a name that is also a magic
    ("time -1", False),  # Python: a subtraction
    # siamese-triplet's notebooks: an assignment to a name that is also a magic, over several lines
    ("colors = ['#1f77b4', '#ff7f0e',\n          '#2ca02c']", False),
    ("time, rest = (1,\n              2)", False),
])
def test_magics_are_masked_only_where_they_are_not_python(cell_source, masked):
    module = CellModule.join([cell_source])
    assert bool(module.dropped) == masked
    compile(module.text, "nb", "exec")  # the module always parses


def test_non_python_cell_magics_are_left_out_and_python_ones_checked():
    module = CellModule.join(["%%bash\nls -la", "%%writefile a.txt\nx / x.norm()", "%%timeit\nf(x)"])
    assert [cell.number for cell in module.cells] == [3]
    assert [(d.cell, d.whole_cell) for d in module.dropped] == [(1, True), (2, True), (3, False)]
    assert module.text == "pass\nf(x)\n"


def test_a_fix_that_would_touch_a_magic_line_is_refused():
    module = CellModule.join(["%time x = 1\ny = 2"])
    with pytest.raises(CellEditError):
        module.sources_after(module.text.replace("pass", "pass  # changed"))
    assert module.sources_after(module.text.replace("y = 2", "y = 3")) == {1: "%time x = 1\ny = 3"}


def test_script_for_the_runtime_side_maps_rows_to_cells():
    script = notebook_script(TRAINING)
    assert [cell.number for cell in script.cells] == [2, 3, 4, 5]
    row = script.text.splitlines().index("y = x / x.norm(dim=-1, keepdim=True)") + 1
    assert script.locate(row) == (4, 2)
    assert script.describe(row) == "cell 4, line 2"
    assert {(d.cell, d.row) for d in script.dropped} >= {(2, 1), (2, 2), (3, 1), (4, 3), (5, 2), (5, 3), (6, 1)}


def test_a_syntax_error_is_reported_in_its_cell():
    text = jupyter(code("import torch"), code("x = (1,\ny = 2"), code("z = x / x.norm()"))
    findings = lint_document(text, "nb.ipynb", RULES)
    assert [(f.cell, f.code) for f in findings] == [(2, "E999")]
    assert fix_document(text, "nb.ipynb", RULES).text == text


@pytest.mark.parametrize("text, message", [
    ("{\"cells\": [", "not valid JSON"),
    ("[1, 2]", "not a Jupyter notebook"),
    (json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [], "cells": []}),
     "nbformat 3 notebooks are not supported"),
    (json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                 "cells": [{"cell_type": "code", "source": "x / x.norm()"}]}), "not a valid nbformat 4 notebook"),
])
def test_a_file_that_is_not_a_notebook_gets_one_clear_error_and_is_left_alone(text, message):
    findings = lint_document(text, "bad.ipynb", RULES)
    assert [f.code for f in findings] == ["E902"]
    assert findings[0].message.startswith("Failed to read bad.ipynb: " + message)
    outcome = fix_document(text, "bad.ipynb", RULES, unsafe=True)
    assert outcome.text == text and outcome.fixed == 0


def test_other_writers_styles_are_kept():
    # Written by hand as other tools do: 2-space indent, `nbformat` first, ASCII escapes, a source kept as
    # one string, an empty source, no trailing newline.
    cells = [
        {"cell_type": "code", "source": "import torch\ny = x / x.norm()\n", "metadata": {}, "outputs": [],
         "execution_count": None},
        {"cell_type": "code", "source": [], "metadata": {}, "outputs": [], "execution_count": None},
        {"cell_type": "code", "source": ["# caf\u00e9\n", "z = x / x.norm()"], "metadata": {"x": 1}, "outputs": [],
         "execution_count": None},
    ]
    text = json.dumps({"nbformat": 4, "nbformat_minor": 2, "metadata": {}, "cells": cells}, indent=2)
    outcome = fix_document(text, "nb.ipynb", RULES, unsafe=True)  # a norm of every element: an unsafe fix
    assert changed_lines(text, outcome.text) == [
        ('      "source": "import torch\\ny = x / x.norm()\\n",\n',
         '      "source": "import torch\\ny = x / x.norm().clamp_min(1e-6)\\n",\n'),
        ('        "z = x / x.norm()"\n', '        "z = x / x.norm().clamp_min(1e-6)"\n'),
    ]
    assert '"# caf\\u00e9\\n"' in outcome.text and not outcome.text.endswith("\n")


def _real_notebook(name: str) -> str:
    folder = os.environ.get("GRADLINT_REPOS_DIR")
    path = Path(folder or "/nonexistent") / name
    if not path.is_file():
        pytest.skip("real repositories not available (set GRADLINT_REPOS_DIR)")
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name, line, defect", [
    # Jupyter's own format (Lightning's example): put an Adam with weight decay in configure_optimizers.
    ("Lightning-AI+pytorch-lightning/examples/pytorch/bug_report/bug_report_model.ipynb",
     "return torch.optim.SGD(self.layer.parameters(), lr=0.1)",
     "return torch.optim.Adam(self.layer.parameters(), lr=0.1, weight_decay=1e-2)"),
    # Colab's format (open_clip's CoCa tutorial: 2-space indent, unsorted keys, `!pip` cells).
    ("mlfoundations+open_clip/docs/Interacting_with_open_coca.ipynb",
     "im = transform(im).unsqueeze(0)", "im = transform(im).unsqueeze(0) / x.norm(dim=-1, keepdim=True)"),
])
def test_real_notebooks_keep_every_byte_outside_the_fixed_line(name, line, defect):
    original = _real_notebook(name)
    assert fix_document(original, name, RULES, unsafe=True).text == original  # nothing to fix: unchanged
    broken = original.replace(line, defect)
    assert broken != original
    outcome = fix_document(broken, name, RULES, unsafe=True)
    [(before, after)] = changed_lines(broken, outcome.text)
    assert defect in before and outcome.fixed == 1 and outcome.remaining == []
    assert fix_document(outcome.text, name, RULES, unsafe=True).text == outcome.text
