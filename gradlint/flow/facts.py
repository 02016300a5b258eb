"""The binder: what each object of a file is, established from evidence in the file.

A rule asks `facts.of(routine, key)` ("what is `self.model` in this method?") and gets a `Fact`: a kind
(module, optimizer, scheduler, scaler, accelerator, fabric, engine, loader, routine, other, or None when
nothing says), the mode a module is built in, whether the code freezes it, and how we know. Evidence, in
the order it is trusted:

1. what the key is bound to, in the scope that binds it (a method's `self.x` in every method of its class,
   a parameter at every call site of its routine in this file, a global at module level): `nn.X(...)`, a
   class deriving from `nn.Module` (through classes of this file), a known factory (`timm.create_model`,
   `AutoModel.from_pretrained`, `torchvision.models.*`), a `torch.optim` class, a `GradScaler`, an
   `Accelerator`, a wrapper (`DistributedDataParallel(model)`, `accelerator.prepare(model, ...)`), a
   function of this file (what it returns), a parameter annotation;
2. how the code uses it: `.parameters()` and the other methods only a module has, `.eval()` and `.train()`
   on something that is also called, `.param_groups`, `scaler.scale(loss).backward()`, `unscale_(opt)`,
   being handed to a scheduler or to `DistributedDataParallel`.

A word in a name is never evidence: `m = setup_model(cfg)` is what `setup_model` returns, and a parameter
named `model` with nothing else said about it is unknown.

This module resolves keys to their bindings and scopes; `values` says what an expression builds and what a
class is, `usage` what the code's use of a key says (both mixins of `Facts`); `kinds` holds the record.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import libcst as cst

from ..names import dotted
from . import apis
from .calls import bind_arguments, enclosing_class
from .events import (
    ASSIGN,
    Routine,
    obj_key,
    root_of,
)
from .kinds import (
    MODULE,
    OPTIMIZER,
    ROUTINE,
    SCALER,
    UNKNOWN,
    ClassFact,
    Fact,
    merge,
)
from .usage import UsageEvidence
from .values import Values

_MAX_DEPTH = 4


class Facts(UsageEvidence, Values):
    def __init__(self, analysis) -> None:
        self.an = analysis
        self.ctx = analysis.ctx
        self._cache: dict = {}
        self._usage: Optional[dict] = None
        self._classes: dict = {}
        self._returns: dict = {}
        self._active: set = set()
        self._handed: Optional[dict] = None

    # -- public questions --------------------------------------------------------------------------------
    def of(self, r: Routine, key: Optional[str]) -> Fact:
        if not key:
            return UNKNOWN
        cache_key = (id(r), key)
        found = self._cache.get(cache_key)
        if found is not None:
            return found
        if cache_key in self._active or len(self._active) > _MAX_DEPTH * 4:
            return UNKNOWN
        self._active.add(cache_key)
        try:
            fact = self._of(r, key)
        finally:
            self._active.discard(cache_key)
        self._cache[cache_key] = fact
        return fact

    def kind(self, r: Routine, key: Optional[str]) -> Optional[str]:
        return self.of(r, key).kind

    def is_module(self, r: Routine, key: Optional[str]) -> bool:
        return self.of(r, key).kind == MODULE

    def is_optimizer(self, r: Routine, key: Optional[str]) -> bool:
        return self.of(r, key).kind == OPTIMIZER

    def is_scaler(self, r: Routine, key: Optional[str]) -> bool:
        return self.of(r, key).kind == SCALER

    def class_fact(self, class_node) -> ClassFact:
        if class_node is None:
            return ClassFact(None)
        found = self._classes.get(id(class_node))
        if found is None:
            self._classes[id(class_node)] = ClassFact(None)  # a cycle through bases resolves to unknown
            found = self._classes[id(class_node)] = self._class_fact(class_node)
        return found

    def frozen(self, r: Routine, key: str) -> bool:
        """Does the code freeze this object on purpose: `requires_grad_(False)` (or over its parameters) where
        it is built or anywhere in its scope, or a class that only ever puts its `self.x` in eval mode?"""
        fact = self.of(r, key)
        if fact.frozen:
            return True
        use = self.scope_usage(r, key)
        if use.frozen:
            return True
        scope = self.scope_of(r, key)
        if scope[0] in ("class", "module") and use.evals and not use.trains:
            return True  # put in eval once (a constructor, a setup method, module level) and never back
        return False

    # -- scopes ------------------------------------------------------------------------------------------
    def scope_of(self, r: Routine, key: str) -> tuple:
        """Where `key` (seen from `r`) is bound: ('class', node) for self.x, ('routine', id) or ('module',)."""
        root = root_of(key)
        if root in ("self", "cls"):
            cls = enclosing_class(r)
            if cls is not None:
                return ("class", id(self.an.class_chain(cls)[-1]))
        x = r
        while x is not None:
            if root in x.params or root in x.locals:
                if x.node is self.ctx.module:
                    return ("module",)
                return ("routine", id(x.node))
            x = x.parent
        return ("module",)

    def _scope_routines(self, r: Routine, key: str) -> list:
        scope = self.scope_of(r, key)
        if scope[0] == "class":
            return self.an.methods(enclosing_class(r))
        if scope[0] == "routine":
            x = r
            while x is not None and id(x.node) != scope[1]:
                x = x.parent
            return [x] if x is not None else [r]
        return [self.an.module_routine] + [x for x in self.an.all_routines() if x.is_free(key)]

    # -- the fact of a key ---------------------------------------------------------------------------
    def _of(self, r: Routine, key: str) -> Fact:
        bound = self._from_bindings(r, key)
        if bound.kind is not None:
            return self._with_usage(r, key, bound)
        used = self._from_usage(r, key)
        if used.kind == MODULE and self._created_here(r, key):
            used = replace(used, built=True)  # `model = Net(...)` with Net imported: built (and wrapped) here
        return self._with_usage(r, key, used)

    def _created_here(self, r: Routine, key: str) -> bool:
        """Is every binding of `key` in its scope a call's result (not a parameter, a loop target or an
        unpacking we cannot follow)?"""
        if root_of(key) not in ("self", "cls"):
            owner = r
            while owner is not None and root_of(key) not in owner.params and root_of(key) not in owner.locals:
                owner = owner.parent
            if owner is None or root_of(key) in owner.params:
                return False
            places = [owner]
        else:
            places = self._scope_routines(r, key)
        bindings = [e for m in places for e in m.assignments_to(key)]
        return bool(bindings) and all(isinstance(e.extra.get("value"), cst.Call) for e in bindings)

    def _with_usage(self, r: Routine, key: str, fact: Fact) -> Fact:
        if fact.kind == MODULE and not fact.frozen and self.scope_usage(r, key).frozen:
            return replace(fact, frozen=True)
        return fact

    def _from_bindings(self, r: Routine, key: str) -> Fact:
        root = root_of(key)
        facts: list = []
        if root in ("self", "cls"):
            if key in ("self", "cls"):
                cls = enclosing_class(r)
                fact = self.class_fact(cls)
                return Fact(fact.kind, how="this class") if fact.kind == MODULE else UNKNOWN
            for m in self._scope_routines(r, key):
                facts.extend(self._assigned(m, key))
            return merge(facts)
        owner = r
        while owner is not None and root not in owner.params and root not in owner.locals:
            owner = owner.parent
        if owner is None:
            owner = self.an.module_routine
            if root not in owner.locals:
                return self._global(r, key)
        facts.extend(self._assigned(owner, key))
        if root in owner.params and "." not in key:
            facts.append(self._parameter(owner, key))
        return merge(facts)

    def _assigned(self, r: Routine, key: str) -> list:
        out = []
        for e in r.of(ASSIGN):
            if key not in e.extra["targets"]:
                continue
            value = e.extra.get("value")
            if value is not None:
                if obj_key(value) == key:
                    continue  # `model = model.to(device)`: the same object
                out.append(self.value(r, value))
            elif e.extra.get("unpacked") is not None:
                whole = self.value(r, e.extra["unpacked"])
                position = e.extra["targets"].index(key)
                if whole.elements and position < len(whole.elements) and _flat(e.extra.get("target")):
                    out.append(whole.elements[position])
                else:
                    out.append(UNKNOWN)
            else:
                out.append(UNKNOWN)  # a loop or `with` target
        return out

    def _parameter(self, r: Routine, name: str) -> Fact:
        annotation = r.annotations.get(name)
        if annotation is not None:
            fact = self._annotation(r, annotation)
            if fact.kind is not None:
                return fact
        facts = []
        for caller, call in self.an.call_sites(r):
            value = bind_arguments(r, call.node).get(name)
            if value is not None:
                facts.append(self.value(caller, value))
        known = [f for f in facts if f.kind is not None]
        if known and len({f.kind for f in known}) == 1:
            return replace(merge(known), mode="unknown", how=known[0].how or "its callers")
        return UNKNOWN

    def _annotation(self, r: Routine, annotation) -> Fact:
        if isinstance(annotation, cst.SimpleString):  # a forward reference: "nn.Module"
            try:
                annotation = cst.parse_expression(annotation.evaluated_value)
            except Exception:
                return UNKNOWN
        if isinstance(annotation, cst.Subscript):  # Optional[nn.Module]
            inner = annotation.slice[0].slice if annotation.slice else None
            if isinstance(inner, cst.Index):
                return self._annotation(r, inner.value)
            return UNKNOWN
        qualified = self.qualified(r, annotation)
        if qualified:
            if apis.MODULE_BASES.match(qualified):
                return Fact(MODULE, mode="unknown", how=f"annotated `{dotted(annotation)}`")
            for pattern, kind in apis.ANNOTATION_KINDS:
                if pattern.search(qualified):
                    return Fact(kind, how=f"annotated `{dotted(annotation)}`")
        cls = self.an.local_class(dotted(annotation))
        if cls is not None:
            fact = self.class_fact(cls)
            if fact.kind == MODULE:
                return Fact(MODULE, mode="unknown", mode_dependent=fact.mode_dependent,
                            how=f"annotated `{dotted(annotation)}`")
        return UNKNOWN

    def _global(self, r: Routine, key: str) -> Fact:
        """A name the module binds by a def, a class or an import: a routine or an imported object."""
        root = root_of(key)
        if "." not in key:
            if self.an.local_class(root) is not None or self.an.local_function(None, root) is not None:
                return Fact(ROUTINE, how=f"`{root}` is defined in this file")
            if self.ctx.names.is_import_bound(root):
                return Fact(ROUTINE, how=f"`{root}` is imported")
        return UNKNOWN


def _flat(target) -> bool:
    """A tuple target of plain names (positions map to the elements of the value)."""
    return isinstance(target, (cst.Tuple, cst.List)) and all(
        isinstance(el.value, (cst.Name, cst.Attribute)) for el in target.elements)
