"""Values along every path of a routine: the mode a module is in, the state of its gradients.

`simulate` runs a transfer function over a routine's skeleton (``events``): branches join, loops run until
nothing changes, `return`/`break`/`continue` leave where Python leaves, a `try` handler may start anywhere
in its body. A state is a frozenset of tokens; what a token means is the caller's (a mode and the event
that set it, for `Modes`).

`Modes` answers "which modes can `model` be in just before this event?" and "which modes can this routine
leave `model` in?", following calls into the routines of this file that receive the model (an evaluation
helper that restores `.train()` in one branch only leaves it in eval mode on the other path). A mode is
`entry` (whatever the caller had), `train`, `eval` or `unknown` (a `.train(flag)`, `model.apply(fn)`).
"""

from __future__ import annotations

import re
from typing import Callable, Optional

import libcst as cst

from .calls import enclosing_class, key_in_callee
from .events import (
    ASSIGN,
    BACKWARD,
    CALL,
    EVAL,
    MODE,
    STEP,
    TRAIN,
    Branch,
    Event,
    Guard,
    Jump,
    Repeat,
    Routine,
    callee_name,
    obj_key,
)

EMPTY: frozenset = frozenset()
ENTRY = ("entry", 0)
# The mode a routine starts in when none of its callers can be seen (helpers called from other modules).
UNSEEN = ("unseen", 0)
_MAX_DEPTH = 3
# Calls we cannot see that hand over the model and say they set its mode (`set_bn_eval(model)`,
# `freeze(model)`): their effect is unknown, which keeps a rule silent; the name never makes a finding.
UNKNOWN_SETTERS = re.compile(r"eval|freeze|train|inference|set_mode|switch_mode|set_bn|bn_eval", re.IGNORECASE)


class _Walk:
    def __init__(self, transfer: Callable, observe: Optional[Callable]) -> None:
        self.transfer = transfer
        self.observe = observe
        self.exits = EMPTY
        self.loops: list = []  # [(breaks, continues)]

    def block(self, items: list, state: frozenset) -> frozenset:
        for item in items:
            if not state:
                return EMPTY
            t = type(item)
            if t is Event:
                if self.observe is not None:
                    self.observe(item, state)
                state = self.transfer(item, state)
            elif t is Branch:
                state = frozenset().union(*(self.block(arm, state) for arm in item.arms))
            elif t is Repeat:
                state = self.repeat(item, state)
            elif t is Guard:
                body = self.block(item.body, state)
                handler_in = state | body
                handled = frozenset().union(*(self.block(h, handler_in) for h in item.handlers)) \
                    if item.handlers else EMPTY
                state = self.block(item.final, self.block(item.orelse, body) | handled)
            elif t is Jump:
                if item.how == "return":
                    self.exits |= state
                elif item.how in ("break", "continue") and self.loops:
                    slot = self.loops[-1]
                    slot[0 if item.how == "break" else 1] |= state
                return EMPTY
        return state

    def repeat(self, item: Repeat, state: frozenset) -> frozenset:
        entry = state
        slot = [EMPTY, EMPTY]
        self.loops.append(slot)
        for _ in range(4):
            tested = self.block(item.head, entry)
            out = self.block(item.body, tested)
            new = entry | out | slot[1]
            if new == entry:
                break
            entry = new
        self.loops.pop()
        done = self.block(item.head, entry)
        return self.block(item.orelse, done) | slot[0]


def simulate(r: Routine, transfer: Callable, entry: frozenset, observe: Optional[Callable] = None) -> frozenset:
    """The states a routine can end in (falling off its end or returning; a `raise` ends no path)."""
    walk = _Walk(transfer, observe)
    end = walk.block(r.flow, entry)
    return end | walk.exits


