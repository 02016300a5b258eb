"""What a routine does, in statement order: its events, and the control flow they sit in.

A *routine* is a function or method (a nested function is a routine of its own) or the loose statements of a
module (a script). Its *events* are the calls a training loop is made of (backward, optimizer step, gradient
clipping, ``unscale_``, ``.eval()``/``.train()``, other calls) plus assignments and exits, each numbered in
execution order and placed in the compound statements around it (loops, ``if`` branches, ``no_grad``
blocks). The events also hang in a small control-flow *skeleton* (sequences, branches, loops, jumps) that
``modes`` runs over to follow a value along every path.

This module is syntax only: an event says what was written (`x.step()`), never what `x` is. Whether `x` is
an optimizer, a module or a scaler is a fact that ``facts`` establishes from the whole file.

Objects are named by *keys*: the dotted text of a name or attribute chain (``model``, ``self.model``), with
wrappers seen through (``model.module``, ``unwrap_model(model)``, ``model.to(device)`` are ``model``).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Iterable, Optional

import libcst as cst

from ..names import dotted
from ..walk import child_fields

# -- kinds of events ---------------------------------------------------------------------------------
BACKWARD = "backward"  # via: tensor | scaled (scaler) | owner (X.backward(loss): an engine's, or a gradient) | lightning
STEP = "step"  # X.step(...): key X; extra: positional, closure, argument (key of the first positional)
ZERO_GRAD = "zero_grad"
UNSCALE = "unscale"  # S.unscale_(O): key S; extra: optimizer
SCALE = "scale"  # S.scale(loss): key S
UPDATE = "update"  # X.update() with no argument (a GradScaler's, if X is one)
CLIP = "clip"  # via: torch | timm (read `.grad` as it is) | method (X.clip_grad_norm_(...): key X)
EVAL = "eval"  # X.eval(), X.train(False)
TRAIN = "train"  # X.train(), X.train(True)
MODE = "mode"  # X.train(flag): a mode we cannot read
FREEZE = "freeze"  # X.requires_grad_(False)
CALL = "call"  # any other call; extra: qualified, receiver, method
ASSIGN = "assign"  # extra: targets (keys), value (None when unpacked or bound by a loop), iter (loop-bound)
EXIT = "exit"  # return / raise; extra: how, value

BUILTINS = frozenset(dir(builtins))
# Methods that return the object they are called on: seen through by keys.
SAME_OBJECT_METHODS = frozenset({
    "to", "cuda", "cpu", "float", "half", "double", "bfloat16", "eval", "train", "requires_grad_",
    "to_empty", "share_memory", "xpu", "mps",
})
# Library helpers that return the module a wrapper (DDP, torch.compile, Accelerate) holds.
UNWRAP_FUNCTIONS = frozenset({"unwrap_model", "unwrap", "de_parallel", "get_unwrapped_model", "unwrap_module"})
WRAPPER_ATTRIBUTES = frozenset({"module", "_orig_mod", "_forward_module", "_module"})
TORCH_CLIPS = frozenset({
    "torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_norm", "torch.nn.utils.clip_grad_value_",
    "torch.nn.utils.clip_grads_with_norm_", "torch.nn.utils.clip_grad.clip_grad_norm_",
    "torch.nn.utils.clip_grad.clip_grad_value_", "torch.nn.utils.clip_grad.clip_grads_with_norm_",
})
# timm's clipping functions, which read `.grad` as they are (as torch's do).
TIMM_CLIPS = frozenset({
    "timm.utils.dispatch_clip_grad", "timm.utils.clip_grad.dispatch_clip_grad", "timm.utils.adaptive_clip_grad",
    "timm.utils.agc.adaptive_clip_grad",
})
CLIP_METHODS = frozenset({"clip_grad_norm_", "clip_grad_value_", "clip_gradients"})
NO_GRAD_CONTEXTS = frozenset({
    "torch.no_grad", "torch.autograd.no_grad", "torch.autograd.grad_mode.no_grad", "torch.inference_mode",
    "torch.autograd.inference_mode", "torch.autograd.grad_mode.inference_mode",
})
SET_GRAD_ENABLED = frozenset({"torch.set_grad_enabled", "torch.autograd.set_grad_enabled",
                              "torch.autograd.grad_mode.set_grad_enabled"})
ENABLE_GRAD = frozenset({"torch.enable_grad", "torch.autograd.enable_grad", "torch.autograd.grad_mode.enable_grad"})


def last_segment(key: Optional[str]) -> str:
    return key.rsplit(".", 1)[-1] if key else ""


def root_of(key: str) -> str:
    return key.split(".", 1)[0]


def callee_name(func: cst.BaseExpression) -> str:
    if isinstance(func, cst.Name):
        return func.value
    if isinstance(func, cst.Attribute):
        return func.attr.value
    return ""


def obj_key(expr: Optional[cst.BaseExpression]) -> Optional[str]:
    """`model` for `model`, `model.module`, `model.to(dev)`, `unwrap_model(model)`; `self.model`; else None."""
    for _ in range(8):
        if isinstance(expr, cst.Call):
            func = expr.func
            if isinstance(func, cst.Attribute) and func.attr.value in SAME_OBJECT_METHODS:
                expr = func.value
                continue
            if callee_name(func) in UNWRAP_FUNCTIONS and expr.args and not expr.args[0].keyword:
                expr = expr.args[0].value
                continue
            return None
        break
    path = dotted(expr) if expr is not None else None
    if path is None:
        return None
    parts = path.split(".")
    while len(parts) > 1 and parts[-1] in WRAPPER_ATTRIBUTES:
        parts.pop()
    return ".".join(parts)


def sub_key(expr) -> Optional[str]:
    """`model[0]`, `model.layers[-1].norm`: the text of a receiver reached through a subscript, whose root
    is a key (a submodule picked by index), for mode switches on part of a model."""
    node = expr
    while isinstance(node, (cst.Attribute, cst.Subscript)):
        node = node.value
    if not isinstance(node, cst.Name) or expr is node:
        return None
    return "".join(cst.Module([]).code_for_node(expr).split())


def short(code: str, limit: int = 60) -> str:
    code = " ".join(code.split())
    return code if len(code) <= limit else code[: limit - 3] + "..."


def is_false(expr) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "False" or (
        isinstance(expr, cst.Integer) and expr.value == "0")


def is_true(expr) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "True"


# -- where an event sits ---------------------------------------------------------------------------------

@dataclass(eq=False)
class Place:
    """Where an event sits: statements from the routine's body down, branches, loops, no_grad regions."""

    stmts: tuple  # statements, outermost first; the last holds the event
    branches: tuple  # ((id(compound), tag), ...)
    loops: tuple  # Loop objects, outermost first
    regions: tuple  # active no_grad Regions, outermost first
    contexts: tuple  # other `with` item calls (accelerator.accumulate(...), autocast(...)), outermost first


