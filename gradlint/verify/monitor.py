"""Cheap health data for every optimizer step, read back from the device once a step.

What runs every step, and why it is cheap (the budget is 1 % of a plain step, and on a launch-bound GPU
step every microsecond of Python counts: this code runs cold, between the model's kernels, at several
times its cost in a tight loop):
- a forward hook on the root module(s) only: one `sum()` per output (NaN iff the output holds a NaN),
  left on the device;
- an optimizer step pre-hook: per-parameter grad norms with one `torch._foreach_norm`, put with the
  output sums, the losses and the clip norms into one vector by one `torch.stack` (one `torch.cat` on
  CUDA, where the norms already lie in one buffer: see `_one_vector`), read back once. On
  CUDA (`async_read`) the vector goes to pinned memory by one non-blocking copy and is read when its
  event says the copy is done, a step or more later: no host sync in the default path, the device may
  run up to `IN_FLIGHT` steps behind before the monitor waits. Per-layer sums are made only when the
  record is asked for;
- wrappers around `clip_grad_norm_`, `Tensor.backward` and `GradScaler` (see `patches`) that only keep
  references to tensors already computed;
- forward hooks on activation modules (see `activations`): one reduction a call (three for tanh/sigmoid).
Forward hooks on every module run only while the roots are being found (until the first optimizer
step) and inside the user's `no_grad` blocks (the eval-mode check; not the one inside clipping), never
on training forwards.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.modules import module as module_hooks
from torch.optim import optimizer as optim_hooks

from . import activations, patches
from .naming import clean, contains, variable_name
from .sites import site_key, site_of, user_frame
from .tensors import compiled, eager, float_tensors, number

IN_FLIGHT = 4  # CUDA reads not yet done, at most: then the monitor waits for the oldest (bounded memory)

STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
              nn.modules.batchnorm._BatchNorm)


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
    """Raised from an optimizer hook to end a run after N steps; `except Exception` in user code lets it pass."""


def _is_stochastic(m: nn.Module) -> bool:
    return isinstance(m, STOCHASTIC) or (isinstance(m, nn.MultiheadAttention) and m.dropout > 0)


class _Root:
    def __init__(self, module: nn.Module, name: str):
        self.module, self.name = module, name
        self.stochastic = [m for m in module.modules() if _is_stochastic(m)]
        self.handles: list = []


def _one_vector(norms: list) -> Optional[torch.Tensor]:
    """On CUDA `_foreach_norm` writes all the norms into one buffer and returns a 0-d view of each element:
    that buffer as one vector, instead of stacking the views (a tensor made per parameter, a cost that grows
    with the parameter count). None where the norms are tensors of their own (CPU; mixed dtypes)."""
    first, size, n = norms[0], norms[0].element_size(), len(norms)
    start = first.data_ptr()
    if norms[-1].data_ptr() - start != (n - 1) * size:  # the quick test, which CPU norms fail
        return None
    if [t.data_ptr() for t in norms] != list(range(start, start + n * size, size)):
        return None
    try:  # and the N elements must lie in the first one's storage: then they are the N norms, in order
        return first.as_strided((n,), (1,))
    except RuntimeError:
        return None


class _OptMap:
    """An optimizer's parameters and their layer positions, cached (rebuilt when its parameter count changes)."""

    __slots__ = ("count", "params", "positions", "dense")

    def __init__(self, count: int, params: list, positions: list):
        self.count, self.params, self.positions = count, params, positions
        # Every gradient present and strided at the last step: try the one `_foreach_norm` call unfiltered.
        self.dense = True