class Modes:
    """Module modes along every path, with this file's routines followed a few calls deep."""

    def __init__(self, analysis) -> None:
        self.an = analysis
        self._exits: dict = {}
        self._before: dict = {}
        self._trains: dict = {}

    # -- modes ---------------------------------------------------------------------------------------
    def before(self, r: Routine, key: str, event: Event, inject: Optional[dict] = None) -> frozenset:
        """The modes `key` can be in just before `event` (tokens: (mode, index of the event that set it))."""
        return self.observe(r, key, inject).get(event.index, EMPTY)

    def observe(self, r: Routine, key: str, inject: Optional[dict] = None, depth: int = 0) -> dict:
        """Event index -> modes before it, over the whole routine. `inject`: {event index: token} sets the
        mode just before that event (to test an inserted `.eval()`/`.train()`)."""
        cache_key = (id(r), key)
        if inject is None and cache_key in self._before:
            return self._before[cache_key]
        seen: dict = {}

        def observe(event, state):
            if inject and event.index in inject:
                state = frozenset({inject[event.index]})
            seen[event.index] = seen.get(event.index, EMPTY) | state

        transfer = self._transfer(r, key, depth, inject)
        simulate(r, transfer, frozenset({ENTRY}), observe)
        if inject is None:
            self._before[cache_key] = seen
        return seen

    def exit(self, r: Routine, key: str, depth: int = 0) -> frozenset:
        """The modes `r` can leave `key` in, `entry` standing for the mode it was called with."""
        cache_key = (id(r), key)
        found = self._exits.get(cache_key)
        if found is not None:
            return found
        self._exits[cache_key] = frozenset({ENTRY})  # a recursive call changes nothing
        found = self._exits[cache_key] = simulate(r, self._transfer(r, key, depth, None), frozenset({ENTRY}))
        return found

    def _transfer(self, r: Routine, key: str, depth: int, inject: Optional[dict]):
        aliases = r.aliases(key)
        root = key.split(".", 1)[0]
        facts = self.an.facts

        def transfer(e: Event, state: frozenset) -> frozenset:
            if inject and e.index in inject:
                state = frozenset({inject[e.index]})
            kind = e.kind
            if kind in (EVAL, TRAIN, MODE):
                if e.key in aliases:
                    return frozenset({({EVAL: "eval", TRAIN: "train"}.get(kind, "unknown"), e.index)})
                return state
            if kind == ASSIGN:
                targets = e.extra["targets"]
                if key in targets or root in targets:
                    value = e.extra.get("value")
                    if value is not None and obj_key(value) in aliases:
                        return state
                    if value is None and key in targets and _passes_through(e, targets.index(key), aliases):
                        return state  # `model, opt = accelerator.prepare(model, opt)`: the same module
                    if key in targets and value is not None:
                        fact = facts.value(r, value)
                        if fact.module and fact.mode in ("train", "eval"):
                            return frozenset({(fact.mode, e.index)})
                    # Built by a call we cannot see, or bound by a loop: as unknown as a parameter is.
                    return frozenset({UNSEEN})
                return state
            if kind == CALL and depth < _MAX_DEPTH:
                return self._call(r, e, key, aliases, state, depth)
            return state

        return transfer

    def _call(self, r: Routine, e: Event, key: str, aliases: set, state: frozenset, depth: int) -> frozenset:
        func = e.node.func
        target = self.an.resolve_call(r, e)
        if target is not None and target is not r:
            inner = key_in_callee(r, e, target, key)
            if inner is None:
                return state
            out = set()
            for mode, origin in self.exit(target, inner, depth + 1):
                if (mode, origin) == ENTRY:
                    out |= state
                else:
                    out.add((mode, e.index))
            return frozenset(out) if out else state
        receiver = obj_key(func.value) if isinstance(func, cst.Attribute) else None
        handed = receiver in aliases or any(obj_key(a.value) in aliases for a in e.node.args)
        if not handed:
            return state
        if isinstance(func, cst.Attribute) and func.attr.value == "apply" and receiver in aliases:
            return frozenset({("unknown", e.index)})  # model.apply(set_bn_eval)
        if UNKNOWN_SETTERS.search(callee_name(func)):
            return frozenset({("unknown", e.index)})
        return state

    # -- training --------------------------------------------------------------------------------------
    def trains(self, r: Routine, depth: int = 0) -> bool:
        """Does `r` run a backward or an optimizer step, itself or in a routine of this file it calls?"""
        found = self._trains.get(id(r))
        if found is not None:
            return found
        self._trains[id(r)] = False
        result = bool(self.training_events(r, depth))
        self._trains[id(r)] = result
        return result

    def training_events(self, r: Routine, depth: int = 0) -> list:
        """Backwards, optimizer steps, and calls of routines of this file that train."""
        out = []
        for e in r.events:
            if e.kind == BACKWARD or (e.kind == STEP and self.optimizer_step(r, e)):
                out.append(e)
            elif e.kind == CALL and depth < _MAX_DEPTH:
                target = self.an.resolve_call(r, e)
                if target is not None and target is not r and self.trains(target, depth + 1):
                    out.append(e)
        return out

    def trains_from_entry(self, r: Routine, call: Event, key: str, depth: int = 0) -> bool:
        """Does the routine that `call` runs train `key` in the mode it was called with (no `.train()` of its
        own first)? True when we cannot tell."""
        target = self.an.resolve_call(r, call)
        inner = key_in_callee(r, call, target, key) if target is not None else None
        if inner is None or depth >= _MAX_DEPTH:
            return True
        modes = self.observe(target, inner)
        return any(ENTRY in modes.get(t.index, ()) and (t.kind != CALL or self.trains_from_entry(target, t, inner,
                                                                                                   depth + 1))
                   for t in self.training_events(target))

    def optimizer_step(self, r: Routine, e: Event) -> Optional[str]:
        """The optimizer a STEP event steps (`opt.step()`, `scaler.step(opt)`), or None."""
        if e.kind != STEP or e.extra.get("closure"):
            return None
        if e.key in ("self", "cls") and enclosing_class(r) is not None and \
                self.an.method(enclosing_class(r), "step") is not None:
            return None  # a wrapper's own `step()`: a routine of this file, followed like any other call
        facts = self.an.facts
        if e.extra["positional"] == 1 and e.extra.get("argument") and facts.is_scaler(r, e.key):
            return e.extra["argument"]
        if e.extra["positional"] == 0 and facts.is_optimizer(r, e.key):
            return e.key
        return None


