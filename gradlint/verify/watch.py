"""`gradlint.watch`: the verify health checks inside a user's own training loop.

    with gradlint.watch(model, optimizer) as health:
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
    print(health)             # the checks as a table
    health.summary()          # the same as a dict: {"healthy": ..., "checks": [...], ...}

The same monitor as `gradlint verify` (one device read a step), hooked on the given model and
optimizer(s) instead of found globally. On the first non-finite step the model's forward and backward
are replayed in process under the op-level tracer (see `replay`), before the step's update is applied.
"""

from __future__ import annotations

from typing import Optional, Sequence

from .checks import evaluate, healthy
from .monitor import Monitor, Thresholds


class Health:
    def __init__(self, model, optimizers: Sequence = (), thresholds: Optional[Thresholds] = None,
                 pinpoint: bool = True):
        self.model = model
        self.optimizers = list(optimizers)
        self.monitor = Monitor(thresholds)
        self.pinpoint = pinpoint
        self._replay = None

    def start(self) -> "Health":
        self.monitor.attach(self.model, self.optimizers)
        if self.pinpoint:
            from .replay import ForwardReplay

            self._replay = ForwardReplay(self.monitor)
            self._replay.attach()
        return self

    def stop(self) -> None:
        if self._replay is not None:
            self._replay.detach()
        if self.monitor.attached:
            self.monitor.flush()
            self.monitor.detach()

    def __enter__(self) -> "Health":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- results ---------------------------------------------------------------------------------------
    def record(self) -> dict:
        record = self.monitor.record()
        record["status"] = "finished" if self.monitor.steps else "no_steps"
        record["trace"] = self._replay.result if self._replay is not None else None
        return record

    def summary(self) -> dict:
        record = self.record()
        checks = evaluate(record)[1:]  # no "run" row: the loop is the user's
        return {"healthy": healthy(checks), "steps": record["steps"], "checks": [c.to_dict() for c in checks],
                "first_nonfinite": record["first_nonfinite"], "trace": record["trace"],
                "layers": record["layers"], "grad_norms": [r["norms"] for r in record["rows"]],
                "loss": [r["loss"] for r in record["rows"]]}

    def report(self) -> str:
        lines = [f"gradlint health: {self.monitor.steps} step(s)"]
        for check in self.summary()["checks"]:
            status = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "n/a": "n/a"}.get(check["status"], "")
            lines.append(f"  {status:<4} {check['title']:<20} {check['summary']}")
            lines += [f"       {'':<20} {d.strip()}" for d in check["details"]]
        return "\n".join(lines)

    __str__ = report


def watch(model, optimizer=None, *, vanishing: float = 1e-7, exploding: float = 100.0, window: int = 10,
          pinpoint: bool = True, sync: bool = True) -> Health:
    """Watch `model` (a module, or a list of them) trained by `optimizer` (one, a list, or None: then no
    gradient norms, only forward and mode checks). Use as a context manager, or call `.start()`/`.stop()`.

    `sync=False` (CUDA): read each step's values at the next step, as `gradlint verify` does, so the device
    never waits for the checks; a non-finite step is then seen after its update, too late to replay it,
    so `pinpoint` is off."""
    if optimizer is None:
        optimizers: Sequence = []
    elif isinstance(optimizer, (list, tuple)):
        optimizers = optimizer
    else:
        optimizers = [optimizer]
    thresholds = Thresholds(vanishing=vanishing, exploding=exploding, window=window)
    health = Health(model, optimizers, thresholds, pinpoint=pinpoint and sync)
    health.monitor.reads.async_read = not sync
    return health


__all__ = ["watch", "Health", "Thresholds"]
