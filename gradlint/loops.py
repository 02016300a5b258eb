"""Training-loop analysis shared by GL004–GL007: what a routine does, in statement order.

A *routine* is a function or method (a nested function is a routine of its own) or the loose statements of
a module (a script). Its *events* are the calls a training loop is made of: backward, optimizer step,
gradient clipping, ``unscale_``, ``.eval()``/``.train()``, calls of other callables (forwards, helpers),
plus assignments. Each event knows the compound statements around it: the loops, the ``if`` branches and
the ``no_grad`` blocks. Rules then ask questions of statement order: "is there a clip after this backward
and before this step, on a path that can run both?".

Objects are named by *keys*: the dotted text of a name or attribute chain (``model``, ``self.model``),
with wrappers seen through (``model.module``, ``unwrap_model(model)``, ``model.to(device)`` are ``model``).

Nothing is computed until a rule asks: a routine is analysed on first request (shared by the rules of one
file), and the cross-routine index (call sites, helpers) only when a verdict needs it.
"""

from __future__ import annotations

import builtins
import re
import weakref
from dataclasses import dataclass, field
from typing import Iterable, Optional

import libcst as cst

from .names import dotted
from .nodes import arg_value
from .rule import Rule
from .walk import child_fields

# -- kinds of events ---------------------------------------------------------------------------------
BACKWARD = "backward"  # extra: via (tensor|scaled|accelerator|fabric|lightning|engine|helper), owner, scaler
STEP = "step"  # X.step(...): key X; extra: closure (bool), positional (int)
ZERO_GRAD = "zero_grad"
UNSCALE = "unscale"  # S.unscale_(O): key S; extra: optimizer
SCALE = "scale"  # S.scale(loss): key S
SCALER_UPDATE = "scaler_update"
CLIP = "clip"  # extra: via (torch|direct|accelerator|fabric|lightning|model|helper)
EVAL = "eval"  # X.eval(), X.train(False)
TRAIN = "train"  # X.train(), X.train(True)
MODE = "mode"  # X.train(flag): unknown mode
CALL = "call"  # any other call
ASSIGN = "assign"  # extra: targets (keys), value

BUILTINS = frozenset(dir(builtins))
# Methods that return the module they are called on (or its wrapper's module): seen through by keys.
_SAME_OBJECT_METHODS = frozenset({
    "to", "cuda", "cpu", "float", "half", "double", "bfloat16", "eval", "train", "requires_grad_",
    "to_empty", "share_memory", "xpu", "mps",
})
_UNWRAP_FUNCTIONS = frozenset({"unwrap_model", "unwrap", "de_parallel", "get_unwrapped_model", "unwrap_module"})
_WRAPPER_ATTRIBUTES = frozenset({"module", "_orig_mod", "_forward_module", "_module"})

# A name reads like a network when its last word is one of these (`model`, `text_encoder`, `netG`,
# `teacher_model`, `model_ema`) or ends like one (`resnet`, `mymodel`, `sentence_transformer`).
_MODEL_WORDS = frozenset({
    "model", "models", "net", "network", "encoder", "decoder", "backbone", "classifier", "teacher", "student",
    "generator", "discriminator", "critic", "actor", "policy", "transformer", "vae", "unet", "ema",
    "autoencoder", "lm", "llm", "g", "d", "bert", "gpt", "vit", "cnn", "rnn", "lstm", "gru", "mlp",
    "detector", "segmenter", "agent", "denoiser", "predictor", "regressor", "ddp", "wrapped", "embedder",
})
_MODEL_ENDINGS = ("net", "model", "former", "encoder", "decoder")
# First words of callables that are actions, not networks (`reset_model_state`, `build_model`).
_VERBS = frozenset({
    "get", "set", "build", "create", "make", "load", "save", "init", "reset", "compute", "prepare", "update",
    "fail", "handle", "run", "apply", "freeze", "unfreeze", "wrap", "unwrap", "to", "move", "copy", "clone",
    "register", "export", "convert", "check", "is", "has", "patch", "replace", "print", "log", "evaluate",
    "eval", "train", "validate", "test", "predict", "infer", "sample", "generate", "forward", "call",
})
_NOT_MODEL_WORDS = frozenset({
    "loss", "criterion", "metric", "metrics", "tokenizer", "processor", "collator", "optimizer", "optim",
    "scheduler", "scaler", "writer", "logger", "loader", "dataloader", "dataset", "sampler", "accelerator",
    "fabric", "callback", "hook", "fn", "func", "function", "config", "args", "path", "dir", "file",
    "builder", "factory", "forward", "step", "cls", "class", "type", "state", "inputs", "outputs",
})
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def words(name: str) -> list:
    """`teacher_model` -> ['teacher', 'model']; `netG` -> ['net', 'g']; `textEncoder` -> ['text', 'encoder']."""
    return [w.lower() for w in _WORD.findall(name)]


# Methods of a model that run its forward (a whitelist: `model.parameters()` is no forward).
_FORWARD_METHOD = re.compile(
    r"^(forward\w*|generate\w*|encode\w*|decode\w*|predict\w*|infer\w*|inference\w*|sample\w*|embed\w*|"
    r"extract\w*|features?|forward_features|forward_head|get_\w*features|score\w*|logits?|__call__)$")
