"""Run one command as a whole process and measure it: wall time, CPU time, exit code and peak memory.

CPU time (user + system, of the process and every child it waited for, from ``wait4``) is steadier
than wall time on a shared machine: a busy neighbour stretches the wall clock, not the CPU a tool uses.

Memory is measured two ways, because gradlint forks worker processes and ruff runs threads in one:

- ``max_rss_mb``: ``ru_maxrss`` from ``wait4`` on the command, which Linux reports as the largest
  resident set of the process *or of any descendant it waited for* (its workers): the max of the parent
  and each child, never their sum;
- ``tree_pss_mb``: the peak of the *sum* of proportional set sizes (PSS, ``/proc/PID/smaps_rollup``) over
  the whole process tree, sampled every ``SAMPLE_S`` seconds: a page shared by n processes counts 1/n in
  each, so this is the memory the tool really holds, with forked workers' copy-on-write pages counted
  once. ``tree_rss_mb`` is the same sum over resident sets, which counts shared pages in every process
  (an upper bound). A sample can miss a peak shorter than the interval.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

SAMPLE_S = 0.02
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class Measurement:
    wall_s: float
    returncode: int
    max_rss_mb: float  # the largest single process (parent or any child), from wait4
    tree_rss_mb: Optional[float]  # the peak RSS sum over the process tree, sampled (None off Linux)
    stderr_tail: str = ""
    tree_pss_mb: Optional[float] = None  # the peak PSS sum over the process tree, sampled
    cpu_s: Optional[float] = None  # user + system CPU of the process and the children it waited for


def _children(pid: int) -> list[int]:
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as handle:
                    found.extend(int(c) for c in handle.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return found


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def tree_memory(pid: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes over `pid` and its descendants."""
    rss = pss = 0
    stack, seen = [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        rss += _rss_bytes(p)
        pss += _pss_bytes(p)
        stack.extend(_children(p))
    return rss, pss


class _Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.peak_pss = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            rss, pss = tree_memory(self.pid)
            self.peak = max(self.peak, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.stop.wait(SAMPLE_S)


def run_measured(command: Sequence[str], cwd: Path, env: Optional[dict] = None,
                 stdout_path: Optional[Path] = None, timeout: Optional[float] = None) -> Measurement:
    """Run `command` to its end (or kill it after `timeout` seconds: returncode -9)."""
    out = open(stdout_path, "wb") if stdout_path is not None else subprocess.DEVNULL
    err_path = Path(cwd) / ".bench-stderr"
    try:
        with open(err_path, "wb") as err:
            start = time.perf_counter()
            process = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=out, stderr=err,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            sampler = _Sampler(process.pid) if os.path.isdir("/proc") else None
            if sampler is not None:
                sampler.start()
            timer = None
            if timeout is not None:
                timer = threading.Timer(timeout, lambda: _kill_group(process.pid))
                timer.start()
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - start
            if timer is not None:
                timer.cancel()
            process.returncode = os.waitstatus_to_exitcode(status)
            if sampler is not None:
                sampler.stop.set()
                sampler.join()
    finally:
        if stdout_path is not None:
            out.close()
    tail = err_path.read_text(errors="replace")[-2000:]
    err_path.unlink()
    return Measurement(wall, process.returncode, usage.ru_maxrss / 1024,
                       sampler.peak / 2**20 if sampler is not None else None, tail,
                       sampler.peak_pss / 2**20 if sampler is not None and sampler.peak_pss else None,
                       usage.ru_utime + usage.ru_stime)


def _kill_group(pid: int) -> None:
    import signal

    try:
        os.killpg(pid, signal.SIGKILL)  # the group we started (start_new_session), workers included
    except OSError:
        pass


@dataclass
class Series:
    """Several runs of one tool on one corpus."""

    runs: list[Measurement] = field(default_factory=list)

    @property
    def walls(self) -> list[float]:
        return [m.wall_s for m in self.runs]

    @property
    def min(self) -> float:
        return min(self.walls)

    @property
    def median(self) -> float:
        values = sorted(self.walls)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    @property
    def cpu_min(self) -> Optional[float]:
        values = [m.cpu_s for m in self.runs if m.cpu_s is not None]
        return min(values) if values else None

    @property
    def max_rss_mb(self) -> float:
        return max(m.max_rss_mb for m in self.runs)

    @property
    def tree_rss_mb(self) -> Optional[float]:
        values = [m.tree_rss_mb for m in self.runs if m.tree_rss_mb is not None]
        return max(values) if values else None

    @property
    def tree_pss_mb(self) -> Optional[float]:
        values = [m.tree_pss_mb for m in self.runs if m.tree_pss_mb is not None]
        return max(values) if values else None
