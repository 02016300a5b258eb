"""What produced a value: the torch operation behind an expression, followed through local names,
shape-only views and `self.` attributes that hold torch modules or parameters.

`probs = F.softmax(logits, -1)` then `torch.log(probs[:, 0])`: the log's argument is a softmax output,
reached through a local name and a subscript. A rule that rewrites such a value (log of softmax ->
log_softmax) rebuilds the same selection on the new operation (`F.log_softmax(logits, -1)[:, 0]`), and
copies code from an assignment to the use site only when no name that code mentions was rebound in
between (`OriginRule.unchanged_since`).

Every question is answered from facts in the module: what a name resolves to through its imports, what
a local was last assigned, what every method of the enclosing class assigns to an attribute. A word in a
name never decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import libcst as cst

from .nodes import arg, arg_value, is_name, is_pure, make_args, number, parenthesized
from .scopes import LocalsRule
from .walk import child_fields, children
from .wholefile import ModuleScope, WholeFile

# Operations, by qualified name (function forms), method name and module class.
SOFTMAX, LOG_SOFTMAX, SIGMOID, LOGSIGMOID = "softmax", "log_softmax", "sigmoid", "logsigmoid"
FUNCTIONS = {
    "torch.softmax": SOFTMAX, "torch.nn.functional.softmax": SOFTMAX, "torch.special.softmax": SOFTMAX,
    "torch.log_softmax": LOG_SOFTMAX, "torch.nn.functional.log_softmax": LOG_SOFTMAX,
    "torch.special.log_softmax": LOG_SOFTMAX,
    "torch.sigmoid": SIGMOID, "torch.nn.functional.sigmoid": SIGMOID, "torch.special.expit": SIGMOID,
    "torch.nn.functional.logsigmoid": LOGSIGMOID,
}
METHODS = {"softmax": SOFTMAX, "log_softmax": LOG_SOFTMAX, "sigmoid": SIGMOID}
MODULES = {
    "torch.nn.Softmax": SOFTMAX, "torch.nn.modules.activation.Softmax": SOFTMAX,
    "torch.nn.LogSoftmax": LOG_SOFTMAX, "torch.nn.modules.activation.LogSoftmax": LOG_SOFTMAX,
    "torch.nn.Sigmoid": SIGMOID, "torch.nn.modules.activation.Sigmoid": SIGMOID,
    "torch.nn.LogSigmoid": LOGSIGMOID, "torch.nn.modules.activation.LogSigmoid": LOGSIGMOID,
}
# Losses, as functions and as module classes: kind -> qualified names.
LOSS_FUNCTIONS = {
    "torch.nn.functional.cross_entropy": "cross_entropy", "torch.nn.functional.nll_loss": "nll_loss",
    "torch.nn.functional.binary_cross_entropy": "bce", "torch.nn.functional.kl_div": "kl_div",
}
LOSS_MODULES = {
    "torch.nn.CrossEntropyLoss": "cross_entropy", "torch.nn.modules.loss.CrossEntropyLoss": "cross_entropy",
    "torch.nn.NLLLoss": "nll_loss", "torch.nn.modules.loss.NLLLoss": "nll_loss",
    "torch.nn.BCELoss": "bce", "torch.nn.modules.loss.BCELoss": "bce",
    "torch.nn.KLDivLoss": "kl_div", "torch.nn.modules.loss.KLDivLoss": "kl_div",
}
LOG_SOFTMAX_OF = {
    "torch.softmax": "torch.log_softmax",
    "torch.nn.functional.softmax": "torch.nn.functional.log_softmax",
    "torch.special.softmax": "torch.special.log_softmax",
}
PARAMETER_CLASSES = {"torch.nn.Parameter", "torch.nn.parameter.Parameter"}

# Methods and functions that select or rearrange elements without changing them: an elementwise
# function (log, a clamp) commutes with them, so `log(p[i])` is `log(p)[i]`.
SELECT_METHODS = {
    "view", "view_as", "reshape", "reshape_as", "squeeze", "unsqueeze", "flatten", "unflatten", "permute",
    "transpose", "t", "contiguous", "expand", "expand_as", "gather", "index_select", "masked_select",
    "take_along_dim", "narrow", "select", "flip", "roll", "diagonal", "clone", "detach", "movedim",
    "swapaxes", "swapdims", "repeat", "repeat_interleave", "tile", "cpu", "cuda",
}
SELECT_ATTRIBUTES = {"T", "mT", "data"}
SELECT_FUNCTIONS = {
    f"torch.{name}" for name in (
        "gather", "index_select", "masked_select", "take_along_dim", "narrow", "select", "flip", "roll",
        "diagonal", "squeeze", "unsqueeze", "flatten", "transpose", "permute", "reshape", "movedim", "clone",
        "swapaxes", "swapdims", "t")
}
# Methods that may change the dtype: the value is the same number, rounded to another precision.
CAST_METHODS = {"float", "double", "half", "bfloat16", "to", "type", "type_as"}


@dataclass(frozen=True)
class Step:
    """One transparent operation between a producer and the expression asked about."""

    node: cst.BaseExpression  # the Subscript, Attribute or Call applied
    rebuild: Callable[[cst.BaseExpression], cst.BaseExpression]  # the same operation on another base
    cast: bool = False


@dataclass(frozen=True)
class Origin:
    kind: str  # SOFTMAX, SIGMOID, ...
    op: cst.Call  # the call that computed the value
    form: str  # "function" (F.softmax(x, 1)), "method" (x.softmax(1)) or "module" (self.act(x))
    input: Optional[cst.BaseExpression]  # the tensor the operation was applied to
    ctor: Optional[cst.Call] = None  # module form: the constructor call, nn.Softmax(dim=1)
    steps: tuple = ()  # outermost first
    hops: tuple = ()  # (Name at its use, the value it was bound to), for each local name followed

    @property
    def cast(self) -> bool:
        return any(step.cast for step in self.steps)

    def rebuild(self, base: cst.BaseExpression) -> cst.BaseExpression:
        """`base` with every step applied, innermost first: the same selection of another tensor."""
        for step in reversed(self.steps):
            base = step.rebuild(base)
        return base

    def copied(self) -> list:
        """The nodes a rewrite at the use site copies from where the value was computed (through names)."""
        parts = [self.op.func, *self.op.args] if self.hops else []
        for step in self.steps:
            if isinstance(step.node, cst.Subscript):
                parts.extend(step.node.slice)
            elif isinstance(step.node, cst.Call):
                parts.extend(step.node.args)
        return parts


def _subscript_step(node: cst.Subscript) -> Step:
    return Step(node, lambda base: node.with_changes(value=parenthesized(base)))


def _attribute_step(node: cst.Attribute) -> Step:
    return Step(node, lambda base: node.with_changes(value=parenthesized(base)))


def _method_step(node: cst.Call, cast: bool) -> Step:
    return Step(node, lambda base: node.with_changes(func=node.func.with_changes(value=parenthesized(base))),
                cast)


def _function_step(node: cst.Call) -> Step:
    first = node.args[0]
    return Step(node, lambda base: node.with_changes(args=[first.with_changes(value=base), *node.args[1:]]))


def contains(tree: cst.CSTNode, node: cst.CSTNode) -> bool:
    """Whether `node` (by identity) is `tree` or inside it."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if item is node:
            return True
        stack.extend(children(item))
    return False


