"""Turn a run's record into health checks: a status, a summary, details, and machine-readable data each.
Torch-free (runs in the parent).

Status: "ok", "warn" (worth a look, not a failure: no clipping, dead units), "fail" (the run is not
healthy), "n/a" (nothing to check: no ReLU for dead units, no forward for the mode checks). A run is
healthy when nothing fails.

The loss trend rule (`loss_check`): with at least 8 finite losses in a series, let E be the early level
(the smaller of the first loss and the median of the first 3: a loss that explodes at its second step is
compared with where it started), L the median of the last w = max(3, n // 4), and s the late noise
(1.4826 times the median absolute deviation of those last w). The loss diverges when L - E > max(|E|, 3 s):
the typical late loss is above the early level by more than that level itself (for a positive loss: it
more than doubled) and by more than three times its own step-to-step noise. The late median makes one
spike count for nothing. A loss that never changes (every step's equal) fails too: the parameters do not
move it.
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
    data: dict = field(default_factory=dict)  # machine-readable facts behind the summary
    code: Optional[str] = None  # a source line the summary points at

    def to_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "status": self.status, "summary": self.summary,
                "details": self.details, "data": self.data, "code": self.code}


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
    """`train.py:49`; in a notebook, `nb.ipynb, cell 3, line 2`."""
    if not site:
        return "?"
    if site.get("cell"):
        return f"{site['file']}, cell {site['cell']}, line {site['line']}"
    return f"{site['file']}:{site['line']}"


def _steps_text(n: int) -> str:
    return f"{n} step" + ("" if n == 1 else "s")


def _series(record: dict) -> list[dict]:
    return record.get("series") or []


def steps_phrase(record: dict) -> str:
    """"30 steps", "30 backward steps", "30 steps of each optimizer (netD, netG)"."""
    steps = record.get("steps", 0)
    series = _series(record)
    kinds = {s.get("kind") for s in series}
    if "backward" in kinds:
        return _steps_text(steps).replace("step", "backward step")
    if len(series) > 1:
        names = ", ".join(s["name"] for s in series)
        return f"{_steps_text(steps)} of each optimizer ({names})"
    if kinds == {"closure"}:
        return _steps_text(steps).replace("step", "closure step")
    return _steps_text(steps)


def run_check(record: dict) -> Check:
    status = record.get("status")
    steps = record.get("steps", 0)
    seconds = record.get("seconds", record.get("wall_seconds"))
    took = f" in {seconds:.1f}s" if isinstance(seconds, (int, float)) else ""
    error = record.get("error") or {}
    data = {"status": status, "steps": steps, "seconds": seconds,
            "series": [{"name": s["name"], "kind": s["kind"], "steps": s["steps"]} for s in _series(record)]}
    details = []
    if any(s.get("kind") == "backward" for s in _series(record)):
        details.append("no optimizer.step(): each backward whose gradients were then cleared counts as a step")
    if any(s.get("kind") == "closure" for s in _series(record)):
        details.append("optimizer.step(closure): one step per call, its loss the closure's first evaluation")
    if status == "stopped":
        return Check("run", "run", OK, f"{steps_phrase(record)}{took}", details, data)
    if status == "finished":
        return Check("run", "run", OK, f"script ended after {steps_phrase(record)}{took}", details, data)
    if status == "no_steps":
        return Check("run", "run", FAIL, "the script ended without a training step: no optimizer.step(), and no "
                     "backward followed by cleared gradients", ["is this a training script?"], data)
    if status == "timeout":
        return Check("run", "run", FAIL, error.get("message", "timed out"), details, data)
    if status == "crashed":
        message = f"{error.get('type', 'error')}: {error.get('message', '')}".strip()
        return Check("run", "run", FAIL, f"crashed after {steps_phrase(record)}: {message}", details, data)
    if status == "skipped":
        return Check("run", "run", NA, record.get("reason", "not run"), data=data)
    return Check("run", "run", FAIL, f"{error.get('type', 'error')}: {error.get('message', 'no result')}",
                 data=data)


def _rows(record: dict) -> list[dict]:
    return record.get("rows") or []


def nonfinite_check(record: dict) -> Check:
    rows = _rows(record)
    first = record.get("first_nonfinite")
    skipped = [r["step"] for r in rows if r.get("skipped")]
    details: list[str] = []
    code = None
    if first is None:
        data = {"first_step": None, "skipped_steps": len(skipped)}
        if rows and len(skipped) * 2 > len(rows):
            return Check("nonfinite", "non-finite values", FAIL,
                         f"GradScaler skipped {len(skipped)} of {len(rows)} steps (inf/NaN gradients every time)",
                         data=data)
        note = f"; GradScaler skipped {len(skipped)} step(s) on purpose" if skipped else ""
        if not rows:
            return Check("nonfinite", "non-finite values", NA, "no step to check", data=data)
        return Check("nonfinite", "non-finite values", OK, f"none in {_steps_text(len(rows))}{note}", data=data)
    origin = record.get("trace")
    kind = {"nan": "NaN", "inf": "Inf"}.get((origin or {}).get("kind", "nan"), "NaN")
    if origin and origin.get("phase") in ("forward", "backward"):
        module = origin.get("module")
        inside = f"in {module}" if module else "outside any module"
        if module and origin.get("module_class"):
            inside += f" ({origin['module_class']})"
        site = origin.get("site") or {}
        function = site.get("function")
        summary = (f"{kind} at step {first['step']}, {origin['phase']}: `{origin['op']}` {inside}"
                   f"{'' if module or not function else f' in {function}()'} at {where(site)}")
        code = site.get("code") or None
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
    data = {"first_step": first["step"], "seen_in": first.get("seen_in"), "nonfinite_steps": len(after),
            "origin": {k: v for k, v in (origin or {}).items() if k in ("phase", "kind", "op", "module", "site")}}
    return Check("nonfinite", "non-finite values", FAIL, summary, details, data, code)


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
    data = {"limit": limit, "median": median(totals), "max": max(totals),
            "layers": {name: {"step": step, "norm": v} for name, (step, v) in over.items()}}
    if not over:
        return Check("exploding", "exploding gradients", OK,
                     f"none above {fmt(limit)}; applied grad norm median {fmt(median(totals))}, max {fmt(max(totals))}",
                     data=data)
    worst = max(over.items(), key=lambda kv: kv[1][1])
    summary = (f"{len(over)} layer(s) above {fmt(limit)} from step {first_step}; max {fmt(worst[1][1])} "
               f"in {worst[0]} at step {worst[1][0]}")
    details = [f"{name}: {fmt(v)} at step {step}" for name, (step, v) in
               sorted(over.items(), key=lambda kv: -kv[1][1])[:5]]
    return Check("exploding", "exploding gradients", FAIL, summary, details, data)


def vanishing_check(record: dict) -> Check:
    limit = (record.get("thresholds") or {}).get("vanishing", 1e-7)
    series = {k: v for k, v in _layer_series(record).items() if v}
    if not series:
        return Check("vanishing", "vanishing gradients", NA, "no finite gradient norm")
    low = {name: median(vs) for name, vs in series.items() if sum(v < limit for v in vs) * 2 > len(vs)}
    data = {"limit": limit, "layers": low, "of": len(series)}
    if not low:
        smallest = min(series.items(), key=lambda kv: median(kv[1]))
        return Check("vanishing", "vanishing gradients", OK,
                     f"none below {fmt(limit)}; smallest median {fmt(median(smallest[1]))} ({smallest[0]})", data=data)
    details = [f"{name}: median {fmt(m)}" for name, m in sorted(low.items(), key=lambda kv: kv[1])[:5]]
    return Check("vanishing", "vanishing gradients", WARN,
                 f"{len(low)} of {len(series)} layers below {fmt(limit)} in most steps", details, data)


def gradient_flow_check(record: dict) -> Check:
    """All-zero gradients: no parameter gets any gradient, so nothing is learned however long it runs."""
    totals = [r.get("total") for r in _rows(record) if not r.get("skipped") and r.get("total") is not None]
    finite = [t for t in totals if isinstance(t, (int, float))]
    if not finite:
        return Check("gradient_flow", "gradient flow", NA, "no gradient norm")
    zero = sum(1 for t in finite if t == 0)
    data = {"steps": len(finite), "zero_steps": zero}
    if zero == len(finite):
        return Check("gradient_flow", "gradient flow", FAIL,
                     f"every gradient is exactly 0 in all {_steps_text(len(finite))}: the loss does not depend on "
                     "the parameters (a constant loss, a detached output, a one-class cross-entropy)", data=data)
    if zero * 2 > len(finite):
        return Check("gradient_flow", "gradient flow", WARN,
                     f"every gradient is exactly 0 in {zero} of {_steps_text(len(finite))}", data=data)
    return Check("gradient_flow", "gradient flow", OK,
                 f"non-zero gradients in {len(finite) - zero} of {_steps_text(len(finite))}", data=data)


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
                     f"clipped scaled gradients (scale {fmt(scale)}) in {len(scaled)} of {len(rows)} steps", details,
                     {"scaled_steps": len(scaled), "steps": len(rows), "scale": scale})
    # Counted over the steps the optimizer took: a step the GradScaler skipped was clipped too (the clip
    # comes first), but nothing was applied; counting it among the clipped steps and not among the taken
    # ones gave "clipped in 30 of 21 steps".
    skipped_note = f"; {len(rows) - len(taken)} more skipped by the GradScaler" if len(taken) < len(rows) else ""
    if not taken:
        return Check("clipping", "gradient clipping", NA, f"no step taken: the GradScaler skipped all {len(rows)}")
    clipped = [r for r in taken if r.get("clips")]
    if not clipped:
        return Check("clipping", "gradient clipping", WARN,
                     f"no clipping in {len(unclipped)} of {len(taken)} steps{skipped_note}",
                     data={"steps": len(taken), "clipped": 0, "cut": 0})
    befores = [c["before"] for r in clipped for c in r["clips"][:1] if isinstance(c.get("before"), (int, float))]
    after = [r["total"] for r in clipped if isinstance(r.get("total"), (int, float))]
    max_norm = clipped[0]["clips"][0].get("max_norm")
    kinds = {c.get("kind") for c in sites}
    cut = sum(1 for r in clipped for c in r["clips"][:1]
              if isinstance(c.get("before"), (int, float)) and max_norm is not None and c["before"] > max_norm)
    summary = f"clipped in {len(clipped)} of {len(taken)} steps (max_norm {fmt(max_norm)}, cut {cut}){skipped_note}"
    if kinds == {"value"}:  # clip_grad_value_ returns no norm: whether it cut is not known
        cut = None
        summary = f"clipped by value in {len(clipped)} of {len(taken)} steps (clip_value {fmt(max_norm)}){skipped_note}"
    details = []
    if befores and after:
        details.append(f"grad norm median {fmt(median(befores))} before, {fmt(median(after))} after")
    if sites:
        details.append(f"at {where(sites[0]['site'])}")
    status = OK if len(unclipped) == 0 else WARN
    return Check("clipping", "gradient clipping", status, summary, details,
                 {"steps": len(taken), "clipped": len(clipped), "cut": cut, "max_norm": max_norm})


def _mode_details(events: list[dict]) -> list[str]:
    details = []
    for event in events[:3]:
        site = event.get("site") or {}
        names = ", ".join(event.get("modules") or [])
        more = event.get("n_modules", 0) - len(event.get("modules") or [])
        details.append(f"at {where(site)} in {site.get('function', '?')}(), {event['count']}x: {names}"
                       + (f" +{more} more" if more > 0 else ""))
    return details


def _forwards(record: dict, kind: str) -> Optional[int]:
    forwards = record.get("forwards")
    return None if forwards is None else forwards.get(kind, 0)


def eval_mode_check(record: dict) -> Check:
    events = record.get("eval_mode") or []
    seen = _forwards(record, "no_grad")
    if not events:
        if seen == 0:
            return Check("eval_mode", "eval mode", NA, "no forward under no_grad ran (no evaluation to check)",
                         data={"forwards": 0})
        counted = f" ({seen} checked)" if seen else ""
        return Check("eval_mode", "eval mode", OK, f"no no_grad forward with dropout/BN in training mode{counted}",
                     data={"forwards": seen})
    kinds = sorted({k for e in events for k in e.get("kinds", [])})
    count = sum(e["count"] for e in events)
    first = events[0]
    return Check("eval_mode", "eval mode", FAIL,
                 f"{count} forward(s) under no_grad with {'/'.join(kinds)} in training mode, "
                 f"from {where(first.get('site'))}", _mode_details(events), {"forwards": seen, "events": count})


def train_mode_check(record: dict) -> Check:
    events = record.get("train_mode") or []
    seen = _forwards(record, "training")
    if not events:
        if seen == 0:
            return Check("train_mode", "train mode", NA, "no training forward ran", data={"forwards": 0})
        return Check("train_mode", "train mode", OK, "training forwards ran in training mode", data={"forwards": seen})
    count = sum(e["count"] for e in events)
    first = events[0]
    return Check("train_mode", "train mode", FAIL,
                 f"{count} training forward(s) in eval mode from step {first['first_step']} (train() not "
                 f"restored after evaluation), at {where(first.get('site'))}", _mode_details(events),
                 {"forwards": seen, "events": count})


def _family(row: dict) -> str:
    if "family" in row:
        return row["family"]
    return "dead" if row.get("kind") in ("dead", "relu", "gelu", "rnn_relu") else "saturated"


def _units_check(record: dict, family: str, key: str, title: str, word: str) -> Check:
    rows = [a for a in record.get("activations") or [] if _family(a) == family and "stuck" in a]
    if not rows:
        what = "ReLU/GELU" if family == "dead" else "tanh/sigmoid/LSTM/GRU"
        if _forwards(record, "training") == 0:
            return Check(key, title, NA, "no training forward ran")
        return Check(key, title, NA, f"no {what} activation ran (modules or functional calls)")
    share = (record.get("thresholds") or {}).get("dead_fraction", 0.5)
    total = sum(a["units"] for a in rows)
    stuck = sum(a["stuck"] for a in rows)
    bad = [a for a in rows if a["units"] and a["stuck"] / a["units"] >= share]
    span = f"steps {rows[0]['from_step']}-{rows[0]['to_step']}"

    def label(a):
        site = a.get("site")
        return a["layer"] + (f" at {where(site)}" if site else "")

    details = [f"{label(a)}: {a['stuck']}/{a['units']} {word}" for a in
               sorted(rows, key=lambda a: -a["stuck"] / max(a["units"], 1))[:4] if a["stuck"]]
    summary = f"{stuck} of {total} units {word} over {span} ({len(rows)} activation(s))"
    data = {"units": total, "stuck": stuck, "activations": len(rows),
            "layers": [{"layer": a["layer"], "kind": a["kind"], "units": a["units"], "stuck": a["stuck"]}
                       for a in rows if a["stuck"]]}
    if bad:
        return Check(key, title, WARN, summary + f"; {len(bad)} at {share:.0%} or more", details, data)
    return Check(key, title, OK, summary, details, data)


def evaluate(record: dict) -> list[Check]:
    checks = [run_check(record)]
    if record.get("status") in ("error", "skipped") or (record.get("status") == "timeout" and not _rows(record)):
        return checks
    checks += [
        nonfinite_check(record),
        gradient_flow_check(record),
        exploding_check(record),
        vanishing_check(record),
        clipping_check(record),
        eval_mode_check(record),
        train_mode_check(record),
        _units_check(record, "dead", "dead_units", "dead units", "dead"),
        _units_check(record, "saturated", "saturated_units", "saturated units", "saturated"),
        loss_check(record),
    ]
    return checks


def _mad(values: list[float]) -> float:
    m = median(values)
    return 1.4826 * median([abs(v - m) for v in values])


def _trend(losses: list[float]) -> dict:
    n = len(losses)
    w = max(3, n // 4)
    early, late = min(losses[0], median(losses[:3])), median(losses[-w:])
    spread = _mad(losses[-w:])
    return {"window": w, "early": early, "late": late, "noise": spread,
            "diverging": n >= 8 and late - early > max(abs(early), 3 * spread)}


def loss_check(record: dict) -> Check:
    """Per series (each optimizer's): the loss that never changes, and the loss that diverges (see the
    module's docstring for the rule)."""
    rows = [r for r in _rows(record) if not r.get("partial")]
    by_series: dict[int, list] = {}
    for r in rows:
        if r.get("loss") is not None:
            by_series.setdefault(r.get("series", 0), []).append(r)
    if not by_series:
        return Check("loss", "loss", NA, "no loss seen (no backward() on a scalar)")
    names = {s["index"]: s["name"] for s in _series(record)}
    several = len(by_series) > 1
    parts, details, data, worst = [], [], {}, OK
    for index, series_rows in sorted(by_series.items()):
        name = names.get(index, "optimizer")
        prefix = f"{name}: " if several else ""
        values = [r["loss"] for r in series_rows]
        finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        entry = {"first": values[0], "last": values[-1], "steps": len(values)}
        data[name] = entry
        if not finite:
            parts.append(f"{prefix}never finite")
            continue
        text = f"{prefix}{fmt(finite[0])} at step {series_rows[0]['step']}, {fmt(finite[-1])} at step {series_rows[-1]['step']}"
        if len(finite) >= 3 and max(finite) == min(finite):
            entry["constant"] = True
            worst = FAIL
            parts.append(f"{prefix}never changed: {fmt(finite[0])} in all {_steps_text(len(finite))}")
            details.append(f"{prefix}a loss that no step moves: the parameters do not reach it, or nothing is updated")
            continue
        trend = _trend(finite)
        entry.update(trend)
        if trend["diverging"]:
            worst = FAIL
            parts.append(f"{prefix}diverging: {text}")
            details.append(f"{prefix}median of the last {trend['window']} steps {fmt(trend['late'])} (noise "
                           f"{fmt(trend['noise'])}), early level {fmt(trend['early'])}: risen by more than the early level itself")
        else:
            parts.append(text)
            if len(finite) < 8:
                details.append(f"{prefix}{len(finite)} steps: too few to judge the trend (8 or more)")
    return Check("loss", "loss", worst, "; ".join(parts), details, data)


def healthy(checks: list[Check]) -> bool:
    return bool(checks) and not any(c.status == FAIL for c in checks)


def relative(path: str, start: Optional[str] = None) -> str:
    try:
        rel = os.path.relpath(path, start or os.getcwd())
    except ValueError:
        return path
    return path if rel.startswith(".." + os.sep + "..") else rel
