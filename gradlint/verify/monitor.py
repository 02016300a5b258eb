"""Cheap health data for every optimizer step, read back from the device once a step.

What runs every step, and why it is cheap (the budget is 1 % of a plain step):
- a forward hook on the root module(s) only: one `sum()` per output (NaN iff the output holds a NaN),
  left on the device;
- an optimizer step pre-hook: per-parameter grad norms with one `torch._foreach_norm`, stacked with the
  output sums, the losses and the clip norms into one vector, read back once (on CUDA asynchronously,
  through pinned memory, at the next step: the device never waits for the checks); per-layer sums are
  made only when the record is asked for;
- wrappers around `clip_grad_norm_`, `Tensor.backward` and `GradScaler` (see `patches`) that only keep
  references to tensors already computed;
- forward hooks on activation modules (see `activations`): one or two reductions a call.
Forward hooks on every module run only while the roots are being found (until the first optimizer
step) and inside `no_grad` blocks (the eval-mode check), never on training forwards.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.modules import module as module_hooks
from torch.optim import optimizer as optim_hooks

from . import activations, patches
from .naming import clean, contains, variable_name
from .sites import site_key, user_site
from .tensors import compiled, eager, float_tensors, number

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
        self.errors: list[str] = []
        # per-step state, device tensors until the step's one read
        self._fwd: list[torch.Tensor] = []  # 0-d sums of the root outputs: NaN iff an output holds a NaN
        self._losses: list[torch.Tensor] = []  # 0-d, detached
        self._clips: list[tuple] = []  # (total norm or None, max_norm, scale or None, site key)
        # On CUDA the harness reads asynchronously: the step's values are copied to pinned memory behind an
        # event and read at the next step, so the device never stalls for the checks.
        self.async_read = False
        self._pending: Optional[tuple] = None
        self._host: Optional[torch.Tensor] = None
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

    def _event(self, table: dict, module, modules: list) -> None:
        site = user_site()
        key = site_key(site)
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
                module_hooks.register_module_forward_pre_hook(eager(self._ng_pre)),
                module_hooks.register_module_forward_hook(eager(self._ng_post), always_call=True)]
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
        self._losses.append(tensor.detach().reshape(()))

    def on_clip(self, total, max_norm, kind: str) -> None:
        scaler = self._scale_pending
        scale = scaler._scale.detach().clone() if scaler is not None and scaler._scale is not None else None
        site = user_site()
        key = site_key(site)
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

    def _optimizer_map(self, optimizer):
        """(params, their layer positions, whether all are float32 on one device), cached per optimizer."""
        count = sum(len(group["params"]) for group in optimizer.param_groups)
        cached = self._opt_maps.get(id(optimizer))
        if cached is not None and cached[0] == count:
            return cached[1]
        params = [p for group in optimizer.param_groups for p in group["params"]]
        positions = []
        for i, p in enumerate(params):
            layer = self._param_layer.get(id(p))
            if layer is None:
                layer = f"param{i}[{'x'.join(map(str, p.shape))}]"
                self._param_layer[id(p)] = layer
            positions.append(self._layer(layer))
        uniform = bool(params) and all(p.dtype == torch.float32 and p.device == params[0].device for p in params)
        self._opt_maps[id(optimizer)] = (count, (params, positions, uniform))
        return params, positions, uniform

    def _collect(self, optimizer, skipped: bool = False) -> None:
        """The step's one read: per-parameter grad norms, output sums, losses, clip norms in one vector.

        Kept lean (this runs every step): no per-layer arithmetic here, the raw vector is stored and
        summed per layer only when the record is asked for."""
        self._finish_pending()
        grads, where, uniform = [], [], False
        if optimizer is not None:
            params, where, uniform = self._optimizer_map(optimizer)
            grads = [p.grad for p in params]
            # `is None`, not `None in grads`: `in` would call Tensor.__eq__ on every gradient.
            if any(g is None or g.layout != torch.strided for g in grads):
                pairs = [(g, pos) for g, pos in zip(grads, where) if g is not None and g.layout == torch.strided]
                grads, where = [g for g, _ in pairs], [pos for _, pos in pairs]
        items = list(torch._foreach_norm(grads)) if grads else []
        n_norms = len(items)
        extras = [*self._fwd, *self._losses]
        clips = []
        for total, max_norm, scale, key in self._clips:
            clips.append((total is not None, max_norm, scale is not None, key))
            extras += [t for t in (total, scale) if t is not None]
        meta = (self.steps + 1, where, n_norms, len(self._fwd), len(self._losses), clips, skipped)
        self._fwd, self._losses, self._clips = [], [], []
        if self._scaled_ids:
            self._scaled_ids.clear()
        if not items and not extras:
            self._finish(meta, [])
            return
        device = items[0].device if items else extras[0].device
        if not uniform:
            items = [t if t.dtype == torch.float32 and t.device == device else t.to(device=device, dtype=torch.float32)
                     for t in items]
        items += [t if t.dtype == torch.float32 and t.device == device else t.to(device=device, dtype=torch.float32)
                  for t in extras]
        pack = torch.stack(items)
        if self.async_read and pack.is_cuda:
            if self._host is None or self._host.numel() < pack.numel():
                self._host = torch.empty(max(pack.numel(), 64), dtype=torch.float32, pin_memory=True)
            host = self._host[:pack.numel()]
            host.copy_(pack, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (meta, host, event)
        else:
            self._finish(meta, pack.tolist())

    def _finish_pending(self) -> None:
        if self._pending is not None:
            meta, host, event = self._pending
            self._pending = None
            event.synchronize()
            self._finish(meta, host.tolist())

    def _finish(self, meta: tuple, values: list) -> None:
        """Store the step's raw values; look only at what says whether it is non-finite."""
        self.rows.append((meta, values))
        step, _, n_norms, n_fwd, n_losses, _, _ = meta
        if self.first_nonfinite is not None:
            return
        norms_sum = sum(values[:n_norms])  # NaN or Inf iff a norm is (norms are >= 0)
        fwd = values[n_norms:n_norms + n_fwd]
        losses = values[n_norms + n_fwd:n_norms + n_fwd + n_losses]
        if math.isfinite(norms_sum) and math.isfinite(sum(fwd)) and math.isfinite(sum(losses)):
            return
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
        window = max(1, self.thresholds.window)
        if self.steps % window == 0:
            for tracker in self._activations:
                tracker.close_window(self.steps)
        for callback in list(self.on_step_end):
            callback(self)

    # -- results ---------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Read what is still on the device, and what the unfinished step left (a crash mid-step)."""
        try:
            self._finish_pending()
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
        self._finish_pending()
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
