"""Which rows of a file a test runner runs as tests.

A test feeds fixed inputs to the code under test and asserts on what comes out. A hazard that shows only on
degenerate inputs (a zero vector, a saturated logit) or over a long training run (coupled weight decay,
unclipped steps) is not a test's concern: if its fixed input ever hit the hazard, the test would fail
loudly, and a test's optimizer settings are its fixture, not a recipe anyone trains with. Rules about such
hazards set `Rule.reports_in_tests = False`; rules about code that is wrong on every input (a double
softmax, a clip of still-scaled gradients) report in tests too.

What counts as a test is what the runners collect, read from the code, not from the file's name:
- every method of a class deriving from unittest's `TestCase` (through the module's imports:
  `unittest.TestCase`, `from unittest import TestCase`, `absltest.TestCase`, a `TestCase` of any testing
  package), directly or through another class of the module;
- in a module that imports pytest, what pytest collects by default: module-level functions named `test*`,
  and `test*` methods of classes named `Test*`.

The whole body of a test counts, with the functions and classes defined inside it (a `LightningModule`
written inside a test function is the test's fixture).
"""

from __future__ import annotations

import ast
from bisect import bisect_right
from typing import Iterator

from .astflow import dotted_name, module_imports

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


class TestRows:
    """The row spans of a module's tests; `contains(row)` asks about one row of the file."""

    def __init__(self, tree: ast.Module) -> None:
        spans = sorted(_span(node) for node in _tests(tree))
        self._starts = [start for start, _ in spans]
        self._ends = [end for _, end in spans]

    def __bool__(self) -> bool:
        return bool(self._starts)

    def contains(self, row: int) -> bool:
        index = bisect_right(self._starts, row) - 1
        # spans do not nest (a test is never inside another one's span as collected here)
        return index >= 0 and row <= self._ends[index]


def _span(node: ast.stmt) -> tuple[int, int]:
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])
    return start, node.end_lineno or node.lineno


def _tests(tree: ast.Module) -> Iterator[ast.stmt]:
    imported = dict(_imports(tree))
    pytest_module = any(q == "pytest" or q.startswith(("pytest.", "_pytest")) for q in imported.values())
    test_cases: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            if any(_is_test_case(base, imported, test_cases) for base in node.bases):
                test_cases.add(node.name)
                yield node
            elif pytest_module and node.name.startswith("Test") and not _has_init(node):
                yield from (f for f in node.body if isinstance(f, _FUNCTIONS) and f.name.startswith("test"))
        elif pytest_module and isinstance(node, _FUNCTIONS) and node.name.startswith("test"):
            yield node


def _imports(tree: ast.Module) -> Iterator[tuple[str, str]]:
    """(local name, qualified name) of the module-level imports, `try`/`if` blocks included."""
    for node in module_imports(tree):
        for alias in node.names:
            if isinstance(node, ast.Import):
                yield (alias.asname, alias.name) if alias.asname else (alias.name.split(".")[0],) * 2
            elif node.module and not node.level:
                yield alias.asname or alias.name, f"{node.module}.{alias.name}"


def _is_test_case(base: ast.expr, imported: dict, test_cases: set) -> bool:
    if isinstance(base, ast.Name) and base.id in test_cases:
        return True  # a class of this module that is itself a TestCase
    dotted = dotted_name(base)
    root, _, rest = (dotted or "").partition(".")
    if root not in imported:
        return False
    qualified = f"{imported[root]}.{rest}" if rest else imported[root]
    return qualified.rsplit(".", 1)[-1] in ("TestCase", "IsolatedAsyncioTestCase")


def _has_init(node: ast.ClassDef) -> bool:
    return any(isinstance(f, _FUNCTIONS) and f.name == "__init__" for f in node.body)