_OPTIMIZER_NAME = re.compile(r"optim|(^|_)opt(\d|_|$)|^opt[gd]$|^opt$")
SCHEDULER_NAME = re.compile(r"sched|(^|_)lr(_|$)|warmup|plateau|swa_")
_SCALER_NAME = re.compile(r"scaler")
_OPTIMIZER_CLASS = re.compile(
    r"^(Adam\w*|SGD\w*|RMSprop|Adagrad|Adadelta|Adamax|NAdam|RAdam|SparseAdam|ASGD|Rprop|LBFGS|Lion\w*|"
    r"Adafactor|LAMB|Lamb|Lars|LARS|Sophia\w*|Muon|Shampoo|Adan|AdaBelief|Novograd|NovoGrad|MADGRAD|"
    r"FusedAdam|FusedLAMB|DeepSpeedCPUAdam|PagedAdam\w*|AdamW8bit|Adam8bit|ZeroRedundancyOptimizer|"
    r"\w*create_optimizer\w*|\w*build_optimizer\w*|get_optimizer|configure_optimizer)$")
_SCHEDULER_CLASS = re.compile(r"Scheduler|LR$|LambdaLR|schedule", re.IGNORECASE)
EVALISH_CALLEE = re.compile(r"eval|freeze|inference|set_mode|switch_mode|set_bn|bn_eval", re.IGNORECASE)
TRAINISH_CALLEE = re.compile(r"train|unfreeze|set_mode|switch_mode", re.IGNORECASE)
_MODULE_BASE = re.compile(
    r"(^|\.)(Module|Sequential|ModuleList|ModuleDict)$|Module$|Model$|Layer$|Block$|Net$|Network$|Cell$|"
    r"Encoder$|Decoder$|Head$|Embedding\w*$|PreTrainedModel|Mixin$|Attention$|MLP$|Norm$")
_LIGHTNING_BASE = re.compile(r"LightningModule$")
_TRAINER_BASE = re.compile(r"Trainer$")

TORCH_CLIPS = frozenset({
    "torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_norm", "torch.nn.utils.clip_grad_value_",
    "torch.nn.utils.clip_grads_with_norm_", "torch.nn.utils.clip_grad.clip_grad_norm_",
    "torch.nn.utils.clip_grad.clip_grad_value_", "torch.nn.utils.clip_grad.clip_grads_with_norm_",
})
NO_GRAD_CONTEXTS = frozenset({
    "torch.no_grad", "torch.autograd.no_grad", "torch.autograd.grad_mode.no_grad", "torch.inference_mode",
    "torch.autograd.inference_mode", "torch.autograd.grad_mode.inference_mode",
})
SET_GRAD_ENABLED = frozenset({"torch.set_grad_enabled", "torch.autograd.set_grad_enabled",
                              "torch.autograd.grad_mode.set_grad_enabled"})
ENABLE_GRAD = frozenset({"torch.enable_grad", "torch.autograd.enable_grad", "torch.autograd.grad_mode.enable_grad"})

# Hooks that a framework runs with the model already in eval mode.
LIGHTNING_EVAL_HOOKS = re.compile(
    r"^(validation_step|test_step|predict_step|validation_step_end|test_step_end|validation_epoch_end|"
    r"test_epoch_end|on_(validation|test|predict)_\w+)$")
# HF Trainer: `evaluation_loop` calls model.eval() before `prediction_step` (an override of the loop itself
# must do it, so the loop is no hook).
TRAINER_EVAL_HOOKS = frozenset({"prediction_step"})


def last_segment(key: Optional[str]) -> str:
    return key.rsplit(".", 1)[-1] if key else ""


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
            if isinstance(func, cst.Attribute) and func.attr.value in _SAME_OBJECT_METHODS:
                expr = func.value
                continue
            if callee_name(func) in _UNWRAP_FUNCTIONS and expr.args and not expr.args[0].keyword:
                expr = expr.args[0].value
                continue
            return None
        break
    path = dotted(expr) if expr is not None else None
    if path is None:
        return None
    parts = path.split(".")
    while len(parts) > 1 and parts[-1] in _WRAPPER_ATTRIBUTES:
        parts.pop()
    return ".".join(parts)


def root_of(key: str) -> str:
    return key.split(".", 1)[0]


def model_name(key: Optional[str]) -> bool:
    """Does the last part of `key` read like a network (`model`, `self.net`, `text_encoder`, `G`)?"""
    parts = words(last_segment(key)) if key else []
    if not parts or parts[0] in _VERBS or any(p in _NOT_MODEL_WORDS for p in parts):
        return False
    last = parts[-1]
    return last in _MODEL_WORDS or last.endswith(_MODEL_ENDINGS) or (parts[0] in ("model", "net") and len(
        parts) > 1 and parts[-1] in ("ddp", "wrapped", "unwrapped", "compiled", "ema", "module"))


def short(code: str, limit: int = 60) -> str:
    code = " ".join(code.split())
    return code if len(code) <= limit else code[: limit - 3] + "..."


# -- structure ---------------------------------------------------------------------------------------

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
    node: cst.CSTNode  # the Call (or the Assign / For for ASSIGN events)
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


