"""What one process of a distributed run records for the cross-rank checks, without any collective.

Every rank writes its own record; the parent compares them afterwards (`rankchecks`), so nothing here
talks to the other ranks:
- who it is: the rank and world size of its process group (torchrun's `RANK`, or the group the script
  initialised), the backend;
- which parameters DistributedDataParallel keeps in sync (every parameter of a DDP-wrapped module that
  requires a gradient, less those DDP was told to ignore): their gradients must be equal on every rank
  after the all-reduce, and so must the parameters themselves;
- a checksum of those parameters (one `_foreach_norm` each, read back once) after step 1, every K steps
  after it and at the step limit: the per-step cost is one modulo;
- the optimizers' parameters that had no gradient at any step (`Monitor.params_never_graded`).

DDP modules are found as they are built (`DistributedDataParallel.__init__` is wrapped while the
harness runs) and among the root modules the monitor found (a module wrapped before the monitor came).
"""

from __future__ import annotations

import os
import weakref
from typing import Optional

import torch

from .naming import clean

EVERY = 10  # steps between two parameter checksums
KEPT = 64  # checksums kept at most: past that, every other one is dropped (the first and the last stay)


def current_rank() -> Optional[int]:
    """This process's global rank: its process group's, else what torchrun told it, else None."""
    group = _group()
    if group is not None:
        return group["rank"]
    rank = os.environ.get("RANK")
    return int(rank) if rank is not None and rank.isdigit() else None


def _group() -> Optional[dict]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "backend": str(dist.get_backend())}
    except (ImportError, RuntimeError, ValueError):
        pass
    return None


class _DDPTracker:
    """Weak references to every DistributedDataParallel built while the wrapper is on."""

    def __init__(self):
        self.modules: "weakref.WeakSet" = weakref.WeakSet()
        self._original = None

    def install(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        if self._original is not None:
            return
        original = self._original = DistributedDataParallel.__init__
        modules = self.modules

        def __init__(ddp, *args, **kwargs):
            original(ddp, *args, **kwargs)
            modules.add(ddp)

        __init__.__wrapped__ = original
        DistributedDataParallel.__init__ = __init__

    def uninstall(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        if self._original is not None:
            DistributedDataParallel.__init__ = self._original
            self._original = None


class RankData:
    def __init__(self, monitor, every: int = EVERY, max_steps: Optional[int] = None):
        self.monitor = monitor
        self.every = max(1, every)
        self.max_steps = max_steps
        self.group: Optional[dict] = None
        self.synced: list[tuple[str, torch.nn.Parameter]] = []  # (name, parameter) DDP keeps equal
        self.ddp: list[dict] = []
        self.checksums: list[dict] = []  # {"step", "values"}: one norm per synced parameter
        self.errors: list[str] = []
        self._tracker = _DDPTracker()
        self._identified = False

    def attach(self) -> None:
        try:
            self._tracker.install()
        except (ImportError, AttributeError):  # a torch without torch.distributed
            pass
        self.monitor.on_step_end.append(self._on_step)

    def detach(self) -> None:
        self._tracker.uninstall()
        if self._on_step in self.monitor.on_step_end:
            self.monitor.on_step_end.remove(self._on_step)

    def _on_step(self, monitor) -> None:
        steps = monitor.steps
        if not self._identified:
            self._identify()
        if self.synced and (steps == 1 or steps % self.every == 0 or steps == self.max_steps):
            if not self.checksums or self.checksums[-1]["step"] != steps:
                self._checksum(steps)

    def last_checksum(self) -> None:
        """A checksum of the parameters as the last step left them (the watch ends: `gradlint.watch`)."""
        if self.synced and self.monitor.steps and (not self.checksums or self.checksums[-1]["step"] != self.monitor.steps):
            self._checksum(self.monitor.steps)

    def _identify(self) -> None:
        """At the first step the process group and the DDP modules exist: which parameters DDP syncs."""
        self._identified = True
        try:
            self.group = _group()
            from torch.nn.parallel import DistributedDataParallel

            modules = list(self._tracker.modules)
            modules += [r.module for r in self.monitor.roots
                        if isinstance(r.module, DistributedDataParallel) and r.module not in modules]
            seen: set[int] = set()
            for ddp in modules:
                ignored = set(getattr(ddp, "parameters_to_ignore", ()) or ())
                count = 0
                for name, p in ddp.module.named_parameters():
                    if not p.requires_grad or name in ignored or id(p) in seen:
                        continue
                    seen.add(id(p))
                    self.synced.append((clean(name), p))
                    count += 1
                self.ddp.append({"class": type(ddp.module).__name__, "parameters": count,
                                 "find_unused_parameters": bool(getattr(ddp, "find_unused_parameters", False))})
        except Exception as error:  # a check must never break the user's step
            self.errors.append(f"rank data: {type(error).__name__}: {error}")

    def _checksum(self, step: int) -> None:
        try:
            params = [p.detach() for _, p in self.synced]
            norms = torch._foreach_norm(params)
            values = torch.stack([n.float().to(norms[0].device) for n in norms]).tolist()
            self.checksums.append({"step": step, "values": values})
            if len(self.checksums) > KEPT:  # a long run: memory and the summary stay bounded
                self.checksums = self.checksums[:-1:2] + self.checksums[-1:]
        except Exception as error:
            self.errors.append(f"parameter checksum at step {step}: {type(error).__name__}: {error}")
            self.synced = []

    def record(self) -> dict:
        group = self.group or _group()
        rank = group["rank"] if group else current_rank()
        env_world = os.environ.get("WORLD_SIZE")
        names = self._parameter_names()
        never = self.monitor.params_never_graded()
        return {
            "rank": rank,
            "local_rank": int(os.environ["LOCAL_RANK"]) if os.environ.get("LOCAL_RANK", "").isdigit() else None,
            "world_size": group["world_size"] if group else (int(env_world) if env_world and env_world.isdigit()
                                                             else None),
            "backend": group["backend"] if group else None,
            "ddp": self.ddp,
            "synced": [name for name, _ in self.synced],
            "synced_layers": sorted({self.monitor._param_layer.get(id(p), name) for name, p in self.synced}),
            "checksums": self.checksums,
            "never_graded": [names.get(id(p), f"param[{'x'.join(map(str, p.shape))}]") for p in never],
            "rank_errors": self.errors,
        }

    def _parameter_names(self) -> dict[int, str]:
        """id(parameter) -> its name as the user wrote the model (with the root's name when there are several)."""
        roots = self.monitor.roots
        names: dict[int, str] = {}
        for root in roots:
            prefix = root.name if len(roots) > 1 else ""
            for name, p in root.module.named_parameters():
                names.setdefault(id(p), ".".join(x for x in (prefix, clean(name)) if x))
        return names
