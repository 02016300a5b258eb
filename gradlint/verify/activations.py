"""Dead and saturated units: per unit of each ReLU, tanh or sigmoid module, over a window of steps.

A forward hook on those modules only (never every module), one or two reductions a call, the result
kept on the device and read once, when the record is made.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .tensors import eager

DEAD_KINDS = (nn.ReLU, nn.ReLU6)
SATURATING = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Hardtanh: "tanh", nn.Softsign: "tanh",
              nn.Hardsigmoid: "sigmoid"}


class Activation:
    """Per unit of one activation module, over a window of steps: dead (a ReLU unit that never fired) or
    saturated (a tanh/sigmoid unit whose outputs sat near their bounds almost all the time)."""

    SATURATED_SHARE = 0.95  # of a unit's outputs in the window

    def __init__(self, name: str, kind: str, threshold: float):
        self.name, self.kind, self.threshold = name, kind, threshold
        self.acc: Optional[torch.Tensor] = None  # dead: max output per unit; saturating: count of saturated
        self.samples = 0
        self.window: Optional[tuple[torch.Tensor, int, int]] = None  # (stuck per unit, first, last step)
        self.first_step: Optional[int] = None

    def hook(self, monitor):
        def record(module, args, out):
            if (monitor.paused or not isinstance(out, torch.Tensor) or not out.is_floating_point()
                    or not torch.is_grad_enabled() or out.dim() == 0):
                return
            x = out.detach()
            unit = 1 if x.dim() in (4, 5) else x.dim() - 1  # conv maps: channels; otherwise the last dim
            dims = tuple(d for d in range(x.dim()) if d != unit)
            if self.kind == "dead":  # the running max per unit: one reduction and one maximum a call
                value = x.amax(dim=dims) if dims else x
                self.acc = value if self.acc is None or self.acc.shape != value.shape else torch.maximum(self.acc, value)
            else:
                if self.kind == "tanh":
                    stuck = x.abs() >= self.threshold
                else:
                    stuck = (x >= self.threshold) | (x <= 1 - self.threshold)
                value = stuck.sum(dim=dims, dtype=torch.float32) if dims else stuck.float()
                self.acc = value if self.acc is None or self.acc.shape != value.shape else self.acc + value
                self.samples += x.numel() // max(x.shape[unit], 1)
            if self.first_step is None:
                self.first_step = monitor.steps + 1
        return record

    def stuck(self) -> Optional[torch.Tensor]:
        if self.acc is None:
            return None
        if self.kind == "dead":  # never above 0; a NaN max is not "dead": a NaN run says nothing about units
            return self.acc <= 0
        return self.acc >= self.SATURATED_SHARE * max(self.samples, 1)

    def close_window(self, step: int) -> None:
        stuck = self.stuck()
        if stuck is not None:
            self.window = (stuck, self.first_step or step, step)
        self.acc, self.samples, self.first_step = None, 0, None


def add_hooks(monitor, root_module: nn.Module, handles: list) -> list[Activation]:
    """Trackers for the activation modules under `root_module`, their hooks appended to `handles`."""
    trackers = []
    for sub in root_module.modules():
        kind = "dead" if isinstance(sub, DEAD_KINDS) else SATURATING.get(type(sub))
        if kind is None:
            continue
        tracker = Activation(monitor.name_of(sub), kind, monitor.thresholds.saturation)
        trackers.append(tracker)
        handles.append(sub.register_forward_hook(eager(tracker.hook(monitor))))
    return trackers


def record(trackers: list[Activation], steps: int) -> list[dict]:
    """The last complete window of each tracker (the current one if none is complete): one device read."""
    rows, tensors = [], []
    for tracker in trackers:
        if tracker.window is not None:
            stuck, first, last = tracker.window
        elif tracker.acc is not None:
            stuck, first, last = tracker.stuck(), tracker.first_step, steps
        else:
            continue
        rows.append({"layer": tracker.name, "kind": tracker.kind, "units": int(stuck.numel()),
                     "from_step": first, "to_step": last})
        tensors.append(stuck.sum().reshape(1).float().cpu())
    if tensors:
        for row, count in zip(rows, torch.cat(tensors).tolist()):
            row["stuck"] = int(count)
    return rows
