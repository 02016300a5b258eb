"""The walk that turns a routine's statements into its events, loops, no_grad regions and skeleton.

One pass in execution order (arguments before the call that receives them, a loop's iterable before its
body); each event is placed in the statements, branches, loops and `no_grad` blocks around it, and appended
to the block of the skeleton it runs in. Qualified names come from the file's imports, unless a binding of
the routine shadows the import (`optim = torch.optim.SGD(...)` then `optim.step()`).
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from ..names import dotted
from ..nodes import arg_value
from .events import (
    ASSIGN,
    BACKWARD,
    CALL,
    CLIP,
    CLIP_METHODS,
    ENABLE_GRAD,
    EVAL,
    EXIT,
    FREEZE,
    MODE,
    NO_GRAD_CONTEXTS,
    SCALE,
    SET_GRAD_ENABLED,
    STEP,
    TIMM_CLIPS,
    TORCH_CLIPS,
    TRAIN,
    UNSCALE,
    UPDATE,
    ZERO_GRAD,
    Branch,
    Event,
    Guard,
    Jump,
    Loop,
    Place,
    Region,
    Repeat,
    Routine,
    callee_name,
    children,
    is_false,
    is_true,
    obj_key,
    short,
    sub_key,
    target_keys,
)


def _blocks(stmt) -> list:
    """The statement lists nested in a compound statement (not in nested functions or classes)."""
    out = []
    for name in ("body", "orelse", "finalbody"):
        sub = getattr(stmt, name, None)
        if isinstance(sub, cst.If):
            out.append([sub])
        elif sub is not None and hasattr(sub, "body"):
            inner = sub if isinstance(sub, cst.BaseSuite) else sub.body
            if isinstance(inner, cst.IndentedBlock):
                out.append(list(inner.body))
    for handler in getattr(stmt, "handlers", ()):
        if isinstance(handler.body, cst.IndentedBlock):
            out.append(list(handler.body.body))
    for case in getattr(stmt, "cases", ()):
        if isinstance(case.body, cst.IndentedBlock):
            out.append(list(case.body.body))
    return out


def _bound_names(body, out: set) -> None:
    """Names a function body binds (assignments, loop and `with` targets, imports, defs), not nested scopes."""
    for stmt in body:
        t = type(stmt)
        if t is cst.SimpleStatementLine:
            for small in stmt.body:
                st = type(small)
                if st is cst.Assign:
                    for target in small.targets:
                        _target_names(target.target, out)
                elif st in (cst.AnnAssign, cst.AugAssign):
                    _target_names(small.target, out)
                elif st is cst.Import:
                    for alias in small.names:
                        name = alias.asname.name if alias.asname is not None else alias.name
                        out.add((dotted(name) or "").split(".", 1)[0])
                elif st is cst.ImportFrom and not isinstance(small.names, cst.ImportStar):
                    for alias in small.names:
                        name = alias.asname.name if alias.asname is not None else alias.name
                        if isinstance(name, cst.Name):
                            out.add(name.value)
        elif t in (cst.FunctionDef, cst.ClassDef):
            out.add(stmt.name.value)
        else:
            if t is cst.For:
                _target_names(stmt.target, out)
            elif t is cst.With:
                for item in stmt.items:
                    if item.asname is not None:
                        _target_names(item.asname.name, out)
            for handler in getattr(stmt, "handlers", ()):
                if handler.name is not None:
                    _target_names(handler.name.name, out)
            for block in _blocks(stmt):
                _bound_names(block, out)


def _target_names(target, out: set) -> None:
    if isinstance(target, cst.Name):
        out.add(target.value)
    elif isinstance(target, (cst.Tuple, cst.List)):
        for element in target.elements:
            _target_names(element.value, out)
    elif isinstance(target, cst.StarredElement):
        _target_names(target.value, out)


class Collector:
    """One pass over a routine's statements: events, loops, regions and the skeleton."""

    def __init__(self, ctx, routine: Routine, shadowed: frozenset) -> None:
        self.ctx = ctx
        self.r = routine
        self.shadowed = shadowed  # names that, in this routine, are not what an import made them
        self.module_level = not isinstance(routine.node, cst.FunctionDef)
        self.index = 0
        self.stmts: list = []
        self.branches: list = []
        self.loops: list = []
        self.regions: list = []
        self.contexts: list = []
        self.blocks: list = [routine.flow]
        self._place: Optional[Place] = None

    # -- bookkeeping --
    def tick(self) -> int:
        self.index += 1
        return self.index

    def place(self) -> Place:
        if self._place is None:
            self._place = Place(tuple(self.stmts), tuple(self.branches), tuple(self.loops), tuple(self.regions),
                                tuple(self.contexts))
        return self._place

    def changed(self) -> None:
        self._place = None

    def add(self, kind: str, node, key=None, **extra) -> Event:
        event = Event(kind, node, self.tick(), self.place(), key, extra)
        self.r.events.append(event)
        self.blocks[-1].append(event)
        return event

    def qualified(self, expr) -> Optional[str]:
        """The imported name `expr` spells, unless a binding of this routine (or, for a script, an earlier
        assignment) shadows the import: `optim = torch.optim.SGD(...)` then `optim.step()`."""
        qualified = self.ctx.resolve(expr)
        if qualified is None:
            return None
        path = dotted(expr)
        if path is not None and path.split(".", 1)[0] in self.shadowed:
            return None
        return qualified

    def sub_block(self, fill) -> list:
        block: list = []
        self.blocks.append(block)
        fill()
        self.blocks.pop()
        return block

    # -- statements --
    def block(self, body) -> None:
        if isinstance(body, cst.IndentedBlock):
            for stmt in body.body:
                self.statement(stmt)
        elif isinstance(body, cst.SimpleStatementSuite):
            for small in body.body:
                self.small(small)
        else:  # a list of statements
            for stmt in body:
                self.statement(stmt)

    def branch(self, node, tag: str, body) -> list:
        self.branches.append((id(node), tag))
        self.changed()
        arm = self.sub_block(lambda: self.block(body))
        self.branches.pop()
        self.changed()
        return arm

    def statement(self, stmt) -> None:
        self.stmts.append(stmt)
        self.changed()
        t = type(stmt)
        if t is cst.SimpleStatementLine:
            for small in stmt.body:
                self.small(small)
        elif t is cst.FunctionDef:
            self.r.nested[stmt.name.value] = stmt
            self.r.locals.add(stmt.name.value)
            for decorator in stmt.decorators:
                self.expr(decorator.decorator)
        elif t is cst.ClassDef:
            self.r.locals.add(stmt.name.value)
            self.r.classes.add(stmt.name.value)
        elif t is cst.If:
            self.if_(stmt)
        elif t in (cst.For, cst.While):
            self.loop(stmt)
        elif t is cst.With:
            self.with_(stmt)
        elif t in (cst.Try, cst.TryStar):
            body = self.branch(stmt, "try", stmt.body)
            handlers = [self.branch(stmt, f"handler{i}", h.body) for i, h in enumerate(stmt.handlers)]
            orelse = self.branch(stmt, "else", stmt.orelse.body) if stmt.orelse is not None else []
            final = self.sub_block(lambda: self.block(stmt.finalbody.body)) if stmt.finalbody is not None else []
            self.blocks[-1].append(Guard(body, handlers, orelse, final))
        elif t is cst.Match:
            self.expr(stmt.subject)
            arms = [self.branch(stmt, f"case{i}", case.body) for i, case in enumerate(stmt.cases)]
            self.blocks[-1].append(Branch(arms + [[]]))
        else:
            for child in children(stmt):
                self.expr(child)
        self.stmts.pop()
        self.changed()

    def if_(self, stmt: cst.If) -> None:
        self.expr(stmt.test)
        body = self.branch(stmt, "body", stmt.body)
        orelse = stmt.orelse
        if isinstance(orelse, cst.If):
            self.branches.append((id(stmt), "orelse"))
            self.changed()
            other = self.sub_block(lambda: self.if_(orelse))
            self.branches.pop()
            self.changed()
        elif orelse is not None:
            other = self.branch(stmt, "orelse", orelse.body)
        else:
            other = []
        self.blocks[-1].append(Branch([body, other]))

    def loop(self, stmt) -> None:
        targets = tuple(target_keys(stmt.target)) if isinstance(stmt, cst.For) else ()
        loop = Loop(stmt, self.place(), start=self.tick(), targets=targets)
        self.r.loops.append(loop)
        if isinstance(stmt, cst.For):
            self.expr(stmt.iter)
        self.loops.append(loop)
        self.changed()
        head: list = []
        if isinstance(stmt, cst.While):
            head = self.sub_block(lambda: self.expr(stmt.test))

        def body():
            if isinstance(stmt, cst.For):
                self.bind(stmt.target, None, stmt, iterated=stmt.iter)
            self.block(stmt.body)

        inner = self.sub_block(body)
        self.loops.pop()
        self.changed()
        loop.end = self.tick()
        orelse = self.sub_block(lambda: self.block(stmt.orelse.body)) if stmt.orelse is not None else []
        self.blocks[-1].append(Repeat(loop, head, inner, orelse))

    def with_(self, stmt: cst.With) -> None:
        pushed_regions, pushed_contexts, saved = 0, 0, None
        for item in stmt.items:
            self.expr(item.item)
            grad = self.grad_context(item.item)
            if grad == "off":
                region = Region(stmt, short(self.ctx.code_of(item.item), 40), self.place(), start=self.tick())
                self.r.regions.append(region)
                self.regions.append(region)
                pushed_regions += 1
            elif grad == "on" and saved is None:
                saved = self.regions
                self.regions = []
            elif isinstance(item.item, cst.Call):
                self.contexts.append(item.item)
                pushed_contexts += 1
            if item.asname is not None:
                self.bind(item.asname.name, None, stmt)
            self.changed()
        self.block(stmt.body)
        for _ in range(pushed_regions):
            self.regions.pop().end = self.tick()
        for _ in range(pushed_contexts):
            self.contexts.pop()
        if saved is not None:
            self.regions = saved
        self.changed()

    def grad_context(self, expr) -> Optional[str]:
        """'off' for no_grad/inference_mode/set_grad_enabled(False), 'on' for enable_grad, else None."""
        call = expr if isinstance(expr, cst.Call) else None
        qualified = self.qualified(call.func if call is not None else expr)
        if qualified in NO_GRAD_CONTEXTS:
            if call is None:
                return None
            flag = arg_value(call, 0, "mode")
            return "on" if is_false(flag) else "off"
        if qualified in SET_GRAD_ENABLED and call is not None:
            flag = arg_value(call, 0, "mode")
            return "off" if is_false(flag) else ("on" if is_true(flag) else None)
        if qualified in ENABLE_GRAD:
            return "on"
        return None

    def small(self, small) -> None:
        t = type(small)
        if t is cst.Assign:
            self.expr(small.value)
            for target in small.targets:
                self.bind(target.target, small.value if len(small.targets) == 1 else None, small)
        elif t is cst.AnnAssign:
            if small.value is not None:
                self.expr(small.value)
                self.bind(small.target, small.value, small)
        elif t is cst.AugAssign:
            self.expr(small.value)
            self.expr(small.target)
        elif t in (cst.Return, cst.Raise):
            value = small.value if t is cst.Return else small.exc
            self.expr(value)
            self.add(EXIT, small, how="return" if t is cst.Return else "raise", value=value)
            self.blocks[-1].append(Jump("return" if t is cst.Return else "raise"))
        elif t is cst.Assert and _always_false(small.test):
            # `assert False` (`else: assert False, "unknown mode"`) raises whenever it runs (unless Python
            # runs with -O, which training scripts do not count on): the path ends here as at a `raise`.
            self.expr(small.msg)
            self.add(EXIT, small, how="raise", value=small.msg)
            self.blocks[-1].append(Jump("raise"))
        elif t is cst.Break:
            self.blocks[-1].append(Jump("break"))
        elif t is cst.Continue:
            self.blocks[-1].append(Jump("continue"))
        elif t in (cst.Import, cst.ImportFrom, cst.Pass):
            return
        else:
            for child in children(small):
                self.expr(child)

    def bind(self, target, value, node, iterated=None) -> list:
        """Record an assignment; returns the keys bound."""
        single = isinstance(target, (cst.Name, cst.Attribute))
        if single:
            self.expr_target(target)
        keys = target_keys(target)
        for key in keys:
            if "." not in key:
                self.r.locals.add(key)
        if keys:
            self.add(ASSIGN, node, keys[0] if single else None, targets=tuple(keys),
                     value=value if single else None, unpacked=None if single else value, iter=iterated,
                     target=target)
        return keys

    def expr_target(self, target) -> None:
        """`self.x[i] = ...`: the receiver of an attribute target is read."""
        if isinstance(target, cst.Attribute):
            self.expr(target.value)

    # -- expressions --
    def expr(self, node) -> None:
        if node is None:
            return
        t = type(node)
        if t is cst.Call:
            self.call(node)
            return
        if t is cst.Name:
            self.r.reads.add(node.value)
            return
        if t is cst.Attribute:
            attr = node.attr.value
            self.r.attr_reads.add(attr)
            if attr == "param_groups":
                key = obj_key(node.value)
                if key:
                    self.r.param_groups.add(key)
            self.expr(node.value)
            return
        if t is cst.SimpleString:
            self.r.strings.append(node.value.strip("'\"rbuRBU"))
            return
        if t is cst.Lambda:
            self.lambda_reads(node.body)
            return
        if t is cst.Integer or t is cst.Float:
            return
        if t is cst.NamedExpr:
            self.expr(node.value)
            self.bind(node.target, node.value, node)
            return
        if t in (cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp):
            self.comprehension(node)
            return
        for child in children(node):
            self.expr(child)

    def lambda_reads(self, node) -> None:
        """A lambda's body runs later (no events), but what it reads is read."""
        stack = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, cst.Name):
                self.r.reads.add(n.value)
            elif isinstance(n, cst.Attribute):
                self.r.attr_reads.add(n.attr.value)
                stack.append(n.value)
            elif isinstance(n, cst.SimpleString):
                self.r.strings.append(n.value.strip("'\"rbuRBU"))
            else:
                stack.extend(children(n))

    def comprehension(self, node) -> None:
        """The first iterable runs outside; each `for` of the comprehension is a loop around the element."""
        self.expr(node.for_in.iter)
        outer_block = self.blocks[-1]
        opened = []
        comp = node.for_in
        first = True
        while comp is not None:
            if not first:
                self.expr(comp.iter)
            first = False
            loop = Loop(comp, self.place(), start=self.tick(), statement=False, targets=tuple(target_keys(comp.target)))
            self.r.loops.append(loop)
            self.loops.append(loop)
            body: list = []
            self.blocks[-1].append(Repeat(loop, [], body, []))
            self.blocks.append(body)
            opened.append(loop)
            self.changed()
            self.bind(comp.target, None, comp, iterated=comp.iter)
            for condition in comp.ifs:
                self.expr(condition.test)
            comp = comp.inner_for_in
        if isinstance(node, cst.DictComp):
            self.expr(node.key)
            self.expr(node.value)
        else:
            self.expr(node.elt)
        for loop in reversed(opened):
            self.loops.pop()
            self.blocks.pop()
            loop.end = self.tick()
        assert self.blocks[-1] is outer_block
        self.changed()

    def call(self, call: cst.Call) -> None:
        # Arguments run before the call itself.
        func = call.func
        if isinstance(func, cst.Attribute):
            self.expr(func.value)
            self.r.attr_reads.add(func.attr.value)
        elif isinstance(func, cst.Name):
            self.r.reads.add(func.value)
        else:
            self.expr(func)
        for a in call.args:
            self.expr(a.value)
        self.classify(call)

    def classify(self, call: cst.Call) -> None:
        func = call.func
        name = callee_name(func)
        qualified = self.qualified(func)
        positional = [a for a in call.args if a.keyword is None and not a.star]
        if qualified is not None:
            if qualified in TORCH_CLIPS:
                self.add(CLIP, call, via="torch")
                return
            if qualified in TIMM_CLIPS:
                self.add(CLIP, call, via="timm")
                return
            if qualified == "torch.autograd.backward":
                self.add(BACKWARD, call, via="tensor")
                return
            if qualified.startswith("torch."):
                self.add(CALL, call, obj_key(func), qualified=qualified, receiver=None, method=None)
                return
        if isinstance(func, cst.Attribute) and qualified is None:
            receiver = func.value
            rkey = obj_key(receiver)
            if name == "backward":
                inner = receiver if isinstance(receiver, cst.Call) else None
                if inner is not None and isinstance(inner.func, cst.Attribute) and inner.func.attr.value == "scale":
                    self.add(BACKWARD, call, via="scaled", scaler=obj_key(inner.func.value))
                elif positional and rkey is not None:
                    self.add(BACKWARD, call, rkey, via="owner", owner=rkey)
                else:
                    self.add(BACKWARD, call, via="tensor")
                return
            if name == "manual_backward" and rkey == "self":
                self.add(BACKWARD, call, rkey, via="lightning", owner=rkey)
                return
            if name == "step" and rkey is not None:
                closure = any(a.keyword is not None and a.keyword.value == "closure" for a in call.args)
                self.add(STEP, call, rkey, closure=closure, positional=len(positional),
                         argument=obj_key(positional[0].value) if positional else None)
                return
            if name == "zero_grad" and rkey is not None:
                self.add(ZERO_GRAD, call, rkey)
                return
            if name == "unscale_" and rkey is not None:
                self.add(UNSCALE, call, rkey, optimizer=obj_key(positional[0].value) if positional else None)
                return
            if name == "scale" and len(call.args) == 1 and rkey is not None:
                self.add(SCALE, call, rkey)
                return
            if name == "update" and not call.args and rkey is not None:
                self.add(UPDATE, call, rkey)
                return
            if rkey is None and name in ("eval", "train", "requires_grad_"):
                rkey = sub_key(receiver)
            if name == "eval" and not call.args and rkey is not None:
                self.add(EVAL, call, rkey)
                return
            if name == "train" and rkey is not None and len(call.args) <= 1:
                flag = arg_value(call, 0, "mode")
                self.add(TRAIN if flag is None or is_true(flag) else (EVAL if is_false(flag) else MODE), call, rkey)
                return
            if name == "requires_grad_" and rkey is not None and is_false(arg_value(call, 0, "requires_grad")):
                self.add(FREEZE, call, rkey)
                return
            if name in CLIP_METHODS and rkey is not None:
                self.add(CLIP, call, rkey, via="method", owner=rkey)
                return
            self.add(CALL, call, obj_key(func), qualified=None, receiver=rkey, method=name)
            return
        self.add(CALL, call, obj_key(func) if isinstance(func, (cst.Name, cst.Attribute)) else None,
                 qualified=qualified, receiver=None, method=None)


