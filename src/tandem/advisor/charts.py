"""Small inline-SVG charts for the advisor's report: no plotting library, no script, no network.

Two kinds: grouped bars and lines over categorical x positions, on a linear or log y axis. Every
mark carries a ``<title>`` so that hovering shows its exact value. Lines often coincide (two networks
that cost the same on the device, a head that is the whole time): each has its own dash pattern and
marker shape, and sits a few pixels aside within its category, so that none hides another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
DASHES = ("", "8 4", "2 3", "10 3 2 3", "5 2", "1 4")  # stroke-dasharray per line: solid first
MARKERS = ("circle", "square", "triangle", "diamond", "cross")
NUDGE = 4.0  # pixels between neighbouring lines' points within a category
W, H = 900, 320
LEFT, RIGHT, TOP, BOTTOM = 70, 150, 34, 70


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


class _Axis:
    def __init__(self, values: Sequence[float], log: bool) -> None:
        finite = [v for v in values if v is not None and math.isfinite(v) and (v > 0 or not log)]
        self.log = log and bool(finite)
        if not finite:
            finite = [0.0, 1.0]
        lo, hi = min(finite), max(finite)
        if self.log:
            self.lo, self.hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
            if self.lo == self.hi:
                self.hi *= 10
        else:
            self.lo = min(0.0, lo)
            step = _nice_step((hi - self.lo) or 1.0)
            self.hi = math.ceil(hi / step) * step or step
            self.step = step

    def y(self, v: float) -> float:
        span = H - TOP - BOTTOM
        if self.log:
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return H - BOTTOM - f * span

    def ticks(self) -> list[float]:
        if self.log:
            e0, e1 = round(math.log10(self.lo)), round(math.log10(self.hi))
            return [10.0 ** e for e in range(e0, e1 + 1)]
        n = round((self.hi - self.lo) / self.step)
        return [self.lo + i * self.step for i in range(n + 1)]


def _nice_step(span: float) -> float:
    raw = span / 5
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _frame(title: str, y_label: str, axis: _Axis, labels: Sequence[str]) -> list[str]:
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" role="img" '
           f'font-family="sans-serif" font-size="11"><title>{escape(title)}</title>',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>',
           f'<text transform="translate(14 {(H - BOTTOM + TOP) / 2}) rotate(-90)" text-anchor="middle">'
           f'{escape(y_label)}</text>']
    for t in axis.ticks():
        y = axis.y(t)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{H - BOTTOM}" stroke="#333"/>')
    out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}" stroke="#333"/>')
    n = len(labels)
    every = max(1, math.ceil(n / 40))  # keep the x labels readable
    for i, label in enumerate(labels):
        if i % every == 0 or i == n - 1:
            x = _x(i, n)
            out.append(f'<text transform="translate({x:.1f} {H - BOTTOM + 10}) rotate(-60)" text-anchor="end" '
                       f'font-size="9">{escape(label)}</text>')
    return out


def _x(i: int, n: int) -> float:
    return LEFT + (i + 0.5) * (W - LEFT - RIGHT) / max(n, 1)


def _dash(j: int) -> str:
    pattern = DASHES[j % len(DASHES)]
    return f' stroke-dasharray="{pattern}"' if pattern else ""


def _marker(j: int, x: float, y: float, colour: str, r: float = 3.0, title: str = "") -> str:
    """Line ``j``'s point shape at (x, y)."""
    shape = MARKERS[j % len(MARKERS)]
    tip = f"<title>{escape(title)}</title>" if title else ""
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:g}" fill="{colour}">{tip}</circle>'
    if shape == "square":
        return (f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:g}" height="{2 * r:g}" '
                f'fill="{colour}">{tip}</rect>')
    if shape == "cross":
        return (f'<path d="M{x - r:.1f},{y:.1f}H{x + r:.1f}M{x:.1f},{y - r:.1f}V{y + r:.1f}" stroke="{colour}" '
                f'stroke-width="2">{tip}</path>')
    d = r * 1.3
    points = (((x, y - d), (x + d, y + d * 0.8), (x - d, y + d * 0.8)) if shape == "triangle"
              else ((x, y - d), (x + d, y), (x, y + d), (x - d, y)))
    return f'<polygon points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in points)}" fill="{colour}">{tip}</polygon>'