class Monitor:
    """Collects per-step health data. Attach globally (harness) or to a model and optimizers (watch)."""

    def __init__(self, thresholds: Optional[Thresholds] = None):
        self.thresholds = thresholds or Thresholds()
        self.steps = 0  # optimizer steps taken, plus steps a GradScaler skipped
        self.rows: list[tuple] = []  # (meta, raw values) per step; see `_row`
        self._partial_steps: set[int] = set()
        self.layers: list[str] = []
        self._layer_index: dict[str, int] = {}
        self.roots: list[_Root] = []
        self._root_by_id: dict[int, _Root] = {}
        self._names: dict[int, str] = {}  # id(module) -> qualified name
        self._param_layer: dict[int, str] = {}  # id(param) -> layer name
        self._opt_maps: dict[int, tuple] = {}
        self._activations: list = []
        self.on_step_end: list[Callable[["Monitor"], None]] = []
        # Called with the step number when a step is first found non-finite, before its update is applied.
        self.on_nonfinite: list[Callable[[int], None]] = []
        self.on_roots: list[Callable[["Monitor"], None]] = []  # once the root modules are known
        self.after_update = False  # reading a closure step's gradients: the update is already applied
        self.paused = False  # while a replay runs the model again: its calls are not the user's
        self.first_nonfinite: Optional[dict] = None
        self.eval_events: dict[str, dict] = {}
        self.train_events: dict[str, dict] = {}
        self.clip_sites: dict[str, dict] = {}
        self._sites: dict[tuple, tuple] = {}  # (code, line) -> (key, site); see `_user_site`
        self.errors: list[str] = []
        # per-step state, device tensors until the step's one read
        self._fwd: list[torch.Tensor] = []  # 0-d sums of the root outputs: NaN iff an output holds a NaN
        self._losses: list[torch.Tensor] = []  # 0-d, detached
        self._clips: list[tuple] = []  # (total norm or None, max_norm, scale or None, site key)
        # On CUDA the harness reads asynchronously: the step's values are copied to pinned memory behind an
        # event and read once the event is done, so the device never stalls for the checks.
        self.async_read = False
        self._in_flight: deque = deque()  # (meta, pinned host view, slot) in step order
        self._slots: list = []  # free (pinned buffer, event, device) to reuse: no allocation per step
        self.waits = 0  # reads that had to wait for the device (the benchmark reports them)
        self._scaled_ids: set[int] = set()
        self._scale_pending = None  # a GradScaler whose scaled loss was backpropagated but not unscaled
        self._stepped = False
        self._deferred = False
        # discovery of the root modules (global mode)
        self._discovering = False
        self._call_stack: list[nn.Module] = []
        self._candidates: dict[int, tuple[nn.Module, str]] = {}
        self._handles: list = []
        self._discovery_handles: list = []
        self._ng_depth = 0
        self._ng_handles: list = []
        self._ng_stack: list[nn.Module] = []
        # Wrapped once: `eager` costs microseconds a call to make, and no_grad blocks can come every step.
        self._ng_hooks = (eager(self._ng_pre), eager(self._ng_post))
        self._stochastic_cache: dict[int, tuple] = {}
        self._seen_training: set[int] = set()
        self.attached = False

    # -- attaching -------------------------------------------------------------------------------------
    def attach_global(self, optimizers=None) -> None:
        """Harness mode: find the models from the first calls, without touching user code; the optimizers
        too, unless given (Lightning: `training_step` is not a module call, `self.model(x)` in it is)."""
        self._discovering = True
        self._discovery_handles = [
            module_hooks.register_module_forward_pre_hook(eager(self._discover_pre)),
            module_hooks.register_module_forward_hook(eager(self._discover_post), always_call=True),
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
            self._add_root(m, "" if i == 0 else f"model{i}")
        self._finish_roots()
        for opt in optimizers:
            self._handles += [opt.register_step_pre_hook(self._step_pre),
                              opt.register_step_post_hook(self._step_post)]
        patches.activate(self)
        self.attached = True

    def detach(self) -> None:
        for handle in self._handles + self._ng_handles + self._discovery_handles:
            handle.remove()
        self._discovery_handles, self._discovering = [], False
        for root in self.roots:
            for handle in root.handles:
                handle.remove()
        self._handles, self._ng_handles = [], []
        patches.deactivate(self)
        self.attached = False

    # -- roots -----------------------------------------------------------------------------------------
    def _discover_pre(self, module, args):
        if not self._call_stack and torch.is_grad_enabled():  # a top-level training forward: a root
            if id(module) not in self._candidates:
                self._candidates[id(module)] = (module, variable_name(module))
            self._check_train_mode(module, self._stochastic(module))
        self._call_stack.append(module)

    def _discover_post(self, module, args, out):
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
        # The largest model is named without a prefix; other top-level modules (a second model, a loss
        # module) get the name they were bound to where they were first called.
        found = sorted(self._candidates.values(), key=lambda mn: -sum(p.numel() for p in mn[0].parameters()))
        found = [(m, n) for m, n in found if not any(m is not o and contains(o, m) for o, _ in found)]
        for i, (module, name) in enumerate(found):
            self._add_root(module, "" if i == 0 else name)
        self._finish_roots()
        self._candidates.clear()
        for callback in list(self.on_roots):
            callback(self)

    def _add_root(self, module: nn.Module, prefix: str) -> None:
        if id(module) in self._root_by_id:
            return
        root = _Root(module, prefix or variable_name(module))
        self.roots.append(root)
        self._root_by_id[id(module)] = root
        for sub_name, sub in module.named_modules():
            plain = clean(sub_name)
            full = ".".join(p for p in (prefix, plain) if p)
            self._names.setdefault(id(sub), full)
        for p_name, param in module.named_parameters():
            layer = clean(p_name.rpartition(".")[0]) or clean(p_name)
            self._param_layer.setdefault(id(param), ".".join(p for p in (prefix, layer) if p))

    def _finish_roots(self) -> None:
        for root in self.roots:
            if not root.handles:
                root.handles = [root.module.register_forward_pre_hook(eager(self._root_pre)),
                                root.module.register_forward_hook(eager(self._root_post))]
                if not compiled(root.module):  # inside a compiled graph a hook would break it every step
                    self._activations += activations.add_hooks(self, root.module, root.handles)

    def name_of(self, module) -> str:
        name = self._names.get(id(module))
        if name is None:
            return type(module).__name__
        return name or (self.roots[0].name if self.roots else type(module).__name__)

    def _root_pre(self, module, args):
        root = self._root_by_id.get(id(module))
        if root is None or self.paused:
            return
        if torch.is_grad_enabled():
            self._check_train_mode(module, root.stochastic)
        elif self._ng_depth == 0:  # `set_grad_enabled(False)`: not a no_grad block, checked here
            self._check_eval_mode(module, root.stochastic)

    def _root_post(self, module, args, out):
        if torch.is_grad_enabled() and not self.paused:
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

    # -- mode checks -----------------------------------------------------------------------------------
    def _stochastic(self, module) -> list:
        root = self._root_by_id.get(id(module))
        if root is not None:
            return root.stochastic
        cached = self._stochastic_cache.get(id(module))
        if cached is None or cached[0]() is not module:
            cached = (weakref.ref(module), [m for m in module.modules() if _is_stochastic(m)])
            self._stochastic_cache[id(module)] = cached
        return cached[1]

    def _check_train_mode(self, module, stochastic) -> None:
        """A training forward with dropout/BN in eval mode, after one in training mode: `.train()` not restored."""
        if not stochastic:
            return
        if any(m.training for m in stochastic):
            self._seen_training.add(id(module))
        elif id(module) in self._seen_training:
            self._event(self.train_events, module, [m for m in stochastic if not m.training])

    def _check_eval_mode(self, module, stochastic) -> None:
        training = [m for m in stochastic if m.training]
        if training:
            self._event(self.eval_events, module, training)

    def _user_site(self) -> tuple[str, Optional[dict]]:
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
        key, site = self._user_site()
        event = table.get(key)
        if event is None:
            table[key] = {"site": site, "count": 1, "first_step": self.steps + 1, "module": module,
                          "modules": modules[:50], "kinds": sorted({type(m).__name__ for m in modules})}
        else:
            event["count"] += 1

    def on_no_grad(self, delta: int) -> None:
        self._ng_depth += delta
        if delta > 0 and self._ng_depth == 1 and not self._ng_handles:
            self._ng_handles = [
                module_hooks.register_module_forward_pre_hook(self._ng_hooks[0]),
                module_hooks.register_module_forward_hook(self._ng_hooks[1], always_call=True)]
        elif self._ng_depth <= 0 and self._ng_handles:
            self._ng_depth = 0
            for handle in self._ng_handles:
                handle.remove()
            self._ng_handles, self._ng_stack = [], []

    def _ng_pre(self, module, args):
        if not self._ng_stack and not torch.is_grad_enabled():
            self._check_eval_mode(module, self._stochastic(module))
        self._ng_stack.append(module)

    def _ng_post(self, module, args, out):
        if self._ng_stack and self._ng_stack[-1] is module:
            self._ng_stack.pop()

    # -- backward, clipping, GradScaler ----------------------------------------------------------------
    def on_backward(self, tensor: torch.Tensor) -> None:
        if tensor.numel() != 1 or id(tensor) in self._scaled_ids:
            return
        self._add_loss(tensor)

    def _add_loss(self, tensor: torch.Tensor) -> None:
        loss = tensor.detach()
        if loss.dim():
            loss = loss.reshape(())
        self._losses.append(loss)

    def on_clip(self, total, max_norm, kind: str) -> None:
        scaler = self._scale_pending
        scale = scaler._scale.detach().clone() if scaler is not None and scaler._scale is not None else None
        key, site = self._user_site()
        entry = self.clip_sites.setdefault(key, {"site": site, "count": 0, "scaled": 0, "kind": kind})
        entry["count"] += 1
        entry["scaled"] += scale is not None
        total = total.detach() if isinstance(total, torch.Tensor) else None
        self._clips.append((total, float(max_norm), scale, key))

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
                if not self._stepped:  # the scaler found inf/NaN gradients and skipped the step, on purpose
                    self._safe_collect(None, skipped=True)
                    self._end_step()
        elif name == "update":
            self._scale_pending = None

    # -- optimizer steps -------------------------------------------------------------------------------
    def _step_pre(self, optimizer, args, kwargs):
        self._stepped = True
        if (args and callable(args[0])) or callable(kwargs.get("closure")):
            # `optimizer.step(closure)` (Lightning, LBFGS): the gradients are made inside the step, so
            # they are read after it; they are still the ones the update used.
            self._deferred = True
            return
        self._safe_collect(optimizer)

    def _step_post(self, optimizer, args, kwargs):
        if self._deferred:
            self._deferred = False
            self.after_update = True
            try:
                self._safe_collect(optimizer)
            finally:
                self.after_update = False
        self._end_step()

    def _safe_collect(self, optimizer, skipped: bool = False) -> None:
        try:
            if self._discovering:
                self._end_discovery()
            self._collect(optimizer, skipped)
        except StopRun:
            raise
        except Exception as error:  # a check must never break the user's step
            self.errors.append(f"step {self.steps + 1}: {type(error).__name__}: {error}")

    def _layer(self, name: str) -> int:
        index = self._layer_index.get(name)
        if index is None:
            index = self._layer_index[name] = len(self.layers)
            self.layers.append(name)
        return index

    def _optimizer_map(self, optimizer) -> _OptMap:
        count = sum([len(group["params"]) for group in optimizer.param_groups])
        cached = self._opt_maps.get(id(optimizer))
        if cached is not None and cached.count == count:
            return cached
        params = [p for group in optimizer.param_groups for p in group["params"]]
        positions = []
        for i, p in enumerate(params):
            layer = self._param_layer.get(id(p))
            if layer is None:
                layer = f"param{i}[{'x'.join(map(str, p.shape))}]"
                self._param_layer[id(p)] = layer
            positions.append(self._layer(layer))
        cached = self._opt_maps[id(optimizer)] = _OptMap(count, params, positions)
        return cached

    def _norms(self, optimizer) -> tuple[list, list]:
        """Per-parameter grad norms (one `_foreach_norm`) and the layer position of each."""
        opt = self._optimizer_map(optimizer)
        grads = [p.grad for p in opt.params]
        if opt.dense:
            try:
                return [*torch._foreach_norm(grads)], opt.positions
            except (TypeError, RuntimeError):  # a None gradient (TypeError) or a sparse one: filter them
                opt.dense = False
        # Checked per gradient, not with `None in grads`: `in` would call Tensor.__eq__ on every gradient.
        keep = [i for i, g in enumerate(grads) if g is not None and g.layout == torch.strided]
        opt.dense = len(keep) == len(grads)
        grads = [grads[i] for i in keep]
        return ([*torch._foreach_norm(grads)] if grads else []), [opt.positions[i] for i in keep]

    def _collect(self, optimizer, skipped: bool = False) -> None:
        """The step's one read: per-parameter grad norms, output sums, losses, clip norms in one vector.

        Kept lean (this runs every step): no per-layer arithmetic here, the raw vector is stored and
        summed per layer only when the record is asked for."""
        if self._in_flight:
            self._read_done()
        fwd, losses, clips = self._fwd, self._losses, self._clips
        self._fwd, self._losses, self._clips = [], [], []
        if self._scaled_ids:
            self._scaled_ids.clear()
        norms, where = self._norms(optimizer) if optimizer is not None else ([], [])
        extras = [*fwd, *losses]
        clip_meta = []
        for total, max_norm, scale, key in clips:
            clip_meta.append((total is not None, max_norm, scale is not None, key))
            extras += [t for t in (total, scale) if t is not None]
        meta = (self.steps + 1, where, len(norms), len(fwd), len(losses), clip_meta, skipped)
        if not norms and not extras:
            if self._in_flight:
                self._read_done(wait=True)  # rows stay in step order
            self._finish(meta, [])
            return
        try:  # one op (cat and stack promote float16/bfloat16 values to the widest dtype)
            vector = _one_vector(norms) if norms else None
            if vector is not None:
                pack = torch.cat([vector, *[t.reshape(1) for t in extras]])
            else:
                pack = torch.stack([*norms, *extras])
        except RuntimeError:  # values on several devices (a model split across GPUs)
            device = (norms or extras)[0].device
            pack = torch.stack([t.to(device=device, dtype=torch.float32) for t in [*norms, *extras]])
        if pack.dtype != torch.float32:
            pack = pack.float()
        if self.async_read and pack.is_cuda:
            self._read_later(meta, pack)
        else:
            if self._in_flight:
                self._read_done(wait=True)  # rows stay in step order
            self._finish(meta, pack.tolist())

    def _read_later(self, meta: tuple, pack: torch.Tensor) -> None:
        """CUDA: one non-blocking copy into pinned memory, and an event to tell when it is done."""
        n = pack.numel()
        slot = self._slots.pop() if self._slots else None
        if slot is None or slot[0].numel() < n or slot[2] != pack.device:
            slot = (torch.empty(max(n, 64), dtype=torch.float32, pin_memory=True), torch.cuda.Event(), pack.device)
        host = slot[0][:n]
        host.copy_(pack, non_blocking=True)
        slot[1].record(torch.cuda.current_stream(pack.device))  # the stream the copy was queued on
        self._in_flight.append((meta, host, slot))

    def _read_done(self, wait: bool = False) -> None:
        """Read the copies that are done (`event.query()` does not wait); with `wait`, all of them; and the
        oldest when `IN_FLIGHT` are pending."""
        in_flight = self._in_flight
        while in_flight:
            meta, host, slot = in_flight[0]
            if not slot[1].query():
                if not (wait or len(in_flight) >= IN_FLIGHT):
                    return
                self.waits += 1
                slot[1].synchronize()
            in_flight.popleft()
            self._slots.append(slot)
            self._finish(meta, host.tolist())

    def _finish(self, meta: tuple, values: list) -> None:
        """Store the step's raw values; look only at what says whether it is non-finite."""
        self.rows.append((meta, values))
        # Norms, output sums and losses come first: their sum is NaN or Inf iff one of them is (float32
        # values cannot overflow a float64 sum), the rest (clip norms, scales) is not looked at here.
        if self.first_nonfinite is None and not math.isfinite(sum(values[:meta[2] + meta[3] + meta[4]])):
            self._note_nonfinite(self._row(meta, values))

    def _row(self, meta: tuple, values: list) -> dict:
        """A step as a dict: per-layer norms (position -> norm), total, loss, output flag, clips."""
        step, where, n_norms, n_fwd, n_losses, clips_meta, skipped = meta
        squares: dict[int, float] = {}
        for pos, v in zip(where, values[:n_norms]):
            squares[pos] = squares.get(pos, 0.0) + v * v
        at = n_norms
        fwd, at = values[at:at + n_fwd], at + n_fwd
        losses, at = values[at:at + n_losses], at + n_losses
        clips = []
        for has_total, max_norm, has_scale, key in clips_meta:
            before = values[at] if has_total else None
            at += has_total
            scale = values[at] if has_scale else None
            at += has_scale
            clips.append({"before": before, "max_norm": max_norm, "scale": scale, "site": key})
        return {"step": step, "norms": {pos: math.sqrt(sq) for pos, sq in squares.items()},
                "total": math.sqrt(sum(squares.values())) if squares else None,
                "loss": sum(losses) / len(losses) if losses else None,
                "fwd_nan": any(math.isnan(v) for v in fwd), "clips": clips, "skipped": skipped}

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
                                "n_layers": len(bad_layers)}
        for callback in list(self.on_nonfinite):
            callback(row["step"])

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

    def _end_step(self) -> None:
        self.steps += 1
        if self._activations and self.steps % max(1, self.thresholds.window) == 0:
            for tracker in self._activations:
                tracker.close_window(self.steps)
        for callback in list(self.on_step_end):
            callback(self)

    # -- results ---------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Read what is still on the device, and what the unfinished step left (a crash mid-step)."""
        try:
            self._read_done(wait=True)
            if self._fwd or self._losses:
                self._partial_steps.add(self.steps + 1)
                self._collect(None, skipped=False)
        except Exception as error:
            self.errors.append(f"flush: {type(error).__name__}: {error}")

    def _json_rows(self) -> list[dict]:
        n = len(self.layers)
        rows = []
        for meta, values in self.rows:
            row = self._row(meta, values)
            out = dict(row)
            if row["step"] in self._partial_steps and not row["norms"]:
                out["partial"] = True
            out["norms"] = [number(row["norms"][i]) if i in row["norms"] else None for i in range(n)]
            out["total"], out["loss"] = number(row["total"]), number(row["loss"])
            out["clips"] = [dict(c, before=number(c["before"]), scale=number(c["scale"])) for c in row["clips"]]
            rows.append(out)
        return rows

    def record(self) -> dict:
        self._read_done(wait=True)
        return {
            "steps": self.steps,
            "roots": [{"name": r.name, "class": type(r.module).__name__,
                       "parameters": sum(p.numel() for p in r.module.parameters())} for r in self.roots],
            "layers": list(self.layers),
            "rows": self._json_rows(),
            "first_nonfinite": self.first_nonfinite,
            "eval_mode": self._events(self.eval_events),
            "train_mode": self._events(self.train_events),
            "clip_sites": list(self.clip_sites.values()),
            "activations": activations.record(self._activations, self.steps),
            "thresholds": self.thresholds.to_dict(),
            "monitor_errors": self.errors,
        }

    def _events(self, table: dict) -> list:
        out = []
        for event in table.values():
            names = [self.name_of(m) for m in event["modules"]]
            out.append({"site": event["site"], "count": event["count"], "first_step": event["first_step"],
                        "module": self.name_of(event["module"]), "modules": names[:6],
                        "n_modules": len(names), "kinds": event["kinds"]})
        return out
