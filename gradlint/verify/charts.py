"""The report's charts as inline SVG, each in a `<figure>` with its title, labelled axes and an HTML legend (no
script, no external asset). Torch-free.

What a person needs to read a chart: both axes say what they show; every line is named, in the legend and
on hover (an SVG `<title>`); tick labels never overlap or run past the frame (margins are sized from the
labels they hold); two charts meant to be compared (original and patched) can share one y-range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Optional, Sequence

from .checks import fmt

MAX_LABEL = 700  # px of a heat map's layer names, at most (100 characters)
CHAR = 7.0  # px a character of the 11 px chart font takes, at most (DejaVu Sans digits are 7 px)
# viridis, 6 stops
RAMP = [(68, 1, 84), (65, 68, 135), (42, 120, 142), (34, 168, 132), (122, 209, 81), (253, 231, 37)]
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


@dataclass
class Series:
    name: str
    x: Sequence
    y: Sequence
    color: str
    dash: bool = False
    width: float = 1.8
    marked: Sequence = ()  # x values drawn as a hollow red circle (a step the GradScaler skipped)
    legend: bool = True  # listed in the legend (hover names are always there)


@dataclass
class Legend:
    """Legend entries besides the series: (swatch html, text)."""
    extra: list = field(default_factory=list)


def num(x) -> Optional[float]:
    if x is None or isinstance(x, bool):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def finite(x) -> bool:
    v = num(x)
    return v is not None and math.isfinite(v)


def text_width(text: str) -> float:
    return len(text) * CHAR


def value_range(groups: Sequence[Sequence[Series]], log: Optional[int]) -> Optional[tuple[float, float]]:
    """The (low, high) of every finite (and, on a log axis, positive) value of all the series: one y-range
    for charts that are to be compared."""
    ys = [num(y) for series in groups for s in series for y in s.y
          if finite(y) and (not log or num(y) > 0)]
    return (min(ys), max(ys)) if ys else None


class Axis:
    def __init__(self, lo: float, hi: float, log: Optional[int], pixels: float, offset: float, flip: bool):
        self.base = log
        if log:
            lo, hi = math.log(lo, log), math.log(hi, log)
        if hi - lo < 1e-12:
            lo, hi = lo - 1, hi + 1
        self.lo, self.hi, self.pixels, self.offset, self.flip = lo, hi, pixels, offset, flip

    def __call__(self, v: float) -> float:
        if self.base:
            v = math.log(v, self.base)
        t = (v - self.lo) / (self.hi - self.lo)
        return self.offset + (1 - t if self.flip else t) * self.pixels

    def ticks(self, most: int = 5, integer: bool = False) -> list[tuple[float, str]]:
        if self.base:
            first, last = math.ceil(self.lo - 1e-9), math.floor(self.hi + 1e-9)
            every = max(1, math.ceil((last - first + 1) / most))
            return [(float(self.base) ** e, f"{self.base}{str(e).translate(SUPERSCRIPT)}" if self.base != 10
                     else f"1e{e}") for e in range(first, last + 1) if (e - first) % every == 0]
        step = nice((self.hi - self.lo) / max(1, most - 1))
        if integer:  # steps: the first one, then round numbers (1, 5, 10, 15)
            step = max(1.0, round(step))
            first = math.ceil(self.lo - 1e-9)
            rest = math.floor((first + step / 2) / step + 1) * step
            return [(float(first), str(first))] + [(float(v), str(int(v))) for v in
                                                   _range(rest, self.hi + 1e-9, step)]
        return [(v, fmt(v)) for v in _range(math.ceil(self.lo / step - 1e-9) * step, self.hi + 1e-9, step)]


def _range(start: float, stop: float, step: float) -> list[float]:
    out, v = [], start
    while v <= stop:
        out.append(v)
        v += step
    return out


def nice(x: float) -> float:
    e = math.floor(math.log10(x)) if x > 0 else 0
    for m in (1, 2, 5, 10):
        if m * 10 ** e >= x:
            return m * 10 ** e
    return 10 ** (e + 1)


def _swatch(color: str, dash: bool = False) -> str:
    dashed = ' stroke-dasharray="5 3"' if dash else ""
    return (f'<svg class="swatch" width="22" height="10" aria-hidden="true"><line x1="1" x2="21" y1="5" y2="5" '
            f'stroke="{color}" stroke-width="2.5"{dashed}/></svg>')


def cross() -> str:
    return '<span class="sym" style="color:#c92a2a">&#215;</span>'


def ring() -> str:
    return ('<svg class="swatch" width="12" height="12" aria-hidden="true"><circle cx="6" cy="6" r="4" fill="none" '
            'stroke="#c92a2a" stroke-width="1.8"/></svg>')


def legend_html(series: Sequence[Series], extra: Sequence = ()) -> str:
    items = [f'<span class="item">{_swatch(s.color, s.dash)}{escape(s.name)}</span>' for s in series
             if s.legend and len(s.x)]  # a run that did not run has no line to name
    items += [f'<span class="item">{symbol}{escape(text)}</span>' for symbol, text in extra]
    return f'<div class="legend">{"".join(items)}</div>' if items else ""


def figure(key: str, title: str, svg: str, legend: str, note: str = "") -> str:
    return (f'<figure class="chart" data-chart="{escape(key)}"><figcaption>{escape(title)}</figcaption>{svg}'
            f'{legend}{note}</figure>')


def line_chart(key: str, title: str, series: Sequence[Series], *, y_label: str, log: Optional[int] = None,
               y_range: Optional[tuple[float, float]] = None, hline: Optional[tuple[float, str]] = None,
               vlines: Optional[dict[str, tuple[float, str]]] = None, extra_legend: Sequence = (),
               x_range: Optional[tuple[float, float]] = None, width: int = 540, height: int = 230) -> str:
    """A figure: the chart and its legend. Non-finite y values are red crosses at the top edge; `vlines`:
    name -> (x, color) dotted verticals (the first non-finite step); `marked` x values of a series are red
    rings on its line (steps the GradScaler skipped)."""
    xs = [num(x) for s in series for x in s.x if num(x) is not None]
    found = value_range([series], log)
    if y_range is None:
        y_range = found
    if hline and (not log or hline[0] > 0) and y_range is not None:
        y_range = (min(y_range[0], hline[0]), max(y_range[1], hline[0]))
    if not xs or y_range is None:
        return figure(key, title, f'<div class="empty">{escape(title)}: no finite value to plot</div>', "")
    lo_y, hi_y = y_range
    if log:  # a tenth of a decade of headroom, so a flat line is not on the frame
        lo_y, hi_y = lo_y / log ** 0.1, hi_y * log ** 0.1
        if math.log(hi_y / lo_y, log) >= 2:  # several decades: from tick to tick, both ends labelled
            first, last = math.floor(math.log(lo_y, log)), math.ceil(math.log(hi_y, log))
            every = max(1, math.ceil((last - first + 1) / 5))
            lo_y, hi_y = log ** first, log ** (first + every * math.ceil((last - first) / every))
    else:
        pad = (hi_y - lo_y) * 0.05 or abs(hi_y) * 0.05 or 1.0
        lo_y, hi_y = lo_y - pad, hi_y + pad
    top, bottom, right = 22, 44, 16
    probe = Axis(lo_y, hi_y, log, height - top - bottom, top, True)
    y_ticks = probe.ticks()
    if log and len(y_ticks) < 2:  # less than a decade: the data's own extremes are the ticks
        y_ticks = [(v, fmt(v)) for v in sorted({y_range[0], y_range[1]})]
    left = 26 + max((text_width(label) for _, label in y_ticks), default=0) + 8
    x_lo, x_hi = x_range or (min(xs), max(xs))
    x_axis = Axis(x_lo, x_hi if x_hi > x_lo else x_lo + 1, None, width - left - right, left, False)
    y_axis = Axis(lo_y, hi_y, log, height - top - bottom, top, True)
    most = max(2, int((width - left - right) / (text_width(str(int(x_hi))) + 24)))
    x_ticks = [(v, label) for v, label in x_axis.ticks(min(most, 7), integer=True) if x_lo - 1e-9 <= v <= x_hi + 1e-9]
    plot_bottom = height - bottom
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(title)}">']
    for v, label in y_ticks:
        y = y_axis(v)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e9ecef"/>'
                     f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{plot_bottom}" y2="{plot_bottom}" stroke="#adb5bd"/>')
    for v, label in x_ticks:
        x = x_axis(v)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{plot_bottom}" y2="{plot_bottom + 4}" stroke="#adb5bd"/>'
                     f'<text class="tick" x="{x:.1f}" y="{plot_bottom + 16}" text-anchor="middle">{escape(label)}</text>')
    mid_x, mid_y = left + (width - left - right) / 2, top + (height - top - bottom) / 2
    parts.append(f'<text class="axis-label x" x="{mid_x:.1f}" y="{height - 6}" text-anchor="middle">step</text>'
                 f'<text class="axis-label y" x="0" y="0" text-anchor="middle" '
                 f'transform="translate(12 {mid_y:.1f}) rotate(-90)">{escape(y_label)}</text>')
    if hline and (not log or hline[0] > 0):
        y = y_axis(hline[0])
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c92a2a" '
                     f'stroke-dasharray="4 3"><title>{escape(hline[1])}</title></line>')
        extra_legend = [*extra_legend, ('<svg class="swatch" width="22" height="10" aria-hidden="true"><line x1="1" '
                                        'x2="21" y1="5" y2="5" stroke="#c92a2a" stroke-dasharray="4 3"/></svg>',
                                        hline[1])]
    for name, (x, color) in (vlines or {}).items():
        px = x_axis(x)
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{plot_bottom}" stroke="{color}" '
                     f'stroke-dasharray="2 3"><title>{escape(name)}: first non-finite at step {fmt(x)}</title></line>')
    any_bad = False
    for s in series:
        points, bad, run = [], [], []
        for x, y in zip(s.x, s.y):
            v = num(y)
            if v is not None and math.isfinite(v) and (not log or v > 0) and lo_y <= v <= hi_y:
                run.append(f"{x_axis(x):.1f},{y_axis(v):.1f}")
                continue
            if v is not None and not math.isfinite(v):
                bad.append(x)
            points.append(run)
            run = []
        points.append(run)
        for run in points:
            if len(run) > 1:
                parts.append(_polyline(run, s))
            elif len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{s.color}"><title>{escape(s.name)}</title>'
                             f'</circle>')
        for x in bad:
            any_bad = True
            parts.append(f'<text class="mark" x="{x_axis(x):.1f}" y="{top + 2}" text-anchor="middle" '
                         f'style="fill:{s.color};font-weight:700">&#215;<title>{escape(s.name)} step {fmt(x)}: '
                         f'non-finite</title></text>')
        for x, y in zip(s.x, s.y):
            v = num(y)
            if x in s.marked and v is not None and math.isfinite(v) and (not log or v > 0):
                parts.append(f'<circle cx="{x_axis(x):.1f}" cy="{y_axis(v):.1f}" r="4" fill="none" stroke="#c92a2a" '
                             f'stroke-width="1.8"><title>{escape(s.name)} step {fmt(x)}: skipped by the GradScaler '
                             f'(inf/NaN gradients)</title></circle>')
    parts.append("</svg>")
    extra = list(extra_legend)
    if any_bad:
        extra.append((cross(), "non-finite"))
    if vlines:
        extra.append(('<svg class="swatch" width="22" height="10" aria-hidden="true"><line x1="11" x2="11" y1="0" '
                      'y2="10" stroke="#495057" stroke-dasharray="2 2"/></svg>', "first non-finite step"))
    if any(s.marked for s in series):
        extra.append((ring(), "step skipped by the GradScaler"))
    return figure(key, title, "".join(parts), legend_html(series, extra))


def _polyline(points: list[str], s: Series) -> str:
    dash = ' stroke-dasharray="5 3"' if s.dash else ""
    return (f'<polyline fill="none" stroke="{s.color}" stroke-width="{s.width}"{dash} '
            f'points="{" ".join(points)}"><title>{escape(s.name)}</title></polyline>')


def ramp(t: float) -> str:
    t = min(max(t, 0.0), 1.0) * (len(RAMP) - 1)
    i = min(int(t), len(RAMP) - 2)
    f = t - i
    r, g, b = (round(a + (b_ - a) * f) for a, b_ in zip(RAMP[i], RAMP[i + 1]))
    return f"rgb({r},{g},{b})"


def heatmap(key: str, title: str, layers: list[str], steps: list[int], rows: list[list], lo: float, hi: float,
            mark: Optional[int], skipped: Sequence = (), width: int = 540) -> str:
    """A figure: one row per layer, one column per step, colour the log10 of the norm on a shared scale;
    red: NaN/Inf; grey: a step the GradScaler skipped; a black frame: the first non-finite step. Long layer
    names make it wider than `width` (see `heatmap_width`)."""
    if not steps or not layers:
        return figure(key, title, f'<div class="empty">{escape(title)}: no gradient was recorded</div>', "")
    longest = max(text_width(n) for n in layers)
    label_w = min(longest, MAX_LABEL) + 28  # the whole name; past MAX_LABEL, its end (the full one on hover)
    width = max(width, label_w + 12 + min(300, 8 * len(steps)))
    cell_w = max(1.5, min(40.0, (width - label_w - 12) / len(steps)))
    cell_h = max(14.0 if len(layers) <= 80 else 2.0, min(18.0, 420 / len(layers)))  # up to 80 layers: all named
    top = 6
    plot_h = cell_h * len(layers)
    height = top + plot_h + 44
    lo_l, hi_l = math.log10(lo), math.log10(hi)
    span = max(hi_l - lo_l, 1e-9)
    svg_w = label_w + cell_w * len(steps) + 12
    parts = [f'<svg width="{svg_w:.0f}" height="{height:.0f}" role="img" aria-label="{escape(title)}">']
    every = max(1, math.ceil(14 / cell_h))  # a label a row where rows are 14 px or more apart
    room = int((label_w - 28) / CHAR)
    for j, name in enumerate(layers):
        if j % every == 0:
            shown = name if len(name) <= room else "…" + name[-(room - 1):]
            parts.append(f'<text class="tick" x="{label_w - 6:.1f}" y="{top + cell_h * (j + 0.5) + 4:.1f}" '
                         f'text-anchor="end">{escape(shown)}<title>{escape(name)}</title></text>')
    for i, (step, row) in enumerate(zip(steps, rows)):
        x = label_w + cell_w * i
        if step in skipped:
            parts.append(f'<rect x="{x:.1f}" y="{top}" width="{cell_w + 0.2:.1f}" height="{plot_h:.1f}" '
                         f'fill="#dee2e6"><title>step {step}: skipped by the GradScaler (inf/NaN gradients)</title>'
                         f'</rect>')
            continue
        for j in range(len(layers)):
            v = row[j] if row and j < len(row) else None
            if v is None:
                continue
            f = num(v)
            if f is None or not math.isfinite(f):
                color, label = "#e03131", "non-finite"
            else:
                color, label = ramp((math.log10(max(f, lo)) - lo_l) / span), fmt(f)
            parts.append(f'<rect x="{x:.1f}" y="{top + cell_h * j:.1f}" width="{cell_w + 0.6:.1f}" '
                         f'height="{cell_h + 0.6:.1f}" fill="{color}"><title>{escape(layers[j])}, step {step}: '
                         f'{label}</title></rect>')
    if mark is not None and mark in steps:
        x = label_w + cell_w * steps.index(mark)
        parts.append(f'<rect x="{x:.1f}" y="{top - 1}" width="{cell_w:.1f}" height="{plot_h + 2:.1f}" fill="none" '
                     f'stroke="#000" stroke-width="1.2"><title>first non-finite step ({mark})</title></rect>')
    base = top + plot_h
    most = max(2, int(cell_w * len(steps) / (text_width(str(steps[-1])) + 16)))
    column = {step: i for i, step in enumerate(steps)}
    axis = Axis(steps[0], max(steps[-1], steps[0] + 1), None, 1, 0, False)
    for v, _ in axis.ticks(min(most, 7), integer=True):  # the step numbers of the line charts: 1, 5, 10
        i = column.get(int(v))
        if i is not None:
            x = label_w + cell_w * (i + 0.5)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="#adb5bd"/>'
                         f'<text class="tick" x="{x:.1f}" y="{base + 16}" text-anchor="middle">{steps[i]}</text>')
    parts.append(f'<text class="axis-label x" x="{label_w + cell_w * len(steps) / 2:.1f}" y="{height - 6:.0f}" '
                 f'text-anchor="middle">step</text><text class="axis-label y" x="0" y="0" text-anchor="middle" '
                 f'transform="translate(12 {top + plot_h / 2:.1f}) rotate(-90)">layer</text></svg>')
    bad = any(not finite(v) for row in rows for v in row or [] if v is not None)
    return figure(key, title, "".join(parts), color_key(lo, hi, bad, bool(skipped), mark is not None))


def heatmap_width(layers: list[str], n_steps: int, width: int = 540) -> float:
    """How wide `heatmap` draws these layers: wider than a grid column, the page puts the two runs one above
    the other."""
    return max(width, min(max(map(text_width, layers), default=0), MAX_LABEL) + 40 + min(300, 8 * n_steps))


def color_key(lo: float, hi: float, nonfinite: bool = True, skipped: bool = True, mark: bool = True) -> str:
    gradient = ", ".join(ramp(i / (len(RAMP) - 1)) for i in range(len(RAMP)))
    items = [f'<span class="box" style="width:160px;background:linear-gradient(90deg, {gradient})"></span>gradient '
             f'norm, {escape(fmt(lo))} to {escape(fmt(hi))} (log scale)']
    if nonfinite:
        items.append('<span class="box" style="background:#e03131"></span>NaN / Inf')
    if skipped:
        items.append('<span class="box" style="background:#dee2e6"></span>skipped by the GradScaler')
    if mark:
        items.append('<span class="box" style="border:1.5px solid #000"></span>first non-finite step')
    return '<div class="legend">' + "".join(f'<span class="item">{item}</span>' for item in items) + "</div>"


def palette(n: int) -> list[str]:
    """`n` colours far apart in hue, for the layers of a per-layer chart."""
    base = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf"]
    return [base[i] if i < len(base) else f"hsl({int(360 * i / n)},65%,42%)" for i in range(n)]
