"""Cross-routine resolution: the routines and classes of one file, and which routine a call runs.

`Analysis` is the per-file hub the rules share: routines are collected on first request (so a rule that
judges one routine pays for that routine only), the index of the module's callables only when a verdict
needs another routine (a helper, the call sites of this one, a class's constructor). Facts about objects
(``facts``) and their modes along every path (``modes``) hang off it too, computed on demand.
"""

from __future__ import annotations

import weakref
from typing import Iterator, Optional

import libcst as cst

from ..names import dotted
from .collect import collect, module_rebound
from .events import BUILTINS, CALL, Event, Routine, callee_name, obj_key, root_of

_MISSING = object()


class Analysis:
    """Routines of one file, analysed on demand, plus an index of callables for cross-routine questions."""

    def __init__(self, ctx) -> None:
        # A proxy, as in `WholeFile`: the context keeps this analysis, not the other way round.
        self.ctx = ctx if isinstance(ctx, weakref.ProxyType) else weakref.proxy(ctx)
        self._routines: dict = {}
        self._index: Optional[dict] = None
        self._rebound: Optional[frozenset] = None
        self.classes: dict = {}  # top-level class name -> ClassDef
        self._facts = None
        self._modes = None
        self._grads = None
        self._call_sites: Optional[dict] = None
        self._resolved: dict = {}  # id(call event) -> the routine it runs, or None

    @property
    def facts(self):
        if self._facts is None:
            from .facts import Facts

            self._facts = Facts(self)
        return self._facts

    @property
    def modes(self):
        if self._modes is None:
            from .modes import Modes

            self._modes = Modes(self)
        return self._modes

    @property
    def grads(self):
        if self._grads is None:
            from .grads import Gradients

            self._grads = Gradients(self)
        return self._grads

    def routine(self, node: cst.CSTNode, scopes: tuple = ()) -> Routine:
        """The routine of a FunctionDef (or of the module's loose statements, for the Module). `scopes`:
        the enclosing ("class"|"def", node) pairs, outermost first."""
        found = self._routines.get(id(node))
        if found is not None and found.node is node:
            return found
        class_node = parent = None
        if scopes:
            kind, owner = scopes[-1]
            if kind == "class":
                class_node = owner
            else:
                parent = self.routine(owner, scopes[:-1])
        if self._rebound is None:
            self._rebound = module_rebound(self.ctx.module, self.ctx)
        name = node.name.value if isinstance(node, cst.FunctionDef) else "<module>"
        routine = collect(self.ctx, node, name, class_node=class_node, parent=parent, module_rebound=self._rebound)
        self._routines[id(node)] = routine
        return routine

    @property
    def module_routine(self) -> Routine:
        return self.routine(self.ctx.module)

    # -- index of the module's callables --------------------------------------------------------------
    def _build_index(self) -> dict:
        """('func', name) / ('method', class name, name) / ('nested', id(parent), name) -> routines."""
        index: dict = {}
        module = self.ctx.module
        index[("module",)] = [self.module_routine]

        def add_function(node, scopes):
            routine = self.routine(node, scopes)
            kind, owner = scopes[-1] if scopes else (None, None)
            if kind == "def":
                key = ("nested", id(owner), node.name.value)
            elif kind == "class":
                key = ("method", owner.name.value, node.name.value)
            else:
                key = ("func", node.name.value)
            index.setdefault(key, []).append(routine)
            for nested in routine.nested.values():
                add_function(nested, (*scopes, ("def", node)))

        def add_class(stmt, scopes):
            for inner in stmt.body.body if isinstance(stmt.body, cst.IndentedBlock) else ():
                if isinstance(inner, cst.FunctionDef):
                    add_function(inner, (*scopes, ("class", stmt)))

        for stmt in module.body:
            if isinstance(stmt, cst.FunctionDef):
                add_function(stmt, ())
            elif isinstance(stmt, cst.ClassDef):
                self.classes[stmt.name.value] = stmt
                add_class(stmt, ())
        return index

    @property
    def index(self) -> dict:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def all_routines(self) -> list:
        seen, out = set(), []
        for routines in self.index.values():
            for r in routines:
                if id(r) not in seen:
                    seen.add(id(r))
                    out.append(r)
        return out

    def methods(self, class_node) -> list:
        """The routines of a class and of its base classes defined in this module."""
        chain = self.class_chain(class_node)
        return [r for r in self.all_routines() if r.class_node is not None and any(r.class_node is c for c in chain)]

    def class_chain(self, class_node) -> list:
        """The class and its base classes defined in this module (by name), nearest first."""
        self.index  # noqa: B018 - fills self.classes
        chain, todo = [], [class_node]
        while todo and len(chain) < 8:
            c = todo.pop(0)
            if c is None or any(c is x for x in chain):
                continue
            chain.append(c)
            for base in c.bases:
                base_name = dotted(base.value)
                if base_name in self.classes and not self.ctx.names.is_import_bound(base_name):
                    todo.append(self.classes[base_name])
        return chain

    def local_class(self, name: Optional[str]):
        """The ClassDef a bare name refers to, when it is a top-level class of this module."""
        self.index  # noqa: B018
        if name and "." not in name and not self.ctx.names.is_import_bound(name):
            return self.classes.get(name)
        return None

    def local_function(self, caller: Optional[Routine], name: str) -> Optional[Routine]:
        """The routine a bare name calls: a nested def of an enclosing routine, or a top-level def."""
        r = caller
        while r is not None:
            if name in r.nested:
                found = self.index.get(("nested", id(r.node), name))
                if found:
                    return found[0]
            if name in r.locals or name in r.params:
                return None  # bound to something else here
            r = r.parent
        if self.ctx.names.is_import_bound(name):
            return None
        found = self.index.get(("func", name))
        return found[-1] if found else None

    def resolve_call(self, caller: Routine, event: Event) -> Optional[Routine]:
        """The routine of this module that `event` (a call) runs, if we can tell."""
        found = self._resolved.get(id(event), _MISSING)
        if found is _MISSING:
            found = self._resolved[id(event)] = self._resolve_call(caller, event)
        return found

    def _resolve_call(self, caller: Routine, event: Event) -> Optional[Routine]:
        func = event.node.func if isinstance(event.node, cst.Call) else None
        if isinstance(func, cst.Name):
            return self.local_function(caller, func.value)
        if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and \
                func.value.value in ("self", "cls"):
            cls = enclosing_class(caller)
            if cls is None:
                return None
            return self.method(cls, func.attr.value)
        return None

    def method(self, class_node, name: str) -> Optional[Routine]:
        for c in self.class_chain(class_node):
            found = self.index.get(("method", c.name.value, name))
            if found:
                return found[-1]
        return None

    def might_be_local(self, caller: Routine, event: Event) -> bool:
        """Could this call run a routine of this module that a partial parse has blanked?"""
        func = event.node.func if isinstance(event.node, cst.Call) else None
        if isinstance(func, cst.Name):
            return (func.value not in BUILTINS and self.ctx.resolve(func) is None
                    and func.value not in caller.locals and func.value not in caller.params)
        return isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and \
            func.value.value in ("self", "cls") and enclosing_class(caller) is not None

    def call_sites(self, target: Routine) -> list:
        """(caller routine, call event) for each call of `target` in this module."""
        if self._call_sites is None:
            sites: dict = {}
            for r in self.all_routines():
                for e in r.events:
                    if e.kind == CALL and isinstance(e.node, cst.Call):
                        found = self.resolve_call(r, e)
                        if found is not None:
                            sites.setdefault(id(found), []).append((r, e))
            self._call_sites = sites
        return self._call_sites.get(id(target), [])

    def helper_calls(self, r: Routine, key: str, before: Optional[int] = None) -> Iterator:
        """(call event, routine, key there) for calls of this module's routines that receive `key`."""
        for e in r.events:
            if e.kind != CALL or (before is not None and e.index >= before):
                continue
            target = self.resolve_call(r, e)
            if target is None or target is r:
                continue
            inner = key_in_callee(r, e, target, key)
            if inner is not None:
                yield e, target, inner