class Routine:
    def __init__(self, node: cst.CSTNode, name: str, *, class_node=None, parent: Optional["Routine"] = None):
        self.node = node
        self.name = name
        self.class_node = class_node
        self.parent = parent
        self.events: list[Event] = []
        self.loops: list[Loop] = []
        self.regions: list[Region] = []
        self.nested: dict[str, cst.FunctionDef] = {}
        self.locals: set[str] = set()
        self.params: list[str] = []
        self.annotations: dict[str, str] = {}
        self.is_method = False
        self._aliases: Optional[dict] = None

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

    def training_events(self) -> list[Event]:
        return [e for e in self.events if e.kind == BACKWARD
                or (e.kind == STEP and self.is_optimizer_step(e))]

    # -- optimizers, schedulers, scalers -------------------------------------------------------------
    def constructed(self, key: str) -> Optional[str]:
        """'optimizer', 'scheduler', 'scaler' or None: what an assignment in this routine builds for `key`."""
        for e in self.of(ASSIGN):
            if key in e.extra["targets"]:
                kind = e.extra.get("builds")
                if kind:
                    return kind
        return None

    def is_scaler(self, key: Optional[str]) -> bool:
        if not key:
            return False
        if self.constructed(key) == "scaler" or _SCALER_NAME.search(last_segment(key).lower()):
            return True
        return any(e.key == key for e in self.events if e.kind in (SCALE, UNSCALE, SCALER_UPDATE))

    def is_optimizer(self, key: Optional[str]) -> bool:
        if not key:
            return False
        name = last_segment(key).lower()
        built = self.constructed(key)
        if built is not None:
            return built == "optimizer"
        if SCHEDULER_NAME.search(name) or self.is_scaler(key):
            return False
        if _OPTIMIZER_NAME.search(name):
            return True
        if any(e.extra.get("optimizer") == key for e in self.events if e.kind in (STEP, UNSCALE)):
            return True
        zeroed = any(e.key == key for e in self.of(ZERO_GRAD))
        return zeroed and not model_name(key)

    def is_optimizer_step(self, e: Event) -> bool:
        """`optimizer.step()` (no closure) or `scaler.step(optimizer)`."""
        if e.kind != STEP or e.extra.get("closure"):
            return False
        if e.extra.get("optimizer"):
            return True
        return e.extra.get("positional", 0) == 0 and self.is_optimizer(e.key)


# -- collection ----------------------------------------------------------------------------------------

_FIELDS: dict = {}


def _children(node: cst.CSTNode) -> Iterable[cst.CSTNode]:
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


