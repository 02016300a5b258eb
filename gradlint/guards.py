"""Whether code around an expression keeps a value away from zero, and whether gradients flow there.

A division by a norm is harmless where the code only runs, or only keeps its result, when the norm is
non-zero. Two kinds of guard differ in what they protect:

- *control flow* (`if n > 0:`, `x / n if n else x`, an early `if n == 0: return`, a `while n > 0:`, an
  `assert n > 0`): the division never runs on a zero norm, so neither its value nor its gradient can
  be NaN (an `if` on a tensor with more than one element raises, so the original never ran there);
- a *mask* (`torch.where(n > 0, x / n, x)`, `(x / n).masked_fill(n == 0, 0)`): the division runs and
  makes NaN/Inf, and the mask discards it in the forward pass. Under autograd the discarded branch
  still gets a zero gradient, and zero times its infinite local derivative is NaN, so a mask is a
  guard only where no gradient flows: under `torch.no_grad()`/`torch.inference_mode()` (a decorator or a
  `with` block) or in a function that only such code calls.

A test guards `n` when its truth (or falsity, for an `else` and early exits) implies `n != 0`: `n > c`
with `c >= 0`, `n >= c` with `c > 0`, `n != 0`, `n` itself, `not (n == 0)`, and those inside `and`
(or `or` when false), through `.item()`, `float()` and `abs()`, and element-wise under `.all()` (true) or
`.any()` (false). `matches(expr)` says which expressions
stand for `n`.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import libcst as cst

from .nodes import arg_value, method_call, number
from .walk import child_fields

Matches = Callable[[cst.BaseExpression], bool]
NO_GRAD = frozenset({
    "torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad", "torch.autograd.inference_mode",
    "torch.autograd.grad_mode.no_grad", "torch.autograd.grad_mode.inference_mode",
})
SET_GRAD_ENABLED = frozenset({"torch.set_grad_enabled", "torch.autograd.set_grad_enabled",
                              "torch.autograd.grad_mode.set_grad_enabled"})
_EXITS = (cst.Return, cst.Raise, cst.Continue, cst.Break)


# -- tests ------------------------------------------------------------------------------------------------

def implies_nonzero(test: cst.BaseExpression, matches: Matches, when: bool = True,
                    literal: Callable[[cst.BaseExpression], Optional[float]] = number) -> bool:
    """Whether `test` being `when` implies that the value `matches` picks out is non-zero.

    `literal(expr)` gives the number a threshold holds (a literal, or a local name bound to one)."""
    if isinstance(test, cst.BooleanOperation):
        both = isinstance(test.operator, cst.And) == when  # `a and b` true, `a or b` false: both hold
        return both and (implies_nonzero(test.left, matches, when, literal)
                         or implies_nonzero(test.right, matches, when, literal))
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        return implies_nonzero(test.expression, matches, not when, literal)
    if isinstance(test, cst.Comparison):
        if not when and len(test.comparisons) > 1:
            return False  # a false chain says only that one link fails
        left = test.left
        for target in test.comparisons:
            if _comparison_implies(left, target.operator, target.comparator, matches, when, literal):
                return True
            left = target.comparator
        return False
    mc = method_call(test)
    if mc is not None and mc[1] in ("all", "any") and not test.args:
        # `(n > 0).all()` true, `(n == 0).any()` false: the test holds, or fails, for every element.
        if (mc[1] == "all") == when:
            return implies_nonzero(mc[0], matches, when, literal)
        return False
    return when and _stands_for(test, matches)


def _comparison_implies(left, operator, right, matches: Matches, when: bool, literal) -> bool:
    if _stands_for(left, matches):
        value, op = literal(right), type(operator)
    elif _stands_for(right, matches):
        value, op = literal(left), _MIRROR.get(type(operator))
    else:
        return False
    if value is None or op is None:
        return False
    if not when:
        op = _NEGATION.get(op)
    if op is cst.GreaterThan:
        return value >= 0
    if op is cst.GreaterThanEqual:
        return value > 0
    if op is cst.LessThan:
        return value <= 0
    if op is cst.LessThanEqual:
        return value < 0
    if op is cst.NotEqual:
        return value == 0
    return op is cst.Equal and value != 0


_MIRROR = {cst.GreaterThan: cst.LessThan, cst.LessThan: cst.GreaterThan, cst.GreaterThanEqual: cst.LessThanEqual,
           cst.LessThanEqual: cst.GreaterThanEqual, cst.Equal: cst.Equal, cst.NotEqual: cst.NotEqual}
_NEGATION = {cst.GreaterThan: cst.LessThanEqual, cst.LessThanEqual: cst.GreaterThan,
             cst.LessThan: cst.GreaterThanEqual, cst.GreaterThanEqual: cst.LessThan,
             cst.Equal: cst.NotEqual, cst.NotEqual: cst.Equal}


def _stands_for(expr: cst.BaseExpression, matches: Matches) -> bool:
    """`n`, or `n.item()`, `float(n)`, `abs(n)`, `n.abs()` for an `n` that `matches`."""
    for _ in range(4):
        if matches(expr):
            return True
        mc = method_call(expr)
        if mc is not None and mc[1] in ("item", "abs", "float", "detach") and not expr.args:
            expr = mc[0]
        elif isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name) and \
                expr.func.value in ("float", "abs") and len(expr.args) == 1:
            expr = expr.args[0].value
        else:
            return False
    return False


# -- control flow around a statement ---------------------------------------------------------------------

def blocks(statement) -> Iterator[tuple[Sequence, bool, Optional[cst.BaseExpression]]]:
    """(statements, branch, test) for each block of a compound statement: branch True for the part that
    runs when `test` holds, False for an `else`, None for a block with no test."""
    if isinstance(statement, (cst.If, cst.While)):
        yield statement.body.body, True, statement.test
        orelse = statement.orelse
        if isinstance(orelse, cst.If):
            yield (orelse,), False, statement.test
        elif orelse is not None:
            yield orelse.body.body, False, statement.test
        return
    for name in ("body", "orelse", "finalbody"):
        block = getattr(statement, name, None)
        if isinstance(block, cst.BaseSuite):
            yield block.body, None, None
        elif block is not None and hasattr(block, "body"):
            yield block.body.body, None, None
    for handler in getattr(statement, "handlers", ()):
        yield handler.body.body, None, None
    for case in getattr(statement, "cases", ()):
        yield case.body.body, None, None


def guarded_by_control_flow(statements: Sequence[cst.CSTNode], node: cst.CSTNode, matches: Matches,
                            literal=number) -> bool:
    """Whether `node`, in the innermost of `statements` (outermost first, as the walk nests them), runs
    only when the value `matches` picks out is non-zero: inside an `if`/`while` on it, in the `else` of
    a test for zero, or after an early exit (`return`, `raise`, `continue`, `break`) or an `assert` on it."""
    if statements and isinstance(statements[-1], (cst.If, cst.While)):  # `if n > 0: x = x / n`
        last = statements[-1]
        if isinstance(last.body, cst.SimpleStatementSuite) and contains(last.body, node):
            return implies_nonzero(last.test, matches, True, literal)
        orelse = last.orelse
        if isinstance(orelse, cst.Else) and isinstance(orelse.body, cst.SimpleStatementSuite) and \
                contains(orelse.body, node):
            return implies_nonzero(last.test, matches, False, literal)
    for outer, inner in zip(statements, statements[1:]):
        for block, branch, test in blocks(outer):
            if not any(s is inner for s in block):
                continue
            if test is not None and implies_nonzero(test, matches, branch, literal):
                return True
            for before in block:
                if before is inner:
                    break
                if _exits_unless_nonzero(before, matches, literal):
                    return True
    return False


def _exits_unless_nonzero(statement, matches: Matches, literal) -> bool:
    if isinstance(statement, cst.SimpleStatementLine):
        return any(isinstance(s, cst.Assert) and implies_nonzero(s.test, matches, True, literal)
                   for s in statement.body)
    if not isinstance(statement, cst.If) or statement.orelse is not None:
        return False
    body = statement.body.body
    last = body[-1] if body else None
    small = last.body[-1] if isinstance(last, cst.SimpleStatementLine) and last.body else last
    return isinstance(small, _EXITS) and implies_nonzero(statement.test, matches, False, literal)


# -- masks and conditional expressions around an expression -----------------------------------------------

def contains(root: cst.CSTNode, node: cst.CSTNode) -> bool:
    """Whether `node` is `root` or inside it (by identity)."""
    stack = [root]
    while stack:
        item = stack.pop()
        if item is node:
            return True
        for name in child_fields(type(item)):
            value = getattr(item, name)
            if isinstance(value, cst.CSTNode):
                stack.append(value)
            elif isinstance(value, (list, tuple)):
                stack.extend(c for c in value if isinstance(c, cst.CSTNode))
    return False


def selector(node: cst.CSTNode, resolve: Callable) -> Optional[tuple[str, cst.BaseExpression, list]]:
    """For a node that picks one of two values: (kind, test, [(branch node, branch)]), kind "mask"
    (`torch.where`, `masked_fill`: both sides are computed) or "flow" (`a if test else b`: only one is)."""
    if isinstance(node, cst.IfExp):
        return "flow", node.test, [(node.body, True), (node.orelse, False)]
    if not isinstance(node, cst.Call):
        return None
    if resolve(node.func) == "torch.where":
        test, chosen, other = arg_value(node, 0, "condition"), arg_value(node, 1, "input"), \
            arg_value(node, 2, "other")
        if test is not None and chosen is not None:
            return "mask", test, [(chosen, True), *([(other, False)] if other is not None else [])]
    mc = method_call(node)
    if mc is not None and mc[1] in ("masked_fill", "masked_fill_"):
        mask = arg_value(node, 0, "mask")
        if mask is not None:
            return "mask", mask, [(mc[0], False)]  # the receiver is kept where the mask is false
    return None


def selected_guard(selectors: Sequence[cst.CSTNode], node: cst.CSTNode, matches: Matches, resolve: Callable,
                   literal=number) -> Optional[str]:
    """"flow" or "mask" if one of the enclosing `selectors` keeps `node`'s value only where the value
    `matches` picks out is non-zero ("flow" preferred: it guards the gradient too), else None."""
    found = None
    for candidate in selectors:
        picked = selector(candidate, resolve)
        if picked is None:
            continue
        kind, test, branches = picked
        for branch_node, branch in branches:
            if contains(branch_node, node) and implies_nonzero(test, matches, branch, literal):
                if kind == "flow":
                    return "flow"
                found = "mask"
    return found


def enclosing_selectors(root: cst.CSTNode, node: cst.CSTNode, resolve: Callable) -> list:
    """The selecting nodes (see `selector`) inside `root` that hold `node`, outermost first."""
    path: list = []

    def visit(item) -> bool:
        if item is node:
            return True
        for name in child_fields(type(item)):
            value = getattr(item, name)
            children = [value] if isinstance(value, cst.CSTNode) else \
                [c for c in value if isinstance(c, cst.CSTNode)] if isinstance(value, (list, tuple)) else []
            for child in children:
                path.append(item)
                if visit(child):
                    return True
                path.pop()
        return False

    visit(root)
    return [p for p in path if selector(p, resolve) is not None]


def uses_all_selected(statements: Sequence[cst.CSTNode], name: str, matches: Matches, resolve: Callable,
                      literal=number) -> Optional[str]:
    """For a value just bound to `name`: "flow" or "mask" if its uses in `statements` (those after the
    binding, in order) up to its next rebinding all sit in a branch that a guard on the matched value
    selects (`t = w / g` then `t = torch.where(g > 0, t, 1.0)`), else None (also with no use)."""
    weakest = None
    for statement in statements:
        uses = [n for n in _names(statement, name)]
        for use in uses:
            guard = selected_guard(enclosing_selectors(statement, use, resolve), use, matches, resolve, literal)
            if guard is None:
                return None
            weakest = "mask" if guard == "mask" or weakest == "mask" else "flow"
        if _rebinds(statement, name):
            break
    return weakest


def _names(root: cst.CSTNode, name: str) -> Iterator[cst.Name]:
    stack = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, cst.Name) and item.value == name:
            yield item
        if isinstance(item, (cst.FunctionDef, cst.ClassDef, cst.Lambda)) and item is not root:
            continue
        for field in child_fields(type(item)):
            if (isinstance(item, cst.Attribute) and field == "attr") or \
                    (isinstance(item, (cst.AssignTarget, cst.AnnAssign)) and field == "target"):
                continue  # an attribute's name, or the name being rebound: not a read
            value = getattr(item, field)
            if isinstance(value, cst.CSTNode):
                stack.append(value)
            elif isinstance(value, (list, tuple)):
                stack.extend(c for c in value if isinstance(c, cst.CSTNode))


def _rebinds(statement, name: str) -> bool:
    if not isinstance(statement, cst.SimpleStatementLine):
        return False
    for small in statement.body:
        targets = [t.target for t in small.targets] if isinstance(small, cst.Assign) else \
            [small.target] if isinstance(small, (cst.AnnAssign, cst.AugAssign)) else []
        if any(isinstance(t, cst.Name) and t.value == name for t in targets):
            return True
    return False


def flat_statements(function: cst.CSTNode) -> list[tuple[cst.CSTNode, tuple]]:
    """(statement, branches) for every statement of `function`'s body in source order, nested ones
    flattened (nested functions and classes left out): `branches` names the `if`/`else` arms around it,
    as (id of the `if`, arm) pairs, so that code in two arms of one `if` is known never to run together."""
    ordered: list = []

    def block(body, branches: tuple) -> None:
        for stmt in body:
            ordered.append((stmt, branches))
            if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
                continue
            for arm, (inner, _, _) in enumerate(blocks(stmt)):
                block(inner, (*branches, (id(stmt), arm)) if isinstance(stmt, cst.If) else branches)

    block(function.body.body if isinstance(function.body, cst.BaseSuite) else (), ())
    return ordered


def exclusive(a: tuple, b: tuple) -> bool:
    """Whether code in `if` arms `a` and code in arms `b` (see `flat_statements`) never both run."""
    arms = dict(a)
    return any(key in arms and arms[key] != arm for key, arm in b)


def statements_after(function: cst.CSTNode, statement: cst.CSTNode) -> list:
    """The statements of `function`'s body that come after `statement` in source order."""
    ordered = [stmt for stmt, _ in flat_statements(function)]
    for index, stmt in enumerate(ordered):
        if stmt is statement:
            return ordered[index + 1:]
    return []


