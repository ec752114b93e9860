"""Small inline-SVG charts for the advisor's report: no plotting library, no script, no network.

Two kinds: grouped bars and lines over categorical x positions, on a linear or log y axis. Every
mark carries a ``<title>`` so that hovering shows its exact value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
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
        n = int(round((self.hi - self.lo) / self.step))
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


def _legend(names: Sequence[str], dashed: Sequence[bool] | None = None) -> list[str]:
    out = []
    for j, name in enumerate(names):
        y = TOP + 14 * j
        dash = ' stroke-dasharray="4 3"' if dashed and dashed[j] else ""
        out.append(f'<line x1="{W - RIGHT + 10}" x2="{W - RIGHT + 28}" y1="{y}" y2="{y}" '
                   f'stroke="{PALETTE[j % len(PALETTE)]}" stroke-width="3"{dash}/>')
        out.append(f'<text x="{W - RIGHT + 32}" y="{y + 4}">{escape(name)}</text>')
    return out


def bars(labels: Sequence[str], series: dict[str, Sequence[float]], *, title: str, y_label: str,
         log: bool = False, reference: tuple[str, float] | None = None) -> str:
    """Grouped bars, one group per label; ``reference``: a dashed horizontal line (name, value)."""
    values = [v for s in series.values() for v in s] + ([reference[1]] if reference else [])
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
    n = len(labels)
    for j, (name, vals) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        path: list[str] = []
        for i, v in enumerate(vals):
            ok = v is not None and math.isfinite(v) and (v > 0 or not axis.log)
            if not ok:
                if len(path) > 1:
                    out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(path)}"/>')
                path = []
                continue
            x, y = _x(i, n), axis.y(v)  # type: ignore[arg-type]
            path.append(f"{x:.1f},{y:.1f}")
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{colour}">'
                       f'<title>{escape(name)} · {escape(labels[i])}: {v:.4g}</title></circle>')
        if len(path) > 1:
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(path)}"/>')
        if marks and name in marks:
            i = marks[name]
            v = vals[i]
            if v is not None and math.isfinite(v) and (v > 0 or not axis.log):
                out.append(f'<circle cx="{_x(i, n):.1f}" cy="{axis.y(v):.1f}" r="6" fill="none" stroke="{colour}" '
                           f'stroke-width="2"><title>best on {escape(name)}: {escape(labels[i])}</title></circle>')
    out += _legend(list(series))
    out.append("</svg>")
    return "\n".join(out)