class _Collector:
    def __init__(self, ctx, routine: Routine) -> None:
        self.ctx = ctx
        self.r = routine
        self.index = 0
        self.stmts: list = []
        self.branches: list = []
        self.loops: list = []
        self.regions: list = []
        self.contexts: list = []
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
        return event

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

    def branch(self, node, tag: str, body) -> None:
        self.branches.append((id(node), tag))
        self.changed()
        self.block(body)
        self.branches.pop()
        self.changed()

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
        elif t is cst.ClassDef:
            self.r.locals.add(stmt.name.value)
        elif t is cst.If:
            self.if_(stmt)
        elif t in (cst.For, cst.While):
            self.loop(stmt)
        elif t is cst.With:
            self.with_(stmt)
        elif t in (cst.Try, cst.TryStar):
            self.branch(stmt, "try", stmt.body)
            for i, handler in enumerate(stmt.handlers):
                self.branch(stmt, f"handler{i}", handler.body)
            if stmt.orelse is not None:
                self.branch(stmt, "else", stmt.orelse.body)
            if stmt.finalbody is not None:
                self.block(stmt.finalbody.body)
        elif t is cst.Match:
            self.expr(stmt.subject)
            for i, case in enumerate(stmt.cases):
                self.branch(stmt, f"case{i}", case.body)
        else:
            for child in _children(stmt):
                self.expr(child)
        self.stmts.pop()
        self.changed()

    def if_(self, stmt: cst.If) -> None:
        self.expr(stmt.test)
        self.branch(stmt, "body", stmt.body)
        orelse = stmt.orelse
        if isinstance(orelse, cst.If):
            self.branches.append((id(stmt), "orelse"))
            self.changed()
            self.if_(orelse)
            self.branches.pop()
            self.changed()
        elif orelse is not None:
            self.branch(stmt, "orelse", orelse.body)

    def loop(self, stmt) -> None:
        loop = Loop(stmt, self.place(), start=self.tick())
        self.r.loops.append(loop)
        if isinstance(stmt, cst.For):
            self.expr(stmt.iter)
        self.loops.append(loop)
        self.changed()
        if isinstance(stmt, cst.For):
            self.bind(stmt.target, None, stmt)
        else:
            self.expr(stmt.test)
        self.block(stmt.body)
        self.loops.pop()
        self.changed()
        loop.end = self.tick()
        if stmt.orelse is not None:
            self.block(stmt.orelse.body)

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
        qualified = self.ctx.resolve(call.func if call is not None else expr)
        if qualified in NO_GRAD_CONTEXTS:
            if call is None:
                return None
            flag = arg_value(call, 0, "mode")
            return "on" if _false(flag) else "off"
        if qualified in SET_GRAD_ENABLED and call is not None:
            flag = arg_value(call, 0, "mode")
            return "off" if _false(flag) else ("on" if _true(flag) else None)
        if qualified in ENABLE_GRAD:
            return "on"
        return None

    def small(self, small) -> None:
        t = type(small)
        if t is cst.Assign:
            self.expr(small.value)
            targets = []
            for target in small.targets:
                targets.extend(self.bind(target.target, small.value if len(small.targets) == 1 else None, small))
        elif t is cst.AnnAssign:
            if small.value is not None:
                self.expr(small.value)
                self.bind(small.target, small.value, small)
        elif t is cst.AugAssign:
            self.expr(small.value)
        elif t in (cst.Import, cst.ImportFrom, cst.Pass, cst.Break, cst.Continue):
            return
        else:
            for child in _children(small):
                self.expr(child)

    def bind(self, target, value, node) -> list:
        """Record an assignment; returns the keys bound."""
        keys: list = []
        single = isinstance(target, (cst.Name, cst.Attribute))
        if single:
            key = dotted(target)
            if key:
                keys.append(key)
        else:
            for name_node in _names_in_target(target):
                keys.append(name_node)
        for key in keys:
            if "." not in key:
                self.r.locals.add(key)
        if keys:
            builds = _what_it_builds(self.ctx, value) if single and value is not None else None
            self.add(ASSIGN, node, keys[0] if single else None, targets=tuple(keys),
                     value=value if single else None, builds=builds)
        return keys

    # -- expressions --
    def expr(self, node) -> None:
        if node is None:
            return
        t = type(node)
        if t is cst.Call:
            self.call(node)
            return
        if t is cst.Lambda or t is cst.Name or t is cst.SimpleString or t is cst.Integer:
            return
        if t is cst.NamedExpr:
            self.expr(node.value)
            self.bind(node.target, node.value, node)
            return
        if t in (cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp):
            self.comprehension(node)
            return
        for child in _children(node):
            self.expr(child)

    def comprehension(self, node) -> None:
        """The first iterable runs outside; each `for` of the comprehension is a loop around the element."""
        self.expr(node.for_in.iter)
        opened = []
        comp = node.for_in
        first = True
        while comp is not None:
            if not first:
                self.expr(comp.iter)
            first = False
            loop = Loop(comp, self.place(), start=self.tick(), statement=False)
            self.r.loops.append(loop)
            self.loops.append(loop)
            opened.append(loop)
            self.changed()
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
            loop.end = self.tick()
        self.changed()

    def call(self, call: cst.Call) -> None:
        self.classify(call)
        self.expr(call.func)
        for a in call.args:
            self.expr(a.value)

    def classify(self, call: cst.Call) -> None:
        func = call.func
        name = callee_name(func)
        qualified = self.ctx.resolve(func)
        positional = [a for a in call.args if a.keyword is None and not a.star]
        lower = name.lower()
        if qualified is not None:
            if qualified in TORCH_CLIPS:
                self.add(CLIP, call, via="torch")
                return
            if qualified in ("torch.autograd.backward",):
                self.add(BACKWARD, call, via="tensor")
                return
            if qualified.startswith("torch."):
                self.add(CALL, call, obj_key(func), qualified=qualified)
                return
        if isinstance(func, cst.Name) and name in _DIRECT_CLIPS:
            self.add(CLIP, call, via="direct")
            return
        if isinstance(func, cst.Attribute):
            receiver = func.value
            rkey = obj_key(receiver)
            if name == "backward":
                inner = receiver if isinstance(receiver, cst.Call) else None
                if inner is not None and callee_name(inner.func) == "scale" and isinstance(inner.func, cst.Attribute):
                    self.add(BACKWARD, call, via="scaled", scaler=obj_key(inner.func.value))
                    return
                owner = last_segment(rkey).lower()
                if positional and "accelerator" in owner:
                    self.add(BACKWARD, call, rkey, via="accelerator", owner=rkey)
                elif positional and "fabric" in owner:
                    self.add(BACKWARD, call, rkey, via="fabric", owner=rkey)
                elif positional and re.search(r"engine|strategy|precision|plugin|deepspeed", owner):
                    self.add(BACKWARD, call, rkey, via="engine", owner=rkey)
                else:
                    self.add(BACKWARD, call, via="tensor")
                return
            if name == "manual_backward":
                self.add(BACKWARD, call, rkey, via="lightning", owner=rkey)
                return
            if name == "step":
                closure = any(a.keyword is not None and a.keyword.value == "closure" for a in call.args)
                optimizer = None
                if positional and self.r.is_scaler(rkey):
                    optimizer = obj_key(positional[0].value)
                elif len(positional) == 1 and _SCALER_NAME.search(owner_name(rkey)):
                    optimizer = obj_key(positional[0].value)
                if optimizer is None and positional:
                    closure = closure or _looks_like_closure(positional[0].value)
                self.add(STEP, call, rkey, closure=closure, positional=len(positional), optimizer=optimizer)
                return
            if name == "zero_grad":
                self.add(ZERO_GRAD, call, rkey)
                return
            if name == "unscale_":
                self.add(UNSCALE, call, rkey, optimizer=obj_key(positional[0].value) if positional else None)
                return
            if name == "scale" and len(call.args) == 1:
                self.add(SCALE, call, rkey)
                return
            if name == "update" and not call.args and _SCALER_NAME.search(owner_name(rkey)):
                self.add(SCALER_UPDATE, call, rkey)
                return
            if name == "eval" and not call.args:
                self.add(EVAL, call, rkey)
                return
            if name == "train" and rkey is not None:
                flag = arg_value(call, 0, "mode")
                kind = TRAIN if flag is None or _true(flag) else (EVAL if _false(flag) else MODE)
                if len(call.args) <= 1:
                    self.add(kind, call, rkey)
                    return
            if _is_clip_name(lower):
                owner = last_segment(rkey).lower()
                if "accelerator" in owner:
                    via = "accelerator"
                elif "fabric" in owner:
                    via = "fabric"
                elif name == "clip_gradients" and rkey in ("self", "pl_module", "module", "lightning_module"):
                    via = "lightning"
                elif name == "clip_grad_norm_" and model_name(rkey):
                    via = "model"
                else:
                    via = "helper"
                self.add(CLIP, call, rkey, via=via)
                return
            if "backward" in lower and "hook" not in lower:
                self.add(BACKWARD, call, rkey, via="helper", scaler=_scaler_argument(call))
                return
        elif isinstance(func, cst.Name):
            if _is_clip_name(lower):
                self.add(CLIP, call, via="helper")
                return
            if "backward" in lower and "hook" not in lower:
                self.add(BACKWARD, call, via="helper", scaler=_scaler_argument(call))
                return
        self.add(CALL, call, obj_key(func) if isinstance(func, (cst.Name, cst.Attribute)) else None,
                 qualified=qualified)


