"""`GradlintCallback`: the verify health checks in a PyTorch Lightning `Trainer`, logged where its users look.

    from gradlint.lightning import GradlintCallback
    trainer = Trainer(callbacks=[GradlintCallback(on_nonfinite="raise")], logger=CSVLogger("logs"))
    trainer.fit(model, loader)          # prints the checks at the end of fit
    trainer.callbacks[0].summary()      # the same as a dict

What it logs, to every logger the trainer has (TensorBoard, CSV, wandb), on the steps Lightning logs
(`log_every_n_steps`) and at those steps' numbers, as Lightning's own LearningRateMonitor does:
`gradlint/grad_norm` (the
applied total), `gradlint/grad_norm/<layer>` per layer (`layers=False`: not), `gradlint/loss`,
`gradlint/nonfinite_steps` (so far); at each training epoch's end `gradlint/healthy` (1 or 0) and
`gradlint/check/<check>` (0 ok, 1 warn, 2 fail). Layers are named as `pl_module.named_modules()` names
them (`model.encoder.0`).

On the first non-finite value, before the optimizer applies it (`on_before_optimizer_step`), the step is
pinpointed: the batch's `training_step` is run again, with the same batch and RNG state, under the
op-level tracer (see `trace`), so a NaN made in `training_step` itself (a loss computed there) is found
at its line, not only one made inside the model; logging calls in the replay are silenced, buffers and
RNG put back. Then `on_nonfinite` acts: "warn" (default: a warning, training goes on), "raise" (a
`NonFiniteError` with the pinpointed line ends `Trainer.fit`, before the update) or "stop"
(`trainer.should_stop`: the fit ends after this step, as Lightning's own early stopping does).

Built on the same monitor as `gradlint verify` and `gradlint.watch`. Lightning calls `training_step`
directly, not through `__call__`, so the modules it calls (`self.model(x)`) are found from the first
step's calls, as the harness finds them; the optimizers are the trainer's. Lightning steps with a
closure, so gradients are read after the step (they are the ones the update used, after Lightning's
own clipping). Works under `fast_dev_run` (which gives the trainer no logger: the checks still run). Under a
DDP strategy every rank watches (and logs) its own steps; at the end of fit their summaries are gathered
once and rank 0 prints the merged view (see `gather`).
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package
    from pytorch_lightning.callbacks import Callback

from .checks import FAIL, OK, WARN
from .monitor import Monitor, NonFiniteError, Thresholds
from .naming import clean
from .trace import Tracer
from .watch import ACTIONS, Health, NonFiniteWarning, describe, metrics

STATUS_VALUE = {OK: 0.0, WARN: 1.0, FAIL: 2.0}


class _TrainerHealth(Health):
    def start(self) -> "Health":
        self.monitor.attach_global(self.optimizers)
        self._attach_rank_data()
        self._hook()
        return self


def _qualify(monitor: Monitor, outer) -> None:
    """Name modules and parameters as `outer` (the LightningModule) names them, whichever of its submodules
    the first step finds to be the roots: the monitor keeps names it already has (`setdefault`)."""
    for name, module in outer.named_modules():
        monitor._names.setdefault(id(module), clean(name))
    for name, param in outer.named_parameters():
        owner = clean(name.rpartition(".")[0]) or clean(name)
        monitor._param_layer.setdefault(id(param), owner)


class _Batch:
    __slots__ = ("batch", "index", "cpu_rng", "cuda_rng")

    def __init__(self, batch, index, cpu_rng, cuda_rng):
        self.batch, self.index, self.cpu_rng, self.cuda_rng = batch, index, cpu_rng, cuda_rng


class GradlintCallback(Callback):
    def __init__(self, on_nonfinite: str = "warn", log: bool = True, layers: bool = True, prefix: str = "gradlint/",
                 vanishing: float = 1e-7, exploding: float = 100.0, window: int = 10, pinpoint: bool = True,
                 print_summary: bool = True, ratio_every: int = 10):
        if on_nonfinite not in ACTIONS:
            raise ValueError(f"on_nonfinite: one of {', '.join(map(repr, ACTIONS))}, not {on_nonfinite!r}")
        self.thresholds = Thresholds(vanishing=vanishing, exploding=exploding, window=window)
        self.on_nonfinite = on_nonfinite
        self.log, self.layers, self.prefix = log, layers, prefix
        self.pinpoint = pinpoint
        self.print_summary = print_summary
        self.ratio_every = ratio_every
        self.health: Optional[Health] = None
        self.trace: Optional[dict] = None  # where the first non-finite value came from
        self._batches: list[_Batch] = []  # the batches of the step in progress (several: gradient accumulation)
        self._latest: Optional[dict] = None  # the last step's numbers, to log
        self._acted = False

    # -- fit -------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        self.health = _TrainerHealth(pl_module, trainer.optimizers, self.thresholds, pinpoint=self.pinpoint,
                                     on_nonfinite=None, on_step=self._keep, ratio_every=self.ratio_every)
        _qualify(self.health.monitor, pl_module)
        self.health.start()

    def _keep(self, stats: dict) -> None:
        self._latest = stats

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.pinpoint and not self._acted:
            cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
            self._batches.append(_Batch(batch, batch_idx, torch.get_rng_state(), cuda))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        health = self.health
        batches, self._batches = self._batches, []
        if health is None or self._acted or not health.monitor.pending_nonfinite(optimizer):
            return
        self._acted = True
        step = health.monitor.steps + 1
        if self.pinpoint:
            self.trace = self._replay_training_step(trainer, pl_module, batches, step)
            if self.trace is None and health._replay is not None:  # manual optimization, or nothing found
                health._replay.pinpoint(step)
                self.trace = health._replay.result
        first = {"step": step, "seen_in": "training step"}
        message = "gradlint: " + describe(first, self.trace)
        if self.on_nonfinite == "raise":
            raise NonFiniteError(message)
        if self.on_nonfinite == "stop":
            trainer.should_stop = True
            message += " (on_nonfinite='stop': the fit ends after this step)"
        warnings.warn(message, NonFiniteWarning, stacklevel=2)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stats, self._latest = self._latest, None
        if self.log and stats is not None and _should_log(trainer):
            _log(trainer, metrics(stats, self.prefix, self.layers))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.log or self.health is None or not self.health.monitor.steps:
            return
        checks = self.health.summary()["checks"]
        values = {f"{self.prefix}check/{c['key']}": STATUS_VALUE[c["status"]] for c in checks if c["status"] in STATUS_VALUE}
        values[f"{self.prefix}healthy"] = float(not any(c["status"] == FAIL for c in checks))
        _log(trainer, values)

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
        summary = self.health.summary()
        if self.trace is not None:
            summary["trace"] = self.trace
        return summary

    # -- the replay of `training_step` -------------------------------------------------------------------
    def _replay_training_step(self, trainer, pl_module, batches: list, step: int) -> Optional[dict]:
        """Each batch of the step again through `training_step` under the tracer, then the backward of its
        loss by `autograd.grad` (nothing accumulates in `.grad`). Not under manual optimization: there
        `training_step` steps the optimizer itself."""
        if not batches or not getattr(pl_module, "automatic_optimization", True):
            return None
        monitor = self.health.monitor
        params = [p for p in pl_module.parameters() if p.requires_grad]
        saved_cpu = torch.get_rng_state()
        saved_cuda = torch.cuda.get_rng_state() if batches[0].cuda_rng is not None else None
        buffers = [(b, b.detach().clone()) for b in pl_module.buffers()]
        silent = {name: getattr(pl_module, name) for name in ("log", "log_dict")}
        monitor.paused = True
        for name in silent:  # the replay's own self.log calls must not reach the loggers a second time
            setattr(pl_module, name, lambda *args, **kwargs: None)
        try:
            for kept in batches:
                torch.set_rng_state(kept.cpu_rng)
                if kept.cuda_rng is not None:
                    torch.cuda.set_rng_state(kept.cuda_rng)
                tracer = Tracer(monitor.name_of, step=step)
                tracer.arm()
                try:
                    with torch.enable_grad():
                        out = pl_module.training_step(kept.batch, kept.index)
                        loss = out.get("loss") if isinstance(out, dict) else out
                        if tracer.origin is None and isinstance(loss, torch.Tensor) and loss.requires_grad \
                                and bool(torch.isfinite(loss).all()):
                            torch.autograd.grad(loss, params, allow_unused=True)
                except Exception:  # the replay must never break the fit: the monitor's report stands
                    pass
                finally:
                    tracer.disarm()
                result = tracer.result()
                if result is not None:
                    return result
            return None
        finally:
            for name in silent:
                delattr(pl_module, name)
            monitor.paused = False
            for buffer, value in buffers:
                buffer.data.copy_(value)
            torch.set_rng_state(saved_cpu)
            if saved_cuda is not None:
                torch.cuda.set_rng_state(saved_cuda)


def _log(trainer, values: dict) -> None:
    """To every logger of the trainer, at the step Lightning's own metrics of this batch are logged at, as
    Lightning's LearningRateMonitor and DeviceStatsMonitor do (`self.log_dict` of 30 metrics costs some 20 ms
    a step; a logger's `log_metrics` a few microseconds)."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(loop, "_batches_that_stepped", trainer.global_step)
    for logger in trainer.loggers:
        logger.log_metrics(values, step=step)


def _should_log(trainer) -> bool:
    """Lightning's own rule (`log_every_n_steps`), as its DeviceStatsMonitor and LearningRateMonitor ask it."""
    if trainer.fast_dev_run:
        return True
    connector = getattr(trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True))


__all__ = ["GradlintCallback", "NonFiniteError", "NonFiniteWarning"]
