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
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import libcst as cst

from ..names import dotted
from . import apis
from .calls import bind_arguments, enclosing_class
from .events import (
    ASSIGN,
    BACKWARD,
    BUILTINS,
    CALL,
    CLIP,
    EVAL,
    EXIT,
    FREEZE,
    MODE,
    SAME_OBJECT_METHODS,
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

MODULE, OPTIMIZER, SCHEDULER, SCALER = "module", "optimizer", "scheduler", "scaler"
ACCELERATOR, FABRIC, ENGINE, LOADER = "accelerator", "fabric", "engine", "loader"
ROUTINE, OTHER = "routine", "other"  # a function or class of this file; an object known not to be any above
_MAX_DEPTH = 4


@dataclass(frozen=True)
class Fact:
    kind: Optional[str] = None
    mode: Optional[str] = None  # a module's mode where it is built: 'train', 'eval' or 'unknown'
    frozen: bool = False  # `.requires_grad_(False)` on it where it is built
    mode_dependent: Optional[bool] = None  # does its forward depend on the mode (None: cannot tell)
    fsdp1: bool = False  # wrapped by FullyShardedDataParallel (clip with `model.clip_grad_norm_`)
    language_model: bool = False  # a transformers language model (its recipes clip gradients)
    built: bool = False  # its construction is in this file (so is any wrapper around it: FSDP, DDP)
    how: str = ""  # the evidence, in words
    elements: tuple = ()  # for a tuple a call returns: the Fact of each element

    @property
    def module(self) -> bool:
        return self.kind == MODULE


UNKNOWN = Fact()


def _merge(facts: list) -> Fact:
    """One Fact for a key bound several times: the kind all known bindings agree on."""
    known = [f for f in facts if f.kind is not None]
    if not known:
        return UNKNOWN
    kinds = {f.kind for f in known}
    if len(kinds) != 1:
        return UNKNOWN
    first = known[0]
    modes = {f.mode for f in known}
    dependent = {f.mode_dependent for f in known}
    return replace(first, mode=modes.pop() if len(modes) == 1 else "unknown",
                   frozen=all(f.frozen for f in known),
                   mode_dependent=True if True in dependent else (False if dependent == {False} else None),
                   fsdp1=any(f.fsdp1 for f in known), language_model=any(f.language_model for f in known),
                   built=all(f.built for f in known))


@dataclass
class _Usage:
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


@dataclass(frozen=True)
class ClassFact:
    kind: Optional[str]  # MODULE, OPTIMIZER, OTHER (a plain class), or None (a base we cannot see)
    lightning: bool = False
    trainer: bool = False  # derives from the HF Trainer
    mode_dependent: Optional[bool] = None


class Facts:
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

    def scope_usage(self, r: Routine, key: str) -> _Usage:
        return self.usage().get((self.scope_of(r, key), key), _Usage())

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

    # -- usage -------------------------------------------------------------------------------------------
    def usage(self) -> dict:
        if self._usage is None:
            self._usage = {}
            for r in self.an.all_routines():
                self._collect_usage(r)
        return self._usage

    def _use(self, r: Routine, key: Optional[str]) -> Optional[_Usage]:
        if not key:
            return None
        slot = (self.scope_of(r, key), key)
        found = self._usage.get(slot)
        if found is None:
            found = self._usage[slot] = _Usage()
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
            return _merge(facts)
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
        return _merge(facts)

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
            return replace(_merge(known), mode="unknown", how=known[0].how or "its callers")
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
            if self.ctx.imports.is_bound(root):
                return Fact(ROUTINE, how=f"`{root}` is imported")
        return UNKNOWN

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
        return _merge(facts) if facts and len({f.kind for f in facts}) == 1 else UNKNOWN

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

    # -- the fact of an expression -------------------------------------------------------------------
    def qualified(self, r: Routine, expr) -> Optional[str]:
        """The imported name `expr` spells in `r`, unless a local binding shadows the import."""
        qualified = self.ctx.resolve(expr)
        if qualified is None:
            return None
        path = dotted(expr)
        root = path.split(".", 1)[0] if path else None
        x = r
        while x is not None:
            if root in x.params or root in x.locals:
                if x.node is self.ctx.module and self.ctx.imports.is_bound(root):
                    return qualified  # a script's `import x` then later `x = ...`: the collector saw the order
                return None
            x = x.parent
        return qualified

    def value(self, r: Routine, expr, depth: int = 0) -> Fact:
        if depth > _MAX_DEPTH:
            return UNKNOWN
        if isinstance(expr, (cst.Name, cst.Attribute)):
            qualified = self.qualified(r, expr)
            if qualified is not None and "." in qualified and not isinstance(expr, cst.Name):
                return UNKNOWN
            return self.of(r, obj_key(expr))
        if isinstance(expr, (cst.Tuple, cst.List)):
            return Fact(OTHER, elements=tuple(self.value(r, el.value, depth + 1) for el in expr.elements))
        if isinstance(expr, cst.IfExp):  # `Accelerator(a) if args.x else Accelerator(b)`
            return _merge([self.value(r, expr.body, depth + 1), self.value(r, expr.orelse, depth + 1)])
        if isinstance(expr, (cst.SimpleString, cst.Integer, cst.Float, cst.Dict, cst.ListComp, cst.DictComp,
                             cst.FormattedString, cst.ConcatenatedString)):
            return Fact(OTHER)
        if not isinstance(expr, cst.Call):
            return UNKNOWN
        func = expr.func
        if isinstance(func, cst.Attribute) and func.attr.value in SAME_OBJECT_METHODS:
            inner = self.value(r, func.value, depth + 1)
            name = func.attr.value
            if name == "eval" or (name == "train" and expr.args and is_false(expr.args[0].value)):
                return replace(inner, mode="eval")
            if name == "train":
                return replace(inner, mode="train")
            if name == "requires_grad_" and expr.args and is_false(expr.args[0].value):
                return replace(inner, frozen=True)
            return inner
        qualified = self.qualified(r, func)
        if qualified is not None:
            return self._library_call(r, qualified, expr, depth)
        if isinstance(func, cst.Name):
            cls = self.an.local_class(func.value) if func.value not in r.locals else None
            if cls is not None:
                return self._instance(cls)
            target = self.an.local_function(r, func.value)
            if target is not None:
                return self._returned(target, depth)
            return UNKNOWN
        if isinstance(func, cst.Attribute):
            owner = obj_key(func.value)
            owner_fact = self.of(r, owner) if owner else UNKNOWN
            method = func.attr.value
            if owner_fact.kind == ACCELERATOR and method in ("prepare", "prepare_model"):
                return self._passthrough(r, expr, depth)
            if owner_fact.kind == FABRIC and method in ("setup", "setup_module", "setup_optimizers"):
                return self._passthrough(r, expr, depth)
            if owner == "self" and method == "optimizers" and self.class_fact(enclosing_class(r)).lightning:
                return Fact(OPTIMIZER, how="`self.optimizers()`",
                            elements=tuple(Fact(OPTIMIZER) for _ in range(8)))
            if owner in ("self", "cls"):
                target = self.an.method(enclosing_class(r), method) if enclosing_class(r) is not None else None
                if target is not None:
                    return self._returned(target, depth)
        return UNKNOWN

    def _passthrough(self, r: Routine, call: cst.Call, depth: int) -> Fact:
        args = [self.value(r, a.value, depth + 1) for a in call.args if a.keyword is None and not a.star]
        if len(args) == 1:
            return replace(args[0], elements=())
        return Fact(OTHER, elements=tuple(args))

    def _library_call(self, r: Routine, qualified: str, call: cst.Call, depth: int) -> Fact:
        first = call.args[0].value if call.args and not call.args[0].keyword and not call.args[0].star else None
        if qualified in apis.WRAPPERS:
            return self.value(r, first, depth + 1) if first is not None else UNKNOWN
        if qualified in apis.FSDP1:
            inner = self.value(r, first, depth + 1) if first is not None else UNKNOWN
            return Fact(MODULE, mode=inner.mode or "unknown", mode_dependent=inner.mode_dependent,
                        language_model=inner.language_model, fsdp1=True, built=inner.built,
                        how="`FullyShardedDataParallel(...)`")
        built = apis.module_factory(qualified, _keywords(call))
        if built is not None:
            return Fact(MODULE, mode=built.mode, mode_dependent=built.mode_dependent,
                        language_model=built.language_model, built=True, how=f"`{qualified}(...)`")
        position = apis.module_tuple_factory(qualified)
        if position is not None:
            elements = [Fact(OTHER)] * 3
            elements[position] = Fact(MODULE, mode="unknown", built=True, how=f"`{qualified}(...)`")
            return Fact(OTHER, elements=tuple(elements))
        if qualified.startswith("torch.nn.") and not qualified.startswith("torch.nn.functional."):
            name = qualified.rsplit(".", 1)[-1]
            if name[:1].isupper() and name not in ("Parameter", "ParameterList", "ParameterDict"):
                return self._nn_module(r, name, call, depth)
        if apis.OPTIMIZER_FACTORIES.match(qualified):
            return Fact(OPTIMIZER, how=f"`{qualified}(...)`")
        if apis.SCHEDULER_FACTORIES.match(qualified):
            return Fact(SCHEDULER, how=f"`{qualified}(...)`")
        if qualified in apis.SCALERS:
            return Fact(SCALER, how=f"`{qualified}()`")
        if qualified in apis.ACCELERATORS:
            return Fact(ACCELERATOR, how=f"`{qualified}()`")
        if qualified in apis.FABRICS:
            return Fact(FABRIC, how=f"`{qualified}()`")
        if qualified in apis.DATA_LOADERS:
            return Fact(LOADER, how=f"`{qualified}(...)`")
        if qualified in apis.DEEPSPEED_INITIALIZE:
            return Fact(OTHER, elements=(Fact(ENGINE, how="`deepspeed.initialize(...)`"), Fact(OPTIMIZER),
                                         Fact(OTHER), Fact(SCHEDULER)))
        if qualified.split(".", 1)[0] in ("torch", "numpy", "math", "builtins"):
            return Fact(OTHER)
        return UNKNOWN

    def _nn_module(self, r: Routine, name: str, call: cst.Call, depth: int) -> Fact:
        if name in apis.CONTAINERS_NN:
            parts = [self.value(r, a.value, depth + 1) for a in call.args if not a.keyword]
            dependent = _dependent_of(parts)
        elif name in apis.MODE_DEPENDENT_WITH:
            keyword = apis.MODE_DEPENDENT_WITH[name]
            given = next((a.value for a in call.args if a.keyword is not None and a.keyword.value == keyword), None)
            dependent = given is not None and not is_false(given) and not (
                isinstance(given, (cst.Integer, cst.Float)) and float(given.value) == 0.0)
        else:
            dependent = name in apis.MODE_DEPENDENT_NN
        return Fact(MODULE, mode="train", mode_dependent=dependent, built=True, how=f"`nn.{name}(...)`")

    def _instance(self, class_node) -> Fact:
        fact = self.class_fact(class_node)
        name = class_node.name.value
        if fact.kind == MODULE:
            return Fact(MODULE, mode="train", mode_dependent=fact.mode_dependent, built=True,
                        how=f"`{name}` derives from `nn.Module`")
        if fact.kind == OPTIMIZER:
            return Fact(OPTIMIZER, how=f"`{name}` derives from `torch.optim.Optimizer`")
        return Fact(fact.kind)

    def _returned(self, target: Routine, depth: int) -> Fact:
        """What a function of this file returns, when every `return` agrees."""
        found = self._returns.get(id(target))
        if found is not None:
            return found
        self._returns[id(target)] = UNKNOWN  # recursion
        values = [e.extra.get("value") for e in target.of(EXIT) if e.extra.get("how") == "return"]
        facts = [self.value(target, v, depth + 1) if v is not None else Fact(OTHER) for v in values]
        fact = _merge(facts) if facts else Fact(OTHER)
        if facts and any(f.kind is None for f in facts):
            fact = UNKNOWN
        if fact.kind is None and len(facts) == 1 and facts[0].elements:
            fact = facts[0]
        if fact.kind is not None and fact.kind != OTHER:
            fact = replace(fact, how=f"what `{target.name}()` returns ({fact.how})" if fact.how else
                           f"what `{target.name}()` returns")
        self._returns[id(target)] = fact
        return fact

    # -- classes -------------------------------------------------------------------------------------
    def _class_fact(self, class_node) -> ClassFact:
        kind: Optional[str] = OTHER
        lightning = trainer = False
        unknown_base = False
        for base in class_node.bases:
            if base.keyword is not None:
                continue
            qualified = self.ctx.resolve(base.value)
            local = self.an.local_class(dotted(base.value))
            if local is not None and local is not class_node:
                fact = self.class_fact(local)
                if fact.kind in (MODULE, OPTIMIZER):
                    kind = fact.kind
                elif fact.kind is None:
                    unknown_base = True
                lightning |= fact.lightning
                trainer |= fact.trainer
            elif qualified and apis.MODULE_BASES.match(qualified):
                kind = MODULE
                lightning |= bool(apis.LIGHTNING_MODULE.match(qualified))
            elif qualified in apis.OPTIMIZER_BASES:
                kind = OPTIMIZER
            elif qualified and apis.HF_TRAINERS.match(qualified):
                trainer = True
            elif dotted(base.value) not in ("object", "ABC", "abc.ABC", "Generic", "Protocol"):
                unknown_base = True
        if kind == OTHER and unknown_base:
            # A base we cannot see. `forward` is the method nn.Module calls: a class defining it is a module.
            defines_forward = any(isinstance(s, cst.FunctionDef) and s.name.value == "forward"
                                  for s in class_node.body.body if isinstance(class_node.body, cst.IndentedBlock))
            kind = MODULE if defines_forward else None
        if kind != MODULE:
            return ClassFact(kind, lightning=lightning, trainer=trainer)
        dependent = self._class_contents(class_node, unknown_base)
        return ClassFact(MODULE, lightning=lightning, trainer=trainer, mode_dependent=dependent)

    def _class_contents(self, class_node, unknown_base: bool) -> Optional[bool]:
        """Is the forward mode-dependent (None: cannot tell)? From the submodules the class's methods store on
        `self` (`self.drop = nn.Dropout(0.1)`), the functions they call (`F.dropout`) and `self.training`."""
        dependent: Optional[bool] = None if unknown_base else False
        for m in self.an.methods(class_node):
            if "training" in m.attr_reads:
                return True
            for e in m.events:
                if e.kind == CALL:
                    qualified = e.extra.get("qualified") or self.qualified(m, e.node.func)
                    if qualified in apis.MODE_DEPENDENT_FUNCTIONS:
                        return True
                elif e.kind == ASSIGN and e.key and e.key.startswith("self.") and \
                        isinstance(e.extra.get("value"), cst.Call):
                    fact = self._submodule(m, class_node, e.extra["value"])
                    if fact is True:
                        return True
                    if fact is None:
                        dependent = None
        return dependent

    def _submodule(self, m: Routine, class_node, call: cst.Call) -> Optional[bool]:
        """Is what `self.x = call` stores mode-dependent? False for values known not to be."""
        while isinstance(call.func, cst.Attribute) and call.func.attr.value in SAME_OBJECT_METHODS and \
                isinstance(call.func.value, cst.Call):
            call = call.func.value  # `nn.Dropout(0.1).to(device)`
        func = call.func
        qualified = self.qualified(m, func)
        if qualified is not None:
            name = qualified.rsplit(".", 1)[-1]
            if qualified.startswith("torch.nn.") and not qualified.startswith("torch.nn.functional.") and \
                    name[:1].isupper():
                return self._nn_module(m, name, call, 0).mode_dependent
            return False if qualified.split(".", 1)[0] in ("torch", "math", "numpy") else None
        if isinstance(func, cst.Name):
            if func.value in BUILTINS:
                return False
            local = self.an.local_class(func.value)
            if local is not None and local is not class_node:
                return self.class_fact(local).mode_dependent
        return None


def _keywords(call: cst.Call) -> dict:
    """keyword -> its value when it is a number literal, else None."""
    return {a.keyword.value: float(a.value.value) if isinstance(a.value, (cst.Integer, cst.Float)) else None
            for a in call.args if a.keyword is not None}


def _dependent_of(parts: list) -> Optional[bool]:
    if any(p.mode_dependent for p in parts):
        return True
    if all(p.kind == MODULE and p.mode_dependent is False for p in parts):
        return False
    return None


def _flat(target) -> bool:
    """A tuple target of plain names (positions map to the elements of the value)."""
    return isinstance(target, (cst.Tuple, cst.List)) and all(
        isinstance(el.value, (cst.Name, cst.Attribute)) for el in target.elements)