def names_in(nodes) -> set:
    """Every Name read in `nodes` (attribute names and keywords excluded)."""
    found: set = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, cst.Name):
            found.add(node.value)
            continue
        if isinstance(node, cst.Attribute):
            stack.append(node.value)
            continue
        if isinstance(node, cst.Arg):
            stack.append(node.value)
            continue
        stack.extend(children(node))
    return found


class _Bindings:
    """Where each name of one scope (a function body, or the module's own statements) is bound or mutated
    in place, in source order, to tell whether code copied from one statement means the same later."""

    def __init__(self, scope: cst.CSTNode) -> None:
        self.order: dict[int, int] = {}  # id(statement) -> position
        self.events: dict[str, list] = {}  # name -> [(position, enclosing loops)]
        self.loops: dict[int, tuple] = {}  # id(statement) -> the loops around it
        self._counter = 0
        body = scope.body.body if isinstance(scope, cst.FunctionDef) else scope.body
        self._block(body, ())

    def _block(self, statements, loops: tuple) -> None:
        for statement in statements:
            self._counter += 1
            self.order[id(statement)] = self._counter
            self.loops[id(statement)] = loops
            if isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    self._small(small, loops)
                continue
            if isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
                self._bind(statement.name.value, loops)
                continue
            inner = loops + (statement,) if isinstance(statement, (cst.For, cst.While)) else loops
            if isinstance(statement, cst.For):
                self._targets(statement.target, inner)
            if isinstance(statement, cst.With):
                for item in statement.items:
                    if item.asname is not None:
                        self._targets(item.asname.name, loops)
            self._expressions(statement, inner)
            for part in ("body", "orelse", "finalbody"):
                block = getattr(statement, part, None)
                if isinstance(block, (cst.Else, cst.Finally)):
                    block = block.body
                if isinstance(block, cst.If):  # elif
                    self._block([block], inner)
                elif isinstance(block, cst.IndentedBlock):
                    self._block(block.body, inner)
                elif isinstance(block, cst.SimpleStatementSuite):
                    for small in block.body:
                        self._small(small, inner)
            for handler in getattr(statement, "handlers", ()):
                if handler.name is not None:
                    self._targets(handler.name.name, inner)
                self._block(handler.body.body, inner)

    def _small(self, small: cst.CSTNode, loops: tuple) -> None:
        if isinstance(small, cst.Assign):
            for target in small.targets:
                self._targets(target.target, loops)
        elif isinstance(small, (cst.AugAssign, cst.AnnAssign)):
            self._targets(small.target, loops)
        elif isinstance(small, cst.Del):
            self._targets(small.target, loops)
        elif isinstance(small, (cst.Global, cst.Nonlocal)):
            for item in small.names:
                self._bind(item.name.value, loops, always=True)
        elif isinstance(small, (cst.Import, cst.ImportFrom)) and not isinstance(small.names, cst.ImportStar):
            for alias in small.names:
                bound = alias.asname.name if alias.asname is not None else alias.name
                while isinstance(bound, cst.Attribute):
                    bound = bound.value
                if isinstance(bound, cst.Name):
                    self._bind(bound.value, loops)
        self._expressions(small, loops)

    def _expressions(self, node: cst.CSTNode, loops: tuple) -> None:
        """Walrus targets and in-place method calls (`x.add_(1)`) inside a statement's expressions."""
        stack = [getattr(node, "test", None), getattr(node, "iter", None), getattr(node, "value", None),
                 *(item.item for item in getattr(node, "items", ()) if isinstance(node, cst.With))]
        while stack:
            expr = stack.pop()
            if expr is None or isinstance(expr, (cst.Lambda, cst.BaseSuite)):
                continue
            if isinstance(expr, cst.NamedExpr):
                self._targets(expr.target, loops)
            elif isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute):
                method = expr.func.attr.value
                if method.endswith("_") and not method.startswith("__"):
                    self._targets(expr.func.value, loops)
            for name in child_fields(type(expr)):
                value = getattr(expr, name)
                if isinstance(value, cst.CSTNode):
                    stack.append(value)
                elif isinstance(value, (tuple, list)):
                    stack.extend(v for v in value if isinstance(v, cst.CSTNode))

    def _targets(self, target: cst.CSTNode, loops: tuple) -> None:
        if isinstance(target, cst.Name):
            self._bind(target.value, loops)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._targets(element.value, loops)
        elif isinstance(target, cst.StarredElement):
            self._targets(target.value, loops)
        elif isinstance(target, (cst.Attribute, cst.Subscript)):
            root = target
            while isinstance(root, (cst.Attribute, cst.Subscript, cst.Call)):
                root = root.func if isinstance(root, cst.Call) else root.value
            if isinstance(root, cst.Name):
                self._bind(root.value, loops)

    def _bind(self, name: str, loops: tuple, always: bool = False) -> None:
        self.events.setdefault(name, []).append((0 if always else self._counter, loops))

    def unchanged(self, names, since: cst.CSTNode, until: cst.CSTNode) -> bool:
        """No name of `names` is bound between statement `since` (included) and statement `until`, nor
        anywhere in a loop that holds `until` but not `since` (its next iteration would see the change)."""
        start, end = self.order.get(id(since)), self.order.get(id(until))
        if start is None or end is None or start > end:
            return False
        outer = set(map(id, self.loops.get(id(since), ())))
        repeated = [loop for loop in self.loops.get(id(until), ()) if id(loop) not in outer]
        for name in names:
            for position, loops in self.events.get(name, ()):
                if position == 0 or start <= position < end:
                    return False
                if any(loop in loops for loop in repeated):
                    return False
        return True


