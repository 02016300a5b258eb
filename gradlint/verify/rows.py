"""A step's raw values (one vector read from the device, see `monitor._collect_values`) as a dict, and as JSON."""

from __future__ import annotations

import math

from .tensors import number


def decode(meta: tuple, values: list) -> dict:
    """A step as a dict: per-layer norms (position -> norm), total, loss, output flag, clips."""
    step, series, where, n_norms, n_fwd, n_losses, clips_meta, skipped, closure = meta
    squares: dict[int, float] = {}
    for pos, v in zip(where, values[:n_norms]):
        squares[pos] = squares.get(pos, 0.0) + v * v
    at = n_norms
    fwd, at = values[at:at + n_fwd], at + n_fwd
    losses, at = values[at:at + n_losses], at + n_losses
    clips = []
    for has_total, max_norm, has_scale, key in clips_meta:
        before = values[at] if has_total else None
        at += has_total
        scale = values[at] if has_scale else None
        at += has_scale
        clips.append({"before": before, "max_norm": max_norm, "scale": scale, "site": key})
    # A closure step evaluates the loss several times: its loss is the first evaluation's.
    loss = (losses[0] if closure else sum(losses)) if losses else None
    return {"step": step, "series": series, "norms": {pos: math.sqrt(sq) for pos, sq in squares.items()},
            "total": math.sqrt(sum(squares.values())) if squares else None, "loss": loss,
            "losses": len(losses), "fwd_nan": any(math.isnan(v) for v in fwd), "clips": clips,
            "skipped": skipped}


def json_rows(raw: list, n: int, partial_steps: set) -> list[dict]:
    """The steps for the record: per-layer norms as a list over the `n` layers, NaN/Inf as strings."""
    rows = []
    for meta, values in raw:
        row = decode(meta, values)
        out = dict(row)
        if (row["series"], row["step"]) in partial_steps and not row["norms"]:
            out["partial"] = True
        out["norms"] = [number(row["norms"][i]) if i in row["norms"] else None for i in range(n)]
        out["total"], out["loss"] = number(row["total"]), number(row["loss"])
        out["clips"] = [dict(c, before=number(c["before"]), scale=number(c["scale"])) for c in row["clips"]]
        rows.append(out)
    return rows

