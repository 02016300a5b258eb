"""The checks of a distributed run: every check of `checks` on each rank, merged, and the checks only several
ranks can fail. Torch-free (the parent).

Per rank, then merged: a check's status is its worst rank's; where every rank says the same, the row says
"all ranks agree"; where they differ, it names the rank it shows and lists the others (`rank_table` puts
them side by side). The first non-finite value is shown on the rank where it was born (see `merge`).

Across ranks, from the records alone (no collective ran for them):
- rank agreement: DistributedDataParallel all-reduces the gradients of the parameters it syncs, so their
  norms at each step are equal on every rank; a difference is a desync (a rank that skipped the all-reduce:
  a `no_sync` window never closed, `require_backward_grad_sync` left False; gradients changed on one rank
  after it; a rank a step ahead of the others);
- parameter drift: the same parameters, compared by checksum after step 1, every K steps and at the step
  limit; DDP made them equal when it wrapped the model, equal updates keep them so;
- unused parameters: parameters no rank gave a gradient in any step (what `find_unused_parameters=True`
  lets DDP run with).
Values are compared with a relative tolerance of `TOLERANCE` (an all-reduce gives every rank the same bits;
the margin is for reductions that are not bitwise reproducible).
"""

from __future__ import annotations

import math
import shutil
import textwrap
from typing import Optional

from .checks import FAIL, NA, OK, WARN, Check, evaluate, fmt, run_check

TOLERANCE = 1e-6
WORST = {FAIL: 3, WARN: 2, OK: 1, NA: 0}
LISTED = 6  # names listed in a summary, at most


def checks_of(record: dict) -> list[Check]:
    """The checks of a run: `checks.evaluate` for one process, merged per rank and across ranks otherwise."""
    if not record.get("ranks"):
        return evaluate(record)
    members = [m for m in record["ranks"] if m.get("record")]
    checks = [_run(record, members)]
    if record.get("status") in ("error", "skipped") or not any((m["record"].get("rows")) for m in members):
        return checks
    per_rank = [(m, evaluate(m["record"])) for m in members]
    return checks + merged_checks(per_rank, record.get("first_nonfinite"), len(record["ranks"]))


def merged_checks(per_rank: list[tuple[dict, list[Check]]], first: Optional[dict], processes: int) -> list[Check]:
    """Each check merged over the ranks (`per_rank`: a member and its own checks), then the checks across
    ranks. A member is `{"label", "rank", "record"}`; the record needs only what the cross-rank checks read
    (`rows`, `layers`, `synced`, `synced_layers`, `checksums`, `never_graded`, `steps`)."""
    by_key = [(m, {c.key: c for c in checks}) for m, checks in per_rank]
    keys = list(dict.fromkeys(k for _, found in by_key for k in found if k != "run"))
    merged = [_merge(key, by_key, first or {}, processes) for key in keys]
    trained = [m for m, _ in per_rank if m["record"].get("rows")]
    return merged + [agreement_check(trained), drift_check(trained), unused_check(trained)]


def _labels(members: list[dict]) -> str:
    labels = [m["label"] for m in members]
    if len(labels) > 1 and all(x.startswith("rank ") for x in labels):
        return "ranks " + ", ".join(x[5:] for x in labels)
    return ", ".join(labels)


