"""Start one harness run in a subprocess (or a group of ranks under torchrun), show its progress, enforce the
timeout, end a group whose rank crashed, read the records. Torch-free.

A run writes its files in a folder of its own (see `instrument`): the harness's `main.*`, or one set per
rank (`rank0.*`, `rank1.*`) under torchrun, and one per worker the script spawned (`child<pid>.*`).
`merge.collect` makes the run's one record of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, TextIO

from .merge import collect, last_steps

SPINNER = "|/-\\"
GRACE = 3.0  # seconds a rank gets to write its record after SIGTERM, and the others after a rank crashed


@dataclass
class RunSpec:
    label: str  # "original", "patched", "original replay"
    script: str  # a path, or a module name with `module`
    cwd: Path  # the user's working directory
    args: list[str]
    steps: int
    device: str
    seed: Optional[int]
    timeout: float
    thresholds: dict
    trace_step: Optional[int] = None
    trace_rank: Optional[int] = None
    module: bool = False
    sources: Optional[Path] = None  # JSON: real path -> fixed text, for the patched run
    nproc: Optional[int] = None  # ranks per node under torchrun; None: one process
    drift_every: int = 10


class Progress:
    """One status line on a terminal (a spinner and the step count), one line per run otherwise."""

    def __init__(self, stream: TextIO, enabled: bool = True):
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self._tick = 0

    def update(self, label: str, step: int, total: int, seconds: float) -> None:
        if not self.tty:
            return
        self._tick += 1
        bar_width = 20
        done = min(bar_width, int(bar_width * step / max(total, 1)))
        bar = "#" * done + "." * (bar_width - done)
        self.stream.write(f"\r{SPINNER[self._tick % 4]} {label:<12} [{bar}] step {step}/{total}  {seconds:5.1f}s ")
        self.stream.flush()

    def done(self, label: str, summary: str, seconds: float) -> None:
        if not self.enabled:
            return
        line = f"  {label:<12} {summary} ({seconds:.1f}s)"
        if self.tty:
            self.stream.write("\r" + line + " " * 20 + "\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ written next to the user's sources
    # The child imports gradlint from wherever this process did (an editable install, a checkout); the
    # harness takes that folder off sys.path and PYTHONPATH again before the user's code runs.
    root = str(Path(__file__).resolve().parents[2])
    if "PYTHONPATH" in env:
        env["GRADLINT_USER_PYTHONPATH"] = env["PYTHONPATH"]
    env["GRADLINT_HARNESS_PATH"] = root
    env["PYTHONPATH"] = (env["PYTHONPATH"] + os.pathsep if env.get("PYTHONPATH") else "") + root
    return env


def harness_command(spec: RunSpec, run_dir: Path) -> list[str]:
    """The harness's command line; under torchrun, the launcher's with the harness as its module."""
    args = ["--run-dir", str(run_dir), "--steps", str(spec.steps), "--device", spec.device,
            "--thresholds", json.dumps(spec.thresholds), "--drift-every", str(spec.drift_every)]
    if spec.seed is not None:
        args += ["--seed", str(spec.seed)]
    if spec.trace_step:
        args += ["--trace-step", str(spec.trace_step)]
    if spec.trace_rank is not None:
        args += ["--trace-rank", str(spec.trace_rank)]
    if spec.sources is not None:
        args += ["--sources", str(spec.sources)]
    if spec.module:
        args += ["--module"]
    args += [str(spec.script), "--", *spec.args]
    if spec.nproc is None:
        return [sys.executable, "-m", "gradlint.verify.harness", *args]
    # PyTorch's own launcher, as the user runs it. `--standalone`: a rendezvous of this launch only, on a
    # port the system picks (never the port of another run, nor of the original run for the patched one).
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc-per-node", str(spec.nproc), "--max-restarts", "0", "--monitor-interval", "0.1",
            "-m", "gradlint.verify.harness", "--ranked", *args]


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _crashed_rank(run_dir: Path) -> Optional[str]:
    """A rank that wrote a record saying the script crashed (the others may be waiting for it)."""
    for path in sorted(run_dir.glob("rank*.json")):
        record = _read_json(path)
        if record is not None and record.get("status") in ("crashed", "error"):
            return path.stem
    return None


def run_harness(spec: RunSpec, workdir: Path, progress: Progress) -> dict:
    """The run's record (see `merge.collect`), with `stdout`/`stderr` tails; status 'error' if there is none."""
    name = spec.label.replace(" ", "-")
    run_dir = workdir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    launcher = "main" if spec.nproc is None else "launcher"
    out_path, err_path = run_dir / f"{launcher}.stdout", run_dir / f"{launcher}.stderr"
    start, start_wall = time.monotonic(), time.time()
    ended_by: Optional[str] = None  # "timeout", or the rank whose crash ended the group
    crash_seen: Optional[float] = None
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(harness_command(spec, run_dir), cwd=spec.cwd, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env=_child_env(), start_new_session=True)
        try:
            while proc.poll() is None:
                elapsed = time.monotonic() - start
                if elapsed > spec.timeout:
                    ended_by = "timeout"
                    _stop_group(proc, run_dir)
                    break
                if spec.nproc is not None:
                    crashed = _crashed_rank(run_dir)
                    if crashed is not None and crash_seen is None:
                        crash_seen = time.monotonic()
                    # torchrun ends the others too, but gives a rank stuck in a collective 30 s to go
                    if crash_seen is not None and time.monotonic() - crash_seen > GRACE:
                        ended_by = crashed
                        _stop_group(proc, run_dir)
                        break
                steps = last_steps(run_dir)
                shown = min(steps.values()) if spec.nproc is not None and steps else max(steps.values(), default=0)
                progress.update(spec.label, shown, spec.steps, elapsed)
                time.sleep(0.1)
        except BaseException:
            _stop_group(proc, run_dir)
            raise
    seconds = time.monotonic() - start
    record = collect(run_dir, ranked=spec.nproc is not None, steps=spec.steps, timeout=spec.timeout,
                     ended_by=ended_by, exit_status=proc.returncode)
    record["wall_seconds"] = round(seconds, 2)
    record["label"] = spec.label
    record["started"], record["ended"] = start_wall, time.time()
    return record


def _pids(run_dir: Path) -> list[int]:
    pids = []
    for path in run_dir.glob("*.pid"):
        try:
            pids.append(int(path.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def _signal_group(pid: int, sig) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _stop_group(proc: subprocess.Popen, run_dir: Path) -> None:
    """SIGTERM first, so that every process writes its record; SIGKILL for one stuck in C code (a collective
    waiting for a rank that is gone). torchrun starts each rank in a session of its own: the ranks (and the
    workers each started) are signalled by the process ids they wrote, the launcher by its own group."""
    ranks = [pid for pid in _pids(run_dir) if pid != proc.pid]
    for pid in ranks:
        _signal_group(pid, signal.SIGTERM)
    _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline and (proc.poll() is None or any(_alive(p) for p in ranks)):
        time.sleep(0.05)
    for pid in ranks:
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
