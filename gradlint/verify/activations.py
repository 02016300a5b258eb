"""Dead and saturated units: per unit of each activation, over a window of steps.

Three sources, all cheap (one reduction a call, three for the saturating kinds, kept on the device and
combined once a window, read once when the record is made), looked at on every other step (the odd ones:
a unit dead over a window is dead in every sampled step of it; half the cost on large activations):
- activation modules (ReLU, GELU, tanh, sigmoid, ...): a forward hook on those modules only;
- recurrent layers (LSTM, GRU, RNN and their cells): their hidden output h. For an LSTM h = o * tanh(c),
  for a GRU a blend of tanh candidates: a unit pinned at |h| ~ 1 has its gates and cell saturated, and
  passes almost no gradient back through them; an RNN with ReLU can have dead units;
- functional calls (`torch.relu` and so `F.relu`, `torch.sigmoid`, `torch.tanh`, `F.gelu`): those
  functions are wrapped while a monitor is active, and each call site (the user's line, and the module
  whose forward made it) is a unit group of its own. At most `CALLS_PER_STEP` calls a step are looked at,
  so a hand-written RNN loop calling `torch.tanh` per time step costs a bounded amount.

Dead: a unit whose output was never above 0 in the window (ReLU, GELU: its input never positive).
Saturated: a unit whose outputs were within 1 % of their bounds in 95 % of its samples (tanh: |y| >= 0.99,
sigmoid: y <= 0.01 or y >= 0.99, recurrent h: |h| >= 0.99).

Nothing here changes what the user's code computes or what pickling, deepcopy, TorchScript or
torch.compile see: the hooks are `hidden`, and the wrapped functions pickle and copy as the originals,
return the original's result, and do nothing while compiled or traced.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from . import hidden
from .hidden import tracing

DEAD_KINDS = {nn.ReLU: "relu", nn.ReLU6: "relu", nn.GELU: "gelu"}
SATURATING = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Hardtanh: "tanh", nn.Softsign: "tanh",
              nn.Hardsigmoid: "sigmoid"}
RECURRENT = (nn.RNNBase, nn.RNNCellBase)
CALLS_PER_STEP = 64  # functional calls looked at a step, at most


def family(kind: str) -> str:
    """"dead" for the kinds whose units die (ReLU-like), "saturated" for the bounded ones."""
    return "dead" if kind in ("relu", "gelu", "rnn_relu") else "saturated"


class Activation:
    """Per unit of one activation, over a window of steps: dead (never fired) or saturated (sat near its
    bounds almost all the time)."""

    SATURATED_SHARE = 0.95  # of a unit's outputs in the window
    FOLD = 16  # per-call results kept before they are folded into one (memory stays bounded without steps)

    def __init__(self, name: str, kind: str, threshold: float, site: Optional[dict] = None):
        self.name, self.kind, self.threshold, self.site = name, kind, threshold, site
        self.dead = family(kind) == "dead"
        # Per-call reductions (dead: max output per unit; saturating: count of saturated outputs per unit),
        # combined only when the window closes: one device op a call fewer than a running accumulator.
        self.parts: list[torch.Tensor] = []
        self.samples = 0
        self.window: Optional[tuple[torch.Tensor, int, int]] = None  # (stuck per unit, first, last step)
        self.first_step: Optional[int] = None
        self._dims: dict[int, tuple[int, tuple]] = {}  # output rank -> (unit dim, reduced dims)

    def add(self, out, step: int) -> None:
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return
        rank = out.dim()
        layout = self._dims.get(rank)
        if layout is None:
            if rank == 0:
                return
            unit = 1 if rank in (4, 5) else rank - 1  # conv maps: channels; otherwise the last dim
            layout = self._dims[rank] = (unit, tuple(d for d in range(rank) if d != unit))
        unit, dims = layout
        x = out.detach()
        if self.dead:  # the max per unit: one reduction a call
            value = x.amax(dim=dims) if dims else x.clone()  # kept: not an alias of the output
        else:
            if self.kind == "sigmoid":
                stuck = (x >= self.threshold) | (x <= 1 - self.threshold)
            else:
                stuck = x.abs() >= self.threshold
            value = stuck.sum(dim=dims, dtype=torch.float32) if dims else stuck.float()
            self.samples += x.numel() // max(x.shape[unit], 1)
        parts = self.parts
        if parts and parts[0].shape != value.shape:  # another input shape: start over
            parts.clear()
        parts.append(value)
        if len(parts) >= self.FOLD:
            parts[:] = [self._fold()]
        if self.first_step is None:
            self.first_step = step

    def hook(self, monitor, recurrent: bool = False):
        def record(module, args, out):
            if tracing() or monitor.steps & 1 or monitor.paused or not torch.is_grad_enabled():
                return
            if recurrent:
                out = _hidden_output(out)
            self.add(out, monitor.steps + 1)
        return record

    def _fold(self) -> Optional[torch.Tensor]:
        if not self.parts:
            return None
        if len(self.parts) == 1:
            return self.parts[0]
        stacked = torch.stack(self.parts)
        return stacked.amax(dim=0) if self.dead else stacked.sum(dim=0)

    def stuck(self) -> Optional[torch.Tensor]:
        acc = self._fold()
        if acc is None:
            return None
        if self.dead:  # never above 0; a NaN max is not "dead": a NaN run says nothing about units
            return acc <= 0
        return acc >= self.SATURATED_SHARE * max(self.samples, 1)

    def close_window(self, step: int) -> None:
        stuck = self.stuck()
        if stuck is not None:
            self.window = (stuck, self.first_step or step, step)
        self.parts.clear()
        self.samples, self.first_step = 0, None


def _hidden_output(out):
    """The hidden states of a recurrent layer's output: all steps' h (LSTM/GRU/RNN), or the cell's h."""
    if isinstance(out, tuple):
        out = out[0]
    data = getattr(out, "data", out)  # a PackedSequence's values
    return data if isinstance(data, torch.Tensor) else None


