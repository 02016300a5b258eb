"""What the training-loop rules share: the walk that hands them each routine, framework hooks, text scopes."""

from __future__ import annotations

import re
from typing import Optional

import libcst as cst

from ..rule import Rule
from . import apis
from .calls import Analysis, analysis, enclosing_class
from .events import BACKWARD, EVAL, MODE, STEP, TRAIN, Place, Routine, short

# GL004's scope on the text (a file-level prefilter) and on the tree (the verdict), kept in step: the tree
# condition must imply the text one, or the prefilter would hide findings. The tree condition is "the file
# trains or switches modes" (`manages_training`) or "a loop over a DataLoader built in this file".
TRAINING_TEXT = re.compile(r"backward(?:\w*\s*\(|\s+as\b)|\.\s*(?:step|train|eval)\s*\(")
LOADER_TEXT = re.compile(r"DataLoader")
# GL006 and GL005 need a backward or an optimizer step somewhere in the file (in the loop or in a helper).
TRAINING_STEP_TEXT = re.compile(r"backward(?:\w*\s*\(|\s+as\b)|\.\s*step\s*\(")


class RoutineRule(Rule):
    """A rule that judges whole routines: `check(routine)` runs when the walk leaves each function (and,
    for a script, the module). Subclasses override `check`."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self._scopes: list = []  # ("class"|"def", node)

    @property
    def analysis(self) -> Analysis:
        return analysis(self.ctx)

    @property
    def facts(self):
        """Facts come from the whole file: asking for them asks for the whole module."""
        self.require_full_module()
        return self.analysis.facts

    @property
    def modes(self):
        self.require_full_module()
        return self.analysis.modes

    @property
    def grads(self):
        self.require_full_module()
        return self.analysis.grads

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


def framework_eval_hook(an: Analysis, r: Routine) -> bool:
    """Lightning's validation/test/predict hooks, an HF Trainer subclass's prediction_step: the framework
    has put the model in eval mode before calling them."""
    x = r
    while x is not None:
        if x.class_node is not None:
            fact = an.facts.class_fact(x.class_node)
            if fact.lightning and apis.LIGHTNING_EVAL_HOOKS.match(x.name):
                return True
            if fact.trainer and x.name in apis.TRAINER_EVAL_HOOKS:
                return True
        x = x.parent
    return False


def manages_training(an: Analysis) -> bool:
    """Does any routine of the file train (backward, optimizer step) or switch modes?"""
    for r in an.all_routines():
        for e in r.events:
            if e.kind in (BACKWARD, EVAL, TRAIN, MODE) or (e.kind == STEP and an.modes.optimizer_step(r, e)):
                return True
    return False


def switches_modes(an: Analysis) -> bool:
    """Does any routine of the file call `.eval()` or `.train()` on something?"""
    return any(e.kind in (EVAL, TRAIN, MODE) for r in an.all_routines() for e in r.events)


def trains_anywhere(an: Analysis) -> bool:
    """Does any routine of the file train (a backward, an optimizer step) or put something in train mode?"""
    for r in an.all_routines():
        for e in r.events:
            if e.kind in (BACKWARD, TRAIN) or (e.kind == STEP and an.modes.optimizer_step(r, e)):
                return True
    return False


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


def first_event_at(r: Routine, stmt) -> Optional[int]:
    """The index of the first event that runs at or after the start of `stmt` (to simulate an insertion)."""
    for e in r.events:
        if any(s is stmt for s in e.place.stmts):
            return e.index
    return None


def in_module_class(an: Analysis, r: Routine) -> bool:
    """Is `r` a method of a class that is an nn.Module (its own code runs its sub-modules)?"""
    cls = enclosing_class(r)
    return cls is not None and an.facts.class_fact(cls).kind == "module"
