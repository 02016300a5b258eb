"""Does a value reach a loss? Data flow through one module's routines, for rules whose hazard is a NaN
or Inf *gradient*: it matters only where the value is differentiated.

A value reaches a loss when something computed from it (through assignments, calls and operators, in
statement order; a loop's body is walked twice so that its later statements feed its earlier ones) is
- passed to a torch loss (`F.cross_entropy`, `F.mse_loss`, ...; an `nn.*Loss` module built in a local
  or in an attribute of the class),
- the receiver of `.backward()`, or an argument of `torch.autograd.backward` / `torch.autograd.grad`,
- passed to a routine of this module (a module-level function, or a method called through `self.`)
  whose parameter reaches a loss there, or returned from a routine whose callers in this module pass
  the result on to a loss (three calls deep at most),
- returned from the `forward` of a class deriving from `torch.nn.Module`, when the rule asks for it
  (a module's output is what training differentiates).
Code under `torch.no_grad()` / `torch.inference_mode()` (a `with` block or a decorator) computes no
gradient and feeds no loss.

Only the module being checked is seen: a value returned to another module is not followed, so a rule
using this stays silent there.
"""

from __future__ import annotations

import ast
from typing import Optional

import libcst as cst

from .binder import scope_bindings
from .nodes import is_name
from .origins import children
from .wholefile import ModuleScope, WholeFile

LOSS_FUNCTIONS = {f"torch.nn.functional.{name}" for name in (
    "cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits", "mse_loss",
    "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div", "margin_ranking_loss", "triplet_margin_loss",
    "triplet_margin_with_distance_loss", "cosine_embedding_loss", "hinge_embedding_loss", "soft_margin_loss",
    "multilabel_margin_loss", "multilabel_soft_margin_loss", "multi_margin_loss", "poisson_nll_loss",
    "gaussian_nll_loss", "ctc_loss")}
BACKWARD_FUNCTIONS = {"torch.autograd.backward", "torch.autograd.grad"}
NO_GRAD = {"torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad", "torch.autograd.grad_mode.no_grad",
           "torch.autograd.grad_mode.inference_mode"}
MODULE_BASES = {"torch.nn.Module", "torch.nn.modules.module.Module"}
MAX_DEPTH = 3


def _target_names(target: cst.CSTNode) -> list:
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [n for e in target.elements for n in _target_names(e.value)]
    if isinstance(target, cst.StarredElement):
        return _target_names(target.value)
    if isinstance(target, cst.Subscript):  # `out["loss"] = x`: the container now holds it
        return _target_names(target.value)
    return []