def _recurrent_kind(module) -> Optional[str]:
    if isinstance(module, (nn.LSTM, nn.LSTMCell)):
        return "lstm"
    if isinstance(module, (nn.GRU, nn.GRUCell)):
        return "gru"
    if isinstance(module, (nn.RNN, nn.RNNCell)):
        return "rnn_relu" if getattr(module, "nonlinearity", "tanh") == "relu" else "rnn_tanh"
    return None


def add_hooks(monitor, root_module: nn.Module, handles: list) -> list[Activation]:
    """Trackers for the activation and recurrent modules under `root_module`, their (hidden) hooks
    appended to `handles`."""
    trackers = []
    for sub in root_module.modules():
        kind = DEAD_KINDS.get(type(sub)) or SATURATING.get(type(sub))
        recurrent = False
        if kind is None:
            kind = _recurrent_kind(sub)
            recurrent = kind is not None
        if kind is None:
            continue
        tracker = Activation(monitor.name_of(sub), kind, monitor.thresholds.saturation)
        trackers.append(tracker)
        handles.append(hidden.hide(sub.register_forward_hook(tracker.hook(monitor, recurrent))))
    return trackers


# -- functional activations -------------------------------------------------------------------------------

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep
# The forwards of the modules watched by their hooks: a call made from one of them is theirs, not a
# functional call of the user's.
_MODULE_FORWARDS = {cls.forward.__code__ for cls in (*DEAD_KINDS, *SATURATING)
                    if hasattr(cls.forward, "__code__")}
_internal_codes: dict = {}  # code -> True when it is torch's or gradlint's


def _internal(code) -> bool:
    known = _internal_codes.get(code)
    if known is None:
        name = code.co_filename
        known = _internal_codes[code] = name.startswith(_TORCH_DIR) or name.startswith(_HERE) or name.startswith("<")
    return known


class Watched:
    """A torch function, called as it is, whose result is shown to the active monitors. Pickles, copies
    and looks (name, module, docs) like the original."""

    def __init__(self, original, kind: str, monitors: list):
        self._original, self._kind, self._monitors = original, kind, monitors
        self.__name__ = getattr(original, "__name__", kind)
        self.__qualname__ = getattr(original, "__qualname__", self.__name__)
        self.__module__ = getattr(original, "__module__", None)
        self.__doc__ = getattr(original, "__doc__", None)
        self.__wrapped__ = original

    def __call__(self, *args, **kwargs):
        if tracing():  # torch.compile/export inline this: the captured graph is the original's call
            return self._original(*args, **kwargs)
        out = self._original(*args, **kwargs)
        if self._monitors and torch.is_grad_enabled():
            for monitor in self._monitors:
                monitor.on_activation_call(self._kind, self.__name__, out)
        return out

    def __reduce_ex__(self, protocol):
        return self._original.__reduce_ex__(protocol)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __getattr__(self, name):
        if name == "_original":
            raise AttributeError(name)
        return getattr(self._original, name)

    def __repr__(self) -> str:
        return repr(self._original)