# Clipping functions that read `.grad` as they are (timm's, torch's under a `from` import we could not see).
_DIRECT_CLIPS = frozenset({"dispatch_clip_grad", "adaptive_clip_grad", "clip_grad_norm_", "clip_grad_value_",
                           "clip_grads_with_norm_", "clip_grad_norm"})


def owner_name(key: Optional[str]) -> str:
    return last_segment(key).lower()


def _is_clip_name(lower: str) -> bool:
    return "clip" in lower and ("grad" in lower or "norm" in lower or "clipping" in lower)


def _scaler_argument(call: cst.Call) -> Optional[str]:
    for a in call.args:
        key = obj_key(a.value)
        if key and _SCALER_NAME.search(last_segment(key).lower()):
            return key
    return None


def _looks_like_closure(expr) -> bool:
    return isinstance(expr, cst.Lambda) or (isinstance(expr, cst.Name) and "closure" in expr.value.lower()) or (
        isinstance(expr, (cst.Call, cst.Attribute)) and "closure" in (dotted(expr) or callee_name(
            getattr(expr, "func", expr)) or "").lower())


def _true(expr) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "True"


def _false(expr) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "False" or (
        isinstance(expr, cst.Integer) and expr.value == "0")


def _names_in_target(target) -> list:
    out = []
    if isinstance(target, (cst.Name, cst.Attribute)):
        key = dotted(target)
        if key:
            out.append(key)
    elif isinstance(target, (cst.Tuple, cst.List)):
        for element in target.elements:
            out.extend(_names_in_target(element.value))
    elif isinstance(target, cst.StarredElement):
        out.extend(_names_in_target(target.value))
    return out


def _what_it_builds(ctx, value) -> Optional[str]:
    """'optimizer', 'scheduler' or 'scaler' for `torch.optim.AdamW(...)`, `CosineAnnealingLR(...)`, `GradScaler()`."""
    while isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and \
            value.func.attr.value in _SAME_OBJECT_METHODS:
        value = value.func.value
    if not isinstance(value, cst.Call):
        return None
    qualified = ctx.resolve(value.func) or ""
    name = callee_name(value.func)
    if "lr_scheduler" in qualified or (name and _SCHEDULER_CLASS.search(name) and "optim" not in name.lower()):
        return "scheduler"
    if name.endswith("GradScaler") or "amp.GradScaler" in qualified:
        return "scaler"
    if qualified.startswith("torch.optim.") or (name and _OPTIMIZER_CLASS.match(name)):
        return "optimizer"
    return None


def _params(node: cst.FunctionDef) -> tuple[list, dict]:
    p = node.params
    names, annotations = [], {}
    for param in (*p.posonly_params, *p.params, *p.kwonly_params):
        names.append(param.name.value)
        if param.annotation is not None:
            annotations[param.name.value] = param.annotation.annotation
    for star in (p.star_arg, p.star_kwarg):
        if isinstance(star, cst.Param):
            names.append(star.name.value)
    return names, annotations


def collect(ctx, node: cst.CSTNode, name: str, *, class_node=None, parent: Optional[Routine] = None) -> Routine:
    routine = Routine(node, name, class_node=class_node, parent=parent)
    collector = _Collector(ctx, routine)
    if isinstance(node, cst.FunctionDef):
        routine.params, routine.annotations = _params(node)
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
    else:  # a module: its loose statements
        collector.block([s for s in node.body if not isinstance(s, (cst.FunctionDef, cst.ClassDef))])
    return routine


# -- per-file analysis -----------------------------------------------------------------------------------

