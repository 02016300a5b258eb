"""The state of the gradients along every path: scaled by a GradScaler or not (GL007), clipped or not (GL005).

Both run ``modes.simulate`` over a routine with their own tokens, following calls into the routines of this
file (a `backward(loss, scaler)` helper scales, a `_clip_grad_norm(model)` method clips, a wrapper's own
`step()` clips when configured).

Scale tokens: `scaled` (after `scaler.scale(loss).backward()`), `unscaled` (after `scaler.unscale_(opt)`),
`clean` (after `scaler.step`/`scaler.update`), `unknown` (a call we cannot see was handed the scaler).
Clip tokens: `grad` (after a backward), `clipped` (after a clip), `none` (after `zero_grad` or a step).
Each token carries the index of the event that made it (the call, for a helper), or 0 for `entry`.
"""

from __future__ import annotations

import re
from typing import Optional

import libcst as cst

from .calls import enclosing_class
from .events import (
    BACKWARD,
    CALL,
    CLIP,
    STEP,
    UNSCALE,
    UPDATE,
    ZERO_GRAD,
    Event,
    Routine,
    callee_name,
    obj_key,
)
from .kinds import ACCELERATOR, FABRIC, MODULE
from .modes import EMPTY, ENTRY, simulate

_MAX_DEPTH = 3
# A call we cannot see whose name says it clips (`clip_gradients(model, 1.0)`): it may clip, which keeps
# GL005 silent; it is never a clip GL007 reports.
_CLIP_NAME = re.compile(r"clip", re.IGNORECASE)


class Gradients:
    def __init__(self, analysis) -> None:
        self.an = analysis
        self._exits: dict = {}
        self._observed: dict = {}

    # -- shared ---------------------------------------------------------------------------------------
    def _run(self, what: str, r: Routine, inject: Optional[dict], depth: int):
        seen: dict = {}
        transfer = self._scale_transfer(r, depth, inject) if what == "scale" else self._clip_transfer(r, depth)

        def observe(event, state):
            if inject and event.index in inject:
                state = frozenset({inject[event.index]})
            seen[event.index] = seen.get(event.index, EMPTY) | state

        end = simulate(r, transfer, frozenset({ENTRY}), observe)
        return seen, end

    def observe(self, what: str, r: Routine, inject: Optional[dict] = None) -> dict:
        """Event index -> tokens before it ('scale' or 'clip' state)."""
        key = (what, id(r))
        if inject is None and key in self._observed:
            return self._observed[key]
        seen, _ = self._run(what, r, inject, 0)
        if inject is None:
            self._observed[key] = seen
        return seen

    def exit(self, what: str, r: Routine, depth: int) -> frozenset:
        key = (what, id(r))
        found = self._exits.get(key)
        if found is None:
            self._exits[key] = frozenset({ENTRY})  # recursion: no effect
            _, found = self._run(what, r, None, depth)
            self._exits[key] = found
        return found

    def _helper(self, what: str, r: Routine, e: Event, state: frozenset, depth: int) -> Optional[frozenset]:
        """The state after a call of a routine of this file, or None when the call runs none."""
        target = self.an.resolve_call(r, e)
        if target is None or target is r or depth >= _MAX_DEPTH:
            return None
        out = set()
        for token in self.exit(what, target, depth + 1):
            if token == ENTRY:
                out |= state
            else:
                out.add((token[0], e.index))
        return frozenset(out)

    # -- scaled gradients ------------------------------------------------------------------------------
    def _scale_transfer(self, r: Routine, depth: int, inject: Optional[dict]):
        facts = self.an.facts

        def transfer(e: Event, state: frozenset) -> frozenset:
            if inject and e.index in inject:
                state = frozenset({inject[e.index]})
            kind = e.kind
            if kind == BACKWARD and e.extra.get("via") == "scaled":
                return frozenset({("scaled", e.index)})
            if kind == UNSCALE and facts.is_scaler(r, e.key):
                return frozenset({("unscaled", e.index)})
            if kind in (STEP, UPDATE) and facts.is_scaler(r, e.key):
                return frozenset({("clean", e.index)})
            if kind == CALL:
                after = self._helper("scale", r, e, state, depth)
                if after is not None:
                    return after
                if self._hands_scaler(r, e):
                    return frozenset({("unknown", e.index)})
            return state

        return transfer

    def _hands_scaler(self, r: Routine, e: Event) -> bool:
        facts = self.an.facts
        func = e.node.func
        keys = [obj_key(a.value) for a in e.node.args]
        if isinstance(func, cst.Attribute):
            keys.append(obj_key(func.value))
        return any(k and facts.is_scaler(r, k) for k in keys)

    def unscales(self, r: Routine, e: Event) -> bool:
        """Does this event unscale (directly, in a routine of this file, or maybe: a call handed the scaler)?"""
        if e.kind == UNSCALE:
            return True
        if e.kind != CALL:
            return False
        target = self.an.resolve_call(r, e)
        if target is not None and target is not r:
            return any(t[0] in ("unscaled", "unknown") for t in self.exit("scale", target, 1))
        return self._hands_scaler(r, e)

    # -- clipped gradients -------------------------------------------------------------------------------
    def _clip_transfer(self, r: Routine, depth: int):
        modes = self.an.modes

        def clip(state: frozenset, index: int) -> frozenset:
            return frozenset(("clipped", index) if t[0] == "grad" or t == ENTRY else t for t in state)

        def transfer(e: Event, state: frozenset) -> frozenset:
            kind = e.kind
            if kind == BACKWARD:
                return frozenset({("grad", e.index)})
            if kind == CLIP:
                return clip(state, e.index)
            if kind == ZERO_GRAD:
                return frozenset({("none", e.index)})
            if kind == STEP and modes.optimizer_step(r, e):
                return frozenset({("none", e.index)})
            if kind == CALL:
                after = self._helper("clip", r, e, state, depth)
                if after is not None:
                    return after
                if _CLIP_NAME.search(callee_name(e.node.func)):
                    return clip(state, e.index)
            return state

        return transfer

    def clip_kind(self, r: Routine, e: Event) -> Optional[str]:
        """'raw' for a clip that reads `.grad` as it is (torch's, timm's, an FSDP module's
        `clip_grad_norm_`), 'framework' for Accelerate's and Fabric's (which unscale first), else None."""
        if e.kind != CLIP:
            return None
        via = e.extra.get("via")
        if via in ("torch", "timm"):
            return "raw"
        facts = self.an.facts
        kind = facts.kind(r, e.key)
        if kind == MODULE:
            return "raw"
        if kind in (ACCELERATOR, FABRIC) or (e.key == "self" and facts.class_fact(enclosing_class(r)).lightning):
            return "framework"
        return None