# -- gradient mode ---------------------------------------------------------------------------------------

def turns_grad_off(expr: cst.BaseExpression, resolve: Callable) -> bool:
    """`torch.no_grad()`, `torch.inference_mode()` (not `(False)`), `torch.set_grad_enabled(False)`, as a
    decorator or a `with` item."""
    call = expr if isinstance(expr, cst.Call) else None
    qualified = resolve(call.func if call is not None else expr)
    if qualified in NO_GRAD:
        flag = arg_value(call, 0, "mode") if call is not None else None
        return flag is None or not (isinstance(flag, cst.Name) and flag.value == "False")
    if qualified in SET_GRAD_ENABLED and call is not None:
        flag = arg_value(call, 0, "mode")
        return isinstance(flag, cst.Name) and flag.value == "False"
    return False


def grad_off_around(statements: Sequence[cst.CSTNode], resolve: Callable) -> bool:
    """Whether the innermost of `statements` runs with gradients off: inside a `with torch.no_grad():`
    or in a function decorated with it (the nearest function decides: its body runs when it is called)."""
    for statement in reversed(statements):
        if isinstance(statement, cst.With) and any(turns_grad_off(i.item, resolve) for i in statement.items):
            return True
        if isinstance(statement, cst.FunctionDef):
            return any(turns_grad_off(d.decorator, resolve) for d in statement.decorators)
    return False
