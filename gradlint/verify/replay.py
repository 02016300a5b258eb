"""In-process replay of one step's model forward (and backward) under the tracer, for `watch` and Lightning.

The harness replays by re-running the whole script (it cannot call the user's loss); a library user's
loop cannot be re-run, but the model can: each training forward's inputs and RNG state are kept (by
reference: no copy), and the gradient that reached the model's outputs. When a step turns out
non-finite, before its update is applied, the forward runs again with the same inputs and RNG state
under the tracer, then `autograd.grad` from the kept output gradients (nothing accumulates into
`.grad`). Buffers (BatchNorm statistics) and the RNG are put back afterwards, so the user's run goes on
exactly as it would have.

What it cannot see: a NaN made after the model, in a loss function. Then the model's output is finite
and the gradient that reached it is not; that is what gets reported.
"""

from __future__ import annotations

from typing import Optional

import torch

from .monitor import Monitor
from .tensors import eager, float_tensors
from .trace import Tracer, nonfinite_state


class _Call:
    __slots__ = ("module", "args", "kwargs", "cpu_rng", "cuda_rng", "grads", "n_outputs")

    def __init__(self, module, args, kwargs, cpu_rng, cuda_rng):
        self.module, self.args, self.kwargs = module, args, kwargs
        self.cpu_rng, self.cuda_rng = cpu_rng, cuda_rng
        self.grads: dict[int, torch.Tensor] = {}
        self.n_outputs = 0


class ForwardReplay:
    def __init__(self, monitor: Monitor):
        self.monitor = monitor
        self.result: Optional[dict] = None
        self._calls: list[_Call] = []
        self._handles: list = []
        self._cuda = False

    def attach(self) -> None:
        self.monitor.on_nonfinite.append(self.pinpoint)
        self.monitor.on_step_end.append(self._reset)
        if self.monitor.roots:
            self._hook_roots(self.monitor)
        else:  # found from the first step's calls: from the second step on, forwards are kept
            self.monitor.on_roots.append(self._hook_roots)

    def _hook_roots(self, monitor: Monitor) -> None:
        for root in monitor.roots:
            self._cuda = self._cuda or any(p.is_cuda for p in root.module.parameters())
            self._handles += [root.module.register_forward_pre_hook(eager(self._pre), with_kwargs=True),
                              root.module.register_forward_hook(eager(self._post))]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._hook_roots in self.monitor.on_roots:
            self.monitor.on_roots.remove(self._hook_roots)
        if self.pinpoint in self.monitor.on_nonfinite:
            self.monitor.on_nonfinite.remove(self.pinpoint)
        if self._reset in self.monitor.on_step_end:
            self.monitor.on_step_end.remove(self._reset)

    # -- capture (every training forward: references and a small RNG state copy) -----------------------
    def _pre(self, module, args, kwargs):
        if self.monitor.paused or not torch.is_grad_enabled() or self.result is not None:
            return
        cuda_rng = torch.cuda.get_rng_state() if self._cuda else None
        self._calls.append(_Call(module, args, kwargs, torch.get_rng_state(), cuda_rng))

    def _post(self, module, args, out):
        if self.monitor.paused or not self._calls or self._calls[-1].module is not module:
            return
        call = self._calls[-1]
        outputs = list(float_tensors(out))
        call.n_outputs = len(outputs)
        for i, t in enumerate(outputs):
            if t.requires_grad:
                t.register_hook(self._keep(call, i))

    @staticmethod
    def _keep(call: _Call, index: int):
        def hook(grad):
            call.grads[index] = grad
        return hook

    def _reset(self, monitor) -> None:
        self._calls = []

    # -- replay ------------------------------------------------------------------------------------------
    def pinpoint(self, step: int) -> None:
        # After a closure step's update the parameters are no longer those of the forward: no replay then
        # (the Lightning callback replays from `on_before_optimizer_step` instead).
        if self.result is not None or not self._calls or self.monitor.after_update:
            return
        monitor = self.monitor
        roots = [(r.name if i else "", r.module) for i, r in enumerate(monitor.roots)]
        state = nonfinite_state(roots)
        if state is not None:
            self.result = {**state, "step": step}
            return
        saved_cpu = torch.get_rng_state()
        saved_cuda = torch.cuda.get_rng_state() if self._cuda else None
        buffers = [(b, b.detach().clone()) for _, m in roots for b in m.buffers()]
        for call in self._calls:
            if any(not bool(torch.isfinite(t).all()) for t in float_tensors((call.args, call.kwargs))):
                self.result = {"phase": "before the model", "kind": "nan", "op": None, "module": None,
                               "module_class": None, "site": None, "step": step,
                               "note": "the model's input is already non-finite: the data or the code that "
                                       "prepares it makes it"}
                return
        monitor.paused = True
        try:
            for call in self._calls:
                origin = self._replay(call, step)
                if origin is not None:
                    self.result = origin
                    return
            grads = [g for call in self._calls for g in call.grads.values()]
            if any(not bool(torch.isfinite(g).all()) for g in grads):
                self.result = {"phase": "after the model", "kind": "nan", "op": None, "module": None,
                               "module_class": None, "site": None, "step": step,
                               "note": "the model's forward and backward are finite for its inputs; the gradient "
                                       "reaching its output is not: the loss (or code between model and loss) "
                                       "makes it"}
        finally:
            monitor.paused = False
            for buffer, value in buffers:
                buffer.data.copy_(value)
            torch.set_rng_state(saved_cpu)
            if saved_cuda is not None:
                torch.cuda.set_rng_state(saved_cuda)

    def _replay(self, call: _Call, step: int) -> Optional[dict]:
        torch.set_rng_state(call.cpu_rng)
        if call.cuda_rng is not None:
            torch.cuda.set_rng_state(call.cuda_rng)
        tracer = Tracer(self.monitor.name_of, step=step)
        params = [p for p in call.module.parameters() if p.requires_grad]
        tracer.arm()
        try:
            with torch.enable_grad():
                out = call.module(*call.args, **call.kwargs)
                if tracer.origin is None and call.grads and params:
                    outputs = list(float_tensors(out))
                    pairs = [(outputs[i], g) for i, g in sorted(call.grads.items())
                             if i < len(outputs) and outputs[i].requires_grad and bool(torch.isfinite(g).all())]
                    if pairs:
                        torch.autograd.grad([o for o, _ in pairs], params, [g for _, g in pairs],
                                            allow_unused=True)
        finally:
            tracer.disarm()
        return tracer.result()