def _params(node: cst.FunctionDef) -> tuple[list, dict, dict]:
    p = node.params
    names, annotations, defaults = [], {}, {}
    for param in (*p.posonly_params, *p.params, *p.kwonly_params):
        names.append(param.name.value)
        if param.annotation is not None:
            annotations[param.name.value] = param.annotation.annotation
        if param.default is not None:
            defaults[param.name.value] = param.default
    for star in (p.star_arg, p.star_kwarg):
        if isinstance(star, cst.Param):
            names.append(star.name.value)
    return names, annotations, defaults


def collect(ctx, node: cst.CSTNode, name: str, *, class_node=None, parent: Optional[Routine] = None,
            module_rebound: frozenset = frozenset()) -> Routine:
    """The routine of a FunctionDef, or of a module's loose statements. `module_rebound`: names the module
    binds by assignment, which shadow an import of the same name inside functions."""
    routine = Routine(node, name, class_node=class_node, parent=parent)
    if isinstance(node, cst.FunctionDef):
        routine.params, routine.annotations, routine.defaults = _params(node)
        bound: set = set(routine.params)
        _bound_names(node.body.body if isinstance(node.body, cst.IndentedBlock) else (), bound)
        outer = parent
        while outer is not None:  # a closure sees its enclosing routine's names
            bound |= outer.locals | set(outer.params)
            outer = outer.parent
        collector = Collector(ctx, routine, frozenset(bound | module_rebound))
        routine.is_method = class_node is not None and bool(routine.params) and not any(
            callee_name(d.decorator) == "staticmethod" for d in node.decorators)
        region = None
        for decorator in node.decorators:
            if collector.grad_context(decorator.decorator) == "off":
                region = Region(decorator, "@" + short(ctx.code_of(decorator.decorator), 40), None, start=0)
                break
        if region is not None:
            routine.regions.append(region)
            collector.regions.append(region)
        collector.block(node.body)
        if region is not None:
            region.end = collector.tick()
    else:  # a module: its loose statements; an assignment shadows an import from there on
        collector = _ScriptCollector(ctx, routine, frozenset())
        collector.block([s for s in node.body if not isinstance(s, (cst.FunctionDef, cst.ClassDef))])
    return routine


