"""The `--report` page: one self-contained HTML file (inline CSS and SVG, no script, no external asset).

What a person wants to look at, in order: who made it and how (gradlint version, command line, seed,
date), the verdict, the checks side by side (and a distributed run's ranks side by side where they
differ), where the first NaN/Inf came from (the code around it, the
calls that led there from the training loop, the tensors' facts, the rule that would have caught it),
then the charts TensorBoard and wandb users look at first: loss, gradient norm, learning rate, the
GradScaler's loss scale, per-layer gradient norms (a heat map, and lines of the top layers by norm), the
update-to-weight ratio per layer; original and patched on the same y-range; then the patch as a diff.
The charts are drawn by `charts`. Torch-free.
"""

from __future__ import annotations

import math
import re
import shlex
from html import escape
from typing import Optional

from .charts import Series, figure, finite, heatmap, heatmap_width, line_chart, num, palette, value_range
from .checks import FAIL, NA, OK, WARN, fmt, where

COLORS = {"original": "#d9480f", "patched": "#1971c2"}
WIDTH = {"original": 3.0, "patched": 1.6}  # where both runs draw the same line, the original shows around it
STATUS_CLASS = {OK: "ok", WARN: "warn", FAIL: "fail", NA: "na", "info": "info"}
KINDS = {"nan": "NaN", "inf": "Inf"}
TOP_LAYERS = 8  # per-layer lines: the layers with the largest gradient norms; all of them one click away

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#212529;padding:0 16px}
h1{font-size:20px;margin:0 0 4px;overflow-wrap:anywhere}h2{font-size:16px;margin:28px 0 8px;
border-bottom:1px solid #dee2e6;padding-bottom:4px}
.meta{color:#495057}.meta span{margin-right:14px;white-space:nowrap}
pre.cmd{margin:6px 0;white-space:pre-wrap;overflow-wrap:anywhere}
.banner{padding:10px 14px;border-radius:6px;margin:14px 0;font-weight:600}
.banner.good{background:#d3f9d8;color:#2b8a3e}.banner.bad{background:#ffe3e3;color:#c92a2a}
.banner.none{background:#fff3bf;color:#8f5b00}
table{border-collapse:collapse}table.checks{width:100%;table-layout:fixed}
table.checks td,table.checks th{vertical-align:top;padding:6px 8px;border-bottom:1px solid #e9ecef;text-align:left;
overflow-wrap:anywhere}table.checks th{background:#f8f9fa}table.checks col.name{width:150px}
.badge{display:inline-block;min-width:38px;text-align:center;border-radius:4px;padding:0 4px;margin-right:6px;
font-size:12px;font-weight:700}.badge.ok{background:#d3f9d8;color:#2b8a3e}.badge.warn{background:#fff3bf;
color:#8f5b00}.badge.fail{background:#ffe3e3;color:#c92a2a}.badge.na,.badge.info{background:#f1f3f5;color:#868e96}
.detail{color:#495057;font-size:12.5px;margin-left:50px}
code,pre{font:12.5px/1.4 ui-monospace,Menlo,Consolas,monospace}code{background:#f1f3f5;padding:0 3px;
border-radius:3px}pre code{background:none;padding:0}
pre{background:#f8f9fa;padding:10px;border-radius:6px;overflow:auto}
.add{color:#2b8a3e}.del{color:#c92a2a}.hunk{color:#5f3dc4}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:16px}
.stack{display:grid;grid-template-columns:1fr;gap:16px}
figure.chart{margin:0;min-width:0}figure.chart figcaption{font-weight:600;font-size:13px;margin-bottom:2px}
figure.chart>svg{display:block}
.legend{font-size:12px;color:#495057;margin-top:4px}.legend .item{display:inline-block;margin:0 14px 2px 0;
max-width:100%;overflow-wrap:anywhere}.legend .swatch{vertical-align:middle;margin-right:4px}.legend .sym{font-weight:700;
margin-right:4px}.legend .box{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:4px;
box-sizing:border-box}
svg text{font:11px system-ui,sans-serif;fill:#495057}svg text.axis-label{fill:#212529;font-weight:600}
.empty{color:#868e96;padding:12px 0}.explain{color:#495057;margin:4px 0 8px}
.origin{border-left:4px solid #c92a2a;background:#fff5f5;padding:8px 12px;border-radius:4px;margin:10px 0}
.origin h3{font-size:14px;margin:0 0 6px}.origin pre{background:#fff;margin:6px 0}
.origin .here{background:#ffe3e3;display:inline-block;width:100%}.origin .num{color:#868e96}
.origin ol{margin:4px 0;padding-left:22px}.origin table td,.origin table th{padding:2px 10px 2px 0;text-align:left}
.origin .label{font-weight:600;margin-top:8px}.ranks-run{font-weight:600;margin:10px 0 4px}
details summary{cursor:pointer}
"""


def rich(text) -> str:
    """Escaped text in which `backticks` become code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(str(text)))


# -- the header, the verdict, the checks ---------------------------------------------------------------

def _header(result: dict) -> str:
    device = result["device"]
    used = device.get("used") or device.get("resolved") or device.get("asked")
    target = f"-m {result['module']}" if result.get("module") else result.get("path")
    if result.get("nproc_per_node"):
        target = f"--nproc-per-node {result['nproc_per_node']} {target}"
    meta = [("gradlint", result.get("gradlint")), ("torch", result.get("torch")), ("device", used),
            ("ranks", _group(result["original"].get("distributed"))),
            ("steps", result.get("steps")), ("seed", result.get("seed")), ("date", result.get("date"))]
    spans = "".join(f"<span>{name} <b>{escape(str(value))}</b></span>" for name, value in meta if value is not None)
    command = result.get("command")
    line = shlex.join(command) if command else f"gradlint verify {target}"
    script = f"<span>script <code>{escape(result['script'])}</code></span>" if result.get("script") else ""
    note = f"<div class='meta'>{rich(device['note'])}</div>" if device.get("note") else ""
    return (f"<h1>gradlint verify <code>{escape(str(target))}</code></h1><div class='meta'>{script}{spans}</div>"
            f"<pre class='cmd'>$ {escape(line)}</pre>{note}")


def _banner(result: dict) -> str:
    code = result["exit_code"]
    cls = "good" if code == 0 else ("bad" if code == 1 else "none")
    return f"<div class='banner {cls}'>{'<br>'.join(rich(v) for v in result['verdict']['lines'])}</div>"


def _check_cell(check: Optional[dict]) -> str:
    if not check:
        return "<td>-</td>"
    cls = STATUS_CLASS.get(check["status"], "na")
    label = {"info": ""}.get(check["status"], check["status"])
    details = "".join(f'<div class="detail">{rich(d)}</div>' for d in check["details"])
    if check.get("code"):
        details = f'<div class="detail"><code>{escape(check["code"])}</code></div>' + details
    return f'<td><span class="badge {cls}">{escape(label)}</span>{rich(check["summary"])}{details}</td>'


def _checks(runs) -> str:
    by_key = [{c["key"]: c for c in run["checks"]} for _, run in runs]
    keys = list(dict.fromkeys(c["key"] for _, run in runs for c in run["checks"]))
    titles = {c["key"]: c["title"] for _, run in runs for c in run["checks"]}
    rows = "".join(f"<tr><td>{escape(titles[k])}</td>{_check_cell(by_key[0].get(k))}{_check_cell(by_key[1].get(k))}"
                   "</tr>" for k in keys)
    return ("<h2>Health checks</h2><table class='checks'><colgroup><col class='name'><col><col></colgroup>"
            f"<tr><th>check</th><th>original</th><th>patched</th></tr>{rows}</table>")


# -- the ranks of a distributed run ---------------------------------------------------------------------

RANK_COLUMNS = 8  # past that many ranks, the merged checks (and the JSON) say which rank differs


def _group(distributed: Optional[dict]) -> Optional[str]:
    """"2 (gloo, torchrun)": the processes of a distributed run, how they talk and who started them."""
    if not distributed:
        return None
    how = [distributed.get("backend"), {"workers": "workers the script started"}.get(distributed["launcher"],
                                                                                  distributed["launcher"])]
    size = distributed.get("world_size") or distributed.get("processes")
    return f"{size} ({', '.join(h for h in how if h)})"


def _ranks(runs) -> str:
    """Each distributed run's ranks side by side on the checks where they differ (the merged table above
    shows the worst rank's); which rank the charts are drawn from."""
    parts = []
    for name, run in runs:
        ranks = [r for r in run.get("ranks") or [] if r.get("checks")]
        if len(ranks) < 2:
            continue
        titles = {c["key"]: c["title"] for c in run["checks"]}
        by_rank = [{c["key"]: c for c in r["checks"]} for r in ranks]
        keys = [k for k in dict.fromkeys(k for b in by_rank for k in b) if k != "run"]
        differ = [k for k in keys if len({(b[k]["status"], b[k]["summary"]) if k in b else None for b in by_rank}) > 1]
        parts.append(f"<div class='ranks-run'>{name} run: {len(ranks)} ranks; the charts show {escape(ranks[0]['label'])}'s "
                     "steps</div>")
        if not differ:
            parts.append("<div class='explain'>all ranks agree on every check</div>")
            continue
        if len(ranks) > RANK_COLUMNS:
            parts.append("<div class='explain'>the ranks differ on: " + ", ".join(escape(titles.get(k, k)) for k in differ)
                         + " (see the checks above)</div>")
            continue
        head = "".join(f"<th>{escape(r['label'])}</th>" for r in ranks)
        rows = "".join(f"<tr><td>{escape(titles.get(k, k))}</td>"
                       + "".join(_check_cell(dict(b[k], details=[])) if k in b else "<td>-</td>" for b in by_rank)
                       + "</tr>" for k in differ)
        parts.append(f"<table class='checks' data-run='{name}'><colgroup><col class='name'>"
                     f"{'<col>' * len(ranks)}</colgroup><tr><th>check</th>{head}</tr>{rows}</table>")
    if not parts:
        return ""
    return ("<h2>Ranks side by side</h2><div class='explain'>the checks on which the ranks differ (all ranks agree "
            "on the others)</div>" + "".join(parts))


# -- where the first non-finite value came from --------------------------------------------------------

def _where(site: dict) -> str:
    return f"<code>{escape(where(site))}</code> in <code>{escape(str(site.get('function')))}()</code>"


def _context(site: dict) -> str:
    lines = site.get("context") or ([{"line": site.get("line"), "code": site.get("code", "")}] if site.get("code") else [])
    if not lines:
        return ""
    width = len(str(lines[-1]["line"]))
    out = []
    for entry in lines:
        text = f'<span class="num">{entry["line"]:>{width}}</span>  {escape(entry["code"])}'
        out.append(f'<span class="here">{text}</span>' if entry["line"] == site.get("line") else text)
    return f"<pre class='context'><code>{chr(10).join(out)}</code></pre>"


def _tensors(tensors: list) -> str:
    if not tensors:
        return ""
    rows = "".join(f"<tr><td>{escape(t['role'])}</td><td><code>{escape('x'.join(map(str, t['shape'])) or 'scalar')}"
                   f"</code></td><td>{escape(t['dtype'])}</td><td>{t['rows']}</td><td>{t['zero_rows']}</td>"
                   f"<td>{t['nonfinite_rows']}</td></tr>" for t in tensors)
    return ("<div class='label'>the tensors</div><table class='tensors'><tr><th>tensor</th><th>shape</th><th>dtype</th>"
            "<th>rows (last dim)</th><th>all-zero rows</th><th>rows with NaN/Inf</th></tr>" + rows + "</table>")


def _rules(rules: Optional[list]) -> str:
    if rules is None:
        return ""
    if not rules:
        return "<div class='label'>the rule</div><div>no gradlint rule flags these lines</div>"
    items = "".join(f"<li><b>{escape(r['code'])}</b> {escape(r.get('rule') or '')} at <code>{escape(where(r))}"
                    f"</code>: {rich(r['message'])}{' &middot; fixed by the patch' if r.get('fixed') else ''}"
                    "</li>" for r in rules)
    return f"<div class='label'>the rule that would have caught it</div><ul>{items}</ul>"


def _origin(run: dict, name: str) -> str:
    trace, first = run.get("trace"), run.get("first_nonfinite")
    if not first:
        return ""
    run_name = name
    if first.get("label"):  # a distributed run: born on that rank (the others got it by the all-reduce)
        name = f"{name}, {escape(first['label'])}"
    if not trace:
        return (f"<div class='origin' data-run='{run_name}'><h3>{name}: first non-finite value at step {first['step']}, "
                f"seen in the {escape(first.get('seen_in', '?'))}</h3>not pinpointed (the replay did not find it)</div>")
    step = trace.get("step") or first["step"]
    if trace.get("phase") not in ("forward", "backward"):
        extra = ""
        if trace.get("parameters"):
            extra = "<div>parameters: " + ", ".join(f"<code>{escape(p)}</code>" for p in trace["parameters"]) + "</div>"
        return (f"<div class='origin' data-run='{run_name}'><h3>{name}: {KINDS.get(trace['kind'], 'NaN')} at step {step}, "
                f"{escape(trace['phase'])}</h3>{rich(trace.get('note') or '')}{extra}</div>")
    site = trace.get("site") or {}
    module = trace.get("module")
    inside = (f"in <code>{escape(module)}</code> ({escape(str(trace.get('module_class')))})" if module
              else "outside any module")
    chain = trace.get("chain") or []
    calls = ""
    if chain:
        calls = ("<div class='label'>the calls from the training step</div><ol class='chain'>" + "".join(
            f"<li>{_where(c)}: <code>{escape(c.get('code') or '')}</code></li>" for c in chain) + "</ol>")
    return (f"<div class='origin' data-run='{run_name}'><h3>{name}: {KINDS.get(trace['kind'], 'NaN')} "
            f"at step {step}, {escape(trace['phase'])}: <code>{escape(str(trace['op']))}</code> {inside}</h3>"
            f"<div>at {_where(site)}</div>{_context(site)}<div>{rich(trace.get('note') or '')}</div>{calls}"
            f"{_tensors(trace.get('tensors') or [])}{_rules(trace.get('rules'))}</div>")


# -- charts ----------------------------------------------------------------------------------------------

def _series_names(run: dict) -> dict[int, str]:
    return {s.get("index", i): s["name"] for i, s in enumerate(run.get("optimizers") or [])}


def _label(name: str, series_name: str, several: bool) -> str:
    return f"{name} {series_name}" if several else name


def _loss_and_norm(result: dict, runs) -> str:
    marks = {name: (run["first_nonfinite"]["step"], COLORS[name]) for name, run in runs if run.get("first_nonfinite")}
    loss = []
    for name, run in runs:
        optimizers = run.get("optimizers") or []
        for k, opt in enumerate(optimizers):
            loss.append(Series(_label(name, opt["name"], len(optimizers) > 1), opt["step"], opt["loss"], COLORS[name],
                               dash=k > 0, width=WIDTH[name]))
    norms = []
    for name, run in runs:
        optimizers = run.get("optimizers") or []
        for k, opt in enumerate(optimizers):
            label = _label(name, opt["name"], len(optimizers) > 1)
            norms.append(Series(label, opt["step"], opt["total_norm"], COLORS[name], dash=k > 0, width=WIDTH[name]))
            before = opt.get("clip_before") or []
            if any(finite(v) for v in before):
                norms.append(Series(f"{label}, before clipping", opt["step"], before, COLORS[name], dash=True,
                                    width=1.1))
    limit = (result.get("thresholds") or {}).get("exploding")
    return ("<h2>Loss and gradient norm</h2><div class='grid'>"
            + line_chart("loss", "loss", loss, y_label="loss", vlines=marks)
            + line_chart("grad_norm", "gradient norm applied by the optimizer", norms, y_label="norm (log)", log=10,
                         hline=(limit, f"exploding above {fmt(limit)}") if limit else None, vlines=marks)
            + "</div>")


def _updates(run: dict, key: str) -> list:
    return (run.get("updates") or {}).get(key) or []


def _optimizer_charts(runs) -> str:
    """Learning rate and the GradScaler's loss scale, when the runs have them."""
    lr_series, scale_series = [], []
    for name, run in runs:
        names = _series_names(run)
        several = len(names) > 1
        by_series: dict[int, list] = {}
        for entry in _updates(run, "lr"):
            by_series.setdefault(entry["series"], []).append(entry)
        for k, (index, entries) in enumerate(sorted(by_series.items())):
            label = _label(name, names.get(index, "optimizer"), several)
            groups = max(len(e["lr"]) for e in entries)
            columns = [[e["lr"][g] if g < len(e["lr"]) else None for e in entries] for g in range(groups)]
            distinct = [g for g in range(groups) if g == 0 or columns[g] != columns[0]]
            for g in distinct:
                lr_series.append(Series(label + (f" group {g}" if len(distinct) > 1 else ""),
                                        [e["step"] for e in entries], columns[g], COLORS[name], dash=k > 0 or g > 0,
                                        width=WIDTH[name]))
        scales: dict[int, list] = {}
        for entry in _updates(run, "loss_scale"):
            scales.setdefault(entry["series"], []).append(entry)
        for k, (index, entries) in enumerate(sorted(scales.items())):
            scale_series.append(Series(_label(name, names.get(index, "optimizer"), several),
                                       [e["step"] for e in entries], [e["scale"] for e in entries], COLORS[name],
                                       dash=k > 0, width=WIDTH[name], marked=[e["step"] for e in entries if e["skipped"]]))
    charts = []
    if any(any(finite(v) for v in s.y) for s in lr_series):
        positive = all(num(v) > 0 for s in lr_series for v in s.y if finite(v))
        charts.append(line_chart("lr", "learning rate", lr_series, y_label="lr" + (" (log)" if positive else ""),
                                 log=10 if positive else None))
    if scale_series:
        charts.append(line_chart("loss_scale", "GradScaler loss scale", scale_series, y_label="scale (log)", log=2))
    if not charts:
        return ""
    return "<h2>Learning rate and loss scale</h2><div class='grid'>" + "".join(charts) + "</div>"


def _top_layers(runs, limit: int) -> list[int]:
    """Indices of the layers with the largest gradient norms in either run: a layer with a NaN/Inf first, then
    by the largest finite norm."""
    nonfinite: set[int] = set()
    best: dict[int, float] = {}
    for _, run in runs:
        for row in run.get("layer_norms") or []:
            for j, v in enumerate(row or []):
                f = num(v)
                if f is None:
                    continue
                best.setdefault(j, -1.0)
                if math.isfinite(f):
                    best[j] = max(best[j], f)
                else:
                    nonfinite.add(j)
    return sorted(best, key=lambda j: (j not in nonfinite, -best[j]))[:limit]


def _layer_lines(runs, layers: list[str], chosen: list[int], key: str, y_label: str, values, extra=None) -> str:
    """One chart a run with the `chosen` layers' lines, in one colour per layer across both runs, on one
    y-range. `values(run)` -> (steps, rows of per-layer values)."""
    colors = palette(len(chosen))
    per_run = []
    for name, run in runs:
        steps, rows = values(run)
        series = [Series(layers[j], steps, [row[j] if row and j < len(row) else None for row in rows], colors[k],
                         width=1.3) for k, j in enumerate(chosen)]
        per_run.append((name, series))
    shared = value_range([s for _, s in per_run], 10)
    xs = [x for _, series in per_run for s in series for x in s.x]
    x_range = (min(xs), max(xs)) if xs else None
    charts = []
    for name, series in per_run:
        if not any(s.x for s in series):
            charts.append(figure(f"{key}-{name}", name, f"<div class='empty'>{name}: {_absent(runs, name)}</div>", ""))
            continue
        charts.append(line_chart(f"{key}-{name}", name, series, y_label=y_label, log=10, y_range=shared,
                                 x_range=x_range, hline=extra))
    return "<div class='grid'>" + "".join(charts) + "</div>"


def _absent(runs, name: str) -> str:
    run = dict(runs)[name]
    if run.get("status") == "skipped":
        return escape(run.get("reason") or "not run")
    return "no value recorded"


def _norm_values(run: dict):
    return run.get("norm_steps") or [], run.get("layer_norms") or []


def _ratio_values(run: dict):
    merged: dict[int, list] = {}
    for entry in _updates(run, "ratio"):
        row = merged.setdefault(entry["step"], [None] * len(entry["ratios"]))
        for j, v in enumerate(entry["ratios"]):
            if row[j] is None and v is not None:
                row[j] = v
    steps = sorted(merged)
    return steps, [merged[s] for s in steps]


def _layers(runs) -> str:
    layers = max((run.get("layers") or [] for _, run in runs), key=len)
    values = [num(v) for _, run in runs for row in run.get("layer_norms") or [] for v in row or []
              if finite(v) and num(v) > 0]
    if not values or not layers:
        return ""
    lo, hi = max(min(values), 1e-12), max(values)
    hi = hi if hi > lo else lo * 10
    steps_n = max((len(run.get("norm_steps") or []) for _, run in runs), default=0)
    wide = heatmap_width(layers, steps_n) > 560  # long names: the runs one above the other
    parts = ["<h2>Per-layer gradient norm</h2><div class='explain'>one row per layer (the module that owns the "
             f"parameters), one column per step</div><div class='{'stack' if wide else 'grid'}'>"]
    for name, run in runs:
        steps = run.get("norm_steps") or []
        skipped = {s for s, flag in zip((run.get("series") or {}).get("step") or [],
                                        (run.get("series") or {}).get("skipped") or []) if flag}
        mark = run["first_nonfinite"]["step"] if run.get("first_nonfinite") else None
        if not steps:
            parts.append(figure(f"heatmap-{name}", name, f"<div class='empty'>{name}: {_absent(runs, name)}</div>", ""))
            continue
        parts.append(heatmap(f"heatmap-{name}", name, run.get("layers") or layers, steps, run.get("layer_norms") or [],
                             lo, hi, mark, skipped))
    parts.append("</div>")
    chosen = _top_layers(runs, TOP_LAYERS)
    shown = (f"the {len(chosen)} layers with the largest gradient norm of {len(layers)}"
             if len(chosen) < len(layers) else f"all {len(layers)} layers")
    parts.append(f"<h2>Per-layer gradient norm, as lines</h2><div class='explain'>{shown}; both runs on one "
                 "y-range</div>")
    parts.append(_layer_lines(runs, layers, chosen, "layer_norms", "gradient norm (log)", _norm_values))
    if len(chosen) < len(layers):
        every = _top_layers(runs, len(layers))
        parts.append(f"<details><summary>all {len(layers)} layers</summary>"
                     + _layer_lines(runs, layers, every, "layer_norms_all", "gradient norm (log)", _norm_values)
                     + "</details>")
    if any(_updates(run, "ratio") for _, run in runs):
        every = next((run.get("updates") or {}).get("ratio_every") for _, run in runs if run.get("updates"))
        parts.append("<h2>Update-to-weight ratio per layer</h2><div class='explain'>|&Delta;w| / |w| of each layer's "
                     f"parameters after an optimizer step (one step in {every}), for the same layers; about 1e-3 is "
                     "the usual rule of thumb: far below, the layer barely learns; far above, it is unstable</div>")
        parts.append(_layer_lines(runs, layers, chosen, "update_ratio", "update / weight (log)", _ratio_values,
                                  extra=(1e-3, "1e-3, the rule of thumb")))
    return "".join(parts)


# -- the patch and the outputs ---------------------------------------------------------------------------

def _diff(text: str) -> str:
    out = []
    for line in text.splitlines():
        cls = ("add" if line.startswith("+") and not line.startswith("+++") else
               "del" if line.startswith("-") and not line.startswith("---") else
               "hunk" if line.startswith("@@") else "")
        out.append(f'<span class="{cls}">{escape(line)}</span>' if cls else escape(line))
    return "\n".join(out)


def _patch(result: dict, runs) -> str:
    patch = result["patch"]
    parts = [f"<h2>The patch</h2><div>{patch['fixed']} finding(s) fixed: "
             + escape(", ".join(f"{k} x{v}" for k, v in patch["codes"].items()) or "none") + "</div>"]
    for f in patch["files"]:
        parts.append(f"<details open><summary><code>{escape(f['path'])}</code></summary><pre>{_diff(f['diff'])}</pre>")
        if f.get("remaining"):
            parts.append("<div>not fixed (unsafe or no fix):</div><ul>" +
                         "".join(f"<li>{rich(r)}</li>" for r in f["remaining"]) + "</ul>")
        parts.append("</details>")
    notebook = result.get("notebook")
    if notebook:
        parts.append(f"<div>the notebook's {notebook['code_cells']} code cells ran in order as one script"
                     + (": not run:</div><ul>" + "".join(f"<li>{rich(n)}</li>" for n in notebook["not_run"]) + "</ul>"
                        if notebook["not_run"] else "</div>"))
    for name, run in runs:
        error = run.get("error") or {}
        if error.get("traceback"):
            parts.append(f"<h2>{name}: crash</h2><pre>{escape(error['traceback'])}</pre>")
        if run.get("stdout_tail"):
            parts.append(f"<details><summary>{name}: script output (tail)</summary><pre>"
                         f"{escape(run['stdout_tail'])}</pre></details>")
    return "".join(parts)


def render(result: dict) -> str:
    runs = (("original", result["original"]), ("patched", result["patched"]))
    title = f"-m {result['module']}" if result.get("module") else result.get("path")
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>gradlint verify {escape(str(title))}"
             f"</title><style>{CSS}</style></head><body>", _header(result), _banner(result), _checks(runs),
             _ranks(runs)]
    parts += [_origin(run, name) for name, run in runs]
    parts += [_loss_and_norm(result, runs), _optimizer_charts(runs), _layers(runs), _patch(result, runs),
              "</body></html>"]
    return "\n".join(p for p in parts if p)
