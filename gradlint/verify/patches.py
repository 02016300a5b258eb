"""The few torch entry points the checks need to see, wrapped in place while a monitor is active.

User code is never edited: `clip_grad_norm_`, `Tensor.backward`, `GradScaler` and `no_grad` are
wrapped at their definitions and put back when the last monitor detaches. Each wrapper calls the
original first or last and only records what it saw, so the user's step computes exactly what it
would without gradlint.
"""

from __future__ import annotations

import torch
from torch.amp import GradScaler
from torch.autograd import grad_mode
from torch.nn.utils import clip_grad

from . import activations, hidden
from .hidden import tracing

_active: list = []  # monitors, innermost last
_saved: list[tuple[object, str, object]] = []
_reentry = {"clip": False}


def _record_clip(total, max_norm, kind):
    for monitor in _active:
        monitor.on_clip(total, max_norm, kind)


def _wrap_clip(original, bound_name: str, kind: str):
    """`clip_grad_norm_` (kind "norm": it returns the total norm) or `clip_grad_value_` ("value")."""

    def clip(parameters, *args, **kwargs):
        if tracing():
            return original(parameters, *args, **kwargs)
        outer = not _reentry["clip"]
        _reentry["clip"] = True
        try:
            result = original(parameters, *args, **kwargs)
        finally:
            if outer:
                _reentry["clip"] = False
        if outer:
            bound = args[0] if args else kwargs.get(bound_name)
            _record_clip(result if kind == "norm" else None, bound, kind)
        return result

    clip.__wrapped__ = original
    clip.__name__ = original.__name__
    clip.__doc__ = original.__doc__
    return clip


def _wrap_backward(original):
    def backward(self, *args, **kwargs):
        for monitor in _active:
            monitor.on_backward(self)
        result = original(self, *args, **kwargs)
        for monitor in _active:
            monitor.after_backward()
        return result

    backward.__wrapped__ = original
    backward.__doc__ = original.__doc__
    return backward


def _wrap_scaler(name, original):
    def method(self, *args, **kwargs):
        for monitor in _active:
            monitor.on_scaler(name, self, "before", args)
        result = original(self, *args, **kwargs)
        for monitor in _active:
            monitor.on_scaler(name, self, "after", args, result)
        return result

    method.__wrapped__ = original
    return method


def _wrap_enter(original):
    # Not inside the clipping functions: they run under their own no_grad every step and call no module,
    # and each no_grad block the monitors see costs a global hook registration and removal.
    def __enter__(self):
        result = original(self)
        if not _reentry["clip"]:
            for monitor in _active:
                monitor.on_no_grad(+1)
        return result

    return __enter__


def _wrap_exit(original):
    def __exit__(self, *exc):
        if not _reentry["clip"]:
            for monitor in _active:
                monitor.on_no_grad(-1)
        return original(self, *exc)

    return __exit__


def _targets():
    import torch.nn.utils as nn_utils

    clip_norm = _wrap_clip(clip_grad.clip_grad_norm_, "max_norm", "norm")
    clip_value = _wrap_clip(clip_grad.clip_grad_value_, "clip_value", "value")
    yield nn_utils, "clip_grad_norm_", clip_norm
    yield clip_grad, "clip_grad_norm_", clip_norm
    yield nn_utils, "clip_grad_value_", clip_value
    yield clip_grad, "clip_grad_value_", clip_value
    yield torch.Tensor, "backward", _wrap_backward(torch.Tensor.backward)
    for name in ("scale", "unscale_", "step", "update"):
        yield GradScaler, name, _wrap_scaler(name, getattr(GradScaler, name))
    for cls in (grad_mode.no_grad, grad_mode.inference_mode):
        yield cls, "__enter__", _wrap_enter(cls.__enter__)
        yield cls, "__exit__", _wrap_exit(cls.__exit__)


def _install() -> None:
    hidden.install()
    for owner, name, replacement in _targets():
        _saved.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, replacement)
    activations.wrap_functions(_active)


def install_early() -> None:
    """The wrappers in place before any monitor is: a spawned worker imports its parent's main module (and
    its `from torch.nn.utils import clip_grad_norm_`) before the worker's monitor exists, and that name must
    bind the wrapper. Until a monitor activates they only pass calls through; they come off when the last
    monitor deactivates."""
    if not _saved:
        _install()


def activate(monitor) -> None:
    if not _saved:
        _install()
    _active.append(monitor)


def deactivate(monitor) -> None:
    if monitor in _active:
        _active.remove(monitor)
    if not _active:
        activations.unwrap_functions()
        while _saved:
            owner, name, original = _saved.pop()
            setattr(owner, name, original)
        hidden.uninstall()