class OriginRule(LocalsRule):
    """A rule that asks what computed a value (`self.origin(expr)`), what a callee is (`self.module_of`),
    and what the enclosing class assigns to an attribute. Subclasses overriding a visit method call super().
    """

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self._functions: list = []  # enclosing FunctionDefs, innermost last
        self._classes: list = []  # (ClassDef, number of enclosing functions when it began)
        self._class_facts: dict = {}
        self._bindings: dict = {}
        self._statement_of_value: dict = {}  # id(assigned value) -> its statement
        self._whole: Optional[WholeFile] = None

    # -- scope tracking ------------------------------------------------------------------------------
    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._classes.append((node, len(self._functions)))

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self._classes.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        super().visit_FunctionDef(node)
        self._functions.append(node)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        super().leave_FunctionDef(node)
        self._functions.pop()

    def leave_Assign(self, node: cst.Assign) -> None:
        super().leave_Assign(node)
        self._statement_of_value[id(node.value)] = self.ctx.statement

    def leave_AnnAssign(self, node: cst.AnnAssign) -> None:
        super().leave_AnnAssign(node)
        if node.value is not None:
            self._statement_of_value[id(node.value)] = self.ctx.statement

    def leave_NamedExpr(self, node: cst.NamedExpr) -> None:
        super().leave_NamedExpr(node)
        self._statement_of_value[id(node.value)] = self.ctx.statement

    @property
    def function(self) -> Optional[cst.FunctionDef]:
        return self._functions[-1] if self._functions else None

    def receiver(self) -> Optional[str]:
        """The name of the instance in the method being walked (its first parameter), else None."""
        if not self._classes or not self._functions:
            return None
        cls, depth = self._classes[-1]
        if len(self._functions) != depth + 1:
            return None  # not a method of the innermost class (module code, or a nested function)
        method = self._functions[-1]
        if any(_decorator_name(d) in ("staticmethod", "classmethod") for d in method.decorators):
            return None
        params = method.params.posonly_params or method.params.params
        return params[0].name.value if params else None

    # -- class facts ---------------------------------------------------------------------------------
    @property
    def whole(self) -> WholeFile:
        """The whole file's routines and classes (see `wholefile`)."""
        if self._whole is None:
            self._whole = WholeFile.of(self.ctx)
        return self._whole

    def routine_key(self):
        """The `wholefile` key of the routine being walked: `ModuleScope`, `(None, name)` for a top-level
        function, `(class, name)` for a method of a top-level class; None for anything nested deeper."""
        if not self._functions:
            return ModuleScope if not self._classes else None
        if len(self._functions) != 1:
            return None
        name = self._functions[0].name.value
        if not self._classes:
            return (None, name)
        cls, depth = self._classes[-1]
        return (cls.name.value, name) if len(self._classes) == 1 and depth == 0 else None

    def attribute_values(self, attribute: str) -> Optional[list]:
        """Every value the enclosing class assigns to `self.<attribute>` (in any method, or in its body),
        or None outside a method. Read from the whole file (`wholefile`); when that is not at hand, asks
        for a parse of the whole module."""
        if self.receiver() is None:
            return None
        cls = self._classes[-1][0]
        if len(self._classes) == 1 and self._classes[0][1] == 0:
            facts = self.whole.class_assignments(cls.name.value)
            if facts is not None:
                return facts.get(attribute, [])
        self.require_full_module()
        facts = self._class_facts.get(id(cls))
        if facts is None:
            facts = self._class_facts[id(cls)] = class_assignments(cls)
        return facts.get(attribute, [])

    def self_attribute(self, expr: cst.BaseExpression) -> Optional[str]:
        """`attr` for `self.attr` with `self` the method's instance, else None."""
        if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name):
            receiver = self.receiver()
            if receiver is not None and expr.value.value == receiver:
                return expr.attr.value
        return None

    def constructed(self, expr: cst.BaseExpression, depth: int = 0, facts: bool = True) -> Optional[cst.Call]:
        """The constructor call an object came from: `nn.Softmax(dim=1)` for `nn.Softmax(dim=1)`, for a
        local bound to it, or for `self.act` when every assignment of `self.act` in the class is the same
        kind of call. None when unknown, and for an attribute when `facts` is false (class facts can cost a
        parse of the whole file)."""
        if depth > 4:
            return None
        if isinstance(expr, cst.Call):
            return expr
        if isinstance(expr, cst.Name):
            value = self.value_of(expr.value)
            return self.constructed(value, depth + 1, facts) if value is not None else None
        attribute = self.self_attribute(expr)
        if attribute is None or not facts:
            return None
        values = self.attribute_values(attribute)
        calls = [v for v in values or () if isinstance(v, cst.Call)]
        if not values or len(calls) != len(values):
            return None
        kinds = {self.ctx.resolve(call.func) for call in calls}
        return calls[0] if len(kinds) == 1 and None not in kinds else None

    def module_of(self, callee: cst.BaseExpression, table: dict, facts: bool = True) -> Optional[tuple[str, cst.Call]]:
        """(kind, constructor) when `callee` is an instance of a module class of `table`."""
        ctor = self.constructed(callee, facts=facts) if not isinstance(callee, cst.Call) else callee
        if ctor is None:
            return None
        kind = table.get(self.ctx.resolve(ctor.func))
        return (kind, ctor) if kind is not None else None

    def is_parameter(self, expr: cst.BaseExpression) -> bool:
        """`self.x` where every assignment of `self.x` in the class is a trainable `nn.Parameter(...)`."""
        attribute = self.self_attribute(expr)
        if attribute is None:
            return False
        values = self.attribute_values(attribute) or []
        if not values:
            return False
        for value in values:
            if not (isinstance(value, cst.Call) and self.ctx.resolve(value.func) in PARAMETER_CLASSES):
                return False
            grad = arg_value(value, 1, "requires_grad")
            if grad is not None and not is_name(grad, "True"):
                return False
        return True

    # -- what computed a value -----------------------------------------------------------------------
    def origin(self, expr: cst.BaseExpression, *, casts: bool = True, facts: bool = True, depth: int = 0,
               steps: tuple = (), hops: tuple = ()) -> Optional[Origin]:
        """The softmax/sigmoid/... call whose output `expr` is, through local names, selections and
        reshapes (and dtype casts when `casts`), else None. `facts=False`: do not look at what the class
        assigns to its attributes (a module held in `self.act`), which can cost a parse of the file."""
        if depth > 8 or expr is None:
            return None
        if isinstance(expr, cst.Name):
            value = self.value_of(expr.value)
            if value is None:
                return None
            return self.origin(value, casts=casts, facts=facts, depth=depth + 1, steps=steps,
                               hops=hops + ((expr, value),))
        if isinstance(expr, cst.Subscript):
            return self.origin(expr.value, casts=casts, facts=facts, depth=depth + 1,
                               steps=steps + (_subscript_step(expr),), hops=hops)
        if isinstance(expr, cst.Attribute):
            if expr.attr.value in SELECT_ATTRIBUTES:
                return self.origin(expr.value, casts=casts, facts=facts, depth=depth + 1,
                                   steps=steps + (_attribute_step(expr),), hops=hops)
            return None
        if not isinstance(expr, cst.Call):
            return None
        qualified = self.ctx.resolve(expr.func)
        if qualified is not None:
            if qualified in FUNCTIONS:
                return Origin(FUNCTIONS[qualified], expr, "function", arg_value(expr, 0, "input"),
                              steps=steps, hops=hops)
            if qualified in SELECT_FUNCTIONS and expr.args and expr.args[0].keyword is None \
                    and not expr.args[0].star:
                return self.origin(expr.args[0].value, casts=casts, facts=facts, depth=depth + 1,
                                   steps=steps + (_function_step(expr),), hops=hops)
            if qualified not in MODULES:
                return None
        func = expr.func
        if isinstance(func, cst.Attribute) and qualified is None and self.self_attribute(func) is None:
            method = func.attr.value
            if method in METHODS:
                return Origin(METHODS[method], expr, "method", func.value, steps=steps, hops=hops)
            if method in SELECT_METHODS or (casts and method in CAST_METHODS):
                step = _method_step(expr, cast=method in CAST_METHODS)
                return self.origin(func.value, casts=casts, facts=facts, depth=depth + 1, steps=steps + (step,),
                                   hops=hops)
            return None
        module = self.module_of(func, MODULES, facts)
        if module is not None and len(expr.args) == 1 and not expr.args[0].star and expr.args[0].keyword is None:
            kind, ctor = module
            return Origin(kind, expr, "module", expr.args[0].value, ctor=ctor, steps=steps, hops=hops)
        return None

    def log_operand(self, call: cst.Call, names=("log",)) -> Optional[cst.BaseExpression]:
        """`x` for `torch.log(x)` or `x.log()` (or another of `names`: "log1p"), with no other argument."""
        qualified = self.ctx.resolve(call.func)
        if qualified is not None:
            if qualified.startswith("torch.") and qualified[len("torch."):] in names and len(call.args) == 1 \
                    and not call.args[0].star and (call.args[0].keyword is None
                                                   or call.args[0].keyword.value == "input"):
                return call.args[0].value
            return None
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value in names and not call.args \
                and self.self_attribute(func) is None:
            return func.value
        return None

    def loss_of(self, call: cst.Call, facts: bool = True) -> Optional[tuple[str, Optional[cst.Call]]]:
        """(kind, constructor or None) when `call` computes a torch loss of `LOSS_FUNCTIONS`/`LOSS_MODULES`."""
        kind = LOSS_FUNCTIONS.get(self.ctx.resolve(call.func))
        if kind is not None:
            return kind, None
        return self.module_of(call.func, LOSS_MODULES, facts)

    def loss_input_origin(self, call: cst.Call, kinds: dict, origin_kind: str):
        """((loss kind, constructor), input argument, origin) when `call` is a loss of `kinds` whose input
        is an `origin_kind` output, else None. Each side is first asked without the class's facts; the
        facts (which can cost a parse of the whole file) are looked at only once the other side holds."""
        given = arg(call, 0, "input")
        if given is None or given.star:
            return None
        loss = self.loss_of(call, facts=False)
        origin = self.origin(given.value, facts=False)
        if loss is None and origin is None:
            return None
        if origin is None and _attribute_call(given.value):
            origin = self.origin(given.value)  # `loss(self.act(x), y)`: an attribute called inline
        if origin is None or origin.kind != origin_kind or origin.input is None:
            return None
        if loss is None:
            loss = self.loss_of(call)
        if loss is None or loss[0] not in kinds:
            return None
        return loss, given, origin

    # -- rewriting ----------------------------------------------------------------------------------
    def log_softmax_call(self, origin: Origin) -> tuple[Optional[cst.Call], tuple]:
        """(`log_softmax` with the softmax's arguments, references it needs), or (None, ()) when the
        module form's `dim` is not a literal we can spell at the call."""
        op = origin.op
        if origin.form == "method":
            return op.with_changes(func=op.func.with_changes(attr=cst.Name("log_softmax"))), ()
        if origin.form == "function":
            if isinstance(op.func, cst.Attribute):  # the module's own spelling: F.softmax -> F.log_softmax
                return op.with_changes(func=op.func.with_changes(attr=cst.Name("log_softmax"))), ()
            ref = self.reference(LOG_SOFTMAX_OF[self.ctx.resolve(op.func)])
            return op.with_changes(func=ref.expr), (ref,)
        dim = arg_value(origin.ctor, 0, "dim")  # a module: nn.Softmax(dim) applied to the input
        if dim is not None and number(dim) is None:
            return None, ()
        ref = self.reference("torch.nn.functional.log_softmax")
        kwargs = {"dim": dim} if dim is not None else {}
        return cst.Call(func=ref.expr, args=[cst.Arg(value=origin.input), *make_args(**kwargs)]), (ref,)

    def unchanged_since(self, origin: Origin) -> bool:
        """Whether the code a rewrite copies from `origin`'s assignments still means, at the statement
        being walked, what it meant there: it is evaluated once more (so its input must be a name, an
        attribute or a simple subscript) and no name it mentions is rebound or changed in place between
        the assignment and here."""
        if not origin.hops:
            return True
        if origin.input is None or not is_pure(origin.input):
            return False
        names = names_in(origin.copied()) | names_in([origin.input])
        return self.unchanged_between(names, origin.hops[-1][1])

    def unchanged_between(self, names, value: cst.BaseExpression) -> bool:
        """No name of `names` is rebound or changed in place between the statement that assigned `value`
        (a value `value_of` returned) and the statement being walked."""
        since = self._statement_of_value.get(id(value))
        until = self.ctx.statement
        if since is None or until is None:
            return False
        scope = self.function if self.function is not None else self.ctx.module
        bindings = self._bindings.get(id(scope))
        if bindings is None:
            bindings = self._bindings[id(scope)] = _Bindings(scope)
        return bindings.unchanged(names, since, until)


