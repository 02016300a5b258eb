"""Cheap, sound over-approximations on Python's `ast`, for rules' region filters (`Rule.region_filter`).

The text triggers say a routine mentions `softmax(` and `log(`; a region filter asks the routine's `ast`
(which the engine has already) whether a log is actually taken of something a softmax produced, before
LibCST parses it. A filter must never reject a region that holds a finding, so it follows values more
loosely than the rule does: every assignment of a local name counts (in any order), and names are not
resolved through imports (any `.softmax(...)`, any `softmax(...)`).
"""

from __future__ import annotations

import ast
import re
from typing import Callable, Iterable, Optional

from .origins import CAST_METHODS, SELECT_ATTRIBUTES, SELECT_FUNCTIONS, SELECT_METHODS
from .triggers import scan

# Value-preserving steps the rules follow (selections, reshapes, casts: see `origins`), by name: any
# method or function so called, whatever it resolves to.
PASSING = SELECT_METHODS | CAST_METHODS | {name.rsplit(".", 1)[1] for name in SELECT_FUNCTIONS}
PASSING_ATTRIBUTES = SELECT_ATTRIBUTES


def called_name(call: ast.Call) -> Optional[str]:
    """`softmax` for `F.softmax(...)`, `x.softmax(...)` and `softmax(...)`."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


class RegionFlow:
    """The assignments of a region (a function, or a run of module statements) and its calls."""

    def __init__(self, nodes: Iterable[ast.AST]) -> None:
        self.values: dict = {}
        self.calls: list = []
        self.powers: list = []  # `a ** b`
        for root in nodes:
            for node in ast.walk(root):
                if isinstance(node, ast.Call):
                    self.calls.append(node)
                elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
                    self.powers.append(node)
                elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    if node.value is None:
                        continue
                    for target in targets:
                        for name in _names(target):
                            self.values.setdefault(name, []).append(node.value)

    def derives(self, expr: Optional[ast.AST], produced: Callable[[ast.AST], bool], depth: int = 0,
                seen: Optional[set] = None) -> bool:
        """Whether `expr` may hold what a node accepted by `produced` computed, through local names and
        value-preserving steps."""
        if expr is None or depth > 12:
            return False
        if produced(expr):
            return True
        if isinstance(expr, ast.Name):
            seen = seen if seen is not None else set()
            if expr.id in seen:
                return False
            seen.add(expr.id)
            return any(self.derives(v, produced, depth + 1, seen) for v in self.values.get(expr.id, ()))
        if isinstance(expr, ast.Subscript):
            return self.derives(expr.value, produced, depth + 1, seen)
        if isinstance(expr, ast.Attribute) and expr.attr in PASSING_ATTRIBUTES:
            return self.derives(expr.value, produced, depth + 1, seen)
        if isinstance(expr, ast.Call):
            if isinstance(expr.func, ast.Attribute) and expr.func.attr in PASSING:
                if self.derives(expr.func.value, produced, depth + 1, seen):
                    return True
            # torch.gather(p, ...), torch.flatten(p): the first argument
            if expr.args and called_name(expr) in PASSING:
                return self.derives(expr.args[0], produced, depth + 1, seen)
        return False


_LAST_FLOW: list = [None, None]  # (the region's nodes, their RegionFlow): several rules ask about one region


def region_flow(nodes) -> RegionFlow:
    """The RegionFlow of `nodes`, walked once for every rule that asks about the same region."""
    nodes = tuple(nodes)
    last = _LAST_FLOW[0]
    if last is None or len(last) != len(nodes) or any(a is not b for a, b in zip(last, nodes)):
        _LAST_FLOW[0], _LAST_FLOW[1] = nodes, RegionFlow(nodes)
    return _LAST_FLOW[1]


def _names(target: ast.AST) -> list:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for e in target.elts for n in _names(e)]
    if isinstance(target, ast.Starred):
        return _names(target.value)
    return []


def first_argument(call: ast.Call) -> Optional[ast.AST]:
    if call.args and not isinstance(call.args[0], ast.Starred):
        return call.args[0]
    return next((k.value for k in call.keywords if k.arg == "input"), None)


def operands(call: ast.Call) -> list:
    """What `call` may apply to, without resolving its name: the receiver of a method (`x` in `x.log()`)
    and the first argument (`x` in `torch.log(x)` or `torch.log(input=x)`)."""
    found = [call.func.value] if isinstance(call.func, ast.Attribute) else []
    first = first_argument(call)
    return found + [first] if first is not None else found


_IMPORTED: list = [None, frozenset()]  # (tree, names it binds by import at top level): the last one asked


def imported(tree: Optional[ast.Module]) -> frozenset:
    """Names the module binds by import at its top level (and in top-level `if`/`try` blocks)."""
    if tree is None:
        return frozenset()
    if _IMPORTED[0] is not tree:
        names = set()
        stack = list(tree.body)
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    names.add((alias.asname or alias.name).split(".")[0])
            elif isinstance(node, (ast.If, ast.Try)):
                stack.extend(node.body)
                stack.extend(node.orelse)
                stack.extend(getattr(node, "finalbody", ()))
                for handler in getattr(node, "handlers", ()):
                    stack.extend(handler.body)
        _IMPORTED[0], _IMPORTED[1] = tree, frozenset(names)
    return _IMPORTED[1]


def aliased(text: str, names: set) -> bool:
    """Whether the file may import one of `names` under another name (`from torch import log as tlog`,
    anywhere): a filter that looks for calls by name cannot see those. Read from the text (`name as`)
    through the shared trigger scan: most triggers ask the same."""
    found = scan(text)
    return any(found.search(re.compile(rf"{name}\s+as\b")) for name in names)


def spells_any(text: str, classes: tuple) -> bool:
    """Whether the file's text spells one of the module `classes` (`Softmax`): a call can be an instance of
    a torch module class only where the file names the class, since the rules resolve the constructor
    through this file's imports (an import under another name still spells it: `Softmax as Sm`)."""
    found = scan(text)
    return any(found.has(name) for name in classes)


def instance_call(expr: ast.AST, flow: RegionFlow, modules: frozenset) -> bool:
    """A call of something that may be a module instance: `self.act(x)` (an attribute of a name that is
    not an imported module), `act(x)` (a local), `nn.Softmax(1)(x)`. Ask only where `spells_any` says the
    file names the class the rule needs."""
    if not isinstance(expr, ast.Call):
        return False
    func = expr.func
    if isinstance(func, ast.Call):
        return True
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id not in modules
    return isinstance(func, ast.Name) and func.id in flow.values
