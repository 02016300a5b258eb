"""Train/eval mode checks: forwards under `no_grad` with dropout or BatchNorm in training mode (an
evaluation without `.eval()`), and training forwards in eval mode after one in training mode (`.train()`
not restored after an evaluation). Counts the forwards it looked at, so that a run with none says n/a.

Global module hooks run only inside the user's `no_grad`/`inference_mode` blocks (the `no_grad` wrapper
in `patches` says when), never on training forwards: there the root modules' own hooks call in.
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch
from torch import nn
from torch.nn.modules import module as module_hooks

from .hidden import tracing
from .sites import site_key, site_of, user_frame

STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
              nn.modules.batchnorm._BatchNorm)


def is_stochastic(m: nn.Module) -> bool:
    return isinstance(m, STOCHASTIC) or (isinstance(m, nn.MultiheadAttention) and m.dropout > 0)


class ModeChecks:
    def __init__(self, monitor):
        self.monitor = monitor
        self.eval_events: dict[str, dict] = {}
        self.train_events: dict[str, dict] = {}
        self.training_forwards = 0  # top-level forwards with grad enabled
        self.eval_forwards = 0  # top-level forwards without grad (no_grad, inference_mode, set_grad_enabled)
        self._sites: dict[tuple, tuple] = {}  # (code, line) -> (key, site); see `user_site`
        self._seen_training: set[int] = set()
        self._stochastic_cache: dict[int, tuple] = {}
        self._depth = 0
        self._handles: list = []
        self._stack: list[nn.Module] = []

    def stochastic(self, module) -> list:
        root = self.monitor.root_of(module)
        if root is not None:
            return root.stochastic
        cached = self._stochastic_cache.get(id(module))
        if cached is None or cached[0]() is not module:
            cached = (weakref.ref(module), [m for m in module.modules() if is_stochastic(m)])
            self._stochastic_cache[id(module)] = cached
        return cached[1]

    # -- called by the monitor's root hooks and discovery ------------------------------------------------
    def training_forward(self, module, stochastic) -> None:
        """A training forward with dropout/BN in eval mode, after one in training mode: `.train()` not restored."""
        self.training_forwards += 1
        if not stochastic:
            return
        if any(m.training for m in stochastic):
            self._seen_training.add(id(module))
        elif id(module) in self._seen_training:
            self._event(self.train_events, module, [m for m in stochastic if not m.training])

    def eval_forward(self, module, stochastic) -> None:
        self.eval_forwards += 1
        training = [m for m in stochastic if m.training]
        if training:
            self._event(self.eval_events, module, training)

    @property
    def in_no_grad(self) -> bool:
        return self._depth > 0

    def user_site(self) -> tuple[str, Optional[dict]]:
        """(key, site) of the user's line that called into the monitor; the site (which reads the source
        line) is made once per line, not on every call (clipping calls this every step)."""
        frame = user_frame(2)
        if frame is None:
            return "?", None
        cached = self._sites.get((frame.f_code, frame.f_lineno))
        if cached is None:
            site = site_of(frame)
            cached = self._sites[(frame.f_code, frame.f_lineno)] = (site_key(site), site)
        return cached

    def _event(self, table: dict, module, modules: list) -> None:
        key, site = self.user_site()
        event = table.get(key)
        if event is None:
            table[key] = {"site": site, "count": 1, "first_step": self.monitor.steps + 1, "module": module,
                          "modules": modules[:50], "kinds": sorted({type(m).__name__ for m in modules})}
        else:
            event["count"] += 1

    # -- no_grad blocks --------------------------------------------------------------------------------
    def on_no_grad(self, delta: int) -> None:
        self._depth += delta
        if delta > 0 and self._depth == 1 and not self._handles:
            self._handles = [
                module_hooks.register_module_forward_pre_hook(self._pre),
                module_hooks.register_module_forward_hook(self._post, always_call=True)]
        elif self._depth <= 0 and self._handles:
            self._depth = 0
            self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._stack = [], []

    def _pre(self, module, args):
        if tracing() or self.monitor.paused:
            return
        if not self._stack and not torch.is_grad_enabled():
            self.eval_forward(module, self.stochastic(module))
        self._stack.append(module)

    def _post(self, module, args, out):
        if tracing():
            return
        if self._stack and self._stack[-1] is module:
            self._stack.pop()

    def events(self, table: dict) -> list:
        out = []
        for event in table.values():
            names = [self.monitor.name_of(m) for m in event["modules"]]
            out.append({"site": event["site"], "count": event["count"], "first_step": event["first_step"],
                        "module": self.monitor.name_of(event["module"]), "modules": names[:6],
                        "n_modules": len(names), "kinds": event["kinds"]})
        return out
