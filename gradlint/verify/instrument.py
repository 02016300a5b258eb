"""The checks around the user's code in one process: the monitor and its step limit, the progress file, the
replay's tracer, what a rank records for the cross-rank checks, and the hooks that carry all of it into
the worker processes the script starts (see `children`).

The harness's own process, each rank torchrun starts and each worker a script spawns run one
`Instrumented`, and each writes its files in the run's folder under its own name (`who`): `main`, `rank1`,
`child1234`. `<who>.json` is the record, `<who>.progress` the step count (a line per update), `<who>.pid`
the process id (the parent ends stuck ranks by it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class Config:
    """What every instrumented process of one run shares (it travels to spawned workers in a pickle)."""

    run_dir: str
    steps: int
    thresholds: dict = field(default_factory=dict)
    seed: Optional[int] = None
    trace_step: Optional[int] = None  # a replay: arm the tracer at the start of this step
    trace_rank: Optional[int] = None  # ... on this rank only (where the non-finite value was born)
    drift_every: int = 10  # steps between two parameter checksums

    def to_dict(self) -> dict:
        return asdict(self)


def path(run_dir: str, who: str, kind: str) -> str:
    return os.path.join(run_dir, f"{who}.{kind}")


def write_json(target: str, record: dict) -> None:
    tmp = f"{target}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, default=str)
    os.replace(tmp, target)


def new_monitor(thresholds=None, progress=None, steps: Optional[int] = None):
    """The monitor as `gradlint verify` runs it, with its per-step callback: the step count to `progress`
    (a file), StopRun after `steps`. `benchmarks/verify_overhead.py` times this one. Attach it with
    `attach_global()`."""
    from .monitor import Monitor

    monitor = Monitor(thresholds, ratio_every=3)  # the report's update-to-weight ratio: 10 points in 30 steps
    monitor.reads.async_read = True  # CUDA: read each step's values once their copy is done, never stall the device
    monitor.max_steps = steps
    written = [0.0]  # when the progress file was last written

    def on_step(m: Monitor) -> None:
        # The parent reads the progress file every 0.1 s: a line every 50 ms is as good as one a step, and
        # saves a write system call on each of a fast loop's steps. `stop` writes the last count at the end.
        if progress is not None and time.monotonic() - written[0] >= 0.05:
            progress.write(f"{m.steps}\n")
            written[0] = time.monotonic()

    monitor.on_step_end.append(on_step)
    return monitor


class Instrumented:
    def __init__(self, config: Config, who: str, ranked: bool = False):
        self.config, self.who = config, who
        self.ranked = ranked  # a rank torchrun started: a script that spawns its own group is refused
        self.monitor = None
        self.rank_data = None
        self.tracer = None
        self._progress = None
        self._arm_now = False

    def start(self) -> None:
        """Before the user's code: the monitor, the tracer of a replay, the worker hooks. Torch is imported."""
        import torch

        from .monitor import Thresholds
        from .rankdata import RankData

        config = self.config
        os.makedirs(config.run_dir, exist_ok=True)
        with open(path(config.run_dir, self.who, "pid"), "w") as f:
            f.write(f"{os.getpid()}\n")
        self._progress = open(path(config.run_dir, self.who, "progress"), "a", buffering=1, encoding="utf-8")
        self.monitor = new_monitor(Thresholds(**config.thresholds), self._progress, config.steps)
        self.rank_data = RankData(self.monitor, config.drift_every, config.steps)
        self.rank_data.attach()
        if config.trace_step:
            self._prepare_tracer(torch)
        # torch warns that global hooks also fire for the OptimizedModule; the monitor expects that (the depth
        # count makes the wrapper the root), so the user need not see it.
        import warnings

        warnings.filterwarnings("ignore", message=r"Using `torch.compile\(module\)` when there are global hooks")
        self.monitor.attach_global()
        if self._arm_now:
            self._arm()
        from . import children

        children.install(self, self.ranked)

    def _prepare_tracer(self, torch) -> None:
        from .trace import Tracer

        step = self.config.trace_step
        self.tracer = Tracer(self.monitor.name_of, step=step)
        if step == 1:
            self._arm_now = True
        else:
            self.monitor.on_step_end.insert(0, lambda m: self._arm() if m.steps == step - 1 else None)
        # Replay eagerly: a compiled graph hides its ops from the tracer.
        torch.compile = lambda model=None, *a, **k: model if model is not None else (lambda m: m)

    def _arm(self) -> None:
        from .rankdata import current_rank
        from .trace import nonfinite_state

        tracer = self.tracer
        if tracer.origin is not None or tracer._armed:
            return
        rank, wanted = current_rank(), self.config.trace_rank
        if wanted is not None and rank is not None and rank != wanted:
            return  # the value was born on another rank: this one only keeps step with it
        monitor = self.monitor
        state = nonfinite_state([(r.name if i else "", r.module) for i, r in enumerate(monitor.roots)])
        if state is not None:
            state["step"] = self.config.trace_step
            tracer.origin = state
        else:
            tracer.arm()

    def stop(self, status: str) -> None:
        """After the user's code, whatever way it ended."""
        from . import children

        children.uninstall()
        if self.tracer is not None:
            self.tracer.disarm()
        self.monitor.flush(partial=status != "stopped")
        self.monitor.detach()
        self.rank_data.detach()
        if self._progress is not None:
            self._progress.write(f"{self.monitor.steps}\n")
            self._progress.close()

    def abandon(self) -> None:
        """In a forked worker: the parent's monitor, copied by the fork, is taken off (its record is the
        parent's to write)."""
        from . import children

        children.uninstall()
        if self.monitor is not None and self.monitor.attached:
            self.monitor.detach()
        if self.rank_data is not None:
            self.rank_data.detach()
        if self._progress is not None:
            self._progress = None

    def record(self, main_file: Optional[str] = None) -> dict:
        from .imports import project_files

        monitor = self.monitor
        record = monitor.record()
        if self.tracer is not None:
            record["trace"] = self.tracer.result()
        devices = sorted({str(p.device) for r in monitor.roots for p in r.module.parameters()})
        record["device"] = ", ".join(devices) if devices else None
        record["project_files"] = project_files((main_file,) if main_file else (), _generated_code_dirs())
        record.update(self.rank_data.record())
        record["who"], record["pid"] = self.who, os.getpid()
        from .imports import PatchedSources

        served = set()
        for finder in sys.meta_path:
            if isinstance(finder, PatchedSources):
                served |= finder.served
        if served:
            record["served"] = sorted(served)
        return record

    def write(self, record: dict) -> None:
        write_json(path(self.config.run_dir, self.who, "json"), record)


def _generated_code_dirs() -> tuple[str, ...]:
    """Where torch.compile wrote the Python it generated and imported (inductor's cache), if it ran."""
    utils = sys.modules.get("torch._inductor.runtime.cache_dir_utils")
    if utils is None:
        return ()
    try:
        return (utils.cache_dir(),)
    except Exception:
        return ()