def _run(record: dict, members: list[dict]) -> Check:
    check = run_check(record)
    label = (record.get("error") or {}).get("rank_label")
    if label and record.get("status") in ("crashed", "error"):
        check.summary = f"{label}: {check.summary}"
    shown = {m["label"]: (m["record"].get("status"), m["record"].get("steps", 0)) for m in members}
    dist = record.get("distributed") or {}
    backend = f", {dist['backend']}" if dist.get("backend") else ""
    launcher = "torchrun" if dist.get("launcher") == "torchrun" else "workers the script started"
    head = f"{len(record['ranks'])} processes, {launcher}" if dist.get("world_size") is None else \
        f"world size {dist['world_size']}{backend}, {launcher}"
    ran = all(status in ("stopped", "finished") for status, _ in shown.values())
    if ran and len(set(shown.values())) == 1 and len(members) == len(record["ranks"]):
        check.details.append(f"{head}: all ranks agree")
    else:
        check.details.append(head)
        for m in record["ranks"]:
            r = m.get("record")
            state = f"{r.get('status')} after {r.get('steps', 0)} steps" if r else \
                f"ended at step {m['last_step']} without a record (it did not answer SIGTERM: blocked in a collective?)"
            error = (r or {}).get("error") or {}
            if error.get("type") == "Terminated":
                state += f", {error.get('message')}"
            elif error:
                message = error.get("message") or ""
                state += f" ({error.get('type')}: {message[:60]}{'...' if len(message) > 60 else ''})"
            check.details.append(f"{m['label']}: {state}")
    check.data["ranks"] = {m["label"]: {"status": (m.get("record") or {}).get("status"), "last_step": m["last_step"]}
                           for m in record["ranks"]}
    return check


def _merge(key: str, per_rank: list[tuple[dict, dict]], first: dict, processes: int) -> Check:
    present = [(m, by_key[key]) for m, by_key in per_rank if key in by_key]
    worst = max(WORST[c.status] for _, c in present)
    groups: dict[tuple, list] = {}
    for m, c in present:
        groups.setdefault((c.status, c.summary), []).append(m)
    if len(groups) == 1:
        _, shown = present[0]
        agree = "all ranks agree" if len(present) == processes else \
            f"{_labels([m for m, _ in present])} only: the others left no record"
        return Check(key, shown.title, shown.status, shown.summary, [*shown.details, agree],
                     dict(shown.data, ranks="agree"), shown.code)
    candidates = [(m, c) for m, c in present if WORST[c.status] == worst]
    shown_member, shown = next(((m, c) for m, c in candidates if key == "nonfinite" and m["rank"] == first.get("rank")),
                               candidates[0])
    details = list(shown.details)
    if key == "nonfinite":
        details += _spread(first, present)
    for (status, summary), members in groups.items():
        if shown_member in members and len(members) == 1:
            continue
        others = [m for m in members if m is not shown_member]
        details.append(f"{_labels(others)}: {status.upper() if status in (FAIL, WARN) else status} {summary}")
    data = dict(shown.data, rank=shown_member["rank"],
                ranks={m["label"]: {"status": c.status, "summary": c.summary} for m, c in present})
    return Check(key, shown.title, shown.status, f"{shown_member['label']}: {shown.summary}", details, data,
                 shown.code)


def _spread(first: dict, present: list) -> list[str]:
    seen = first.get("ranks") or {}
    if not first or len(seen) < 2:
        return []
    others = sorted(int(r) for r, where in seen.items() if int(r) != first.get("rank") and where == "gradients")
    if not others:
        return []
    names = ", ".join(map(str, others))
    return [f"born on rank {first['rank']} (in its {first.get('seen_in')}); rank{'s' if len(others) > 1 else ''} "
            f"{names} got it from the gradient all-reduce of the same step"]


# -- across ranks ----------------------------------------------------------------------------------------

def _differ(a, b) -> bool:
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return a != b
    return abs(a - b) > TOLERANCE * max(abs(a), abs(b)) and not (math.isnan(a) and math.isnan(b))


def _pair(a, b) -> tuple[str, str]:
    """Two values that differ, with as many digits as it takes to see that they do."""
    if not all(isinstance(v, float) and math.isfinite(v) for v in (a, b)):
        return fmt(a), fmt(b)
    for digits in range(3, 13):
        x, y = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if x != y:
            return x, y
    return fmt(a), fmt(b)


def _ddp_members(members: list[dict]) -> tuple[list[dict], Optional[str]]:
    """The ranks to compare, or why there is nothing to compare."""
    if len(members) < 2:
        return [], "one process: nothing to compare"
    if not any(m["record"].get("synced") for m in members):
        return [], "no DistributedDataParallel model: nothing keeps the ranks' gradients and parameters equal"
    return members, None


def _rows_by_step(record: dict) -> dict[tuple, dict]:
    return {(r.get("series", 0), r["step"]): r for r in record.get("rows") or []
            if not r.get("partial") and not r.get("skipped")}