class Analysis:
    """Routines of one file, analysed on demand, plus an index of callables for cross-routine questions."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self._routines: dict = {}
        self._index: Optional[dict] = None

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
        name = node.name.value if isinstance(node, cst.FunctionDef) else "<module>"
        routine = collect(self.ctx, node, name, class_node=class_node, parent=parent)
        self._routines[id(node)] = routine
        return routine

    # -- index of the module's callables --------------------------------------------------------------
    def _build_index(self) -> dict:
        """name -> routines: ('func', name), ('method', class name, name), and the module routine."""
        index: dict = {}
        module = self.ctx.module
        self.module_routine = self.routine(module)
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

        self.classes: dict = {}
        for stmt in module.body:
            if isinstance(stmt, cst.FunctionDef):
                add_function(stmt, ())
            elif isinstance(stmt, cst.ClassDef):
                self.classes[stmt.name.value] = stmt
                for inner in stmt.body.body if isinstance(stmt.body, cst.IndentedBlock) else ():
                    if isinstance(inner, cst.FunctionDef):
                        add_function(inner, (("class", stmt),))
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

    def class_chain(self, class_node) -> list:
        """The class and its base classes defined in this module (by name), nearest first."""
        chain, todo = [], [class_node]
        while todo and len(chain) < 8:
            c = todo.pop(0)
            if c is None or any(c is x for x in chain):
                continue
            chain.append(c)
            for base in c.bases:
                base_name = last_segment(dotted(base.value))
                if base_name in getattr(self, "classes", {}):
                    todo.append(self.classes[base_name])
        return chain

    def resolve_call(self, caller: Routine, event: Event) -> Optional[Routine]:
        """The routine of this module that `event` (a call) runs, if we can tell."""
        index = self.index
        func = event.node.func if isinstance(event.node, cst.Call) else None
        if isinstance(func, cst.Name):
            name = func.value
            r = caller
            while r is not None:
                if name in r.nested:
                    found = index.get(("nested", id(r.node), name))
                    if found:
                        return found[0]
                r = r.parent
            if self.ctx.resolve(func) is not None and not self.ctx.imports.is_bound(name):
                return None  # a convention name (`F`, `torch`), not a def of this module
            found = index.get(("func", name))
            return found[-1] if found else None
        if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and \
                func.value.value in ("self", "cls"):
            cls = enclosing_class(caller)
            if cls is None:
                return None
            for c in self.class_chain(cls):
                found = index.get(("method", c.name.value, func.attr.value))
                if found:
                    return found[-1]
        return None

    def built_elsewhere(self, r: Routine, key: str) -> Optional[str]:
        """What an assignment to `key` builds ('optimizer', 'scheduler', 'scaler') in the routines that can
        bind it for `r`: the methods of its class for `self.x`, enclosing routines and the module for a
        free name."""
        places: list = []
        if root_of(key) == "self" and enclosing_class(r) is not None:
            chain = self.class_chain(enclosing_class(r))
            places = [x for x in self.all_routines() if enclosing_class(x) in chain]
        elif r.is_free(key):
            parent = r.parent
            while parent is not None:
                places.append(parent)
                parent = parent.parent
            places.append(self.routine(self.ctx.module))
        for place in places:
            built = place.constructed(key)
            if built is not None:
                return built
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
        out = []
        for r in self.all_routines():
            for e in r.events:
                if isinstance(e.node, cst.Call) and callee_name(e.node.func) == target.name and \
                        self.resolve_call(r, e) is target:
                    out.append((r, e))
        return out


def enclosing_class(r: Routine):
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


_ANALYSES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def analysis(ctx) -> Analysis:
    found = _ANALYSES.get(ctx)
    if found is None:
        found = _ANALYSES[ctx] = Analysis(ctx)
    return found


def class_kind(ctx, class_node) -> str:
    """'lightning', 'module' (an nn.Module: its own methods run sub-modules), 'trainer' or 'plain'."""
    if class_node is None:
        return "plain"
    kinds = []
    for base in class_node.bases:
        text = ctx.resolve(base.value) or dotted(base.value) or ""
        if _LIGHTNING_BASE.search(text):
            return "lightning"
        if text.startswith("torch.nn") or _MODULE_BASE.search(text):
            kinds.append("module")
        elif _TRAINER_BASE.search(text):
            kinds.append("trainer")
    if "module" in kinds:
        return "module"
    return kinds[0] if kinds else "plain"


# -- the rules' base class ---------------------------------------------------------------------------------


class RoutineRule(Rule):
    """A rule that judges whole routines: `check(routine)` runs when the walk leaves each function (and,
    for a script, the module). Subclasses override `check`."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self._scopes: list = []  # ("class"|"def", node)

    @property
    def analysis(self) -> Analysis:
        return analysis(self.ctx)

    def visit_ClassDef(self, node) -> None:
        self._scopes.append(("class", node))

    def leave_ClassDef(self, node) -> None:
        self._scopes.pop()

    def visit_FunctionDef(self, node) -> None:
        self._scopes.append(("def", node))

    def leave_FunctionDef(self, node) -> None:
        self._scopes.pop()
        routine = self.analysis.routine(node, tuple(self._scopes))
        if routine.events:
            self.check(routine)

    def leave_Module(self, node) -> None:
        routine = self.analysis.routine(node)
        if routine.events:
            self.check(routine)

    def check(self, routine: Routine) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- helpers --
    def at(self, node) -> str:
        """Where `node` is, as a message says it: "line 49" (or "cell 3, line 2" in a notebook)."""
        return self.ctx.where(node)

    def text(self, node, limit: int = 50) -> str:
        return short(self.ctx.code_of(node), limit)

    def where(self, routine: Routine) -> str:
        return f"`{routine.name}()`" if routine.name != "<module>" else "this script"


def insertion_anchor(event_place: Place, other: Optional[Place] = None):
    """The statement before which to insert code for an event: its own statement, or, when it sits in a
    loop that `other` (the step it prepares) is not in, the outermost such loop (so the code runs once)."""
    stmts = event_place.stmts
    if other is None:
        return stmts[-1]
    common = 0
    for a, b in zip(stmts, other.stmts):
        if a is not b:
            break
        common += 1
    for stmt in stmts[common:-1]:
        if isinstance(stmt, (cst.For, cst.While)):
            return stmt
    return stmts[-1]


def in_block(stmt) -> bool:
    """Can a statement be inserted before `stmt`? (It is a statement of an indented block or the module.)"""
    return isinstance(stmt, (cst.SimpleStatementLine, cst.BaseCompoundStatement))


# -- models: which object is the network ---------------------------------------------------------------

