"""Evidence from use: how the code of a scope handles a key (`.parameters()`, `.eval()` and `.train()` on
something it also calls, `.param_groups`, `scaler.scale(loss).backward()`, being handed to a scheduler or to
`DistributedDataParallel`), and what the routines of this file it is handed to use it as.

A mixin of `facts.Facts`: it reads the scopes and annotations the binder works out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import libcst as cst

from . import apis
from .calls import bind_arguments
from .events import (
    ASSIGN,
    BACKWARD,
    CALL,
    CLIP,
    EVAL,
    FREEZE,
    MODE,
    SCALE,
    STEP,
    TRAIN,
    UNSCALE,
    UPDATE,
    ZERO_GRAD,
    Routine,
    is_false,
    obj_key,
    root_of,
)
from .kinds import ENGINE, MODULE, OPTIMIZER, SCALER, UNKNOWN, Fact, merge


@dataclass
class Usage:
    """How the code of one scope uses one key."""

    methods: set = field(default_factory=set)
    called: bool = False
    param_groups: bool = False
    scaled_backward: bool = False
    owner_backward: bool = False
    scheduled: bool = False  # first argument of a scheduler's construction
    wrapped: bool = False  # handed to DistributedDataParallel / FSDP / torch.compile
    frozen: bool = False  # requires_grad_(False), or `p.requires_grad = False` over its parameters
    evals: int = 0
    trains: int = 0



class UsageEvidence:
    def scope_usage(self, r: Routine, key: str) -> Usage:
        return self.usage().get((self.scope_of(r, key), key), Usage())

    def usage(self) -> dict:
        if self._usage is None:
            self._usage = {}
            for r in self.an.all_routines():
                self._collect_usage(r)
        return self._usage

    def _use(self, r: Routine, key: Optional[str]) -> Optional[Usage]:
        if not key:
            return None
        slot = (self.scope_of(r, key), key)
        found = self._usage.get(slot)
        if found is None:
            found = self._usage[slot] = Usage()
        return found

    def _collect_usage(self, r: Routine) -> None:
        for key in r.param_groups:
            self._use(r, key).param_groups = True
        loop_params = {}  # loop target -> key whose parameters it iterates
        for e in r.events:
            kind = e.kind
            if kind == CALL:
                func = e.node.func
                if e.extra.get("receiver") is not None:
                    self._use(r, e.extra["receiver"]).methods.add(e.extra["method"])
                if isinstance(func, (cst.Name, cst.Attribute)) and e.key and e.extra.get("qualified") is None:
                    self._use(r, e.key).called = True
                qualified = e.extra.get("qualified") or self.qualified(r, func)
                if qualified and e.node.args and not e.node.args[0].keyword:
                    first = obj_key(e.node.args[0].value)
                    if first:
                        if apis.SCHEDULER_FACTORIES.match(qualified):
                            self._use(r, first).scheduled = True
                        elif qualified in apis.WRAPPERS or qualified in apis.FSDP1:
                            self._use(r, first).wrapped = True
            elif kind in (EVAL, TRAIN, MODE):
                use = self._use(r, e.key)
                use.methods.add("eval" if kind == EVAL else "train")
                if kind == EVAL:
                    use.evals += 1
                else:
                    use.trains += 1
            elif kind == FREEZE:
                use = self._use(r, e.key)
                use.methods.add("requires_grad_")
                use.frozen = True
            elif kind in (ZERO_GRAD, STEP, UNSCALE, SCALE, UPDATE):
                self._use(r, e.key).methods.add({ZERO_GRAD: "zero_grad", STEP: "step", UNSCALE: "unscale_",
                                                 SCALE: "scale", UPDATE: "update"}[kind])
                if kind == STEP and e.extra["positional"] == 0:
                    self._use(r, e.key).methods.add("step()")
                if kind == UNSCALE and e.extra.get("optimizer"):
                    self._use(r, e.extra["optimizer"]).methods.add("unscaled")
            elif kind == BACKWARD:
                if e.extra.get("via") == "scaled" and e.extra.get("scaler"):
                    self._use(r, e.extra["scaler"]).scaled_backward = True
                elif e.extra.get("via") == "owner":
                    self._use(r, e.key).owner_backward = True
            elif kind == CLIP and e.extra.get("via") == "method":
                self._use(r, e.key).methods.add(e.node.func.attr.value)
            elif kind == ASSIGN:
                iterated = e.extra.get("iter")
                if isinstance(iterated, cst.Call) and isinstance(iterated.func, cst.Attribute) and \
                        iterated.func.attr.value in ("parameters", "named_parameters"):
                    owner = obj_key(iterated.func.value)
                    for target in e.extra["targets"]:
                        loop_params[target] = owner
                target = e.key
                if target and target.endswith(".requires_grad") and is_false(e.extra.get("value")):
                    owner = loop_params.get(target[: -len(".requires_grad")])
                    if owner:
                        self._use(r, owner).frozen = True

    def _from_usage(self, r: Routine, key: str, depth: int = 0) -> Fact:
        fact = self._used_as(r, key)
        if fact.kind is None and depth < 2:
            fact = self._handed_to(r, key, depth)
        return fact

    def _handed_to(self, r: Routine, key: str, depth: int) -> Fact:
        """What the routines of this file that are handed `key` as an argument use it as
        (`backward(loss, scaler)` scales it)."""
        facts = []
        for target, inner in self.handed().get((self.scope_of(r, key), key), ()):
            fact = self._annotation(target, target.annotations[inner]) if inner in target.annotations else UNKNOWN
            if fact.kind is None:
                fact = self._from_usage(target, inner, depth + 1)
            if fact.kind is not None:
                facts.append(fact)
        return merge(facts) if facts and len({f.kind for f in facts}) == 1 else UNKNOWN

    def handed(self) -> dict:
        """(scope, key) -> [(routine, parameter)] for every call of a routine of this file that is handed
        `key` as an argument."""
        if self._handed is None:
            self._handed = {}
            for m in self.an.all_routines():
                for e in m.of(CALL):
                    if not e.node.args:
                        continue
                    target = self.an.resolve_call(m, e)
                    if target is None or target is m:
                        continue
                    for param, value in bind_arguments(target, e.node).items():
                        key = obj_key(value)
                        if key and root_of(key) not in ("self", "cls"):
                            self._handed.setdefault((self.scope_of(m, key), key), []).append((target, param))
        return self._handed

    def _used_as(self, r: Routine, key: str) -> Fact:
        use = self.scope_usage(r, key)
        methods = use.methods
        if methods & apis.MODULE_ONLY_METHODS or use.wrapped or ("eval" in methods and "train" in methods) or (
                use.called and methods & ({"eval", "train"} | apis.MODULE_SHARED_METHODS)):
            how = next((f"`{key}.{m}()`" for m in sorted(methods & apis.MODULE_ONLY_METHODS)), "")
            return Fact(MODULE, mode="unknown", frozen=use.frozen, how=how or f"`{key}.eval()`/`.train()`")
        if use.scaled_backward or "unscale_" in methods:
            return Fact(SCALER, how=f"`{key}.scale(loss).backward()`")
        if use.param_groups or use.scheduled or "unscaled" in methods:
            return Fact(OPTIMIZER, how=f"`{key}.param_groups`" if use.param_groups else "")
        if use.owner_backward and "step" in methods and not use.called:
            return Fact(ENGINE, how=f"`{key}.backward(loss)` and `{key}.step()`")
        if "zero_grad" in methods and "step()" in methods and not use.called:
            return Fact(OPTIMIZER, how=f"`{key}.zero_grad()` and `{key}.step()`")
        return UNKNOWN