def _attribute_call(expr: cst.BaseExpression) -> bool:
    """`self.x(...)`, maybe reshaped or indexed (`self.act(h).view(-1)`): a call of an attribute."""
    while True:
        if isinstance(expr, cst.Subscript):
            expr = expr.value
        elif isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) \
                and expr.func.attr.value in SELECT_METHODS | CAST_METHODS:
            expr = expr.func.value
        else:
            return isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) \
                and isinstance(expr.func.value, cst.Name)


def _decorator_name(decorator: cst.Decorator) -> Optional[str]:
    expr = decorator.decorator
    if isinstance(expr, cst.Call):
        expr = expr.func
    if isinstance(expr, cst.Attribute):
        return expr.attr.value
    return expr.value if isinstance(expr, cst.Name) else None


def class_assignments(cls: cst.ClassDef) -> dict:
    """attribute -> values assigned to `self.attribute` in the class's methods, and to `attribute` in its
    body; `register_parameter("x", value)` / `register_module` / `add_module` count as assignments."""
    facts: dict = {}
    for statement in cls.body.body:
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                if isinstance(small, (cst.Assign, cst.AnnAssign)) and small.value is not None:
                    targets = [t.target for t in small.targets] if isinstance(small, cst.Assign) else [small.target]
                    for target in targets:
                        if isinstance(target, cst.Name):
                            facts.setdefault(target.value, []).append(small.value)
        if not isinstance(statement, cst.FunctionDef):
            continue
        params = statement.params.posonly_params or statement.params.params
        if not params:
            continue
        receiver = params[0].name.value
        stack: list = [statement.body]
        while stack:
            node = stack.pop()
            if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
                continue
            if isinstance(node, (cst.Assign, cst.AnnAssign, cst.AugAssign)):
                targets = [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
                value = node.value if not isinstance(node, cst.AugAssign) else None
                single = len(targets) == 1 and isinstance(targets[0], cst.Attribute)
                for target in _flatten_targets(targets):
                    if isinstance(target, cst.Attribute) and is_name(target.value, receiver):
                        # Unpacked or augmented: a value we do not know (None).
                        facts.setdefault(target.attr.value, []).append(value if single else None)
            elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) \
                    and is_name(node.func.value, receiver) and node.func.attr.value in (
                        "register_parameter", "register_module", "add_module", "register_buffer") \
                    and len(node.args) >= 2 and isinstance(node.args[0].value, cst.SimpleString):
                name = node.args[0].value.evaluated_value
                if isinstance(name, str):
                    facts.setdefault(name, []).append(node.args[1].value)
            stack.extend(children(node))
    return facts


def _flatten_targets(targets):
    for target in targets:
        if isinstance(target, (cst.Tuple, cst.List)):
            yield from _flatten_targets(e.value for e in target.elements)
        elif isinstance(target, cst.StarredElement):
            yield from _flatten_targets([target.value])
        else:
            yield target
