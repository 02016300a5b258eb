"""Small helpers shared by the monitor, the tracer and the replay."""

from __future__ import annotations

import math

import torch
from torch import nn


def number(x) -> object:
    """A float for JSON: finite floats as they are, NaN and Inf as strings (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def eager(fn):
    """Hooks always run eagerly: torch.compile must not trace the monitor's state into a graph (it fails,
    or breaks the graph at every step). 0.3 us a call in eager mode."""
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    return disable(fn) if disable is not None else fn


def compiled(module: nn.Module) -> bool:
    return hasattr(module, "_orig_mod")  # torch.compile's OptimizedModule


def float_tensors(value, depth: int = 0):
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            yield value
    elif depth < 3 and isinstance(value, (tuple, list)):
        for item in value:
            yield from float_tensors(item, depth + 1)
    elif depth < 3 and isinstance(value, dict):
        for item in value.values():
            yield from float_tensors(item, depth + 1)
