"""What a rule sees of the file it checks: imports, options, and where to send reports."""

from __future__ import annotations

import keyword
from typing import Any, Callable, Mapping, Optional

import libcst as cst

from .names import ImportTable
from .rule import Reference, Report, Rule

# Import spellings that users expect, used when a fix needs a module the file does not reach yet.
_PREFERRED_ALIASES = {"torch.nn.functional": "F", "torch.nn": "nn", "numpy": "np"}


def _line(row: int) -> str:
    return f"line {row}"


class FullModuleRequired(Exception):
    """Raised through the traversal when a rule cannot decide on a partial module."""


class FileContext:
    def __init__(self, module: cst.Module, path: str, *, partial: bool,
                 options: Mapping[str, Mapping[str, Any]], rows: Optional[list] = None,
                 describe_row: Optional[Callable[[int], str]] = None) -> None:
        self.module = module
        self.path = path
        self.partial = partial
        self.imports = ImportTable.from_module(module)
        self.reports: list[Report] = []
        self._options = options
        self._statements: list[cst.CSTNode] = []
        self._positions = None  # PositionProvider results, resolved on first use
        self._rows = rows  # reduced row -> the file's row (None: the module is the whole file)
        self._describe_row = describe_row or _line  # how a message names a row of the file

    # -- called by the walker ------------------------------------------------------------------------
    def enter_statement(self, node: cst.CSTNode) -> None:
        self._statements.append(node)

    def leave_statement(self, node: cst.CSTNode) -> None:
        self._statements.pop()

    def visit_import(self, node) -> None:
        # Function-level imports extend the table as the walk reaches them.
        self.imports.add(node)

    # -- called by rules -----------------------------------------------------------------------------
    @property
    def statement(self) -> Optional[cst.CSTNode]:
        return self._statements[-1] if self._statements else None

    def add_report(self, report: Report, statement: Optional[cst.CSTNode] = None) -> None:
        report.statement = statement if statement is not None else self.statement
        self.reports.append(report)

    def option(self, rule: Rule, name: str) -> Any:
        configured = self._options.get(rule.name, {})
        if name in configured:
            return configured[name]
        for opt in rule.options:
            if opt.name == name:
                return opt.default
        raise KeyError(f"{rule.code} has no option {name!r}")

    def require_full_module(self) -> None:
        if self.partial:
            raise FullModuleRequired()

    def code_of(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def positions(self):
        """LibCST's PositionProvider results for the parsed module, resolved once (costly: only to report)."""
        if self._positions is None:
            from libcst.metadata import MetadataWrapper, PositionProvider

            self._positions = MetadataWrapper(self.module, unsafe_skip_copy=True).resolve(PositionProvider)
        return self._positions

    def file_row(self, row: int) -> int:
        """The file's row for a row of the parsed module (they differ when regions were dropped)."""
        return self._rows[row - 1] if self._rows is not None else row

    def line_of(self, node: cst.CSTNode) -> int:
        """The 1-based row of the file where `node` starts (to word a report)."""
        return self.file_row(self.positions()[node].start.line)

    def where(self, node: cst.CSTNode) -> str:
        """Where `node` starts, for a message: "line 49" ("cell 3, line 2" when the file is a notebook)."""
        return self._describe_row(self.line_of(node))

    def resolve(self, expr: cst.BaseExpression) -> Optional[str]:
        return self.imports.resolve(expr)

    def reference(self, qualified: str) -> Reference:
        """Spell `qualified` with the module's own imports, or say which import a fix must add."""
        local = self.imports.local_name_for(qualified)
        if local is not None:
            return Reference(cst.parse_expression(local), None)
        parent, _, last = qualified.rpartition(".")
        # `from torch.optim import Adam` present: add `from torch.optim import AdamW` beside it.
        siblings = any(t.rpartition(".")[0] == parent and local_name == t.rpartition(".")[2]
                       for local_name, t in self.imports.bindings.items())
        if siblings and not self.imports.is_bound(last):
            return Reference(cst.Name(last), f"from {parent} import {last}")
        for module_name, alias in _PREFERRED_ALIASES.items():
            if qualified.startswith(module_name + ".") and not self.imports.is_bound(alias):
                rest = qualified[len(module_name) + 1:]
                return Reference(cst.parse_expression(f"{alias}.{rest}"), f"import {module_name} as {alias}")
        root = qualified.split(".", 1)[0]
        if self.imports.bindings.get(root, root) == root and not keyword.iskeyword(root):
            line = None if self.imports.is_bound(root) else f"import {root}"
            return Reference(cst.parse_expression(qualified), line)
        return Reference(cst.parse_expression(qualified), f"import {root}")
