"""Cheap health data for every training step, read back from the device once a step.

A step is an optimizer step; with several optimizers (a GAN's D and G), each has its own series of
steps, named after the root module(s) its parameters belong to. A script that never calls
`optimizer.step()` (a manual `p.data.add_(p.grad, alpha=-lr)` update) trains all the same: once a
backward finds the previous backward's gradients cleared with no optimizer step in between, every
backward is a step. An `optimizer.step(closure)` (LBFGS) is one step, whatever number of times it
evaluates the closure; its loss is the first evaluation's (the loss at the parameters the step started
from, which is what the step returns). The loss of a step is the sum of the losses backpropagated for it:
with gradient accumulation, the micro-batches' (scaled) losses add up to the step's.

What runs every step, and why it is cheap (the budget is 1 % of a plain step, and on a launch-bound GPU
step every microsecond of Python counts):
- forward hooks on the root module(s) only: one `sum()` per output (NaN iff the output holds a NaN),
  left on the device;
- an optimizer step pre-hook: per-parameter grad norms with one `torch._foreach_norm`, put with the
  output sums, the losses and the clip norms into one vector by one `torch.stack` (one `torch.cat` on
  CUDA, where the norms already lie in one buffer: see `reads.one_vector`), read back once. On CUDA
  (`async_read`) the vector goes to pinned memory by one non-blocking copy and is read when its event
  says the copy is done: no host sync in the default path, the device may run up to `IN_FLIGHT` steps
  behind before the monitor waits (see `reads`). Per-layer sums are made only when the record is asked for;
- wrappers around `clip_grad_norm_`, `Tensor.backward` and `GradScaler` (see `patches`) that only keep
  references to tensors already computed;
- activation hooks and functional calls (see `activations`): one reduction a call.
Forward hooks on every module run only while the roots are being found (until the first step) and
inside the user's `no_grad` blocks (see `modes`), never on training forwards. Every module hook is
`hidden`: pickling, deepcopy, TorchScript and torch.compile see the model without them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.modules import module as module_hooks
from torch.optim import optimizer as optim_hooks

from . import activations, hidden, patches
from .hidden import tracing
from .modes import ModeChecks
from .naming import variable_name
from .reads import DeviceReads, one_vector
from .roots import Root, RootDiscovery
from .rows import decode, json_rows
from .updates import UpdateStats

BACKWARD = -1  # the series index of backward steps (no optimizer)


@dataclass
class Thresholds:
    vanishing: float = 1e-7  # a layer's grad norm below this, in most steps, is vanishing
    exploding: float = 100.0  # a layer's applied grad norm above this, in any step, is exploding
    saturation: float = 0.99  # |tanh| above this (sigmoid within 1 - this of 0 or 1) is saturated
    dead_fraction: float = 0.5  # a layer with this share of dead (or saturated) units is reported
    window: int = 10  # steps over which a unit must stay dead or saturated

    def to_dict(self) -> dict:
        return asdict(self)


class StopRun(BaseException):
    """Raised from a hook to end a run after N steps; `except Exception` in user code lets it pass."""


class NonFiniteError(FloatingPointError):
    """A NaN or Inf reached the training step (`gradlint.watch(..., on_nonfinite="raise")`, the Lightning
    callback): raised before the step's update, with where it came from in the message."""


class _ParamMap:
    """Parameters and their layer positions, cached (rebuilt when the parameter count changes)."""

    __slots__ = ("count", "params", "positions", "dense", "graded", "all_graded")

    def __init__(self, count: int, params: list, positions: list):
        self.count, self.params, self.positions = count, params, positions
        # Every gradient present and strided at the last step: try the one `_foreach_norm` call unfiltered.
        self.dense = True
        # Which parameters had a gradient at some step (indices into `params`): all of them once a step
        # found every gradient present; otherwise those the filtered steps kept (see `params_never_graded`).
        self.graded: set[int] = set()
        self.all_graded = False