class LossReach:
    """Answers `reaches(...)` for one file. Routines are named by `wholefile` keys; the routine being walked
    is passed as a node (the seed is one of its nodes), every other one comes from `WholeFile`."""

    def __init__(self, ctx, whole: WholeFile, count_forward: bool) -> None:
        self.ctx = ctx
        self.whole = whole
        self.count_forward = count_forward
        self._param_cache: dict = {}

    # -- public ------------------------------------------------------------------------------------
    def reaches(self, scope: cst.CSTNode, key, seed: cst.CSTNode) -> bool:
        """Whether the value of `seed`, an expression in `scope` (a FunctionDef, or the Module's own
        statements) whose `wholefile` key is `key` (None: a routine it does not index), reaches a loss.
        False when `seed` is evaluated under no_grad."""
        return self._reaches(scope, key, seeds={id(seed)}, names=set(), depth=0, visiting=set())

    def no_grad_routine(self, function: Optional[cst.FunctionDef]) -> bool:
        return function is not None and any(self._no_grad(d.decorator) for d in function.decorators)

    # -- the flow ------------------------------------------------------------------------------------
    def _reaches(self, scope, key, seeds: set, names: set, depth: int, visiting: set) -> bool:
        mark = (key, id(scope), frozenset(seeds), frozenset(names))
        if mark in visiting or depth > MAX_DEPTH or scope is None:
            return False
        visiting = visiting | {mark}
        if isinstance(scope, cst.FunctionDef) and self.no_grad_routine(scope):
            return False
        body = scope.body.body if isinstance(scope, cst.FunctionDef) else scope.body
        flow = _Flow(self, scope, key, seeds, set(names), depth, visiting)
        for _ in range(2):  # twice: a loop's later statements feed its earlier ones
            if flow.block(body, no_grad=False):
                return True
        if flow.returned and key is not None and key is not ModuleScope:
            if self.count_forward and self._is_forward(key):
                return True
            return any(self._reaches(caller, caller_key, {id(call)}, set(), depth + 1, visiting)
                       for caller_key, caller, call in self.callers(key))
        return False

    def param_reaches(self, key, index: Optional[int], keyword: Optional[str], depth: int,
                      visiting: set) -> bool:
        function = self.whole.routine(key)
        if not isinstance(function, cst.FunctionDef):
            return False
        params = [*function.params.posonly_params, *function.params.params]
        if key[0] is not None and not _is_static(function):
            params = params[1:]  # `self`
        name = None
        if keyword is not None:
            name = next((p.name.value for p in [*params, *function.params.kwonly_params]
                         if p.name.value == keyword), None)
        elif index is not None and index < len(params):
            name = params[index].name.value
        if name is None:
            return False
        cache = (key, name)
        if cache not in self._param_cache:
            self._param_cache[cache] = False  # a recursive call sees "not (yet)"
            self._param_cache[cache] = self._reaches(function, key, set(), {name}, depth + 1, visiting)
        return self._param_cache[cache]

    def callee(self, call: cst.Call, scope, key):
        """The key of the routine of this file that `call` runs: `f(...)` for a top-level `def f` not
        rebound in the caller, or `self.m(...)` for a method of the caller's class; else None."""
        func = call.func
        if isinstance(func, cst.Name):
            target = (None, func.value)
            if not self.whole.has_routine(target) or not self._runs_module_def(func.value, scope):
                return None
            return target
        if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) \
                and isinstance(scope, cst.FunctionDef) and key not in (None, ModuleScope) and key[0] is not None:
            if func.value.value != _first_param(scope):
                return None
            target = (key[0], func.attr.value)
            return target if self.whole.has_routine(target) else None
        return None

    def _runs_module_def(self, name: str, scope) -> bool:
        """Whether `name` called in `scope` (a routine `wholefile` indexes) is the module's `def name`: the
        module binds `name` only there, and the routine does not bind it itself (methods see no class
        names, so their enclosing scope is the module)."""
        if len(self.ctx.names.module_scope.bindings.names.get(name, ())) != 1:
            return False
        if not isinstance(scope, cst.FunctionDef):
            return True
        own = scope_bindings(scope, walrus=True)
        return name in own.globals or name not in own.names

    def callers(self, key):
        """(caller key, caller node, call node) for each call of routine `key` in this file."""
        if key in (None, ModuleScope) or not self.whole.available:
            return
        cls_name, name = key
        if cls_name is None:
            def match(call):
                return isinstance(call.func, ast.Name) and call.func.id == name
        else:
            def match(call):
                return isinstance(call.func, ast.Attribute) and call.func.attr == name \
                    and isinstance(call.func.value, ast.Name)
        for caller_key in self.whole.routines():
            if cls_name is not None and (caller_key is ModuleScope or caller_key[0] != cls_name):
                continue
            if not self.whole.calls_in(caller_key, match):
                continue
            caller = self.whole.routine(caller_key)
            if caller is None:
                continue
            stack = list(caller.body.body if isinstance(caller, cst.FunctionDef) else caller.body)
            while stack:
                node = stack.pop()
                if isinstance(node, (cst.FunctionDef, cst.ClassDef)):
                    continue
                if isinstance(node, cst.Call) and self.callee(node, caller, caller_key) == key:
                    yield caller_key, caller, node
                stack.extend(children(node))

    def _is_forward(self, key) -> bool:
        return key[0] is not None and key[1] == "forward" and self._is_module_class(key[0], 0)

    def _is_module_class(self, cls_name: str, depth: int) -> bool:
        for base in self.whole.class_bases(cls_name) or ():
            if base is None:
                continue
            if self.ctx.resolve(base) in MODULE_BASES:
                return True
            if isinstance(base, cst.Name) and depth < 4 and self._is_module_class(base.value, depth + 1):
                return True
        return False

    def _no_grad(self, expr: cst.BaseExpression) -> bool:
        if isinstance(expr, cst.Call):
            expr = expr.func
        return self.ctx.resolve(expr) in NO_GRAD

    def is_loss(self, call: cst.Call, scope, key) -> bool:
        qualified = self.ctx.resolve(call.func)
        if qualified in LOSS_FUNCTIONS:
            return True
        ctor = self._constructor(call.func, scope, key)
        if ctor is None:
            return False
        name = self.ctx.resolve(ctor.func) or ""
        return name.startswith("torch.nn.") and name.endswith("Loss")

    def _constructor(self, callee: cst.BaseExpression, scope, key) -> Optional[cst.Call]:
        """`nn.XLoss(...)` for `nn.XLoss(...)(...)`, for a local assigned it once in `scope`, or for a
        `self.` attribute that every assignment in the class sets to the same kind of call."""
        if isinstance(callee, cst.Call):
            return callee
        if isinstance(callee, cst.Name) and isinstance(scope, (cst.FunctionDef, cst.Module)):
            values = assignments(scope, callee.value)
            calls = [v for v in values if isinstance(v, cst.Call)]
            return calls[0] if len(calls) == 1 and len(values) == 1 else None
        if isinstance(callee, cst.Attribute) and isinstance(callee.value, cst.Name) \
                and isinstance(scope, cst.FunctionDef) and key not in (None, ModuleScope) and key[0] is not None \
                and callee.value.value == _first_param(scope):
            values = (self.whole.class_assignments(key[0]) or {}).get(callee.attr.value, [])
            calls = [v for v in values if isinstance(v, cst.Call)]
            if values and len(calls) == len(values) and len({self.ctx.resolve(c.func) for c in calls}) == 1:
                return calls[0]
        return None


