"""One record for one run, from the files its processes wrote (see `instrument`). Torch-free (the parent).

A run of one process is its harness's record, as it always was. A distributed run (the ranks torchrun
started, or the workers a script spawned that trained) is merged:
- the record of its lowest rank is the run's for what ranks share (layers, series, per-step rows: the
  plots); each rank's own record is kept under `ranks`, for the checks per rank (`rankchecks`);
- its status says what happened to the group: a crash of any rank is the run's crash, named after that
  rank; a timeout names the step each rank had reached (the one behind is usually the one that hangs, or
  the one the others wait for); a rank that vanished without a record (killed) is said;
- its first non-finite value is where it was born: the earliest step, and at that step the rank that saw
  it in its own model output or loss rather than in gradients the all-reduce brought it (`rank`); the replay
  pinpoints it on that rank, and the trace is that rank's;
- the project files and the files served are those of every process.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional

SEEN_ORDER = {"model output": 0, "loss": 1, "gradients": 2}  # where a value born on a rank shows first
RAN = ("stopped", "finished")


def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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


def last_steps(run_dir: Path) -> dict[str, int]:
    """The step each process of the run has reached, by its name (`main`, `rank1`, `child1234`)."""
    return {p.stem: _last_step(p) for p in run_dir.glob("*.progress")}


def tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


def _rank_of(who: str, record: Optional[dict]) -> Optional[int]:
    if record is not None and isinstance(record.get("rank"), int):
        return record["rank"]
    match = re.fullmatch(r"rank(\d+)", who)
    return int(match.group(1)) if match else None


def _member(run_dir: Path, who: str, steps_by_who: dict) -> dict:
    record = _read(run_dir / f"{who}.json")
    # the progress file is written every 50 ms at most: the record, when there is one, has the last count
    last = max(steps_by_who.get(who, 0), (record or {}).get("steps", 0))
    return {"who": who, "rank": _rank_of(who, record), "record": record, "last_step": last}


def _trained(member: dict) -> bool:
    """A worker that is one of the training processes (not a pool worker, a Manager's server, ...): it took
    steps, or it crashed as a rank of a process group."""
    record = member["record"]
    if record is None:
        return member["last_step"] > 0  # killed before it could write one, after it had trained
    return record.get("steps", 0) > 0 or (record.get("status") == "crashed" and record.get("rank") is not None)


def collect(run_dir: Path, ranked: bool, steps: int, timeout: float, ended_by: Optional[str],
            exit_status: Optional[int]) -> dict:
    """The run's record. `ended_by`: "timeout", or the rank (`rank1`) whose crash made the parent end the
    group; `exit_status`: the launcher's (the harness's, or torchrun's)."""
    steps_by_who = last_steps(run_dir)
    names = sorted({p.stem for p in run_dir.glob("*.json")} | {p.stem for p in run_dir.glob("*.pid")})
    if ranked:
        members = [_member(run_dir, who, steps_by_who) for who in names if who.startswith("rank")]
        launcher = {"record": None, "status": exit_status}
    else:
        main = _member(run_dir, "main", steps_by_who)
        workers = [m for m in (_member(run_dir, who, steps_by_who) for who in names if who.startswith("child"))
                   if _trained(m)]
        if not workers:
            return _single(run_dir, main, steps, timeout, ended_by, exit_status)
        members = ([main] if main["record"] and main["record"].get("steps", 0) > 0 else []) + workers
        launcher = {"record": main["record"], "status": exit_status}
    if not members:
        record = {"status": "error", "error": {
            "type": "HarnessError", "traceback": None,
            "message": f"torchrun ended (exit status {exit_status}) before any rank started"}}
        record["stdout_tail"] = tail(run_dir / "launcher.stdout")
        record["stderr_tail"] = tail(run_dir / "launcher.stderr")
        return record
    members.sort(key=lambda m: (m["rank"] is None, m["rank"] if m["rank"] is not None else 0, m["who"]))
    for m in members:  # a worker outside any process group is named by its process id
        if m["rank"] is not None:
            m["label"] = f"rank {m['rank']}"
        else:
            m["label"] = "the main process" if m["who"] == "main" else f"process {m['who'].replace('child', '')}"
    return _merged(run_dir, members, launcher, ranked, steps, timeout, ended_by)


def _single(run_dir: Path, main: dict, steps: int, timeout: float, ended_by: Optional[str],
            exit_status: Optional[int]) -> dict:
    record = main["record"]
    if record is None:
        record = {"status": "error", "error": {
            "type": "HarnessError", "message": f"the run ended (exit status {exit_status}) without a record",
            "traceback": None}}
    if ended_by == "timeout":
        stopped = record.get("error") or {}
        where = f" ({stopped['message']})" if stopped.get("type") == "Terminated" else ""
        record["status"] = "timeout"
        record["error"] = {"type": "Timeout", "traceback": None, "message":
                           f"killed after {timeout:g}s at step {main['last_step']} of {steps}{where}: "
                           "the script hangs or is slower than that; raise --timeout or lower --steps"}
    record["stdout_tail"] = tail(run_dir / "main.stdout")
    record["stderr_tail"] = tail(run_dir / "main.stderr")
    return record


def _status(members: list[dict], launcher: dict, ended_by: Optional[str], steps: int,
            timeout: float) -> tuple[str, Optional[dict], Optional[dict]]:
    """(the group's status, its error, the member the error is about)."""
    # The first crash is the cause: a rank whose peer died crashes too, a moment later, in its next collective.
    crashed = sorted((m for m in members if m["record"] is not None and m["record"].get("status") in ("crashed", "error")),
                     key=lambda m: m["record"].get("ended_at") or 0)
    if crashed:
        m = crashed[0]
        error = dict(m["record"].get("error") or {}, rank=m["rank"], rank_label=m["label"])
        if len(crashed) > 1:
            error["then"] = [f"{o['label']}: {(o['record'].get('error') or {}).get('type')}" for o in crashed[1:]]
        return m["record"]["status"], error, m
    if ended_by == "timeout":
        where = "; ".join(f"{m['label']} after step {m['last_step']}, {_where(m)}" for m in members)
        behind = min(members, key=lambda m: m["last_step"])
        ahead = max(members, key=lambda m: m["last_step"])
        stuck = ("" if behind["last_step"] == ahead["last_step"] else
                 f" ({behind['label']} fell behind: the others wait for it in a collective, or it waits for one "
                 "they never entered)")
        return "timeout", {"type": "Timeout", "traceback": None, "message":
                           f"killed after {timeout:g}s of {steps} steps{stuck}: {where}. The script hangs or is "
                           "slower than that: raise --timeout or lower --steps"}, behind
    for m in members:
        if m["record"] is None:
            return "crashed", {"type": "Killed", "traceback": None, "rank": m["rank"], "rank_label": m["label"],
                               "message": f"it ended at step {m['last_step']} without a record (killed by a "
                               "signal, or out of memory?)"}, m
    main = launcher.get("record")
    if main is not None and main.get("status") in ("crashed", "error", "timeout"):
        return main["status"], main.get("error"), None
    statuses = [m["record"].get("status") for m in members]
    if all(s == "no_steps" for s in statuses):
        return "no_steps", None, None
    if any(s not in RAN + ("no_steps",) for s in statuses):
        odd = next(m for m in members if m["record"].get("status") not in RAN + ("no_steps",))
        return "crashed", {"type": "Terminated", "traceback": None, "rank": odd["rank"], "rank_label": odd["label"],
                           "message": f"it was stopped from outside at step {odd['last_step']} ({_where(odd)})"}, odd
    return ("stopped" if "stopped" in statuses else "finished"), None, None


def _where(member: dict) -> str:
    """Where a stopped rank was: its line, or why it left no record."""
    record = member["record"]
    if record is None:
        return "no record: it did not answer SIGTERM, as a rank blocked in a collective does"
    error = record.get("error") or {}
    if error.get("type") == "Terminated":
        return error.get("message", "stopped")
    return record.get("status") or "?"


def _birth(members: list[dict]) -> Optional[dict]:
    """The first non-finite value of the group, on the rank where it was born."""
    seen = []
    for m in members:
        first = (m["record"] or {}).get("first_nonfinite")
        if first:
            seen.append((first["step"], SEEN_ORDER.get(first.get("seen_in"), 3), m["rank"] or 0, m, first))
    if not seen:
        return None
    step, _, _, m, first = min(seen, key=lambda s: s[:3])
    first = dict(first, rank=m["rank"], label=m["label"])
    first["ranks"] = {str(s[3]["rank"]): s[4].get("seen_in") for s in seen if s[0] == step}
    return first


def _merged(run_dir: Path, members: list[dict], launcher: dict, ranked: bool, steps: int, timeout: float,
            ended_by: Optional[str]) -> dict:
    lead = next((m for m in members if m["record"] is not None), None)
    record = dict(lead["record"]) if lead is not None else {"rows": [], "layers": [], "steps": 0}
    main = launcher.get("record") or {}
    for key in ("script", "module", "argv", "requested_steps", "seed", "device_asked", "device_resolved", "torch",
                "arguments", "main_file"):
        if key in main:
            record[key] = main[key]
    status, error, about = _status(members, launcher, ended_by, steps, timeout)
    record["status"], record["error"] = status, error
    record["steps"] = min((m["record"].get("steps", 0) for m in members if m["record"]), default=0)
    first = _birth(members)
    record["first_nonfinite"] = first
    traces = {m["rank"]: m["record"].get("trace") for m in members if m["record"] and m["record"].get("trace")}
    record["trace"] = traces.get(first["rank"]) if first is not None else None
    if record["trace"] is None and traces:  # a replay: only the rank it was born on traced
        record["trace"] = next(iter(traces.values()))
    for key in ("project_files", "served"):
        found = set(main.get(key) or ())
        for m in members:
            found |= set((m["record"] or {}).get(key) or ())
        if found or key == "project_files":
            record[key] = sorted(found)
    devices = {d.strip() for m in members for d in ((m["record"] or {}).get("device") or "").split(",") if d.strip()}
    record["device"] = ", ".join(sorted(devices)) or None
    record["ranks"] = [{"who": m["who"], "rank": m["rank"], "label": m["label"], "last_step": m["last_step"],
                        "record": m["record"]} for m in members]
    world = {(m["record"] or {}).get("world_size") for m in members} - {None}
    backends = {(m["record"] or {}).get("backend") for m in members} - {None}
    record["distributed"] = {"launcher": "torchrun" if ranked else "workers", "processes": len(members),
                             "world_size": max(world) if world else None, "backend": ", ".join(sorted(backends)) or None}
    # the output worth showing: the rank the error is about (its own files under torchrun; a spawned worker
    # writes to the harness's), else the lead rank's
    shown = about or lead or members[0]
    if ranked:
        record["stdout_tail"] = tail(run_dir / f"{shown['who']}.stdout")
        record["stderr_tail"] = tail(run_dir / f"{shown['who']}.stderr") or tail(run_dir / "launcher.stderr")
    else:
        record["stdout_tail"] = tail(run_dir / "main.stdout")
        record["stderr_tail"] = tail(run_dir / "main.stderr")
    return record


def add_trace(record: dict, replay: dict) -> None:
    """The replay's trace into the run's record, and into the record of the rank it pinpointed on."""
    record["trace"] = replay.get("trace")
    first = record.get("first_nonfinite") or {}
    for member in record.get("ranks") or []:
        if member["rank"] == first.get("rank") and member["record"] is not None:
            member["record"]["trace"] = record["trace"]
            if record.get("replay_status"):
                member["record"]["replay_status"] = record["replay_status"]
