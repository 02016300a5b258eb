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
        self.quotients: list = []  # what `/` and `/=` divide by
        self.products: list = []  # `a * b`
        self.bound: set = set()  # every name the region binds (assigned, a parameter, imported, a loop's)
        for root in nodes:
            for node in ast.walk(root):
                if isinstance(node, ast.Call):
                    self.calls.append(node)
                elif isinstance(node, ast.BinOp):
                    op = node.op
                    if isinstance(op, ast.Pow):
                        self.powers.append(node)
                    elif isinstance(op, ast.Div):
                        self.quotients.append(node.right)
                    elif isinstance(op, ast.Mult):
                        self.products.append(node)
                elif isinstance(node, ast.Name):
                    if not isinstance(node.ctx, ast.Load):
                        self.bound.add(node.id)
                elif isinstance(node, ast.arg):
                    self.bound.add(node.arg)
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    self.bound.update((a.asname or a.name).split(".")[0] for a in node.names)
                elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    if node.value is None:
                        continue
                    if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Div):
                        self.quotients.append(node.value)
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


def dotted_name(node: ast.AST) -> Optional[str]:
    """`torch.nn.Module` for that attribute chain on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def module_imports(tree: ast.Module) -> Iterable[ast.stmt]:
    """The module's top-level import statements, those in top-level `if`/`try` blocks included."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try)):
            stack.extend(node.body)
            stack.extend(node.orelse)
            stack.extend(getattr(node, "finalbody", ()))
            for handler in getattr(node, "handlers", ()):
                stack.extend(handler.body)


_IMPORTED: list = [None, frozenset()]  # (tree, names it binds by import at top level): the last one asked


def imported(tree: Optional[ast.Module]) -> frozenset:
    """Names the module binds by import at its top level (and in top-level `if`/`try` blocks)."""
    if tree is None:
        return frozenset()
    if _IMPORTED[0] is not tree:
        names = {(alias.asname or alias.name).split(".")[0] for node in module_imports(tree) for alias in node.names}
        _IMPORTED[0], _IMPORTED[1] = tree, frozenset(names)
    return _IMPORTED[1]


def aliased(text: str, names: set) -> bool:
    """Whether the file may import one of `names` under another name (`from torch import log as tlog`,
    anywhere): a filter that looks for calls by name cannot see those. Read from the text (`name as`)
    through the shared trigger scan: most triggers ask the same."""
    found = scan(text)
    return any(found.search(re.compile(rf"{name}\s+as\b")) for name in names)


_MODULES: list = [None, {}]  # (tree, top-level import name -> the module or object it binds): the last one


def import_targets(tree: Optional[ast.Module]) -> dict:
    """What each name the module imports at its top level binds: `np` -> `numpy`, `sqrt` -> `math.sqrt`
    (a name imported twice binds `None`: it cannot be told which)."""
    if tree is None:
        return {}
    if _MODULES[0] is not tree:
        targets: dict = {}
        for node in module_imports(tree):
            for alias in node.names:
                if isinstance(node, ast.Import):
                    name = alias.asname or alias.name.split(".")[0]
                    target = alias.name if alias.asname else name
                else:
                    name = alias.asname or alias.name
                    target = f"{'.' * node.level}{node.module or ''}.{alias.name}"
                targets[name] = target if targets.get(name, target) == target else None
        _MODULES[0], _MODULES[1] = tree, targets
    return _MODULES[1]


_REGISTERS = {"register_module", "add_module", "register_parameter", "register_buffer", "setattr"}
_HOLDERS: list = [None, {}]  # (tree, classes -> holders): the last tree asked about


def holders(tree: Optional[ast.Module], text: str, classes: tuple) -> Optional[frozenset]:
    """The names and attribute names that may hold an instance of one of the module `classes` (`Softmax`),
    or None when that cannot be told (the file imports a class under another name).

    The rules resolve a module call through the constructor the local or `self.` attribute is assigned
    (`origins.OriginRule.constructed`: every assignment in the class, one kind), and the constructor's
    name through this file's imports: so a holder is assigned, somewhere in the file, a value that calls a
    function so named, in a statement whose text spells the name. Only those statements are walked. Kept
    loose: every target of such an assignment, and every string given to `register_module`, `add_module`
    or `setattr` there, whatever it registers."""
    if tree is None or aliased(text, set(classes)):
        return None
    if _HOLDERS[0] is not tree:
        _HOLDERS[0], _HOLDERS[1] = tree, {}
    found = _HOLDERS[1].get(classes)
    if found is None:
        names: set = set()
        for statement in statements_spelling(tree, text, classes):
            for node in ast.walk(statement):
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) \
                        and node.value is not None and any(
                            isinstance(n, ast.Call) and called_name(n) in classes for n in ast.walk(node.value)):
                    for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                        for part in ast.walk(target):
                            if isinstance(part, ast.Name):
                                names.add(part.id)
                            elif isinstance(part, ast.Attribute):
                                names.add(part.attr)
                elif isinstance(node, ast.Call) and called_name(node) in _REGISTERS:
                    names.update(a.value for a in ast.walk(node)
                                 if isinstance(a, ast.Constant) and isinstance(a.value, str))
        found = _HOLDERS[1][classes] = frozenset(names)
    return found


def statements_spelling(tree: ast.Module, text: str, words: tuple) -> list:
    """The innermost statements whose lines hold one of `words` in the text (a compound statement where the
    word is in its header)."""
    rows = set()
    for word in words:
        at = text.find(word)
        while at != -1:
            rows.add(text.count("\n", 0, at) + 1)
            at = text.find(word, at + len(word))
    found = []
    for row in sorted(rows):
        body = tree.body
        while body:
            statement = next((s for s in body if s.lineno <= row <= (s.end_lineno or s.lineno)), None)
            if statement is None:
                break
            inner = [s for field in ("body", "orelse", "finalbody") for s in getattr(statement, field, ())
                     if isinstance(s, ast.stmt)]
            inner += [s for h in getattr(statement, "handlers", ()) for s in h.body]
            inner += [s for c in getattr(statement, "cases", ()) for s in c.body]
            if any(s.lineno <= row <= (s.end_lineno or s.lineno) for s in inner):
                body = inner
                continue
            found.append(statement)
            break
    return found


def module_call(expr: ast.AST, flow: "RegionFlow", modules: frozenset, tree: Optional[ast.Module], text: str,
                classes: tuple) -> bool:
    """A call of what may be an instance of one of `classes`: `nn.Softmax(1)(x)`, or a call of a local or
    `self.` attribute among the `holders` of the class (any, as `instance_call`, when they are unknown)."""
    if not instance_call(expr, flow, modules):
        return False
    func = expr.func
    if isinstance(func, ast.Call):
        return called_name(func) in classes or aliased(text, set(classes))
    held = holders(tree, text, classes)
    return held is None or (func.attr if isinstance(func, ast.Attribute) else func.id) in held


def instance_call(expr: ast.AST, flow: RegionFlow, modules: frozenset) -> bool:
    """A call of something that may be a module instance: `self.act(x)` (an attribute of a name that is
    not an imported module), `act(x)` (a local), `nn.Softmax(1)(x)`."""
    if not isinstance(expr, ast.Call):
        return False
    func = expr.func
    if isinstance(func, ast.Call):
        return True
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id not in modules
    return isinstance(func, ast.Name) and func.id in flow.values
