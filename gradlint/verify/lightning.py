"""`GradlintCallback`: the verify health checks in a PyTorch Lightning `Trainer`.

    trainer = Trainer(callbacks=[GradlintCallback()])
    trainer.fit(model, loader)          # prints the checks at the end of fit
    trainer.callbacks[0].summary()      # the same as a dict

Built on the same monitor as `gradlint verify` and `gradlint.watch`. Lightning calls `training_step`
directly, not through `__call__`, so the modules it calls (`self.model(x)`) are found from the first
step's calls, as the harness finds them; the optimizers are the trainer's. Lightning steps with a
closure, so gradients are read after the step (they are the ones the update used, after Lightning's
own clipping); the non-finite replay runs from `on_before_optimizer_step`, before the update. Under a DDP
strategy every rank watches its own steps; at the end of fit their summaries are gathered once and rank 0
prints the merged view (see `gather`).
"""

from __future__ import annotations

from typing import Optional

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package
    from pytorch_lightning.callbacks import Callback

from .monitor import Thresholds
from .watch import Health


class _TrainerHealth(Health):
    def start(self) -> "Health":
        self.monitor.attach_global(self.optimizers)
        self._attach_rank_data()
        if self.pinpoint:
            from .replay import ForwardReplay

            self._replay = ForwardReplay(self.monitor)
            self._replay.attach()
        return self


class GradlintCallback(Callback):
    def __init__(self, vanishing: float = 1e-7, exploding: float = 100.0, window: int = 10, pinpoint: bool = True,
                 print_summary: bool = True):
        self.thresholds = Thresholds(vanishing=vanishing, exploding=exploding, window=window)
        self.pinpoint = pinpoint
        self.print_summary = print_summary
        self.health: Optional[Health] = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self.health = _TrainerHealth(pl_module, trainer.optimizers, self.thresholds, pinpoint=self.pinpoint).start()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        health = self.health
        replay = health._replay if health is not None else None
        if replay is None or replay.result is not None or health.monitor.first_nonfinite is not None:
            return
        if health.monitor.pending_nonfinite(optimizer):
            replay.pinpoint(health.monitor.steps + 1)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._stop()
        if self.print_summary and trainer.is_global_zero:
            print(self.health)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._stop(gather=False)

    def _stop(self, gather: bool = True) -> None:
        if self.health is not None:
            self.health.stop(gather)

    def summary(self) -> dict:
        if self.health is None:
            raise RuntimeError("GradlintCallback.summary(): the trainer has not started fitting")
        return self.health.summary()