def _functions():
    """(owner, attribute, kind): where each watched function is looked up. `F.gelu` is the builtin
    `torch._C._nn.gelu`, which pickle finds there: both names get the same wrapper."""
    yield torch, "relu", "relu"
    yield torch, "relu_", "relu"
    yield torch, "sigmoid", "sigmoid"
    yield torch, "tanh", "tanh"
    yield F, "gelu", "gelu"
    yield torch._C._nn, "gelu", "gelu"


_wrapped: list[tuple[object, str, object]] = []


def _take_off() -> None:
    for owner, name, original in _wrapped:
        setattr(owner, name, original)


def _put_back() -> None:
    for owner, name, original in _wrapped:
        setattr(owner, name, _by_original[id(original)])


_by_original: dict[int, Watched] = {}


def wrap_functions(monitors: list) -> None:
    if _wrapped:
        return
    for owner, name, kind in _functions():
        original = getattr(owner, name, None)
        if original is None or isinstance(original, Watched):
            continue
        wrapper = _by_original.get(id(original)) or Watched(original, kind, monitors)
        _by_original[id(original)] = wrapper
        _wrapped.append((owner, name, original))
        setattr(owner, name, wrapper)
    hidden.add_suspender(_take_off, _put_back)


def unwrap_functions() -> None:
    hidden.remove_suspender(_take_off)
    _take_off()
    _wrapped.clear()
    _by_original.clear()


class CallSites:
    """The trackers of one monitor's functional calls, one per (line, module instance)."""

    def __init__(self, monitor):
        self.monitor = monitor
        self.trackers: dict[tuple, Activation] = {}
        self._owners: dict[tuple, tuple] = {}  # key -> (module or None, function name)
        self.calls = 0  # looked at in this step

    def record(self, kind: str, function: str, out) -> Optional[Activation]:
        monitor = self.monitor
        if monitor.paused or self.calls >= CALLS_PER_STEP or not isinstance(out, torch.Tensor):
            return None
        self.calls += 1
        frame = sys._getframe(3)  # Watched.__call__ <- monitor.on_activation_call <- here
        while frame is not None and _internal(frame.f_code):
            if frame.f_code in _MODULE_FORWARDS:
                return None  # an activation module's own forward: its hook has it
            frame = frame.f_back
        if frame is None:
            return None
        code = frame.f_code
        owner = frame.f_locals.get("self") if code.co_argcount and code.co_varnames[0] == "self" else None
        if not isinstance(owner, nn.Module):
            owner = None
        key = (code, frame.f_lineno, id(owner) if owner is not None else None)
        tracker = self.trackers.get(key)
        if tracker is None:
            site = {"file": code.co_filename, "line": frame.f_lineno, "function": code.co_name}
            tracker = Activation(f"{code.co_name}: {function}()", kind, monitor.thresholds.saturation, site)
            self.trackers[key] = tracker
            self._owners[key] = (owner, function)
        tracker.add(out, monitor.steps + 1)
        return tracker

    def rename(self) -> None:
        """Name each call site after the module whose forward made it, once the roots' names are known."""
        for key, tracker in self.trackers.items():
            owner, function = self._owners[key]
            if owner is not None:
                tracker.name = f"{self.monitor.name_of(owner)}: {function}()"


def record(trackers: list[Activation], steps: int) -> list[dict]:
    """The last complete window of each tracker (the current one if none is complete): one device read."""
    rows, tensors = [], []
    for tracker in trackers:
        if tracker.window is not None:
            stuck, first, last = tracker.window
        elif tracker.parts:
            stuck, first, last = tracker.stuck(), tracker.first_step, steps
        else:
            continue
        row = {"layer": tracker.name, "kind": tracker.kind, "family": family(tracker.kind),
               "units": int(stuck.numel()), "from_step": first, "to_step": last}
        if tracker.site is not None:
            row["site"] = tracker.site
        rows.append(row)
        tensors.append(stuck.sum().reshape(1).float().cpu())
    if tensors:
        for row, count in zip(rows, torch.cat(tensors).tolist()):
            row["stuck"] = int(count)
    return rows
