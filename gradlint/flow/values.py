"""Evidence from construction: what an expression builds (`nn.X(...)`, a class of this file, a known factory,
a `torch.optim` class, a `GradScaler`, an `Accelerator`, a wrapper of a module, what a function of this file
returns), and what a class of this file is (an nn.Module, an optimizer, a plain class).

A mixin of `facts.Facts`: it asks the binder for the facts of the names an expression mentions.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import libcst as cst

from ..names import dotted
from . import apis
from .calls import enclosing_class
from .events import ASSIGN, BUILTINS, CALL, EXIT, SAME_OBJECT_METHODS, Routine, is_false, obj_key
from .kinds import (
    ACCELERATOR,
    ENGINE,
    FABRIC,
    LOADER,
    MODULE,
    OPTIMIZER,
    OTHER,
    SCALER,
    SCHEDULER,
    UNKNOWN,
    ClassFact,
    Fact,
    merge,
)

_MAX_DEPTH = 4


class Values:
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
                if x.node is self.ctx.module and self.ctx.names.is_import_bound(root):
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
            return merge([self.value(r, expr.body, depth + 1), self.value(r, expr.orelse, depth + 1)])
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
        fact = merge(facts) if facts else Fact(OTHER)
        if facts and any(f.kind is None for f in facts):
            fact = UNKNOWN
        if fact.kind is None and len(facts) == 1 and facts[0].elements:
            fact = facts[0]
        if fact.kind is not None and fact.kind != OTHER:
            fact = replace(fact, how=f"what `{target.name}()` returns ({fact.how})" if fact.how else
                           f"what `{target.name}()` returns")
        self._returns[id(target)] = fact
        return fact

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
