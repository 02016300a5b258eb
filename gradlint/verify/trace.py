"""Pinpoint the first NaN/Inf: the op, the module it ran in, and the user's `file:line`.

Too slow to run every step (a function mode checking every op costs +74 % a step), so it runs only
while one step is replayed: `harness` re-executes the script with the same seed and arms the tracer
at the start of the step that first went non-finite; `watch` replays the model's forward in process.

Forward: every op's floating outputs are checked. An op is the origin when it makes a NaN that none
of its inputs had, or an Inf from finite inputs. Inf made on purpose is not an origin: factory calls
(`torch.full(..., -inf)`), and ops given an infinite scalar (`masked_fill(mask, float("-inf"))`);
ops that only carry an Inf along (`scores + mask`) are not either. An all-masked softmax row, where
the Inf turns into NaN, is one.

Backward: each op's autograd node is tagged in the forward with where the op ran; a node hook then
finds the first node whose incoming gradients are finite and whose outgoing ones are not (sqrt at 0:
the forward is finite, the gradient is Inf).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch.nn.modules import module as module_hooks
from torch.overrides import TorchFunctionMode

from .sites import chain_of, context, described, site_of, user_frame
from .tensors import float_tensors

OPERATORS = {
    "__truediv__": "/", "__rtruediv__": "/", "__div__": "/", "__rdiv__": "/", "__itruediv__": "/=",
    "__mul__": "*", "__rmul__": "*", "__imul__": "*=", "__add__": "+", "__radd__": "+", "__iadd__": "+=",
    "__sub__": "-", "__rsub__": "-", "__isub__": "-=", "__pow__": "**", "__rpow__": "**", "__ipow__": "**=",
    "__matmul__": "@", "__rmatmul__": "@", "__neg__": "unary -", "__floordiv__": "//",
}
_IGNORED = {"__get__", "__set__", "__repr__", "__format__", "__bool__", "__len__", "size", "dim", "item",
            "tolist", "numel", "isfinite", "isnan", "isinf",
            # Uninitialised memory may hold anything, NaN included, until an init function fills it.
            "empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "new_empty_strided",
            "resize_", "resize_as_", "set_"}


def _op_name(func) -> str:
    name = getattr(func, "__name__", None) or repr(func)
    return OPERATORS.get(name, name)


def _scalars(value, depth: int = 0):
    if isinstance(value, float):
        yield value
    elif depth < 2 and isinstance(value, (tuple, list)):
        for item in value:
            yield from _scalars(item, depth + 1)


def _numeric(t: torch.Tensor) -> bool:
    return (t.is_floating_point() or t.is_complex()) and t.numel() > 0 and t.layout == torch.strided


def _state(t: torch.Tensor) -> tuple[bool, bool]:
    """(has NaN, has Inf)."""
    if not _numeric(t) or bool(torch.isfinite(t).all()):
        return False, False
    nan = bool(torch.isnan(t).any())
    return nan, bool(torch.isinf(t).any())


def facts(t: torch.Tensor, role: str) -> dict:
    """What a person asks of the tensor at the origin: its shape and dtype, and how many of its rows (along
    the last dimension) are all zero, and how many hold a NaN or an Inf."""
    t = t.detach()
    flat = t.reshape(1, 1) if t.dim() == 0 else t.reshape(-1, t.shape[-1])
    return {"role": role, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
            "rows": flat.shape[0], "zero_rows": int((flat == 0).all(dim=1).sum()),
            "nonfinite_rows": int((~torch.isfinite(flat)).any(dim=1).sum())}


def _facts(tensors: list, role: str, limit: int = 3) -> list[dict]:
    out = []
    for i, t in enumerate(tensors[:limit]):
        try:
            out.append(facts(t, f"{role} {i + 1}" if len(tensors) > 1 else role))
        except Exception:  # a tensor subclass without these ops: no facts rather than no origin
            pass
    return out


def _inplace(name: str, kwargs: dict) -> bool:
    return (name.endswith("_") and not name.endswith("__")) or (name.startswith("__i") and name.endswith("__")) \
        or kwargs.get("out") is not None


class Tracer(TorchFunctionMode):
    """Armed for one step: the first non-finite value, forward or backward, with its module and line."""

    def __init__(self, name_of: Callable[[object], str] = lambda m: type(m).__name__, step: Optional[int] = None):
        # `name_of` turns a module into its qualified name (`text.blocks.1.attn`); `step` is only reported.
        super().__init__()
        self.name_of = name_of
        self.step = step
        self.origin: Optional[dict] = None
        self._modules: list = []
        self._handles: list = []
        self._nodes: set = set()
        self._armed = False

    # -- arming ----------------------------------------------------------------------------------------
    def arm(self) -> "Tracer":
        self._handles = [module_hooks.register_module_forward_pre_hook(self._push),
                         module_hooks.register_module_forward_hook(self._pop, always_call=True)]
        self.__enter__()
        self._armed = True
        return self

    def disarm(self) -> None:
        if not self._armed:
            return
        self._armed = False
        for handle in self._handles:
            handle.remove()
        self._handles = []
        try:
            self.__exit__(None, None, None)
        except Exception:  # the user pushed a mode of their own on top: leave the stack as it is
            pass
        self._nodes.clear()

    def _push(self, module, args):
        self._modules.append(module)

    def _pop(self, module, args, out):
        if self._modules and self._modules[-1] is module:
            self._modules.pop()

    # -- the op-level check ----------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.origin is not None:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        before = None
        if _inplace(name, kwargs):
            target = kwargs.get("out") if kwargs.get("out") is not None else (args[0] if args else None)
            if isinstance(target, torch.Tensor):
                before = _state(target)
        out = func(*args, **kwargs)
        if name not in _IGNORED:
            try:
                self._inspect(func, args, kwargs, out, before)
            except Exception:  # the tracer must never break the user's step
                pass
        return out

    def _inspect(self, func, args, kwargs, out, before) -> None:
        outs = [t for t in float_tensors(out) if _numeric(t)]
        if not outs:
            return
        bad = [t for t in outs if not bool(torch.isfinite(t.detach()).all())]
        if bad:
            self._classify(func, args, kwargs, bad, before)
            if self.origin is not None:
                return
        if torch.is_grad_enabled():
            self._tag(func, outs)

    def _classify(self, func, args, kwargs, bad, before) -> None:
        out_nan = any(bool(torch.isnan(t.detach()).any()) for t in bad)
        inputs = [t for t in float_tensors((args, kwargs)) if _numeric(t)]
        in_nan = in_inf = False
        for i, t in enumerate(inputs):
            nan, inf = before if (i == 0 and before is not None) else _state(t.detach())
            in_nan, in_inf = in_nan or nan, in_inf or inf
        scalar_inf = any(not math.isfinite(x) for x in _scalars((args, tuple(kwargs.values()))))
        if out_nan and not in_nan:
            kind, note = "nan", ("from an Inf input (inf - inf, 0 * inf, or an all-masked softmax row)"
                                 if in_inf else "from finite inputs")
        elif not out_nan and not (in_nan or in_inf or scalar_inf) and inputs:
            kind, note = "inf", "from finite inputs (overflow or division by zero)"
        else:
            return  # carried along, or made on purpose (a mask)
        frame = user_frame()
        self.origin = self._where("forward", kind, _op_name(func), self._modules[-1] if self._modules else None,
                                  site_of(frame), note, chain_of(frame),
                                  _facts(inputs, "input") + _facts(bad, "output"))

    def _tag(self, func, outs) -> None:
        nodes = {t.grad_fn for t in outs if t.requires_grad and t.grad_fn is not None}
        if not nodes:
            return
        frame = user_frame()
        info = (_op_name(func), self._modules[-1] if self._modules else None, site_of(frame), chain_of(frame))
        for node in nodes:
            if node in self._nodes:
                continue
            self._nodes.add(node)
            node.register_hook(self._backward_hook(info))

    def _backward_hook(self, info):
        def hook(grad_inputs, grad_outputs):
            if self.origin is not None:
                return None
            try:
                incoming = [g for g in grad_outputs if isinstance(g, torch.Tensor) and _numeric(g)]
                outgoing = [g for g in grad_inputs if isinstance(g, torch.Tensor) and _numeric(g)]
                if all(bool(torch.isfinite(g).all()) for g in incoming):
                    states = [_state(g) for g in outgoing]
                    if any(nan or inf for nan, inf in states):
                        kind = "nan" if any(nan for nan, _ in states) else "inf"
                        op, module, site, chain = info
                        self.origin = self._where("backward", kind, op, module, site,
                                                  "the gradient of this op is non-finite for finite inputs", chain,
                                                  _facts(incoming, "incoming gradient")
                                                  + _facts(outgoing, "outgoing gradient"))
            except Exception:
                pass
            return None
        return hook

    def _where(self, phase, kind, op, module, site, note, chain=(), tensors=()) -> dict:
        # The module object is kept until `result()`: names are only known once the roots are.
        return {"phase": phase, "kind": kind, "op": op, "_module": module,
                "module_class": type(module).__name__ if module is not None else None,
                "site": site, "note": note, "step": self.step, "_chain": chain, "tensors": list(tensors)}

    def result(self) -> Optional[dict]:
        if self.origin is None:
            return None
        origin = dict(self.origin)
        module = origin.pop("_module", None)
        origin.setdefault("module", self.name_of(module) if module is not None else None)
        origin["chain"] = described(origin.pop("_chain", ()))
        if origin.get("site"):
            origin["site"] = dict(origin["site"], context=context(origin["site"]))
        return origin


def nonfinite_state(modules) -> Optional[dict]:
    """NaN in parameters or buffers, or Inf in parameters (an Inf buffer is usually a mask): made by the
    previous optimizer update, not by this step."""
    bad = []
    for root_name, module in modules:
        for kind, named in (("parameter", module.named_parameters()), ("buffer", module.named_buffers())):
            for name, t in named:
                nan, inf = _state(t.detach())
                if nan or (inf and kind == "parameter"):
                    bad.append(".".join(p for p in (root_name, name) if p))
    if not bad:
        return None
    return {"phase": "optimizer", "kind": "nan", "op": "optimizer.step", "module": None, "module_class": None,
            "site": None, "parameters": bad[:8], "n_parameters": len(bad),
            "note": "parameters were already non-finite when the step began: the previous optimizer update made them so"}