class _Series:
    """One optimizer's steps (or the backward steps of a script without an optimizer)."""

    __slots__ = ("index", "name", "count", "map", "closure")

    def __init__(self, index: int, name: str):
        self.index, self.name, self.count, self.map, self.closure = index, name, 0, None, False


class _Pending:
    """A backward's gradients, before it is known whether an update or another micro-batch follows."""

    __slots__ = ("norms", "where", "fwd", "losses", "params")

    def __init__(self, norms, where, fwd, losses, params):
        self.norms, self.where, self.fwd, self.losses, self.params = norms, where, fwd, losses, params


class Monitor(RootDiscovery):
    """Collects per-step health data. Attach globally (harness) or to a model and optimizers (watch)."""

    def __init__(self, thresholds: Optional[Thresholds] = None, ratio_every: int = 10):
        self.thresholds = thresholds or Thresholds()
        self.updates = UpdateStats(ratio_every)  # learning rate, loss scale, update-to-weight ratio
        self.steps = 0  # steps of the leading series (optimizer steps, plus steps a GradScaler skipped)
        self.max_steps: Optional[int] = None  # StopRun once every series has this many
        self.rows: list[tuple] = []  # (meta, raw values) per step; see `_row`
        self._partial_steps: set[int] = set()
        self.layers: list[str] = []
        self._layer_index: dict[str, int] = {}
        self.roots: list[Root] = []
        self._root_by_id: dict[int, Root] = {}
        self._names: dict[int, str] = {}  # id(module) -> qualified name
        self._param_layer: dict[int, str] = {}  # id(param) -> layer name
        self._param_root: dict[int, str] = {}  # id(param) -> root name
        self._series: dict[int, _Series] = {}  # id(optimizer) (or BACKWARD) -> its series
        self._activations: list = []
        self.call_sites = activations.CallSites(self)
        self.modes = ModeChecks(self)
        self.on_step_end: list[Callable[["Monitor"], None]] = []
        # Called with the step number when a step is first found non-finite, before its update is applied.
        self.on_nonfinite: list[Callable[[int], None]] = []
        self.on_roots: list[Callable[["Monitor"], None]] = []  # once the root modules are known
        self.after_update = False  # reading a closure step's gradients: the update is already applied
        self.paused = False  # while a replay runs the model again: its calls are not the user's
        self.first_nonfinite: Optional[dict] = None
        self.clip_sites: dict[str, dict] = {}
        self.errors: list[str] = []
        # per-step state, device tensors until the step's one read
        self._fwd: list[torch.Tensor] = []  # 0-d sums of the root outputs: NaN iff an output holds a NaN
        self._losses: list[torch.Tensor] = []  # 0-d, detached
        self._clips: list[tuple] = []  # (total norm or None, max_norm, scale or None, site key)
        # On CUDA the harness reads asynchronously (`async_read`): see `reads`.
        self.reads = DeviceReads(self._finish)
        self._scaled_ids: set[int] = set()
        self._scale_pending = None  # a GradScaler whose scaled loss was backpropagated but not unscaled
        self._stepping: Optional[_Series] = None  # inside an optimizer step (its closure's backwards)
        self._stepped = False
        self._deferred = False
        self._pending: Optional[_Pending] = None  # backward steps: see `after_backward`
        self._backward_steps = False
        # discovery of the root modules (global mode)
        self._discovering = False
        self._call_stack: list[nn.Module] = []
        self._candidates: dict[int, tuple[nn.Module, str]] = {}
        self._handles: list = []
        self._discovery_handles: list = []
        self.attached = False

    # -- attaching -------------------------------------------------------------------------------------
    def attach_global(self, optimizers=None) -> None:
        """Harness mode: find the models from the first calls, without touching user code; the optimizers
        too, unless given (Lightning: `training_step` is not a module call, `self.model(x)` in it is)."""
        self._discovering = True
        self._discovery_handles = [
            module_hooks.register_module_forward_pre_hook(self._discover_pre),
            module_hooks.register_module_forward_hook(self._discover_post, always_call=True),
        ]
        if optimizers is None:
            self._handles += [optim_hooks.register_optimizer_step_pre_hook(self._step_pre),
                              optim_hooks.register_optimizer_step_post_hook(self._step_post)]
        else:
            for opt in optimizers:
                self._handles += [opt.register_step_pre_hook(self._step_pre),
                                  opt.register_step_post_hook(self._step_post)]
        patches.activate(self)
        self.attached = True

    def attach(self, model, optimizers=()) -> None:
        """Library mode: the model(s) and optimizer(s) are given."""
        models = model if isinstance(model, (list, tuple)) else [model]
        for i, m in enumerate(models):
            self._add_root(m, "" if len(models) == 1 else (variable_name(m) if i else f"model{i}"))
        self._finish_roots()
        for opt in optimizers:
            self._handles += [opt.register_step_pre_hook(self._step_pre),
                              opt.register_step_post_hook(self._step_post)]
        patches.activate(self)
        self.attached = True

    def detach(self) -> None:
        for handle in self._handles + self._discovery_handles:
            handle.remove()
        self.modes.remove()
        self._discovery_handles, self._discovering = [], False
        for root in self.roots:
            for handle in root.handles:
                hidden.forget(handle)
            root.handles = []
        self._handles = []
        patches.deactivate(self)
        self.attached = False

    def on_no_grad(self, delta: int) -> None:
        self.modes.on_no_grad(delta)

    def on_activation_call(self, kind: str, function: str, out) -> None:
        if (self.roots or self._discovering) and not self.steps & 1:  # sampled: see `activations`
            self.call_sites.record(kind, function, out)

    # -- backward, clipping, GradScaler ----------------------------------------------------------------
    def on_backward(self, tensor: torch.Tensor) -> None:
        if tracing():
            return
        if self._pending is not None and self._stepping is None and self._cleared(self._pending.params):
            self._finish_backward_step()  # the previous backward was a step of its own (may raise StopRun)
        if tensor.numel() != 1 or id(tensor) in self._scaled_ids:
            return
        self._add_loss(tensor)

    def after_backward(self) -> None:
        """Before any optimizer step, each backward's gradients are kept (as norms, on the device) until
        it is known what follows: an optimizer step (then they are its micro-batches) or a backward that
        finds them cleared (then this backward was an update of its own)."""
        if self._stepping is not None or (self._series and not self._backward_steps) or tracing():
            return
        try:
            params = self._pending_params()
            norms, where = self._grad_norms(params)  # `where`: indices into params, layers named at the end
            pending = self._pending
            fwd, losses = self._fwd, self._losses
            if pending is not None:  # not cleared since: gradient accumulation, so far
                fwd, losses = pending.fwd + fwd, pending.losses + losses
            self._pending = _Pending(norms, where, fwd, losses, params)
            self._fwd, self._losses = [], []
        except Exception as error:  # a check must never break the user's step
            self.errors.append(f"backward: {type(error).__name__}: {error}")

    def _pending_params(self) -> list:
        modules = [r.module for r in self.roots] or [m for m, _ in self._candidates.values()]
        seen, params = set(), []
        for module in modules:
            for p in module.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    @staticmethod
    def _cleared(params: list) -> bool:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return True
        return float(torch.stack([n.float() for n in torch._foreach_norm(grads)]).sum()) == 0.0

    def _finish_backward_step(self) -> None:
        pending, self._pending = self._pending, None
        if not self._backward_steps:
            self._backward_steps = True
            self._end_discovery()
        series = self._series.get(BACKWARD)
        if series is None:
            series = self._series[BACKWARD] = _Series(BACKWARD, "backward steps")
        positions = self._param_map(BACKWARD, pending.params).positions
        self._collect_values(series, pending.norms, [positions[i] for i in pending.where], pending.fwd,
                             pending.losses)
        series.count += 1
        self._end_step(series)

    def _add_loss(self, tensor: torch.Tensor) -> None:
        loss = tensor.detach()
        if loss.dim():
            loss = loss.reshape(())
        self._losses.append(loss)

    def on_clip(self, total, max_norm, kind: str) -> None:
        scaler = self._scale_pending
        scale = scaler._scale.detach().clone() if scaler is not None and scaler._scale is not None else None
        key, site = self.modes.user_site()
        entry = self.clip_sites.setdefault(key, {"site": site, "count": 0, "scaled": 0, "kind": kind})
        entry["count"] += 1
        entry["scaled"] += scale is not None
        total = total.detach() if isinstance(total, torch.Tensor) else None
        self._clips.append((total, float(max_norm), scale, key))
        pending = self._pending
        if pending is not None and self._stepping is None:  # a backward step's applied gradients: clipped
            pending.norms, pending.where = self._grad_norms(pending.params)

    def on_scaler(self, name: str, scaler, when: str, args, result=None) -> None:
        if not scaler.is_enabled():
            return
        if name == "scale" and when == "after":
            outputs = args[0] if args else None
            if isinstance(outputs, torch.Tensor) and outputs.numel() == 1:
                self._add_loss(outputs)
                self._scaled_ids.add(id(result))
            self._scale_pending = scaler
        elif name == "unscale_" and when == "before":
            self._scale_pending = None
        elif name == "step":
            if when == "before":
                self._stepped = False
            else:
                self._scale_pending = None
                optimizer = args[0] if args else None
                if optimizer is not None:
                    self.updates.on_scale(scaler, self._series_of(optimizer), skipped=not self._stepped)
                if not self._stepped and optimizer is not None:
                    # the scaler found inf/NaN gradients and skipped the step, on purpose
                    self._absorb_pending()
                    series = self._series_of(optimizer)
                    self._safe_collect(series, None, skipped=True)
                    series.count += 1
                    self._end_step(series)
        elif name == "update":
            self._scale_pending = None

    # -- optimizer steps -------------------------------------------------------------------------------
    def _series_of(self, optimizer) -> _Series:
        series = self._series.get(id(optimizer))
        if series is None:
            index = sum(1 for k in self._series if k != BACKWARD)
            series = self._series[id(optimizer)] = _Series(index, f"optimizer {index}")
        return series

    def _name_series(self) -> None:
        """Each optimizer's series named after the root module(s) its parameters belong to (`netD`)."""
        series = [s for s in self._series.values() if s.index != BACKWARD and s.map is not None]
        names = []
        for s in series:
            roots = list(dict.fromkeys(self._param_root[id(p)] for p in s.map.params if id(p) in self._param_root))
            names.append(" + ".join(r for r in roots if r))
        if len(series) == 1 and not names[0]:
            series[0].name = "optimizer"
            return
        for s, name in zip(series, names):
            s.name = name if name and names.count(name) == 1 else f"optimizer {s.index}" + (f" ({name})" if name else "")

    def _step_pre(self, optimizer, args, kwargs):
        if tracing():
            return
        self._stepped = True
        series = self._series_of(optimizer)
        if self.max_steps is not None and series.count >= self.max_steps:
            raise StopRun()  # the leading optimizer would go past N: every other one had its turn
        self._absorb_pending()
        self._backward_steps = False  # an optimizer steps after all: the backwards are its micro-batches
        self._stepping = series
        # The hook's args are the step's own, the optimizer first: `step(self, closure=None)`.
        if any(callable(a) for a in args[1:2]) or callable(kwargs.get("closure")):
            # `optimizer.step(closure)` (Lightning, LBFGS): the gradients are made inside the step, so
            # they are read after it; they are still the ones the update used.
            self._deferred = True
            series.closure = True
            self.updates.before_step(self, series, optimizer)
            return
        self._safe_collect(series, optimizer)
        self.updates.before_step(self, series, optimizer)

    def _absorb_pending(self) -> None:
        """An optimizer step (taken or skipped by the GradScaler): the backwards so far were its micro-batches."""
        if self._pending is not None:
            self._fwd, self._losses = self._pending.fwd + self._fwd, self._pending.losses + self._losses
            self._pending = None

    def _step_post(self, optimizer, args, kwargs):
        if tracing():
            return
        series = self._series_of(optimizer)
        self.updates.after_step()
        try:
            if self._deferred:
                self._deferred = False
                self.after_update = True
                try:
                    self._safe_collect(series, optimizer, closure=True)
                finally:
                    self.after_update = False
        finally:
            self._stepping = None
        series.count += 1
        self._end_step(series)

    def _safe_collect(self, series: _Series, optimizer, skipped: bool = False, closure: bool = False) -> None:
        try:
            if self._discovering:
                self._end_discovery()
            if optimizer is not None and series.map is None:
                series.map = self._param_map(id(optimizer), [p for g in optimizer.param_groups for p in g["params"]])
                self._name_series()
            norms, where = ([], []) if optimizer is None else self._norms(self._optimizer_map(series, optimizer))
            fwd, losses = self._fwd, self._losses
            self._fwd, self._losses = [], []
            self._collect_values(series, norms, where, fwd, losses, skipped, closure)
        except (StopRun, NonFiniteError):
            raise
        except Exception as error:  # a check must never break the user's step
            self.errors.append(f"step {series.count + 1}: {type(error).__name__}: {error}")

    def _layer(self, name: str) -> int:
        index = self._layer_index.get(name)
        if index is None:
            index = self._layer_index[name] = len(self.layers)
            self.layers.append(name)
        return index

    def _param_map(self, key, params: list) -> _ParamMap:
        positions = []
        for i, p in enumerate(params):
            layer = self._param_layer.get(id(p))
            if layer is None:
                layer = f"param{i}[{'x'.join(map(str, p.shape))}]"
                self._param_layer[id(p)] = layer
            positions.append(self._layer(layer))
        return _ParamMap(len(params), params, positions)

    def _optimizer_map(self, series: _Series, optimizer) -> _ParamMap:
        count = sum([len(group["params"]) for group in optimizer.param_groups])
        if series.map is not None and series.map.count == count:
            return series.map
        series.map = self._param_map(id(optimizer), [p for g in optimizer.param_groups for p in g["params"]])
        return series.map

    @staticmethod
    def _grad_norms(params: list) -> tuple[list, list]:
        """Grad norms of the parameters that have a (strided) gradient, and their indices in `params`."""
        keep = [i for i, p in enumerate(params) if p.grad is not None and p.grad.layout == torch.strided]
        grads = [params[i].grad for i in keep]
        return ([*torch._foreach_norm(grads)] if grads else []), keep

    @staticmethod
    def _norms(opt: _ParamMap) -> tuple[list, list]:
        """Per-parameter grad norms (one `_foreach_norm`) and the layer position of each."""
        grads = [p.grad for p in opt.params]
        if opt.dense:
            try:
                norms = [*torch._foreach_norm(grads)]
                opt.all_graded = True
                return norms, opt.positions
            except (TypeError, RuntimeError):  # a None gradient (TypeError) or a sparse one: filter them
                opt.dense = False
        # Checked per gradient, not with `None in grads`: `in` would call Tensor.__eq__ on every gradient.
        present = [i for i, g in enumerate(grads) if g is not None]
        opt.graded.update(present)
        keep = [i for i in present if grads[i].layout == torch.strided]
        opt.dense = len(keep) == len(grads)
        grads = [grads[i] for i in keep]
        return ([*torch._foreach_norm(grads)] if grads else []), [opt.positions[i] for i in keep]

    def _collect_values(self, series: _Series, norms: list, where: list, fwd: list, losses: list,
                        skipped: bool = False, closure: bool = False) -> None:
        """The step's one read: per-parameter grad norms, output sums, losses, clip norms in one vector.

        Kept lean (this runs every step): no per-layer arithmetic here, the raw vector is stored and
        summed per layer only when the record is asked for."""
        if self.reads.in_flight:
            self.reads.done()
        clips, self._clips = self._clips, []
        self.call_sites.calls = 0
        if self._scaled_ids:
            self._scaled_ids.clear()
        extras = [*fwd, *losses]
        clip_meta = []
        for total, max_norm, scale, key in clips:
            clip_meta.append((total is not None, max_norm, scale is not None, key))
            extras += [t for t in (total, scale) if t is not None]
        meta = (series.count + 1, series.index, where, len(norms), len(fwd), len(losses), clip_meta, skipped,
                closure)
        if not norms and not extras:
            if self.reads.in_flight:
                self.reads.done(wait=True)  # rows stay in step order
            self._finish(meta, [])
            return
        try:  # one op (cat and stack promote float16/bfloat16 values to the widest dtype)
            vector = one_vector(norms) if norms else None
            if vector is not None:
                pack = torch.cat([vector, *[t.reshape(1) for t in extras]])
            else:
                pack = torch.stack([*norms, *extras])
        except RuntimeError:  # values on several devices (a model split across GPUs)
            device = (norms or extras)[0].device
            pack = torch.stack([t.to(device=device, dtype=torch.float32) for t in [*norms, *extras]])
        if pack.dtype != torch.float32:
            pack = pack.float()
        if self.reads.async_read and pack.is_cuda:
            self.reads.later(meta, pack)
        else:
            if self.reads.in_flight:
                self.reads.done(wait=True)  # rows stay in step order
            self._finish(meta, pack.tolist())

    def _finish(self, meta: tuple, values: list) -> None:
        """Store the step's raw values; look only at what says whether it is non-finite."""
        self.rows.append((meta, values))
        # Norms, output sums and losses come first: their sum is NaN or Inf iff one of them is (float32
        # values cannot overflow a float64 sum), the rest (clip norms, scales) is not looked at here.
        if self.first_nonfinite is None and not math.isfinite(sum(values[:meta[3] + meta[4] + meta[5]])):
            self._note_nonfinite(decode(meta, values))

    def _note_nonfinite(self, row: dict) -> None:
        if self.first_nonfinite is not None:
            return
        total, loss = row["total"], row["loss"]
        loss_bad = loss is not None and not math.isfinite(loss)
        grads_bad = total is not None and not math.isfinite(total)
        # A GradScaler skip with a finite loss is the scaler doing its job (scaled fp16 gradients
        # overflowed); a NaN loss or model output is a broken forward, skipped or not.
        if row["fwd_nan"]:
            seen = "model output"
        elif loss_bad:
            seen = "loss"
        elif grads_bad:
            seen = "gradients"
        else:
            return
        bad_layers = [self.layers[i] for i, v in sorted(row["norms"].items()) if not math.isfinite(v)]
        self.first_nonfinite = {"step": row["step"], "seen_in": seen, "layers": bad_layers[:8],
                                "n_layers": len(bad_layers), "series": self._series_name(row["series"])}
        for callback in list(self.on_nonfinite):
            callback(row["step"])

    def _series_name(self, index: int) -> str:
        return next((s.name for s in self._series.values() if s.index == index), "optimizer")

    def params_never_graded(self) -> list:
        """The optimizers' parameters that had no gradient at any of their steps (DDP with
        `find_unused_parameters` leaves a parameter no rank used without one)."""
        never = []
        for series in self._series.values():
            opt = series.map
            if opt is not None and not opt.all_graded:
                never += [p for i, p in enumerate(opt.params) if i not in opt.graded and p.requires_grad]
        return never

    def pending_nonfinite(self, optimizer) -> bool:
        """Is the step in progress non-finite so far (model output, loss, gradients)? One device read."""
        grads = [p.grad for g in optimizer.param_groups for p in g["params"]
                 if p.grad is not None and not p.grad.is_sparse]
        items = [*self._fwd, *self._losses, *(torch._foreach_norm(grads) if grads else [])]
        if not items:
            return False
        device = items[0].device
        pack = torch.stack([t.to(device=device, dtype=torch.float32) for t in items])
        return not bool(torch.isfinite(pack.sum()))

    def _end_step(self, series: _Series) -> None:
        leading = max(s.count for s in self._series.values())
        if leading > self.steps:
            self.steps = leading
            if self._activations or self.call_sites.trackers:
                if self.steps % max(1, self.thresholds.window) == 0:
                    for tracker in self._trackers():
                        tracker.close_window(self.steps)
        for callback in list(self.on_step_end):
            callback(self)
        counted = [s for s in self._series.values() if s.index != BACKWARD] or list(self._series.values())
        if self.max_steps is not None and all(s.count >= self.max_steps for s in counted):
            raise StopRun()

    def _trackers(self) -> list:
        return [*self._activations, *self.call_sites.trackers.values()]

    # -- results ---------------------------------------------------------------------------------------
    def flush(self, partial: bool = True) -> None:
        """Read what is still on the device, and (with `partial`: a crash mid-step) what the unfinished step
        left. A run stopped after N steps leaves the next step's forward: not a step, dropped."""
        try:
            self.reads.done(wait=True)
            if not partial:
                self._fwd, self._losses, self._clips = [], [], []
            if self._pending is not None and self._stepping is None:
                saved_max, self.max_steps = self.max_steps, None
                try:
                    self._finish_backward_step()  # the last backward of a script without optimizer
                finally:
                    self.max_steps = saved_max
            if self._fwd or self._losses:
                series = self._stepping or next(iter(self._series.values()), None) or _Series(0, "optimizer")
                self._partial_steps.add((series.index, series.count + 1))
                self._collect_values(series, [], [], self._fwd, self._losses)
                self._fwd, self._losses = [], []
        except Exception as error:
            self.errors.append(f"flush: {type(error).__name__}: {error}")

    def record(self) -> dict:
        self.reads.done(wait=True)
        self.call_sites.rename()
        series = sorted(self._series.values(), key=lambda s: (s.index == BACKWARD, s.index))
        raw = self.rows
        if any(s.index != BACKWARD for s in series):  # backwards before the optimizer stepped: not training
            series = [s for s in series if s.index != BACKWARD]
            raw = [(meta, values) for meta, values in raw if meta[1] != BACKWARD]
        return {
            "steps": self.steps,
            "series": [{"index": s.index, "name": s.name, "steps": s.count,
                        "kind": "backward" if s.index == BACKWARD else ("closure" if s.closure else "optimizer")}
                       for s in series],
            "roots": [{"name": r.name, "class": type(r.module).__name__,
                       "parameters": sum(p.numel() for p in r.module.parameters())} for r in self.roots],
            "layers": list(self.layers),
            "rows": json_rows(raw, len(self.layers), self._partial_steps),
            "first_nonfinite": self.first_nonfinite,
            "forwards": {"training": self.modes.training_forwards, "no_grad": self.modes.eval_forwards},
            "eval_mode": self.modes.events(self.modes.eval_events),
            "train_mode": self.modes.events(self.modes.train_events),
            "clip_sites": list(self.clip_sites.values()),
            "activations": activations.record(self._trackers(), self.steps),
            "thresholds": self.thresholds.to_dict(),
            "updates": self.updates.record(len(self.layers)),
            "monitor_errors": self.errors,
        }