def enclosing_class(r: Optional[Routine]):
    while r is not None:
        if r.class_node is not None:
            return r.class_node
        r = r.parent
    return None


def bind_arguments(target: Routine, call: cst.Call) -> dict:
    """param name -> argument expression for a call of `target` (skipping `self` for methods)."""
    params = list(target.params)
    if target.is_method and params:
        params = params[1:]
    out = {}
    position = 0
    for a in call.args:
        if a.star:
            if a.star == "*":
                position = len(params)  # positions unknown from here on
            continue
        if a.keyword is not None:
            out[a.keyword.value] = a.value
        else:
            if position < len(params):
                out[params[position]] = a.value
            position += 1
    return out


def key_in_callee(caller: Routine, call: Event, target: Routine, key: str) -> Optional[str]:
    """What `target` calls the object that `caller` names `key`, for the call `call`."""
    if root_of(key) in ("self", "cls"):
        return key if target.is_method else None
    if target.is_free(key) and (caller.is_free(key) or caller.name == "<module>"):
        return key  # a global (or a variable of an enclosing routine) both see
    aliases = caller.aliases(key)
    for param, value in bind_arguments(target, call.node).items():
        value_key = obj_key(value)
        if value_key in aliases:
            return param
        if value_key and key.startswith(value_key + "."):  # `helper(self)` for `self.model`
            return param + key[len(value_key):]
    return None


def callee(event: Event) -> str:
    return callee_name(event.node.func) if isinstance(event.node, cst.Call) else ""


def analysis(ctx) -> Analysis:
    """The file's analysis, shared by the flow rules (built on first use, kept on the context)."""
    found = ctx.shared.get(Analysis)
    if found is None:
        found = ctx.shared[Analysis] = Analysis(ctx)
    return found