@dataclass(eq=False)
class Loop:
    node: cst.CSTNode  # For or While (a statement), or a comprehension's CompFor
    place: Place  # where the loop sits
    start: int = 0
    end: int = 0
    statement: bool = True
    targets: tuple = ()  # names the loop binds on each iteration


@dataclass(eq=False)
class Region:
    """A `with torch.no_grad():` block, or a routine decorated with `@torch.no_grad()`."""

    node: cst.CSTNode  # the With, or the Decorator
    label: str  # `torch.no_grad()`, as written
    place: Optional[Place]  # None for a decorator
    start: int = 0
    end: int = 0


@dataclass(eq=False)
class Event:
    kind: str
    node: cst.CSTNode  # the Call (the Assign / For for ASSIGN events, the Return / Raise for EXIT)
    index: int
    place: Place
    key: Optional[str] = None
    extra: dict = field(default_factory=dict)

    @property
    def stmt(self) -> cst.CSTNode:
        return self.place.stmts[-1]

    def inside(self, span) -> bool:
        return span.start < self.index < span.end

    @property
    def no_grad(self) -> Optional[Region]:
        return self.place.regions[0] if self.place.regions else None


def exclusive(a: Place, b: Place) -> bool:
    """True when no run executes both places: they sit in different branches of one `if` (or match)."""
    for x, y in zip(a.branches, b.branches):
        if x == y:
            continue
        return x[0] == y[0] and not (x[1].startswith("try") or y[1].startswith("try"))
    return False


# -- the control-flow skeleton -------------------------------------------------------------------------
# A block is a list of Events and the structures below, in execution order.

@dataclass(eq=False)
class Branch:
    """An `if`/`match`: exactly one arm runs (an `if` without `else` has an empty arm)."""

    arms: list