class _ScriptCollector(Collector):
    """A script's statements: a name shadows its import once an assignment rebinds it."""

    def bind(self, target, value, node, iterated=None) -> list:
        keys = super().bind(target, value, node, iterated)
        rebound = {k for k in keys if "." not in k and self.ctx.resolve(cst.Name(k)) is not None}
        if rebound:
            self.shadowed = self.shadowed | rebound
        return keys


def module_rebound(module: cst.Module, ctx) -> frozenset:
    """Names that functions see rebound by the module: an unconditional module-level assignment of an
    imported name (`optim = optim.SGD(...)`), or any assignment of a conventional one (`optim`, `F`)."""
    out: set = set()
    nested: set = set()
    for stmt in module.body:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                if isinstance(small, cst.Assign):
                    for target in small.targets:
                        _target_names(target.target, out)
                elif isinstance(small, cst.AnnAssign):
                    _target_names(small.target, out)
        elif isinstance(stmt, (cst.For, cst.While, cst.With, cst.If, cst.Try)):
            _bound_names([stmt], nested)
    return frozenset({n for n in out if ctx.resolve(cst.Name(n)) is not None}
                     | {n for n in nested if ctx.resolve(cst.Name(n)) is not None and not ctx.names.is_import_bound(n)})


def _always_false(test: cst.BaseExpression) -> bool:
    """`False`, `0`, `None`: an assertion that fails whenever it runs."""
    if isinstance(test, cst.Name):
        return test.value in ("False", "None")
    return isinstance(test, cst.Integer) and test.evaluated_value == 0