class _Flow:
    """Taint through one routine's statements."""

    def __init__(self, reach: LossReach, scope, key, seeds: set, names: set, depth: int, visiting: set) -> None:
        self.reach = reach
        self.scope = scope
        self.key = key
        self.seeds = seeds
        self.names = names
        self.depth = depth
        self.visiting = visiting
        self.returned = False

    def tainted(self, node: Optional[cst.CSTNode]) -> bool:
        if node is None:
            return False
        stack = [node]
        while stack:
            item = stack.pop()
            if id(item) in self.seeds:
                return True
            if isinstance(item, cst.Name) and item.value in self.names:
                return True
            if isinstance(item, (cst.Lambda, cst.FunctionDef, cst.ClassDef)):
                continue
            if isinstance(item, cst.Attribute):
                stack.append(item.value)  # `x.T` reads x; the attribute's own name is not a read
                continue
            stack.extend(children(item))
        return False

    def block(self, statements, no_grad: bool) -> bool:
        for statement in statements:
            if self.statement(statement, no_grad):
                return True
        return False

    def statement(self, node: cst.CSTNode, no_grad: bool) -> bool:
        if isinstance(node, (cst.FunctionDef, cst.ClassDef)):
            return False
        if isinstance(node, cst.SimpleStatementLine):
            return any(self.small(small, no_grad) for small in node.body)
        if isinstance(node, cst.With):
            inner = no_grad or any(self.reach._no_grad(item.item) for item in node.items)
            for item in node.items:
                if self.sinks(item.item, no_grad):
                    return True
                if item.asname is not None and self.tainted(item.item):
                    self.names.update(_target_names(item.asname.name))
            return self.suite(node.body, inner)
        if isinstance(node, cst.For):
            if self.sinks(node.iter, no_grad):
                return True
            if self.tainted(node.iter):
                self.names.update(_target_names(node.target))
            return self.suite(node.body, no_grad) or self.suite(node.orelse, no_grad)
        if isinstance(node, (cst.If, cst.While)):
            if self.sinks(node.test, no_grad):
                return True
            return self.suite(node.body, no_grad) or self.suite(node.orelse, no_grad)
        if isinstance(node, (cst.Try, cst.TryStar)):
            return (self.suite(node.body, no_grad) or any(self.suite(h.body, no_grad) for h in node.handlers)
                    or self.suite(node.orelse, no_grad) or self.suite(node.finalbody, no_grad))
        return False

    def suite(self, suite, no_grad: bool) -> bool:
        if suite is None:
            return False
        if isinstance(suite, (cst.Else, cst.Finally)):
            suite = suite.body
        if isinstance(suite, cst.If):
            return self.statement(suite, no_grad)
        if isinstance(suite, cst.IndentedBlock):
            return self.block(suite.body, no_grad)
        if isinstance(suite, cst.SimpleStatementSuite):
            return any(self.small(small, no_grad) for small in suite.body)
        return False

    def small(self, node: cst.CSTNode, no_grad: bool) -> bool:
        value = getattr(node, "value", None)
        if isinstance(node, (cst.Assign, cst.AnnAssign, cst.AugAssign, cst.Expr, cst.Return)):
            if value is not None and self.sinks(value, no_grad):
                return True
        if value is None or not self.tainted(value):
            return False
        if isinstance(node, cst.Assign):
            for target in node.targets:
                self.names.update(_target_names(target.target))
        elif isinstance(node, (cst.AnnAssign, cst.AugAssign)):
            self.names.update(_target_names(node.target))
        elif isinstance(node, cst.Return) and not no_grad:
            self.returned = True
        return False

    def sinks(self, expr: cst.CSTNode, no_grad: bool) -> bool:
        """Whether a call inside `expr` takes a tainted value into a loss."""
        if no_grad or not self.tainted(expr):
            return False
        stack = [expr]
        while stack:
            node = stack.pop()
            if isinstance(node, (cst.Lambda, cst.FunctionDef, cst.ClassDef)):
                continue
            if isinstance(node, cst.NamedExpr) and self.tainted(node.value):
                self.names.update(_target_names(node.target))
            if isinstance(node, cst.Call) and self._sink(node):
                return True
            stack.extend(children(node))
        return False

    def _sink(self, call: cst.Call) -> bool:
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value == "backward" and self.tainted(func.value):
            return True
        tainted_args = [(i, a) for i, a in enumerate(call.args) if self.tainted(a.value)]
        if not tainted_args:
            return False
        reach = self.reach
        if reach.ctx.resolve(func) in BACKWARD_FUNCTIONS or reach.is_loss(call, self.scope, self.key):
            return True
        callee = reach.callee(call, self.scope, self.key)
        if callee is None:
            return False
        for index, a in tainted_args:
            if a.star:
                continue
            keyword = a.keyword.value if a.keyword is not None else None
            position = None if keyword else sum(1 for b in call.args[:index] if b.keyword is None)
            if reach.param_reaches(callee, position, keyword, self.depth, self.visiting):
                return True
        return False


def _first_param(function: cst.FunctionDef) -> Optional[str]:
    params = function.params.posonly_params or function.params.params
    return params[0].name.value if params else None


def _is_static(function: cst.FunctionDef) -> bool:
    return any(is_name(d.decorator, "staticmethod") for d in function.decorators)


def assignments(scope, name: str) -> list:
    """Values assigned to `name` in `scope`'s own body (None for a binding whose value is unknown)."""
    found = []
    stack = list(scope.body.body if isinstance(scope, cst.FunctionDef) else scope.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue
        if isinstance(node, cst.Assign):
            for target in node.targets:
                if name in _target_names(target.target):
                    found.append(node.value if is_name(target.target, name) and len(node.targets) == 1 else None)
        elif isinstance(node, (cst.AnnAssign, cst.AugAssign, cst.For)) and name in _target_names(node.target):
            found.append(node.value if isinstance(node, cst.AnnAssign) else None)
        stack.extend(children(node))
    return found