@dataclass(eq=False)
class Repeat:
    """A loop: `head` runs before every iteration (a `while` test), `body` zero or more times, then `orelse`."""

    loop: Loop
    head: list
    body: list
    orelse: list


@dataclass(eq=False)
class Guard:
    """A `try`: a handler may start from any point of the body; `final` runs last."""

    body: list
    handlers: list
    orelse: list
    final: list


@dataclass(eq=False)
class Jump:
    how: str  # return | raise | break | continue


class Routine:
    """One routine's events, loops, no_grad regions and skeleton, and what it binds."""

    def __init__(self, node: cst.CSTNode, name: str, *, class_node=None, parent: Optional["Routine"] = None):
        self.node = node
        self.name = name
        self.class_node = class_node
        self.parent = parent
        self.events: list[Event] = []
        self.flow: list = []
        self.loops: list[Loop] = []
        self.regions: list[Region] = []
        self.nested: dict[str, cst.FunctionDef] = {}
        self.classes: set[str] = set()  # classes defined in its body
        self.locals: set[str] = set()
        self.params: list[str] = []
        self.defaults: dict[str, cst.BaseExpression] = {}
        self.annotations: dict[str, cst.BaseExpression] = {}
        self.reads: set[str] = set()  # names read (to tell whether a setting is used)
        self.attr_reads: set[str] = set()  # attribute names read
        self.strings: list = []  # string literals (`getattr(args, "clip_grad")` reads a setting too)
        self.param_groups: set[str] = set()  # keys whose `.param_groups` is read
        self.is_method = False
        self._aliases: Optional[dict] = None

    def __repr__(self) -> str:
        return f"<Routine {self.name}>"

    # -- questions -----------------------------------------------------------------------------------
    def of(self, *kinds: str) -> list[Event]:
        return [e for e in self.events if e.kind in kinds]

    def is_param(self, key: Optional[str]) -> bool:
        return bool(key) and root_of(key) in self.params

    def is_free(self, key: Optional[str]) -> bool:
        """A name neither bound here nor `self`: a global, or a variable of an enclosing routine."""
        if not key:
            return False
        root = root_of(key)
        return root not in self.params and root not in self.locals and root not in ("self", "cls")

    def aliases(self, key: Optional[str]) -> set:
        """Keys that name the same object as `key` here (`net = model.module` makes `net` and `model`)."""
        if not key:
            return set()
        if self._aliases is None:
            parent: dict = {}

            def find(k):
                while parent.get(k, k) != k:
                    k = parent[k]
                return k

            for e in self.of(ASSIGN):
                source = obj_key(e.extra["value"])
                if source is None:
                    continue
                for target in e.extra["targets"]:
                    if target and target != source:
                        parent[find(target)] = find(source)
            groups: dict = {}
            for k in list(parent):
                groups.setdefault(find(k), set()).add(k)
            self._aliases = {}
            for root, members in groups.items():
                members = members | {root}
                for m in members:
                    self._aliases[m] = members
        found = set(self._aliases.get(key, {key}))
        # `model.eval()` also covers `model.backbone`
        parts = key.split(".")
        for i in range(1, len(parts)):
            found |= self._aliases.get(".".join(parts[:i]), {".".join(parts[:i])})
        return found

    def assignments_to(self, key: str) -> list[Event]:
        return [e for e in self.of(ASSIGN) if key in e.extra["targets"]]


# -- nodes -------------------------------------------------------------------------------------------

_FIELDS: dict = {}


def children(node: cst.CSTNode) -> Iterable[cst.CSTNode]:
    names = _FIELDS.get(type(node))
    if names is None:
        names = _FIELDS[type(node)] = child_fields(type(node))
    for name in names:
        value = getattr(node, name)
        if isinstance(value, cst.CSTNode):
            yield value
        elif type(value) in (tuple, list):
            for child in value:
                if isinstance(child, cst.CSTNode):
                    yield child


def target_keys(target) -> list:
    out = []
    if isinstance(target, (cst.Name, cst.Attribute)):
        key = dotted(target)
        if key:
            out.append(key)
    elif isinstance(target, (cst.Tuple, cst.List)):
        for element in target.elements:
            out.extend(target_keys(element.value))
    elif isinstance(target, cst.StarredElement):
        out.extend(target_keys(target.value))
    return out