def _polyline(j: int, colour: str, points: list[str]) -> str:
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2"{_dash(j)} points="{" ".join(points)}"/>'


def _legend(names: Sequence[str], styled: bool = False) -> list[str]:
    """A swatch per series; ``styled``: the lines' own dash pattern and marker in it."""
    out = []
    for j, name in enumerate(names):
        y = TOP + 14 * j
        colour = PALETTE[j % len(PALETTE)]
        out.append(f'<line x1="{W - RIGHT + 6}" x2="{W - RIGHT + 30}" y1="{y}" y2="{y}" '
                   f'stroke="{colour}" stroke-width="{2 if styled else 3}"{_dash(j) if styled else ""}/>')
        if styled:
            out.append(_marker(j, W - RIGHT + 18, y, colour))
        out.append(f'<text x="{W - RIGHT + 34}" y="{y + 4}">{escape(name)}</text>')
    return out


def bars(labels: Sequence[str], series: dict[str, Sequence[float | None]], *, title: str, y_label: str,
         log: bool = False, reference: tuple[str, float] | None = None) -> str:
    """Grouped bars, one group per label; ``reference``: a dashed horizontal line (name, value)."""
    values = [v for s in series.values() for v in s if v is not None] + ([reference[1]] if reference else [])
    axis = _Axis(values, log)
    out = _frame(title, y_label, axis, labels)
    n, m = len(labels), max(len(series), 1)
    slot = (W - LEFT - RIGHT) / max(n, 1)
    width = max(1.0, slot * 0.8 / m)
    base = axis.y(axis.lo) if axis.log else axis.y(max(axis.lo, 0.0))
    for j, (name, vals) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        for i, v in enumerate(vals):
            if v is None or not math.isfinite(v) or (axis.log and v <= 0):
                continue
            x = LEFT + i * slot + slot * 0.1 + j * width
            y = axis.y(v)
            out.append(f'<rect x="{x:.1f}" y="{min(y, base):.1f}" width="{width:.1f}" height="{abs(base - y):.1f}" '
                       f'fill="{colour}"><title>{escape(labels[i])} · {escape(name)}: {v:.4g}</title></rect>')
    if reference:
        y = axis.y(reference[1])
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#000" '
                   f'stroke-dasharray="6 4"><title>{escape(reference[0])}: {reference[1]:.4g}</title></line>')
        out.append(f'<text x="{W - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end">{escape(reference[0])}</text>')
    out += _legend(list(series))
    out.append("</svg>")
    return "\n".join(out)


def lines(labels: Sequence[str], series: dict[str, Sequence[float | None]], *, title: str, y_label: str,
          log: bool = True, marks: dict[str, int] | None = None) -> str:
    """One line per series over the labels; gaps where a value is None or infinite. ``marks``:
    series name → index of a point to circle (the best placement)."""
    values = [v for s in series.values() for v in s if v is not None]
    axis = _Axis(values, log)
    out = _frame(title, y_label, axis, labels)
    n, m = len(labels), len(series)
    for j, (name, vals) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        nudge = (j - (m - 1) / 2) * NUDGE  # within the category: the x axis is not a scale

        path: list[str] = []
        for i, v in enumerate(vals):
            ok = v is not None and math.isfinite(v) and (v > 0 or not axis.log)
            if not ok:
                if len(path) > 1:
                    out.append(_polyline(j, colour, path))
                path = []
                continue
            x, y = _x(i, n) + nudge, axis.y(v)  # type: ignore[arg-type]
            path.append(f"{x:.1f},{y:.1f}")
            out.append(_marker(j, x, y, colour, title=f"{name} · {labels[i]}: {v:.4g}"))
        if len(path) > 1:
            out.append(_polyline(j, colour, path))
        if marks and name in marks:
            i = marks[name]
            v = vals[i]
            if v is not None and math.isfinite(v) and (v > 0 or not axis.log):
                out.append(f'<circle cx="{_x(i, n) + nudge:.1f}" cy="{axis.y(v):.1f}" r="7" fill="none" '
                           f'stroke="{colour}" stroke-width="2"><title>best on {escape(name)}: '
                           f'{escape(labels[i])}</title></circle>')
    out += _legend(list(series), styled=True)
    out.append("</svg>")
    return "\n".join(out)