_MODULE_METHODS = ("parameters", "named_parameters", "state_dict", "load_state_dict", "modules", "named_modules",
                   "children", "apply", "zero_grad", "requires_grad_", "to", "cuda", "half", "register_forward_hook")


def module_evidence(r: Routine, key: str) -> bool:
    """Does this routine treat `key` as an nn.Module (mode switches, `.parameters()`, `.to(device)`)?"""
    for e in r.events:
        if e.kind in (EVAL, TRAIN, MODE, ZERO_GRAD) and e.key == key:
            return True
        if e.kind == CALL and e.key and e.key.startswith(key + ".") and \
                e.key[len(key) + 1:] in _MODULE_METHODS:
            return True
    annotation = r.annotations.get(key) if "." not in key else None
    if annotation is not None:
        text = dotted(annotation) or ""
        if re.search(r"Module|Model", text):
            return True
    return False


def modelish(r: Routine, key: Optional[str]) -> bool:
    if not key or key in ("self", "cls"):
        return False
    parts = words(last_segment(key))
    if not parts or parts[0] in _VERBS or any(p in _NOT_MODEL_WORDS for p in parts):
        return False
    return model_name(key) or module_evidence(r, key)


def forward_target(ctx, r: Routine, e: Event) -> Optional[str]:
    """The key of the network whose forward this call runs (`model(x)`, `self.net(x)`,
    `model.generate(...)`, `model.module.encode_image(x)`), or None."""
    if e.kind != CALL or e.extra.get("qualified") is not None:
        return None
    func = e.node.func
    if isinstance(func, cst.Name):
        name = func.value
        if name in BUILTINS and name not in r.locals and name not in r.params:
            return None
        if name in r.nested:
            return None
        if r.is_free(name) and re.match(r"[A-Z][a-z]", name):
            return None  # `Net()`: a constructor
        key = name
    elif isinstance(func, cst.Attribute):
        receiver = obj_key(func.value)
        if _FORWARD_METHOD.match(func.attr.value) and receiver and modelish(r, receiver):
            return receiver
        key = e.key
        if key is None or re.match(r"[A-Z][a-z]", func.attr.value):
            return None
    else:
        return None
    return key if modelish(r, key) else None


def parameter_owners(r: Routine, expr, depth: int = 0) -> list:
    """Keys whose `.parameters()` (or the object itself, passed to a helper) feed `expr`."""
    owners: list = []

    def visit(node, depth):
        if isinstance(node, cst.Call):
            func = node.func
            if isinstance(func, cst.Attribute) and func.attr.value in ("parameters", "named_parameters"):
                key = obj_key(func.value)
                if key:
                    owners.append(key)
                    return
            else:  # `create_optimizer_v2(model, "adamw")`, `param_groups_weight_decay(model, wd)`
                for a in node.args:
                    key = obj_key(a.value) if not isinstance(a.value, cst.Call) else None
                    if key and model_name(key):
                        owners.append(key)
        elif isinstance(node, cst.Name) and depth < 2:
            for e in reversed(r.of(ASSIGN)):
                if e.extra["targets"] == (node.value,) and e.extra.get("value") is not None:
                    visit(e.extra["value"], depth + 1)
                    break
            return
        elif isinstance(node, cst.Lambda):
            return
        for child in _children(node):
            visit(child, depth)

    visit(expr, depth)
    return owners


def common_prefix(keys: list) -> Optional[str]:
    if not keys:
        return None
    parts = [k.split(".") for k in keys]
    prefix = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    return ".".join(prefix) if prefix and prefix != ["self"] else None


def identify_model(an: Analysis, r: Routine, optimizer: Optional[str]) -> tuple[Optional[str], str]:
    """(key of the model whose parameters `optimizer` steps, how we know), or (None, '')."""
    if optimizer:
        places = [r]
        if optimizer.startswith("self.") and enclosing_class(r) is not None:
            cls = enclosing_class(r)
            places += [x for x in an.all_routines() if enclosing_class(x) is cls and x is not r]
        elif r.is_free(optimizer) or r.node is an.ctx.module:
            places.append(an.routine(an.ctx.module))
        for place in places:
            for e in place.of(ASSIGN):
                if optimizer in e.extra["targets"] and e.extra.get("builds") == "optimizer":
                    key = common_prefix(parameter_owners(place, e.extra["value"]))
                    if key and place is not r and root_of(key) != "self" and place.is_method:
                        # `self.model = model` in __init__: spell it the way other methods can
                        key = next((k for k in sorted(place.aliases(key)) if root_of(k) == "self"), None)
                    if key and (root_of(key) == "self" or place is r or (
                            place.node is an.ctx.module and r.is_free(key))):
                        return key, "optimizer"
    stepped = {e.extra.get("optimizer") or e.key for e in r.of(STEP) if r.is_optimizer_step(e)}
    if len(stepped) > 1:
        return None, ""
    trained = {e.key for e in r.of(TRAIN) if e.key and not r.is_optimizer(e.key) and e.key not in ("self",)}
    if len(trained) == 1:
        return trained.pop(), "train"
    forwards = {k for e in r.of(CALL) if e.no_grad is None and (k := forward_target(an.ctx, r, e))}
    if len(forwards) == 1:
        return forwards.pop(), "forward"
    return None, ""


# -- modes across routines -------------------------------------------------------------------------------

