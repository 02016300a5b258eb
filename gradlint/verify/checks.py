"""Turn a run's record into health checks: a status and a few lines each. Torch-free (runs in the parent).

Status: "ok", "warn" (worth a look, not a failure: no clipping, dead units), "fail" (the run is not
healthy), "n/a" (nothing to check: no ReLU for dead units). A run is healthy when nothing fails.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from statistics import median
from typing import Optional

OK, WARN, FAIL, NA = "ok", "warn", "fail", "n/a"


@dataclass
class Check:
    key: str
    title: str
    status: str
    summary: str
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "status": self.status, "summary": self.summary,
                "details": self.details}


def value(x) -> float:
    """A record number back to a float ("nan", "inf" strings included); None stays None."""
    if x is None:
        return math.nan
    return float(x)


def fmt(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.3g}"
    return f"{x:.2e}"


def where(site: Optional[dict]) -> str:
    if not site:
        return "?"
    return f"{site['file']}:{site['line']}"


def _steps_text(n: int) -> str:
    return f"{n} step" + ("" if n == 1 else "s")


def run_check(record: dict) -> Check:
    status = record.get("status")
    steps = record.get("steps", 0)
    seconds = record.get("seconds", record.get("wall_seconds"))
    took = f" in {seconds:.1f}s" if isinstance(seconds, (int, float)) else ""
    error = record.get("error") or {}
    if status == "stopped":
        return Check("run", "run", OK, f"{_steps_text(steps)}{took}")
    if status == "finished":
        return Check("run", "run", OK, f"script ended after {_steps_text(steps)}{took}")
    if status == "no_steps":
        return Check("run", "run", FAIL, "the script ended without an optimizer step: nothing was trained",
                     ["is this a training script? verify counts `optimizer.step()` calls"])
    if status == "timeout":
        return Check("run", "run", FAIL, error.get("message", "timed out"))
    if status == "crashed":
        message = f"{error.get('type', 'error')}: {error.get('message', '')}".strip()
        return Check("run", "run", FAIL, f"crashed after {_steps_text(steps)}: {message}")
    if status == "skipped":
        return Check("run", "run", NA, record.get("reason", "not run"))
    return Check("run", "run", FAIL, f"{error.get('type', 'error')}: {error.get('message', 'no result')}")


def _rows(record: dict) -> list[dict]:
    return record.get("rows") or []


def nonfinite_check(record: dict) -> Check:
    rows = _rows(record)
    first = record.get("first_nonfinite")
    skipped = [r["step"] for r in rows if r.get("skipped")]
    details: list[str] = []
    if first is None:
        if rows and len(skipped) * 2 > len(rows):
            return Check("nonfinite", "non-finite values", FAIL,
                         f"GradScaler skipped {len(skipped)} of {len(rows)} steps (inf/NaN gradients every time)")
        note = f"; GradScaler skipped {len(skipped)} step(s) on purpose" if skipped else ""
        if not rows:
            return Check("nonfinite", "non-finite values", NA, "no step to check")
        return Check("nonfinite", "non-finite values", OK, f"none in {_steps_text(len(rows))}{note}")
    origin = record.get("trace")
    kind = (origin or {}).get("kind", "nan").upper().replace("NAN", "NaN")
    if origin and origin.get("phase") in ("forward", "backward"):
        module = origin.get("module")
        inside = f"in {module}" if module else "outside any module"
        if module and origin.get("module_class"):
            inside += f" ({origin['module_class']})"
        site = origin.get("site") or {}
        function = site.get("function")
        summary = (f"{kind} at step {first['step']}, {origin['phase']}: `{origin['op']}` {inside}"
                   f"{'' if module or not function else f' in {function}()'} at {where(site)}")
        if site.get("code"):
            details.append(f"  {site['code']}")
        if origin.get("note"):
            details.append(origin["note"])
    elif origin and origin.get("phase") in ("before the model", "after the model"):
        summary = f"{kind} at step {first['step']}, {origin['phase']}: {origin['note']}"
    elif origin and origin.get("phase") == "optimizer":
        names = ", ".join(origin.get("parameters", []))
        summary = f"NaN at step {first['step']}: parameters already non-finite ({names})"
        details.append(origin.get("note", ""))
    else:
        summary = f"NaN/Inf at step {first['step']}, first seen in the {first['seen_in']}"
        replay = record.get("replay_status")
        if replay:
            details.append(replay)
    if first.get("seen_in") and origin and origin.get("phase") in ("forward", "backward", "optimizer"):
        details.append(f"first seen in the {first['seen_in']}")
    after = [r for r in rows if r["step"] >= first["step"] and _nonfinite_row(r)]
    if after:
        hidden = sum(1 for r in after if r.get("skipped"))
        details.append(f"{len(after)} of {len(rows)} steps non-finite"
                       + (f"; the GradScaler skipped {hidden} of them without a word" if hidden else ""))
    return Check("nonfinite", "non-finite values", FAIL, summary, details)


def _nonfinite_row(row: dict) -> bool:
    return row.get("fwd_nan") or isinstance(row.get("total"), str) or isinstance(row.get("loss"), str)


def _layer_series(record: dict) -> dict[str, list[float]]:
    layers = record.get("layers") or []
    series: dict[str, list[float]] = {name: [] for name in layers}
    for row in _rows(record):
        for name, v in zip(layers, row.get("norms") or []):
            if v is not None and not isinstance(v, str):
                series[name].append(v)
    return series


def exploding_check(record: dict) -> Check:
    limit = (record.get("thresholds") or {}).get("exploding", 100.0)
    layers = record.get("layers") or []
    over: dict[str, tuple[int, float]] = {}
    first_step = None
    for row in _rows(record):
        for name, v in zip(layers, row.get("norms") or []):
            if v is None or isinstance(v, str) or v <= limit:
                continue
            if first_step is None:
                first_step = row["step"]
            if name not in over or v > over[name][1]:
                over[name] = (row["step"], v)
    totals = [r["total"] for r in _rows(record) if isinstance(r.get("total"), (int, float))]
    if not totals:
        return Check("exploding", "exploding gradients", NA, "no finite gradient norm")
    if not over:
        return Check("exploding", "exploding gradients", OK,
                     f"none above {fmt(limit)}; applied grad norm median {fmt(median(totals))}, max {fmt(max(totals))}")
    worst = max(over.items(), key=lambda kv: kv[1][1])
    summary = (f"{len(over)} layer(s) above {fmt(limit)} from step {first_step}; max {fmt(worst[1][1])} "
               f"in {worst[0]} at step {worst[1][0]}")
    details = [f"{name}: {fmt(v)} at step {step}" for name, (step, v) in
               sorted(over.items(), key=lambda kv: -kv[1][1])[:5]]
    return Check("exploding", "exploding gradients", FAIL, summary, details)


def vanishing_check(record: dict) -> Check:
    limit = (record.get("thresholds") or {}).get("vanishing", 1e-7)
    series = {k: v for k, v in _layer_series(record).items() if v}
    if not series:
        return Check("vanishing", "vanishing gradients", NA, "no finite gradient norm")
    low = {name: median(vs) for name, vs in series.items() if sum(v < limit for v in vs) * 2 > len(vs)}
    if not low:
        smallest = min(series.items(), key=lambda kv: median(kv[1]))
        return Check("vanishing", "vanishing gradients", OK,
                     f"none below {fmt(limit)}; smallest median {fmt(median(smallest[1]))} ({smallest[0]})")
    details = [f"{name}: median {fmt(m)}" for name, m in sorted(low.items(), key=lambda kv: kv[1])[:5]]
    return Check("vanishing", "vanishing gradients", WARN,
                 f"{len(low)} of {len(series)} layers below {fmt(limit)} in most steps", details)


def clipping_check(record: dict) -> Check:
    rows = [r for r in _rows(record) if not r.get("partial")]
    if not rows:
        return Check("clipping", "gradient clipping", NA, "no step")
    clipped = [r for r in rows if r.get("clips")]
    scaled = [r for r in clipped if any(c.get("scale") is not None for c in r["clips"])]
    taken = [r for r in rows if not r.get("skipped")]
    unclipped = [r for r in taken if not r.get("clips")]
    sites = record.get("clip_sites") or []
    if scaled:
        scale = next(c["scale"] for c in scaled[0]["clips"] if c.get("scale") is not None)
        site = next((s["site"] for s in sites if s.get("scaled")), None)
        details = [f"at {where(site)}: call scaler.unscale_(optimizer) before clipping"]
        for r in scaled:
            c = next(c for c in r["clips"] if c.get("scale") is not None)
            if isinstance(c.get("before"), (int, float)) and isinstance(c.get("scale"), (int, float)) \
                    and isinstance(r.get("total"), (int, float)) and c["scale"]:
                details.append(f"step {r['step']}: the clip saw {fmt(c['before'])} (scaled x{fmt(c['scale'])}); "
                               f"true norm {fmt(c['before'] / c['scale'])}, applied {fmt(r['total'])}")
                break
        return Check("clipping", "gradient clipping", FAIL,
                     f"clipped scaled gradients (scale {fmt(scale)}) in {len(scaled)} of {len(rows)} steps", details)
    # Counted over the steps the optimizer took: a step the GradScaler skipped was clipped too (the clip
    # comes first), but nothing was applied; counting it among the clipped steps and not among the taken
    # ones gave "clipped in 30 of 21 steps".
    skipped_note = f"; {len(rows) - len(taken)} more skipped by the GradScaler" if len(taken) < len(rows) else ""
    if not taken:
        return Check("clipping", "gradient clipping", NA, f"no step taken: the GradScaler skipped all {len(rows)}")
    clipped = [r for r in taken if r.get("clips")]
    if not clipped:
        return Check("clipping", "gradient clipping", WARN,
                     f"no clipping in {len(unclipped)} of {len(taken)} steps{skipped_note}")
    befores = [c["before"] for r in clipped for c in r["clips"][:1] if isinstance(c.get("before"), (int, float))]
    after = [r["total"] for r in clipped if isinstance(r.get("total"), (int, float))]
    max_norm = clipped[0]["clips"][0].get("max_norm")
    cut = sum(1 for r in clipped for c in r["clips"][:1]
              if isinstance(c.get("before"), (int, float)) and max_norm is not None and c["before"] > max_norm)
    summary = f"clipped in {len(clipped)} of {len(taken)} steps (max_norm {fmt(max_norm)}, cut {cut}){skipped_note}"
    details = []
    if befores and after:
        details.append(f"grad norm median {fmt(median(befores))} before, {fmt(median(after))} after")
    if sites:
        details.append(f"at {where(sites[0]['site'])}")
    status = OK if len(unclipped) == 0 else WARN
    return Check("clipping", "gradient clipping", status, summary, details)


def _mode_details(events: list[dict]) -> list[str]:
    details = []
    for event in events[:3]:
        site = event.get("site") or {}
        names = ", ".join(event.get("modules") or [])
        more = event.get("n_modules", 0) - len(event.get("modules") or [])
        details.append(f"at {where(site)} in {site.get('function', '?')}(), {event['count']}x: {names}"
                       + (f" +{more} more" if more > 0 else ""))
    return details


def eval_mode_check(record: dict) -> Check:
    events = record.get("eval_mode") or []
    if not events:
        return Check("eval_mode", "eval mode", OK, "no no_grad forward with dropout/BN in training mode")
    kinds = sorted({k for e in events for k in e.get("kinds", [])})
    count = sum(e["count"] for e in events)
    first = events[0]
    return Check("eval_mode", "eval mode", FAIL,
                 f"{count} forward(s) under no_grad with {'/'.join(kinds)} in training mode, "
                 f"from {where(first.get('site'))}", _mode_details(events))


def train_mode_check(record: dict) -> Check:
    events = record.get("train_mode") or []
    if not events:
        return Check("train_mode", "train mode", OK, "training forwards ran in training mode")
    count = sum(e["count"] for e in events)
    first = events[0]
    return Check("train_mode", "train mode", FAIL,
                 f"{count} training forward(s) in eval mode from step {first['first_step']} (train() not "
                 f"restored after evaluation), at {where(first.get('site'))}", _mode_details(events))


def _units_check(record: dict, kinds: tuple[str, ...], key: str, title: str, word: str) -> Check:
    rows = [a for a in record.get("activations") or [] if a["kind"] in kinds and "stuck" in a]
    if not rows:
        return Check(key, title, NA, "no " + ("ReLU" if key == "dead_units" else "tanh/sigmoid") + " modules")
    share = (record.get("thresholds") or {}).get("dead_fraction", 0.5)
    total = sum(a["units"] for a in rows)
    stuck = sum(a["stuck"] for a in rows)
    bad = [a for a in rows if a["units"] and a["stuck"] / a["units"] >= share]
    span = f"steps {rows[0]['from_step']}-{rows[0]['to_step']}"
    details = [f"{a['layer']}: {a['stuck']}/{a['units']} {word}" for a in
               sorted(rows, key=lambda a: -a["stuck"] / max(a["units"], 1))[:4] if a["stuck"]]
    summary = f"{stuck} of {total} units {word} over {span}"
    if bad:
        return Check(key, title, WARN, summary + f"; {len(bad)} layer(s) at {share:.0%} or more", details)
    return Check(key, title, OK, summary, details)


def evaluate(record: dict) -> list[Check]:
    checks = [run_check(record)]
    if record.get("status") in ("error", "skipped") or (record.get("status") == "timeout" and not _rows(record)):
        return checks
    checks += [
        nonfinite_check(record),
        exploding_check(record),
        vanishing_check(record),
        clipping_check(record),
        eval_mode_check(record),
        train_mode_check(record),
        _units_check(record, ("dead",), "dead_units", "dead units", "dead"),
        _units_check(record, ("tanh", "sigmoid"), "saturated_units", "saturated units", "saturated"),
        loss_check(record),
    ]
    return checks


def loss_check(record: dict) -> Check:
    losses = [r.get("loss") for r in _rows(record) if r.get("loss") is not None]
    if not losses:
        return Check("loss", "loss", NA, "no loss seen (no backward() on a scalar)")
    first, last = losses[0], losses[-1]
    return Check("loss", "loss", "info", f"{fmt(first)} at step 1, {fmt(last)} at step {len(losses)}")


def healthy(checks: list[Check]) -> bool:
    return bool(checks) and not any(c.status == FAIL for c in checks)


def relative(path: str, start: Optional[str] = None) -> str:
    try:
        rel = os.path.relpath(path, start or os.getcwd())
    except ValueError:
        return path
    return path if rel.startswith(".." + os.sep + "..") else rel
