"""The `--report` page: one self-contained HTML file (inline CSS and SVG, no script, no external asset).

What a person wants to look at: the verdict, the checks side by side, the fix as a diff, and plots of
both runs on shared axes (loss, applied and pre-clip gradient norm, and a per-layer gradient-norm heat
map with the first non-finite step marked). Torch-free.
"""

from __future__ import annotations

import math
from html import escape
from typing import Optional

from .checks import FAIL, NA, OK, WARN, fmt

COLORS = {"original": "#d9480f", "patched": "#1971c2"}
STATUS_CLASS = {OK: "ok", WARN: "warn", FAIL: "fail", NA: "na", "info": "info"}
# viridis, 6 stops
RAMP = [(68, 1, 84), (65, 68, 135), (42, 120, 142), (34, 168, 132), (122, 209, 81), (253, 231, 37)]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#212529;padding:0 16px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #dee2e6;
padding-bottom:4px}
.meta{color:#495057}.banner{padding:10px 14px;border-radius:6px;margin:14px 0;font-weight:600}
.banner.good{background:#d3f9d8;color:#2b8a3e}.banner.bad{background:#ffe3e3;color:#c92a2a}
.banner.none{background:#fff3bf;color:#8f5b00}
table.checks{border-collapse:collapse;width:100%}table.checks td,table.checks th{vertical-align:top;
padding:6px 8px;border-bottom:1px solid #e9ecef;text-align:left}table.checks th{background:#f8f9fa}
.badge{display:inline-block;min-width:38px;text-align:center;border-radius:4px;padding:0 4px;margin-right:6px;
font-size:12px;font-weight:700}.badge.ok{background:#d3f9d8;color:#2b8a3e}.badge.warn{background:#fff3bf;
color:#8f5b00}.badge.fail{background:#ffe3e3;color:#c92a2a}.badge.na,.badge.info{background:#f1f3f5;color:#868e96}
.detail{color:#495057;font-size:12.5px;margin-left:50px}code,pre{font:12.5px/1.4 ui-monospace,Menlo,Consolas,monospace}
pre{background:#f8f9fa;padding:10px;border-radius:6px;overflow:auto}
.add{color:#2b8a3e}.del{color:#c92a2a}.hunk{color:#5f3dc4}.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.legend span{display:inline-block;margin-right:14px}.swatch{display:inline-block;width:18px;height:3px;
vertical-align:middle;margin-right:4px}.origin{border-left:4px solid #c92a2a;background:#fff5f5;padding:8px 12px;
border-radius:4px;margin:8px 0}svg text{font:11px system-ui,sans-serif;fill:#495057}
"""


def _num(x) -> Optional[float]:
    if x is None:
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _finite(x) -> bool:
    v = _num(x)
    return v is not None and math.isfinite(v)


def _ramp(t: float) -> str:
    t = min(max(t, 0.0), 1.0) * (len(RAMP) - 1)
    i = min(int(t), len(RAMP) - 2)
    f = t - i
    r, g, b = (round(a + (b_ - a) * f) for a, b_ in zip(RAMP[i], RAMP[i + 1]))
    return f"rgb({r},{g},{b})"


class _Axis:
    def __init__(self, lo: float, hi: float, log: bool, pixels: float, offset: float, flip: bool):
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi - lo < 1e-12:
            lo, hi = lo - 1, hi + 1
        self.lo, self.hi, self.log, self.pixels, self.offset, self.flip = lo, hi, log, pixels, offset, flip

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(v)
        t = (v - self.lo) / (self.hi - self.lo)
        return self.offset + (1 - t if self.flip else t) * self.pixels

    def ticks(self) -> list[tuple[float, str]]:
        if self.log:
            return [(10.0 ** e, f"1e{e}") for e in range(math.floor(self.lo), math.ceil(self.hi) + 1)
                    if self.lo - 1e-9 <= e <= self.hi + 1e-9]
        step = _nice((self.hi - self.lo) / 4)
        start = math.ceil(self.lo / step) * step
        out, v = [], start
        while v <= self.hi + 1e-9:
            out.append((v, fmt(v)))
            v += step
        return out


def _nice(x: float) -> float:
    e = math.floor(math.log10(x)) if x > 0 else 0
    for m in (1, 2, 5, 10):
        if m * 10 ** e >= x:
            return m * 10 ** e
    return 10 ** (e + 1)


def line_chart(title: str, series: dict[str, dict], log: bool, width: int = 540, height: int = 220,
               hline: Optional[tuple[float, str]] = None, marks: Optional[dict[str, int]] = None) -> str:
    """series: name -> {"x": [...], "y": [...], "dash": bool, "color": str}. Non-finite y values are drawn
    as red crosses at the top edge."""
    left, right, top, bottom = 52, 12, 36, 30
    xs = [x for s in series.values() for x in s["x"]]
    ys = [_num(y) for s in series.values() for y in s["y"] if _finite(y) and (not log or _num(y) > 0)]
    if hline and (not log or hline[0] > 0):
        ys.append(hline[0])
    if not xs or not ys:
        return f'<svg width="{width}" height="60"><text x="8" y="30">{escape(title)}: no finite values</text></svg>'
    x_axis = _Axis(min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1, False, width - left - right, left, False)
    lo_y, hi_y = min(ys), max(ys)
    if log:  # a tenth of a decade of headroom, so a clipped run's flat line is not on the frame
        lo_y, hi_y = lo_y / 10 ** 0.1, hi_y * 10 ** 0.1
    else:
        pad = (hi_y - lo_y) * 0.05 or abs(hi_y) * 0.05 or 1.0
        lo_y, hi_y = lo_y - pad, hi_y + pad
    y_axis = _Axis(lo_y, hi_y, log, height - top - bottom, top, True)
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="14" style="font-weight:600">{escape(title)}</text>']
    for v, label in y_axis.ticks():
        y = y_axis(v)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e9ecef"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
    for v, label in x_axis.ticks():
        x = x_axis(v)
        parts.append(f'<text x="{x:.1f}" y="{height - 12}" text-anchor="middle">{escape(label)}</text>')
    parts.append(f'<text x="{left - 6}" y="{height - 12}" text-anchor="end">step</text>')
    if hline and (not log or hline[0] > 0):
        y = y_axis(hline[0])
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c92a2a" '
                     f'stroke-dasharray="4 3"/><text x="{left + 4}" y="{y - 4:.1f}" text-anchor="start" '
                     f'style="fill:#c92a2a">{escape(hline[1])}</text>')
    for name, step in (marks or {}).items():
        x = x_axis(step)
        color = series.get(name, {}).get("color", "#c92a2a")
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" stroke="{color}" '
                     f'stroke-dasharray="2 3"><title>{escape(name)}: first non-finite at step {step}</title></line>')
    for name, s in series.items():
        points, bad = [], []
        for x, y in zip(s["x"], s["y"]):
            v = _num(y)
            if v is not None and math.isfinite(v) and (not log or v > 0):
                points.append(f"{x_axis(x):.1f},{y_axis(v):.1f}")
            else:
                if v is not None and not math.isfinite(v):
                    bad.append(x)
                if len(points) > 1:
                    parts.append(_polyline(points, s))
                points = []
        if len(points) > 1:
            parts.append(_polyline(points, s))
        elif len(points) == 1:
            cx, cy = points[0].split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{s["color"]}"/>')
        for x in bad:
            px = x_axis(x)
            parts.append(f'<text x="{px:.1f}" y="{top - 6}" text-anchor="middle" style="fill:{s["color"]};'
                         f'font-weight:700">&#215;<title>{escape(name)} step {x}: non-finite</title></text>')
    parts.append("</svg>")
    return "".join(parts)


def _polyline(points: list[str], s: dict) -> str:
    dash = ' stroke-dasharray="5 3"' if s.get("dash") else ""
    return (f'<polyline fill="none" stroke="{s["color"]}" stroke-width="{s.get("width", 1.8)}"{dash} '
            f'points="{" ".join(points)}"/>')


def heatmap(title: str, layers: list[str], rows: list[list], lo: float, hi: float, mark: Optional[int],
            width: int = 540, skipped: tuple = ()) -> str:
    """rows: per step, per layer values. Colour: log10 of the norm on a shared scale; red: NaN/Inf; grey: a
    step the GradScaler skipped (no gradient was applied)."""
    n_steps, n_layers = len(rows), len(layers)
    if not n_steps or not n_layers:
        return f'<svg width="{width}" height="40"><text x="8" y="24">{escape(title)}: no data</text></svg>'
    label_w = min(190, 8 + 6 * max(len(n) for n in layers))
    cell_w = max(1.5, min(16.0, (width - label_w - 10) / n_steps))
    cell_h = max(2.0, min(13.0, 420 / n_layers))
    height = 30 + cell_h * n_layers + 24
    lo_l, hi_l = math.log10(lo), math.log10(hi)
    span = max(hi_l - lo_l, 1e-9)
    parts = [f'<svg width="{label_w + cell_w * n_steps + 10:.0f}" height="{height:.0f}" role="img" '
             f'aria-label="{escape(title)}"><text x="0" y="14" style="font-weight:600">{escape(title)}</text>']
    every = max(1, math.ceil(11 / cell_h))
    for j, name in enumerate(layers):
        if j % every == 0:
            parts.append(f'<text x="{label_w - 6}" y="{30 + cell_h * (j + 0.5) + 4:.1f}" text-anchor="end">'
                         f'{escape(name[-28:])}</text>')
    for i, row in enumerate(rows):
        if i + 1 in skipped:
            parts.append(f'<rect x="{label_w + cell_w * i:.1f}" y="30" width="{cell_w + 0.2:.1f}" '
                         f'height="{cell_h * n_layers:.1f}" fill="#dee2e6"><title>step {i + 1}: skipped by the '
                         f'GradScaler (inf/NaN gradients)</title></rect>')
            continue
        for j in range(n_layers):
            v = row[j] if j < len(row) else None
            x, y = label_w + cell_w * i, 30 + cell_h * j
            if v is None:
                continue
            f = _num(v)
            if f is None or not math.isfinite(f):
                color, label = "#e03131", "non-finite"
            else:
                color = _ramp((math.log10(max(f, lo)) - lo_l) / span)
                label = fmt(f)
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell_w + 0.2:.1f}" height="{cell_h + 0.2:.1f}" '
                         f'fill="{color}"><title>{escape(layers[j])}, step {i + 1}: {label}</title></rect>')
    if mark is not None:
        x = label_w + cell_w * (mark - 1)
        parts.append(f'<rect x="{x:.1f}" y="29" width="{cell_w:.1f}" height="{cell_h * n_layers + 2:.1f}" '
                     f'fill="none" stroke="#000" stroke-width="1.2"/>')
    base = 30 + cell_h * n_layers + 16
    parts.append(f'<text x="{label_w}" y="{base:.0f}">step 1</text><text x="{label_w + cell_w * n_steps:.0f}" '
                 f'y="{base:.0f}" text-anchor="end">step {n_steps}</text></svg>')
    return "".join(parts)


def _color_key(lo: float, hi: float) -> str:
    stops = "".join(f'<stop offset="{i / (len(RAMP) - 1):.2f}" stop-color="{_ramp(i / (len(RAMP) - 1))}"/>'
                    for i in range(len(RAMP)))
    return (f'<svg width="420" height="36"><defs><linearGradient id="ramp">{stops}</linearGradient></defs>'
            f'<rect x="0" y="4" width="300" height="12" fill="url(#ramp)"/><rect x="312" y="4" width="12" '
            f'height="12" fill="#e03131"/><text x="0" y="30">{escape(fmt(lo))}</text><text x="300" y="30" '
            f'text-anchor="end">{escape(fmt(hi))}</text><text x="330" y="14">NaN / Inf</text>'
            f'<rect x="312" y="20" width="12" height="12" fill="#dee2e6"/><text x="330" y="30">skipped</text></svg>')


def _diff(text: str) -> str:
    out = []
    for line in text.splitlines():
        cls = ("add" if line.startswith("+") and not line.startswith("+++") else
               "del" if line.startswith("-") and not line.startswith("---") else
               "hunk" if line.startswith("@@") else "")
        out.append(f'<span class="{cls}">{escape(line)}</span>' if cls else escape(line))
    return "\n".join(out)


def _check_cell(check: Optional[dict]) -> str:
    if not check:
        return "<td>-</td>"
    cls = STATUS_CLASS.get(check["status"], "na")
    label = {"info": ""}.get(check["status"], check["status"])
    details = "".join(f'<div class="detail">{escape(d)}</div>' for d in check["details"])
    badge = f'<span class="badge {cls}">{escape(label)}</span>' if label else '<span class="badge info"></span>'
    return f"<td>{badge}{escape(check['summary'])}{details}</td>"


def _origin(run: dict, name: str) -> str:
    trace = run.get("trace")
    first = run.get("first_nonfinite")
    if not first:
        return ""
    if not trace or trace.get("phase") not in ("forward", "backward"):
        return (f'<div class="origin"><b>{name}</b>: first non-finite value at step {first["step"]}, seen in the '
                f'{escape(first.get("seen_in", "?"))}</div>')
    site = trace.get("site") or {}
    module = trace.get("module") or "no module (a free function)"
    return (f'<div class="origin"><b>{name}</b>: {escape(trace["kind"].upper())} at step {first["step"]}, '
            f'{escape(trace["phase"])}: <code>{escape(trace["op"])}</code> in <code>{escape(module)}</code> at '
            f'<code>{escape(str(site.get("file")))}:{site.get("line")}</code> in {escape(str(site.get("function")))}()'
            f'<pre>{escape(site.get("code", ""))}</pre>{escape(trace.get("note") or "")}</div>')


def render(result: dict) -> str:
    o, p = result["original"], result["patched"]
    runs = (("original", o), ("patched", p))
    code = result["exit_code"]
    banner_cls = "good" if code == 0 else ("bad" if code == 1 else "none")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>gradlint verify {escape(result['path'])}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>gradlint verify <code>{escape(result['path'])}</code></h1>",
             f"<div class='meta'>script <code>{escape(result['script'])}</code> &middot; device "
             f"{escape(str(result['device']['used'] or result['device'].get('resolved') or result['device']['asked']))} &middot; {result['steps']} steps &middot; torch "
             f"{escape(str(result.get('torch')))}</div>",
             f"<div class='banner {banner_cls}'>{'<br>'.join(escape(v) for v in result['verdict']['lines'])}</div>"]

    # checks
    by_key = [{c["key"]: c for c in run["checks"]} for _, run in runs]
    keys = list(dict.fromkeys([c["key"] for c in o["checks"]] + [c["key"] for c in p["checks"]]))
    titles = {c["key"]: c["title"] for _, run in runs for c in run["checks"]}
    parts.append("<h2>Health checks</h2><table class='checks'><tr><th>check</th><th>original</th><th>patched</th></tr>")
    for key in keys:
        parts.append(f"<tr><td>{escape(titles[key])}</td>{_check_cell(by_key[0].get(key))}"
                     f"{_check_cell(by_key[1].get(key))}</tr>")
    parts.append("</table>")
    parts += [_origin(run, name) for name, run in runs]

    # plots
    parts.append("<h2>Loss and gradient norm</h2><div class='legend'>" + "".join(
        f"<span><span class='swatch' style='background:{COLORS[n]}'></span>{n}</span>" for n, _ in runs)
        + "<span>dashed: the norm the clip saw, before clipping</span><span>&#215;: non-finite</span>"
        "<span>dotted: first non-finite step</span></div><div class='grid'>")
    marks = {name: run["first_nonfinite"]["step"] for name, run in runs if run.get("first_nonfinite")}
    loss_series = {}
    for name, run in runs:
        several = len(run.get("optimizers") or []) > 1
        for k, opt in enumerate(run.get("optimizers") or ([run["series"]] if run.get("series") else [])):
            label = f"{name} {opt['name']}" if several else name
            loss_series[label] = {"x": opt["step"], "y": opt["loss"], "color": COLORS[name], "dash": k > 0}
    parts.append(line_chart("loss", loss_series, log=False, marks=marks))
    norm_series = {}
    for name, run in runs:
        if not run.get("series"):
            continue
        norm_series[name] = {"x": run["series"]["step"], "y": run["series"]["total_norm"], "color": COLORS[name]}
        before = run["series"].get("clip_before") or []
        if any(_finite(v) for v in before):
            norm_series[f"{name} before clip"] = {"x": run["series"]["step"], "y": before, "color": COLORS[name],
                                                 "dash": True, "width": 1.2}
    limit = (result.get("thresholds") or {}).get("exploding")
    parts.append(line_chart("gradient norm applied by the optimizer (log)", norm_series, log=True,
                            hline=(limit, f"exploding > {fmt(limit)}") if limit else None, marks=marks))
    parts.append("</div>")

    values = [_num(v) for _, run in runs for row in run.get("layer_norms") or [] for v in row or []
              if _finite(v) and _num(v) > 0]
    if values:
        lo, hi = max(min(values), 1e-12), max(values)
        hi = hi if hi > lo else lo * 10
        parts.append("<h2>Per-layer gradient norm</h2><div>one row per layer (the module that owns the parameters), "
                     "one column per step; the black frame is the first non-finite step</div>")
        parts.append(_color_key(lo, hi) + "<div class='grid'>")
        for name, run in runs:
            skipped = tuple(step for step, s in zip(run["series"].get("step") or [], run["series"].get("skipped") or [])
                            if s)
            parts.append(f"<div>{heatmap(name, run['layers'], run['layer_norms'], lo, hi, marks.get(name), skipped=skipped)}"
                         "</div>")
        parts.append("</div><h2>Per-layer gradient norm, as lines (log)</h2><div class='grid'>")
        for name, run in runs:
            layers = run["layers"]
            series = {}
            for j, layer in enumerate(layers):
                hue = int(300 * j / max(len(layers) - 1, 1))
                series[layer] = {"x": run.get("norm_steps") or [],
                                 "y": [(row[j] if row and j < len(row) else None) for row in run["layer_norms"]],
                                 "color": f"hsl({hue},70%,45%)", "width": 1.1}
            parts.append(f"<div>{line_chart(name, series, log=True, marks={}) if series else ''}</div>")
        parts.append("</div>")

    # patch
    patch = result["patch"]
    parts.append(f"<h2>The patch</h2><div>{patch['fixed']} finding(s) fixed: "
                 + escape(", ".join(f"{k} x{v}" for k, v in patch["codes"].items()) or "none") + "</div>")
    for f in patch["files"]:
        parts.append(f"<details open><summary><code>{escape(f['path'])}</code></summary><pre>{_diff(f['diff'])}</pre>")
        if f.get("remaining"):
            parts.append("<div>not fixed (unsafe or no fix):</div><ul>" +
                         "".join(f"<li>{escape(r)}</li>" for r in f["remaining"]) + "</ul>")
        parts.append("</details>")
    for name, run in runs:
        error = run.get("error") or {}
        if error.get("traceback"):
            parts.append(f"<h2>{name}: crash</h2><pre>{escape(error['traceback'])}</pre>")
        if run.get("stdout_tail"):
            parts.append(f"<details><summary>{name}: script output (tail)</summary><pre>"
                         f"{escape(run['stdout_tail'])}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)