def correlated_exclusive(ctx, r: Routine, a: Event, b: Event) -> bool:
    """Can `b` not run after `a` in one pass, because they sit in opposite arms of two `if`s with the same
    test that nothing rebinds in between? (`if phase == "train": model.train() else: model.eval()` and,
    later in the iteration, `if phase == "train": loss.backward()`.)"""
    if a.index >= b.index:
        return False
    tests_a = _if_arms(ctx, a)
    if not tests_a:
        return False
    from .forwards import names_in

    for test_b, arm_b, node_b in _if_arms(ctx, b):
        for test_a, arm_a, node_a in tests_a:
            if node_a is node_b or test_a != test_b or arm_a == arm_b:
                continue
            names = names_in(node_a.test)
            if not any(a.index < x.index < b.index and names & set(x.extra["targets"]) for x in r.of(ASSIGN)):
                return True
    return False


def _if_arms(ctx, e: Event) -> list:
    """(test source, arm, If node) for each `if`/`else` around `e` (elif chains are left out)."""
    out = []
    by_id = {id(s): s for s in e.place.stmts}
    for owner, tag in e.place.branches:
        node = by_id.get(owner)
        if isinstance(node, cst.If) and tag in ("body", "orelse"):
            out.append((" ".join(ctx.code_of(node.test).split()), tag, node))
    return out


def _passes_through(e: Event, position: int, aliases: set) -> bool:
    """An unpacking assignment from a call that hands back its arguments wrapped (`fabric.setup(m, o)`,
    `accelerator.prepare(m, o, loader)`), where the argument at `position` is the object itself."""
    value = e.extra.get("unpacked")
    if not isinstance(value, cst.Call) or not isinstance(value.func, cst.Attribute) or \
            value.func.attr.value not in ("prepare", "setup", "setup_module"):
        return False
    positional = [a for a in value.args if a.keyword is None and not a.star]
    return position < len(positional) and obj_key(positional[position].value) in aliases


def in_class(r: Routine) -> bool:
    return enclosing_class(r) is not None
