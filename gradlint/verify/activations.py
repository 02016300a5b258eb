"""Dead and saturated units: per unit of each ReLU, tanh or sigmoid module, over a window of steps.

A forward hook on those modules only (never every module), one reduction a call (three for tanh and
sigmoid), the results kept on the device, combined once a window and read once, when the record is made.
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
    FOLD = 16  # per-call results kept before they are folded into one (memory stays bounded without steps)

    def __init__(self, name: str, kind: str, threshold: float):
        self.name, self.kind, self.threshold = name, kind, threshold
        # Per-call reductions (dead: max output per unit; saturating: count of saturated outputs per unit),
        # combined only when the window closes: one device op a call fewer than a running accumulator.
        self.parts: list[torch.Tensor] = []
        self.samples = 0
        self.window: Optional[tuple[torch.Tensor, int, int]] = None  # (stuck per unit, first, last step)
        self.first_step: Optional[int] = None
        self._dims: dict[int, tuple[int, tuple]] = {}  # output rank -> (unit dim, reduced dims)

    def hook(self, monitor):
        dead, tanh, threshold, parts = self.kind == "dead", self.kind == "tanh", self.threshold, self.parts

        def record(module, args, out):
            if (monitor.paused or not isinstance(out, torch.Tensor) or not out.is_floating_point()
                    or not torch.is_grad_enabled()):
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
            if dead:  # the max per unit: one reduction a call
                value = x.amax(dim=dims) if dims else x.clone()  # kept: not an alias of the output
            else:
                stuck = x.abs() >= threshold if tanh else (x >= threshold) | (x <= 1 - threshold)
                value = stuck.sum(dim=dims, dtype=torch.float32) if dims else stuck.float()
                self.samples += x.numel() // max(x.shape[unit], 1)
            if parts and parts[0].shape != value.shape:  # another input shape: start over
                parts.clear()
            parts.append(value)
            if len(parts) >= self.FOLD:
                parts[:] = [self._fold()]
            if self.first_step is None:
                self.first_step = monitor.steps + 1
        return record

    def _fold(self) -> Optional[torch.Tensor]:
        if not self.parts:
            return None
        if len(self.parts) == 1:
            return self.parts[0]
        stacked = torch.stack(self.parts)
        return stacked.amax(dim=0) if self.kind == "dead" else stacked.sum(dim=0)

    def stuck(self) -> Optional[torch.Tensor]:
        acc = self._fold()
        if acc is None:
            return None
        if self.kind == "dead":  # never above 0; a NaN max is not "dead": a NaN run says nothing about units
            return acc <= 0
        return acc >= self.SATURATED_SHARE * max(self.samples, 1)

    def close_window(self, step: int) -> None:
        stuck = self.stuck()
        if stuck is not None:
            self.window = (stuck, self.first_step or step, step)
        self.parts.clear()
        self.samples, self.first_step = 0, None


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
        elif tracker.parts:
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
