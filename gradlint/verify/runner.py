"""Start one harness run in a subprocess, show its progress, enforce the timeout, read its record. Torch-free."""

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

SPINNER = "|/-\\"


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
    module: bool = False
    sources: Optional[Path] = None  # JSON: real path -> fixed text, for the patched run


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


def _last_step(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64))
            lines = f.read().split(b"\n")
        for line in reversed(lines):
            if line.strip():
                return int(line)
    except (OSError, ValueError):
        pass
    return 0


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


def run_harness(spec: RunSpec, workdir: Path, progress: Progress) -> dict:
    """The harness's record, with `stdout`/`stderr` tails; a record with status 'error' if there is none."""
    workdir.mkdir(parents=True, exist_ok=True)
    name = spec.label.replace(" ", "-")
    record_path, progress_path = workdir / f"{name}.json", workdir / f"{name}.progress"
    out_path, err_path = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    progress_path.write_text("")
    cmd = [sys.executable, "-m", "gradlint.verify.harness", "--record", str(record_path),
           "--progress", str(progress_path), "--steps", str(spec.steps), "--device", spec.device,
           "--thresholds", json.dumps(spec.thresholds)]
    if spec.seed is not None:
        cmd += ["--seed", str(spec.seed)]
    if spec.trace_step:
        cmd += ["--trace-step", str(spec.trace_step)]
    if spec.sources is not None:
        cmd += ["--sources", str(spec.sources)]
    if spec.module:
        cmd += ["--module"]
    cmd += [str(spec.script), "--", *spec.args]
    start, start_wall = time.monotonic(), time.time()
    timed_out = False
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=spec.cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=_child_env(), start_new_session=True)
        try:
            while proc.poll() is None:
                elapsed = time.monotonic() - start
                if elapsed > spec.timeout:
                    timed_out = True
                    _stop(proc)
                    break
                progress.update(spec.label, _last_step(progress_path), spec.steps, elapsed)
                time.sleep(0.1)
        except BaseException:
            _stop(proc)
            raise
    seconds = time.monotonic() - start
    record = None
    if record_path.exists():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except ValueError:
            record = None
    if record is None:
        record = {"status": "error", "error": {
            "type": "HarnessError", "message": f"the run ended (exit status {proc.returncode}) without a record",
            "traceback": None}}
    if timed_out:
        record["status"] = "timeout"
        record["error"] = {"type": "Timeout", "traceback": None, "message":
                           f"killed after {spec.timeout:g}s at step {_last_step(progress_path)} of {spec.steps}: "
                           "the script hangs or is slower than that; raise --timeout or lower --steps"}
    record["wall_seconds"] = round(seconds, 2)
    record["stdout_tail"] = _tail(out_path)
    record["stderr_tail"] = _tail(err_path)
    record["label"] = spec.label
    record["started"], record["ended"] = start_wall, time.time()
    return record


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM first, so the harness writes its record; SIGKILL for a process stuck in C code."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
