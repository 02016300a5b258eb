"""The model(s) a script trains, found from its calls (global module hooks until the first step: a
top-level module call with grad enabled is a root), named as the user knows them, and watched from then
on by hidden hooks on the roots only (training/eval mode, a NaN in the output) and on their activation
and recurrent modules. A mixin of `Monitor`: the state it uses is the monitor's.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from . import activations, hidden
from .hidden import tracing
from .modes import is_stochastic
from .naming import clean, contains, variable_name
from .tensors import compiled, float_tensors


class Root:
    def __init__(self, module: nn.Module, name: str):
        self.module, self.name = module, name
        self.stochastic = [m for m in module.modules() if is_stochastic(m)]
        self.handles: list = []


class RootDiscovery:
    def _discover_pre(self, module, args):
        if tracing() or self.paused:
            return
        if not self._call_stack and torch.is_grad_enabled():  # a top-level training forward: a root
            if id(module) not in self._candidates:
                self._candidates[id(module)] = (module, variable_name(module))
            self.modes.training_forward(module, self.modes.stochastic(module))
        self._call_stack.append(module)

    def _discover_post(self, module, args, out):
        if tracing() or self.paused:
            return
        if self._call_stack and self._call_stack[-1] is module:
            self._call_stack.pop()
        if not self._call_stack and torch.is_grad_enabled():
            self._flag_output(out)

    def _end_discovery(self) -> None:
        if not self._discovering:
            return
        self._discovering = False
        for handle in self._discovery_handles:
            handle.remove()
        self._discovery_handles = []
        # Top-level modules not inside another one; a parameterless one (a loss module) is not a model.
        found = sorted(self._candidates.values(), key=lambda mn: -sum(p.numel() for p in mn[0].parameters()))
        found = [(m, n) for m, n in found if not any(m is not o and contains(o, m) for o, _ in found)]
        found = [(m, n) for m, n in found if any(True for _ in m.parameters())] or found[:1]
        # One model is named without a prefix; several are named as they were bound where first called.
        taken: set[str] = set()
        for module, name in found:
            prefix = ""
            if len(found) > 1:
                prefix, k = name, 2
                while prefix in taken:
                    prefix, k = f"{name}{k}", k + 1
                taken.add(prefix)
            self._add_root(module, prefix)
        self._finish_roots()
        self._candidates.clear()
        for callback in list(self.on_roots):
            callback(self)

    def _add_root(self, module: nn.Module, prefix: str) -> None:
        if id(module) in self._root_by_id:
            return
        root = Root(module, prefix or variable_name(module))
        self.roots.append(root)
        self._root_by_id[id(module)] = root
        for sub_name, sub in module.named_modules():
            plain = clean(sub_name)
            full = ".".join(p for p in (prefix, plain) if p)
            self._names.setdefault(id(sub), full)
        for p_name, param in module.named_parameters():
            layer = clean(p_name.rpartition(".")[0]) or clean(p_name)
            self._param_layer.setdefault(id(param), ".".join(p for p in (prefix, layer) if p))
            self._param_root.setdefault(id(param), prefix or root.name)

    def _finish_roots(self) -> None:
        for root in self.roots:
            if not root.handles:
                root.handles = [hidden.hide(root.module.register_forward_pre_hook(self._root_pre)),
                                hidden.hide(root.module.register_forward_hook(self._root_post))]
                if not compiled(root.module):  # inside a compiled graph the hooks fold away: not worth adding
                    self._activations += activations.add_hooks(self, root.module, root.handles)

    def root_of(self, module) -> Optional[Root]:
        return self._root_by_id.get(id(module))

    def name_of(self, module) -> str:
        name = self._names.get(id(module))
        if name is None:
            return type(module).__name__
        return name or (self.roots[0].name if self.roots else type(module).__name__)

    def _root_pre(self, module, args):
        if tracing() or self.paused:
            return
        root = self._root_by_id.get(id(module))
        if root is None:
            return
        if torch.is_grad_enabled():
            self.modes.training_forward(module, root.stochastic)
        elif not self.modes.in_no_grad:  # `set_grad_enabled(False)`: not a no_grad block, checked here
            self.modes.eval_forward(module, root.stochastic)

    def _root_post(self, module, args, out):
        if tracing() or self.paused:
            return
        if torch.is_grad_enabled():
            self._flag_output(out)

    def _flag_output(self, out) -> None:
        # One reduction, no temporary the size of the output: the sum is NaN iff the output holds a NaN (or
        # both +Inf and -Inf); Inf alone can be a legitimate mask, and a sum that overflows is Inf, not NaN.
        if isinstance(out, torch.Tensor):  # the common case, without the generator
            if out.is_floating_point() or out.is_complex():
                self._fwd.append(out.detach().sum(dtype=torch.float32))
            return
        for t in float_tensors(out):
            self._fwd.append(t.detach().sum(dtype=torch.float32))