def key_in_callee(caller: Routine, call: Event, target: Routine, key: str) -> Optional[str]:
    """What `target` calls the object that `caller` names `key`, for the call `call`."""
    if root_of(key) in ("self", "cls"):
        return key if target.is_method else None
    if target.is_free(key) and (caller.is_free(key) or caller.name == "<module>"):
        return key  # a global (or a variable of an enclosing routine) both see
    aliases = caller.aliases(key)
    for param, value in bind_arguments(target, call.node).items():
        if obj_key(value) in aliases:
            return param
    return None


def helper_calls(an: Analysis, r: Routine, key: str, before: Optional[int] = None):
    """(call event, routine, key there) for calls of this module's routines that receive `key`."""
    for e in r.events:
        if e.kind != CALL or (before is not None and e.index >= before):
            continue
        if not isinstance(e.node.func, (cst.Name, cst.Attribute)):
            continue
        target = an.resolve_call(r, e)
        if target is None or target is r:
            continue
        inner = key_in_callee(r, e, target, key)
        if inner is not None:
            yield e, target, inner


def final_mode(an: Analysis, r: Routine, key: str, depth: int = 0) -> Optional[str]:
    """The mode `r` leaves `key` in: 'eval', 'train', 'unknown' (a flag), or None when it never sets it."""
    aliases = r.aliases(key)
    moves = [(e.index, {EVAL: "eval", TRAIN: "train"}.get(e.kind, "unknown"))
             for e in r.events if e.kind in (EVAL, TRAIN, MODE) and e.key in aliases]
    if depth < 3:
        for e, target, inner in helper_calls(an, r, key):
            mode = final_mode(an, target, inner, depth + 1)
            if mode is not None:
                moves.append((e.index, mode))
    if not moves:
        return None
    return max(moves)[1]


def sets_eval_chain(value) -> bool:
    """`load(path).eval()`, `Net().to(device).eval()`: an assignment of a model already in eval mode."""
    while isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute):
        name = value.func.attr.value
        if name == "eval" or (name == "train" and _false(arg_value(value, 0, "mode"))):
            return True
        value = value.func.value
    return False


def framework_eval_hook(ctx, r: Routine) -> bool:
    """Lightning's validation/test/predict hooks, a Trainer subclass's prediction_step: the framework has
    put the model in eval mode before calling them."""
    x = r
    while x is not None:
        if x.class_node is not None:
            if LIGHTNING_EVAL_HOOKS.match(x.name):
                return True
            if x.name in TRAINER_EVAL_HOOKS and class_kind(ctx, x.class_node) == "trainer":
                return True
        x = x.parent
    return False


# GL004's scope, on text (a file-level prefilter) and on the tree (the verdict), kept in step: the tree
# condition must imply the text one, or the prefilter would hide findings.
TRAINING_TEXT = re.compile(r"backward(?:\w*\s*\(|\s+as\b)|\.\s*(?:step|train|eval)\s*\(")  # manages_training
# GL006 and GL005 need a backward or an optimizer step somewhere in the file (in the loop or in a helper).
TRAINING_STEP_TEXT = re.compile(r"backward(?:\w*\s*\(|\s+as\b)|\.\s*step\s*\(")
_LOADER_TEXT = re.compile(r"(?i)loader")
_IN_BEFORE = re.compile(r"\bin\b[^:]*$")


def loader_loop_text(text: str) -> bool:
    """Does a line hold `in ... loader` with no colon between (what `iterates_loader` needs)? Searched from
    the literal `loader` back to its line's start: a regex starting with `\\bin` tries every position."""
    for match in _LOADER_TEXT.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        if _IN_BEFORE.search(text, line_start, match.start()):
            return True
    return False


def iterates_loader(ctx, loop: Loop) -> bool:
    """`for x, y in val_loader:`, `[model(b) for b in tqdm(test_dataloader)]`: a pass over a data loader,
    its iterable named on the line of its `in` (what `loader_loop_text` finds in the text)."""
    node = loop.node
    if isinstance(node, cst.For):
        between = node.whitespace_after_in
    elif isinstance(node, cst.CompFor):
        between = node.whitespace_after_in
    else:
        return False
    if not isinstance(between, cst.SimpleWhitespace) or "\n" in between.value or "\\" in between.value:
        return False
    first_line = ctx.code_of(node.iter).split("\n", 1)[0]
    head = first_line.split(":", 1)[0]
    return "loader" in head.lower()


def manages_training(an: Analysis) -> bool:
    """Does any routine of the file train (backward, optimizer step) or switch modes?"""
    for r in an.all_routines():
        for e in r.events:
            if e.kind in (BACKWARD, EVAL, TRAIN, MODE) or (e.kind == STEP and r.is_optimizer_step(e)):
                return True
    return False


_SETUP_METHOD = re.compile(r"^(__init__|__post_init__|train|eval|setup\w*|configure\w*)$|init|setup|build|load|"
                           r"freeze|prepare")


def class_keeps_eval(an: Analysis, r: Routine, key: str) -> bool:
    """A class that puts `self.x` in eval mode in its constructor or its `train()` override keeps it there."""
    cls = enclosing_class(r)
    if cls is None:
        return False
    for c in an.class_chain(cls):
        for routine in an.all_routines():
            if routine.class_node is not c or not _SETUP_METHOD.search(routine.name):
                continue
            for e in routine.events:
                if e.kind == EVAL and e.key == key:
                    return True
                if e.kind == ASSIGN and key in e.extra["targets"] and sets_eval_chain(e.extra.get("value")):
                    return True
    return False
