"""`gradlint.watch`: the verify health checks inside a user's own training loop.

    with gradlint.watch(model, optimizer, on_nonfinite="raise", on_step=log) as health:
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
    print(health)             # the checks as a table
    health.summary()          # the same as a dict: {"healthy": ..., "checks": [...], ...}

The same monitor as `gradlint verify` (one device read a step), hooked on the given model and
optimizer(s) instead of found globally. On the first non-finite step the model's forward and backward
are replayed in process under the op-level tracer (see `replay`), before the step's update is applied;
then `on_nonfinite` says what happens: "warn" (a `NonFiniteWarning`, training goes on), "raise" (a
`NonFiniteError` out of `optimizer.step()`, before the update) or "stop" (the `with` block ends there,
before the update, and the code after it runs). Both messages say where the value came from.

`on_step(stats)` is called after each step with that step's numbers (see `Health.stats`), for the
user's own logging: `writer.add_scalar("grad_norm", stats["grad_norm"], stats["step"])`, or all of
them at once with `gradlint.verify.watch.metrics(stats)`.

Under DDP (several ranks in a process group) each rank watches its own steps and, when the watch stops,
the ranks' summaries are gathered once (see `gather`): rank 0's `summary()` and report are the merged view.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Optional, Sequence

from .checks import evaluate, healthy, nonfinite_check
from .monitor import Monitor, NonFiniteError, Thresholds
from .rows import decode

ACTIONS = ("warn", "raise", "stop")


class NonFiniteWarning(RuntimeWarning):
    """The first NaN/Inf of a watched run (`on_nonfinite="warn"`)."""


class StopTraining(BaseException):
    """`on_nonfinite="stop"`: ends the `with gradlint.watch(...)` block at the first non-finite step, before its
    update (the block's `__exit__` swallows it). A BaseException: the loop's own `except Exception` lets it pass."""


def describe(first: dict, trace: Optional[dict]) -> str:
    """The first non-finite value and where it came from, in one message: "NaN at step 4, forward: `div` in
    spatial (SpatialEncoder) at model.py:20: x = x / x.norm(dim=-1, keepdim=True)"."""
    check = nonfinite_check({"first_nonfinite": first, "trace": trace, "rows": []})
    return check.summary + (f": {check.code}" if check.code else "")


def metrics(stats: dict, prefix: str = "gradlint/", layers: bool = True) -> dict[str, float]:
    """A step's `stats` as flat metric names -> floats, for a logger: `{prefix}grad_norm`, `{prefix}loss`,
    `{prefix}nonfinite_steps` (so far), and `{prefix}grad_norm/<layer>` per layer (with `layers`). With several
    optimizers the totals carry the series' name: `{prefix}grad_norm_netD`, `{prefix}loss_netD`."""
    tail = f"_{stats['series']}" if stats.get("several") else ""
    out = {f"{prefix}nonfinite_steps": float(stats["nonfinite_steps"])}
    for key in ("grad_norm", "loss"):
        if stats.get(key) is not None:
            out[f"{prefix}{key}{tail}"] = float(stats[key])
    if layers:
        for layer, value in stats["layer_grad_norms"].items():
            out[f"{prefix}grad_norm/{layer}"] = value
    return out


class Health:
    def __init__(self, model, optimizers: Sequence = (), thresholds: Optional[Thresholds] = None,
                 pinpoint: bool = True, on_nonfinite: Optional[str] = "warn",
                 on_step: Optional[Callable[[dict], None]] = None, ratio_every: int = 10):
        if on_nonfinite is not None and on_nonfinite not in ACTIONS:
            raise ValueError(f"on_nonfinite: one of {', '.join(map(repr, ACTIONS))}, not {on_nonfinite!r}")
        self.model = model
        self.optimizers = list(optimizers)
        self.monitor = Monitor(thresholds, ratio_every=ratio_every)
        self.pinpoint = pinpoint
        self.on_nonfinite = on_nonfinite  # None: the caller acts (the Lightning callback)
        self.step_callbacks: list[Callable[[dict], None]] = [on_step] if on_step is not None else []
        self.nonfinite_steps = 0
        self.stopped: Optional[str] = None  # the message, once "stop" ended the run
        self._replay = None
        self._delivered = 0  # rows handed to the step callbacks
        self._in_with = self._stopping = False
        self.rank_data = None
        self.ranks: Optional[list] = None  # every rank's summary, under DDP (see `gather`)

    def start(self) -> "Health":
        self.monitor.attach(self.model, self.optimizers)
        self._attach_rank_data()
        self._hook()
        return self

    def _hook(self) -> None:
        """The replay, the action and the step callbacks, on a monitor attached one way or another."""
        if self.pinpoint:
            from .replay import ForwardReplay

            self._replay = ForwardReplay(self.monitor)
            self._replay.attach()
        self.monitor.on_nonfinite.append(self._act)  # after the replay's: the message has the origin
        if self.step_callbacks:
            self.monitor.on_step_end.append(self._deliver)

    def _attach_rank_data(self) -> None:
        from .rankdata import RankData

        self.rank_data = RankData(self.monitor)
        self.rank_data.attach()

    def stop(self, gather: bool = True) -> None:
        """`gather=False`: no rank summaries gathered (this rank is leaving on an exception: the others,
        still training, would never meet it in the gather)."""
        self._stopping = True  # what the last flush finds is recorded, not acted on
        if self._replay is not None:
            self._replay.detach()
        if self.monitor.attached:
            self.monitor.flush()
            if self.step_callbacks:
                self._deliver(self.monitor)
            self.monitor.detach()
            self.rank_data.last_checksum()
            self.rank_data.detach()
            if gather:
                from . import gather as ranks

                self.ranks = ranks.gather(self.record())  # every rank stops: the one collective of the watch

    def __enter__(self) -> "Health":
        self._in_with = True
        return self.start()

    def __exit__(self, kind, error, tb) -> bool:
        self._in_with = False
        # "stop" ends the block on every rank at the same step (the all-reduced gradients carry the NaN to
        # each of them), so the ranks still meet in the gather; an exception leaves without it.
        self.stop(gather=kind is None or kind is StopTraining)
        return kind is StopTraining  # "stop": the block ends here, the code after it runs

    # -- the first non-finite step, and each step's numbers --------------------------------------------
    def message(self) -> str:
        first = self.monitor.first_nonfinite
        if first is None:
            return "no non-finite value"
        trace = self._replay.result if self._replay is not None else None
        return "gradlint: " + describe(first, trace)

    def _act(self, step: int) -> None:
        if self.on_nonfinite is None or self._stopping:
            return
        message = self.message()
        if self.on_nonfinite == "raise":
            raise NonFiniteError(message)
        if self.on_nonfinite == "stop":
            self.stopped = message
            if self._in_with:
                raise StopTraining(message)
            message += " (on_nonfinite='stop' ends a `with gradlint.watch(...)` block; here, check health.stopped)"
        warnings.warn(message, NonFiniteWarning, stacklevel=2)

    def stats(self, meta: tuple, values: list) -> dict:
        """One step's numbers: step, series (the optimizer's name), loss, grad_norm (the applied total),
        layer_grad_norms ({layer: norm}), skipped (by the GradScaler), nonfinite, nonfinite_steps (so far)."""
        row = decode(meta, values)
        total, loss = row["total"], row["loss"]
        nonfinite = bool(row["fwd_nan"]) or any(v is not None and not math.isfinite(v) for v in (total, loss))
        self.nonfinite_steps += nonfinite
        layers = self.monitor.layers
        monitor = self.monitor
        return {"step": row["step"], "series": monitor._series_name(row["series"]), "several": len(monitor._series) > 1,
                "loss": loss, "grad_norm": total, "layer_grad_norms": {layers[i]: v for i, v in row["norms"].items()},
                "skipped": row["skipped"], "nonfinite": nonfinite, "nonfinite_steps": self.nonfinite_steps}

    def _deliver(self, monitor: Monitor) -> None:
        rows = monitor.rows  # with `sync=False` (CUDA) a step's row arrives a few steps later: each is handed once
        while self._delivered < len(rows):
            meta, values = rows[self._delivered]
            self._delivered += 1
            stats = self.stats(meta, values)
            for callback in self.step_callbacks:
                callback(stats)

    # -- results ---------------------------------------------------------------------------------------
    def record(self) -> dict:
        record = self.monitor.record()
        record["status"] = "finished" if self.monitor.steps else "no_steps"
        record["trace"] = self._replay.result if self._replay is not None else None
        if self.rank_data is not None:
            record.update(self.rank_data.record())
        return record

    def summary(self) -> dict:
        record = self.record()
        checks = evaluate(record)[1:]  # no "run" row: the loop is the user's
        if self.ranks:
            from .gather import merged

            checks = merged(self.ranks)
        return {"healthy": healthy(checks), "steps": record["steps"], "checks": [c.to_dict() for c in checks],
                "ranks": len(self.ranks) if self.ranks else None, "rank": record.get("rank"),
                "first_nonfinite": record["first_nonfinite"], "trace": record["trace"],
                "layers": record["layers"], "grad_norms": [r["norms"] for r in record["rows"]],
                "loss": [r["loss"] for r in record["rows"]], "updates": record["updates"]}

    def report(self) -> str:
        ranks = f", {len(self.ranks)} ranks" if self.ranks else ""
        lines = [f"gradlint health: {self.monitor.steps} step(s){ranks}"]
        for check in self.summary()["checks"]:
            status = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "n/a": "n/a"}.get(check["status"], "")
            lines.append(f"  {status:<4} {check['title']:<20} {check['summary']}")
            lines += [f"       {'':<20} {d.strip()}" for d in check["details"]]
        return "\n".join(lines)

    __str__ = report


def watch(model, optimizer=None, *, on_nonfinite: str = "warn", on_step: Optional[Callable[[dict], None]] = None,
          vanishing: float = 1e-7, exploding: float = 100.0, window: int = 10, pinpoint: bool = True,
          sync: bool = True, ratio_every: int = 10) -> Health:
    """Watch `model` (a module, or a list of them) trained by `optimizer` (one, a list, or None: then no
    gradient norms, only forward and mode checks). Use as a context manager, or call `.start()`/`.stop()`.

    `on_nonfinite`: "warn" (default), "raise" or "stop" (see the module's docstring). `on_step(stats)`: called
    after each step with its numbers (`Health.stats`). `ratio_every`: the update-to-weight ratio of each layer
    is measured on one step in that many (0: never); `health.record()["updates"]` has it with the learning rate
    and the GradScaler's loss scale.

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
    health = Health(model, optimizers, thresholds, pinpoint=pinpoint and sync, on_nonfinite=on_nonfinite,
                    on_step=on_step, ratio_every=ratio_every)
    health.monitor.reads.async_read = not sync
    return health


__all__ = ["watch", "Health", "Thresholds", "NonFiniteError", "NonFiniteWarning", "StopTraining", "metrics"]
