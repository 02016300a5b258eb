"""Hooks that the user's code cannot see: pickling, deepcopy, TorchScript, torch.compile and torch.export
see the model as it would be without gradlint.

Per-module forward hooks are the cheap way to watch a model (a global module hook costs every module
call ~7 us), but they live in the module's own `_forward_hooks` dicts, which `torch.save(model)` and
`copy.deepcopy` copy and `torch.jit.script` compiles. So:
- every hook gradlint puts on a module is registered here (`hide`);
- `nn.Module.__getstate__` (what pickle and deepcopy call) leaves those entries out of the state it
  returns: the bytes `torch.save(model)` writes, and the copy deepcopy makes, are those of the unwatched
  model;
- `torch.jit.script`/`trace`/`trace_module` run with the hooks (and the wrapped torch functions) taken
  off for the duration of the call;
- every hook starts with `if tracing(): return`: under torch.compile and torch.export (which inline the
  hooks they meet), that folds to a no-op and the captured graph is the user's.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

# The module attributes that hold forward hooks and their flags, keyed by the handle's id.
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
              "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")

_handles: dict[int, object] = {}  # handle id -> RemovableHandle
_suspenders: list[tuple[Callable[[], None], Callable[[], None]]] = []  # (take off, put back) of other patches
_saved: list[tuple[object, str, object]] = []


def tracing() -> bool:
    """Inside torch.compile / torch.export (the flag dynamo folds to True) or a TorchScript trace."""
    return torch.compiler.is_compiling() or torch._C._is_tracing()


def hide(handle):
    """Register a module hook handle as gradlint's; returns it."""
    _handles[handle.id] = handle
    return handle


def forget(handle) -> None:
    handle.remove()
    _handles.pop(handle.id, None)


def _strip(state: dict) -> dict:
    for name in HOOK_DICTS:
        hooks = state.get(name)
        if hooks and any(key in _handles for key in hooks):
            state[name] = OrderedDict((k, v) for k, v in hooks.items() if k not in _handles)
    return state


def _wrap_getstate(original):
    def __getstate__(self):
        state = original(self)
        return _strip(state) if _handles and isinstance(state, dict) else state

    __getstate__.__wrapped__ = original
    return __getstate__


@contextlib.contextmanager
def suspended():
    """Take every hidden hook and wrapped function off, for a TorchScript compile or trace."""
    removed = []
    for handle in list(_handles.values()):
        for ref in (handle.hooks_dict_ref, *(handle.extra_dict_ref or ())):
            hooks = ref()
            if hooks is not None and handle.id in hooks:
                removed.append((hooks, handle.id, hooks.pop(handle.id)))
    for take_off, _ in _suspenders:
        take_off()
    try:
        yield
    finally:
        for _, put_back in reversed(_suspenders):
            put_back()
        for hooks, key, value in removed:
            hooks[key] = value


def _wrap_jit(original):
    def jit_entry(*args, **kwargs):
        with suspended():
            return original(*args, **kwargs)

    jit_entry.__wrapped__ = original
    jit_entry.__name__ = getattr(original, "__name__", "jit_entry")
    jit_entry.__doc__ = original.__doc__
    return jit_entry


def install() -> None:
    """Once per process (idempotent): the getstate filter and the TorchScript entry points."""
    if _saved:
        return
    targets = [(nn.Module, "__getstate__", _wrap_getstate(nn.Module.__dict__["__getstate__"]))]
    for name in ("script", "trace", "trace_module"):
        original = getattr(torch.jit, name, None)
        if original is not None:
            targets.append((torch.jit, name, _wrap_jit(original)))
    for owner, name, replacement in targets:
        _saved.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, replacement)


def uninstall() -> None:
    while _saved:
        owner, name, original = _saved.pop()
        setattr(owner, name, original)


def add_suspender(take_off: Callable[[], None], put_back: Callable[[], None]) -> None:
    _suspenders.append((take_off, put_back))


def remove_suspender(take_off: Callable[[], None]) -> None:
    _suspenders[:] = [s for s in _suspenders if s[0] is not take_off]
