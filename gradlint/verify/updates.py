"""What each optimizer step did, for the report's dashboards: the learning rate, the GradScaler's loss scale
(and the steps it skipped), and the update-to-weight ratio of each layer.

The monitor calls `before_step` and `after_step` around each optimizer step and `on_scale` at each
`scaler.step`; nothing is read from the device until `record()`. What a step costs:
- the learning rate: read from `param_groups` (Python floats; a tensor lr is cloned, not read);
- the loss scale: a clone of the scaler's 0-d `_scale` (one tiny device op), only with an enabled scaler;
- the update-to-weight ratio ||w_after - w_before|| / ||w_after|| per layer: on one step in
  `ratio_every` only, and measured on a sample: a tensor larger than `SAMPLE` elements is seen through a
  strided view of about `SAMPLE` of its elements (a view: the optimizer's in-place update writes into it),
  and its squared norms are scaled up by its stride. The copy made before the step is that sample, never
  the model: the cost grows with the number of parameter tensors, not with their size. A layer's ratio
  is then exact for small tensors and within a few per cent for large ones.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

SAMPLE = 4096  # elements of a parameter tensor the update-to-weight ratio looks at, at most


class _Snapshot:
    __slots__ = ("series", "step", "views", "before", "scale", "positions")

    def __init__(self, series, step, views, before, scale, positions):
        self.series, self.step, self.views, self.before = series, step, views, before
        self.scale, self.positions = scale, positions


def _view(p: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A view of (a sample of) `p`'s elements, and the factor from its squared norm to `p`'s."""
    t = p.detach()
    n = t.numel()
    if n <= SAMPLE:
        return t, 1.0
    stride = -(-n // SAMPLE)
    if t.is_contiguous():
        view = t.view(-1)[::stride]
    else:  # rows of a non-contiguous tensor, still a view
        stride = max(1, -(-t.shape[0] // max(1, SAMPLE * t.shape[0] // n)))
        view = t[::stride]
    return view, n / view.numel()


class UpdateStats:
    def __init__(self, ratio_every: int = 10):
        self.ratio_every = ratio_every  # 0: no update-to-weight ratio
        self.lrs: list[tuple[int, int, list]] = []  # (series, step, lr per param group)
        self.scales: list[tuple[int, int, object, bool]] = []  # (series, step, 0-d scale tensor, skipped)
        self.ratios: list[tuple[int, int, list, list, torch.Tensor]] = []  # (series, step, positions, factors, norms)
        self._snapshot: Optional[_Snapshot] = None
        self.errors: list[str] = []

    def before_step(self, monitor, series, optimizer) -> None:
        """Before `optimizer` makes step `series.count + 1` of its series. Once the roots are known (a closure
        step's first call finds them inside the step: then not yet), its parameters are mapped to layers."""
        try:
            step = series.count + 1
            lrs = [group.get("lr") for group in optimizer.param_groups]
            self.lrs.append((series.index, step, [lr.detach().clone() if isinstance(lr, torch.Tensor) else lr
                                                  for lr in lrs]))
            self._snapshot = None
            if not self.ratio_every or (step - 1) % self.ratio_every or monitor._discovering:
                return
            mapped = monitor._optimizer_map(series, optimizer)
            pairs = [(_view(p), pos) for p, pos in zip(mapped.params, mapped.positions)
                     if p.layout == torch.strided and (p.is_floating_point() or p.is_complex())]
            if pairs:
                views = [v for (v, _), _ in pairs]
                self._snapshot = _Snapshot(series.index, step, views, [v.clone() for v in views],
                                           [f for (_, f), _ in pairs], [pos for _, pos in pairs])
        except Exception as error:  # a dashboard must never break the user's step
            self.errors.append(f"updates: {type(error).__name__}: {error}")

    def after_step(self) -> None:
        snap, self._snapshot = self._snapshot, None
        if snap is None:
            return
        try:
            deltas = torch._foreach_norm(torch._foreach_sub(snap.views, snap.before))
            weights = torch._foreach_norm(snap.views)
            items = [*deltas, *weights]
            norms = torch.stack([t.to(device=items[0].device, dtype=torch.float32) for t in items])
            self.ratios.append((snap.series, snap.step, snap.positions, snap.scale, norms))
        except Exception as error:
            self.errors.append(f"updates: {type(error).__name__}: {error}")

    def on_scale(self, scaler, series, skipped: bool) -> None:
        """At the end of `scaler.step(optimizer)`, before `scaler.update()`: the scale this step used. A
        skipped step is not counted in its series yet, a taken one is."""
        scale = getattr(scaler, "_scale", None)
        if isinstance(scale, torch.Tensor):
            step = series.count + (1 if skipped else 0)
            self.scales.append((series.index, step, scale.detach().clone().reshape(()), skipped))

    # -- the record ------------------------------------------------------------------------------------
    def record(self, n_layers: int) -> dict:
        """Everything read back at once (one read per kind of value), as JSON-ready lists."""
        from .tensors import number

        out: dict = {"lr": [], "loss_scale": [], "ratio": [], "ratio_every": self.ratio_every,
                     "ratio_sample": SAMPLE, "errors": list(self.errors)}
        try:
            tensors = [lr for _, _, lrs in self.lrs for lr in lrs if isinstance(lr, torch.Tensor)]
            values = iter(_read(tensors))
            for series, step, lrs in self.lrs:
                group_lrs = [next(values) if isinstance(lr, torch.Tensor) else lr for lr in lrs]
                out["lr"].append({"series": series, "step": step,
                                  "lr": [number(v) if isinstance(v, (int, float)) else None for v in group_lrs]})
            scales = _read([s for _, _, s, _ in self.scales])
            out["loss_scale"] = [{"series": series, "step": step, "scale": number(v), "skipped": skipped}
                                 for (series, step, _, skipped), v in zip(self.scales, scales)]
            for series, step, positions, factors, norms in self.ratios:
                values = norms.tolist()
                half = len(values) // 2
                delta_sq, weight_sq = [0.0] * n_layers, [0.0] * n_layers
                seen = set()
                for pos, f, d, w in zip(positions, factors, values[:half], values[half:]):
                    if pos < n_layers:
                        delta_sq[pos] += f * d * d
                        weight_sq[pos] += f * w * w
                        seen.add(pos)
                ratios = [_ratio(delta_sq[i], weight_sq[i]) if i in seen else None for i in range(n_layers)]
                out["ratio"].append({"series": series, "step": step, "ratios": ratios})
        except Exception as error:
            out["errors"].append(f"updates record: {type(error).__name__}: {error}")
        return out


def _ratio(delta_sq: float, weight_sq: float):
    from .tensors import number

    if not math.isfinite(delta_sq + weight_sq):
        return "nan"  # the update or the weights are already non-finite: a cross on the chart
    return number(math.sqrt(delta_sq / weight_sq)) if weight_sq > 0 else None


def _read(tensors: list) -> list:
    if not tensors:
        return []
    device = tensors[0].device
    return torch.stack([t.to(device=device, dtype=torch.float32).reshape(()) for t in tensors]).tolist()