def agreement_check(members: list[dict]) -> Check:
    title = "rank agreement"
    members, why = _ddp_members(members)
    if why:
        return Check("rank_agreement", title, NA, why)
    lead = members[0]
    layers = lead["record"].get("synced_layers") or []
    lead_rows = _rows_by_step(lead["record"])
    differing: list[tuple] = []  # (step, layer, lead value, member, value)
    steps_compared = set()
    counts = {m["label"]: m["record"].get("steps", 0) for m in members}
    for m in members[1:]:
        index = {name: i for i, name in enumerate(m["record"].get("layers") or [])}
        lead_index = {name: i for i, name in enumerate(lead["record"].get("layers") or [])}
        rows = _rows_by_step(m["record"])
        for key in sorted(set(lead_rows) & set(rows)):
            steps_compared.add(key)
            a, b = lead_rows[key].get("norms") or [], rows[key].get("norms") or []
            for layer in layers:
                i, j = lead_index.get(layer), index.get(layer)
                va = a[i] if i is not None and i < len(a) else None
                vb = b[j] if j is not None and j < len(b) else None
                if _differ(va, vb):
                    differing.append((key[1], layer, va, m, vb))
    count = lead["record"].get("synced_count", len(layers))
    data = {"layers": count, "steps": len(steps_compared), "differing": len(differing), "steps_per_rank": counts}
    uneven = len(set(counts.values())) > 1
    if not differing and not uneven:
        return Check("rank_agreement", title, OK,
                     f"all ranks agree: the gradients DDP syncs ({count} layer(s)) have the same norm on "
                     f"{len(members)} ranks at all {len(steps_compared)} steps", data=data)
    details = []
    if uneven:
        details.append("steps per rank: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                       + ": a rank that skips an optimizer step is a step off from the others from then on")
    if not differing:
        return Check("rank_agreement", title, FAIL, "the ranks took different numbers of optimizer steps", details, data)
    step, layer, va, m, vb = differing[0]
    shown_a, shown_b = _pair(va, vb)
    steps = sorted({d[0] for d in differing})
    names = sorted({d[1] for d in differing})
    details += [f"differs at {len(steps)} of {len(steps_compared)} steps, in {len(names)} of {len(layers)} layer(s): "
                f"{', '.join(names[:LISTED])}{' ...' if len(names) > LISTED else ''}",
                "after DDP's all-reduce every rank holds the same gradients: a rank skipped it (a no_sync window "
                "never closed, require_backward_grad_sync left False), changed its gradients after it, or runs a "
                "step ahead of the others"]
    return Check("rank_agreement", title, FAIL,
                 f"ranks disagree from step {step}: {layer} gradient norm {shown_a} on {lead['label']}, {shown_b} on "
                 f"{m['label']} (a desync)", details, dict(data, first_step=step, layer=layer))


def drift_check(members: list[dict]) -> Check:
    title = "parameter drift"
    members, why = _ddp_members(members)
    if why:
        return Check("param_drift", title, NA, why)
    lead = members[0]
    names = lead["record"].get("synced") or []
    if any((m["record"].get("synced") or []) != names for m in members[1:]):
        return Check("param_drift", title, NA, "the ranks' DDP models have different parameters")
    lead_sums = {c["step"]: c["values"] for c in lead["record"].get("checksums") or []}
    compared, first = set(), None
    drifted: set[str] = set()
    for m in members[1:]:
        for c in m["record"].get("checksums") or []:
            if c["step"] not in lead_sums:
                continue
            compared.add(c["step"])
            for name, a, b in zip(names, lead_sums[c["step"]], c["values"]):
                if _differ(a, b):
                    drifted.add(name)
                    if first is None or c["step"] < first[0]:
                        first = (c["step"], name, a, m, b)
    steps = sorted(compared)
    data = {"parameters": len(names), "steps": steps, "drifted": sorted(drifted)}
    if not steps:
        return Check("param_drift", title, NA, "no step at which every rank took a checksum", data=data)
    at = ", ".join(map(str, steps[:LISTED])) + (" ..." if len(steps) > LISTED else "")
    if first is None:
        return Check("param_drift", title, OK,
                     f"all ranks agree: the {len(names)} parameter(s) DDP syncs are equal on {len(members)} ranks at "
                     f"steps {at}", data=data)
    step, name, a, m, b = first
    shown_a, shown_b = _pair(a, b)
    listed = sorted(drifted)
    return Check("param_drift", title, FAIL,
                 f"parameters differ across ranks from step {step}: {name} norm {shown_a} on {lead['label']}, {shown_b} "
                 f"on {m['label']} ({len(drifted)} of {len(names)} parameters)",
                 [", ".join(listed[:LISTED]) + (" ..." if len(listed) > LISTED else ""),
                  "DDP gives every rank rank 0's parameters when it wraps the model, and equal gradients keep them "
                  "equal: something changed one rank's (a checkpoint loaded on one rank after wrapping, an update "
                  "or an optimizer step on one rank only)"], dict(data, first_step=step))


def unused_check(members: list[dict]) -> Check:
    title = "unused parameters"
    if len(members) < 2:
        return Check("unused_params", title, NA, "one process")
    never = None
    for m in members:
        names = set(m["record"].get("never_graded") or [])
        never = names if never is None else never & names
    never = sorted(never or ())
    data = {"parameters": never}
    if not never:
        return Check("unused_params", title, OK, "every parameter the optimizers update got a gradient on some rank",
                     data=data)
    return Check("unused_params", title, WARN,
                 f"{len(never)} parameter(s) got no gradient on any rank in any step: "
                 f"{', '.join(never[:LISTED])}{' ...' if len(never) > LISTED else ''}",
                 ["never trained: dead code, a branch no rank takes, or a part that should be frozen "
                  "(requires_grad=False); find_unused_parameters=True lets DDP run without them"], data)


# -- side by side ----------------------------------------------------------------------------------------

def rank_summaries(record: dict) -> list[dict]:
    """Each rank of a run, for the JSON document: its status, steps, and its own checks."""
    out = []
    for m in record.get("ranks") or []:
        r = m.get("record")
        out.append({"rank": m["rank"], "label": m["label"], "last_step": m["last_step"],
                    "status": r.get("status") if r else None, "steps": r.get("steps", 0) if r else 0,
                    "error": r.get("error") if r else None, "world_size": r.get("world_size") if r else None,
                    "checks": [{"key": c.key, "status": c.status, "summary": c.summary} for c in evaluate(r)]
                    if r else []})
    return out


def rank_table(record: dict, width: Optional[int] = None) -> list[str]:
    """The checks on which the ranks differ, one column per rank; [] when every rank agrees."""
    width = width or min(max(shutil.get_terminal_size((120, 24)).columns, 90), 160)
    members = [m for m in record.get("ranks") or [] if m.get("record")]
    if len(members) < 2 or len(members) > 4:
        return []
    by_rank = [{c.key: c for c in evaluate(m["record"])} for m in members]
    keys = [k for k in dict.fromkeys(k for b in by_rank for k in b) if k != "run"]
    rows = []
    for key in keys:
        cells = [b.get(key) for b in by_rank]
        if len({(c.status, c.summary) if c else None for c in cells}) > 1:
            rows.append((cells[0].title if cells[0] else key, cells))
    if not rows:
        return []
    first = 20
    col = max(24, (width - first) // len(members) - 2)
    out = [f"{'check':<{first}}  " + "  ".join(f"{m['label']:<{col}}" for m in members).rstrip(),
           f"{'-' * first}  " + "  ".join("-" * col for _ in members)]

    for title, cells in rows:
        wrapped = []
        for c in cells:
            text = "-" if c is None else f"{c.status if c.status not in (FAIL, WARN) else c.status.upper()} {c.summary}"
            wrapped.append(textwrap.wrap(text, col) or [""])
        for i in range(max(len(w) for w in wrapped)):
            line = "  ".join(f"{(w[i] if i < len(w) else ''):<{col}}" for w in wrapped)
            out.append(f"{title if i == 0 else '':<{first}}  {line}".rstrip())
    return out
