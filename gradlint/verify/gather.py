"""`gradlint.watch` and the Lightning callback under DDP: every rank's summary, gathered once at the end.

Each rank watches its own steps, as in one process; when the watch stops, every rank makes a small summary
(its own checks, evaluated where they were measured, and what the cross-rank checks compare: one number a
step for the gradients DDP syncs, the parameter checksums, the parameters without a gradient) and one
`all_gather_object` brings them to every rank. Rank 0 reports the merged view (`rankchecks`): nothing
crosses the ranks while they train. Outside a process group of several ranks nothing is gathered.
"""

from __future__ import annotations

import math
from typing import Optional

from .checks import Check, evaluate

SYNCED = "all synced layers"  # the one "layer" of a summary: the synced layers' norms in one


def _group_size() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size()
    except (ImportError, RuntimeError):
        pass
    return 1


def summary(record: dict) -> dict:
    """This rank's summary: its checks, and per step one norm of the gradients DDP syncs."""
    layers = record.get("layers") or []
    synced = set(record.get("synced_layers") or [])
    at = [i for i, name in enumerate(layers) if name in synced]
    rows = []
    for row in record.get("rows") or []:
        if row.get("partial") or row.get("skipped"):
            continue
        norms = row.get("norms") or []
        values = [norms[i] for i in at if i < len(norms) and norms[i] is not None]
        if any(isinstance(v, str) for v in values):
            total = next(v for v in values if isinstance(v, str))  # "nan" / "inf", as the record writes them
        else:
            total = math.sqrt(sum(v * v for v in values)) if values else None
        rows.append({"step": row["step"], "series": row.get("series", 0), "norms": [total]})
    return {"rank": record.get("rank"), "status": record.get("status"), "steps": record.get("steps", 0),
            "checks": [c.to_dict() for c in evaluate(record)[1:]],
            "first_nonfinite": record.get("first_nonfinite"), "rows": rows,
            "layers": [SYNCED] if at else [], "synced_layers": [SYNCED] if at else [], "synced_count": len(at),
            "synced": record.get("synced") or [], "checksums": record.get("checksums") or [],
            "never_graded": record.get("never_graded") or []}


def gather(record: dict) -> Optional[list[dict]]:
    """Every rank's summary (on every rank), or None outside a group of several ranks. A collective: every
    rank must call it, once."""
    if _group_size() < 2:
        return None
    import torch.distributed as dist

    mine = summary(record)
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return everyone


def merged(summaries: list[dict]) -> list[Check]:
    """The checks of all ranks in one view, as `gradlint verify` shows a distributed run."""
    from .merge import SEEN_ORDER
    from .rankchecks import merged_checks

    per_rank, seen = [], []
    for i, s in enumerate(summaries):
        rank = s.get("rank") if s.get("rank") is not None else i
        member = {"label": f"rank {rank}", "rank": rank, "record": s}
        per_rank.append((member, [Check(**c) for c in s["checks"]]))
        if s.get("first_nonfinite"):
            first = s["first_nonfinite"]
            seen.append((first["step"], SEEN_ORDER.get(first.get("seen_in"), 3), rank, first))
    first = None
    if seen:
        step, _, rank, found = min(seen, key=lambda x: x[:3])
        first = dict(found, rank=rank, ranks={str(r): f.get("seen_in") for st, _, r, f in seen if st == step})
    return merged_checks(per_rank, first, len(summaries))
