"""Charts as SVG text: the one chart writer of report.html, `tsd-edge bench` (bench.svg) and the benchmarks.

A `Chart` is a frame (axes with ticks, linear or log10, and their titles) that holds lines (optionally dotted),
points with labels that keep clear of one another, horizontal bars with an interval, reference lines with a
label, and a legend; `svg()` gives the drawing.

Why written here and not drawn with matplotlib or plotly:
- the base install (what a CI runner or a device gets to gate a package and write its report) has no plotting
  library; matplotlib (~40 MB with its fonts and compiled parts) or plotly would be the heaviest dependency of
  `tsd-edge report` and `bench`, for four small charts;
- report.html is one self-contained file that must open offline (a CI artifact, an air-gapped laptop): inline
  SVG needs nothing besides the page, where plotly needs its 3 MB JavaScript bundle in every page or a CDN;
- the text is deterministic (coordinates rounded to 0.1 px, no dates or generated ids, unlike matplotlib's SVG
  backend), so a recorded chart changes in review only when its figures do, and tests can read it.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BLUE, GREEN, RED, ORANGE, PURPLE, GREY = "#1565c0", "#2e7d32", "#c62828", "#ef6c00", "#6a1b9a", "#999"
CHAR_PX = 7.0  # about the width of a character at 12 px: enough to keep labels apart and inside the drawing


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) from lo to hi, about `count` steps."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


@dataclass(frozen=True)
class Axis:
    """A value range drawn along one side. `ticks` default to round values (every power of ten on a log axis);
    `fmt` (a format spec) to as many decimals as the ticks' spacing needs."""

    lo: float
    hi: float
    title: str = ""
    log: bool = False
    ticks: Sequence[float] | None = None
    fmt: str | None = None

    def fraction(self, v: float) -> float:
        """Where v lies between lo (0) and hi (1)."""
        if self.log:
            lo, hi = math.log10(self.lo), math.log10(self.hi)
            return (math.log10(max(v, 1e-12)) - lo) / ((hi - lo) or 1.0)
        return (v - self.lo) / ((self.hi - self.lo) or 1.0)

    def tick_values(self) -> list[float]:
        if self.ticks is not None:
            return list(self.ticks)
        if self.log:
            return [10.0**d for d in range(round(math.log10(self.lo)), round(math.log10(self.hi)) + 1)]
        return nice_ticks(self.lo, self.hi)

    def label(self, v: float) -> str:
        if self.fmt is not None:
            return format(v, self.fmt)
        if self.log:
            return f"{v:g}"
        ticks = sorted(self.tick_values())
        step = min((b - a for a, b in itertools.pairwise(ticks)), default=1.0) or 1.0
        return f"{v:.{max(0, -math.floor(math.log10(step) + 1e-9))}f}"


@dataclass(frozen=True)
class Bar:
    """One horizontal bar: its row label, value, colour, an optional interval and the text written at its end."""

    label: str
    value: float
    colour: str
    interval: tuple[float, float] | None = None
    text: str = ""


def _text(x: float, y: float, text: str, **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{html.escape(text)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, colour: str, width: float = 1, dash: str = "") -> str:
    style = f' stroke-width="{width:g}"' + (f' stroke-dasharray="{dash}"' if dash else "")
    return f'<line x1="{x1:.1f}" x2="{x2:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" stroke="{colour}"{style}/>'


class Chart:
    """A frame of `width` x `height` px; the plot is inside the margins (`left`, `right`, `top`, `bottom`: the
    axes' labels go in the left and bottom ones, the legend and outside labels in the right one). With `y=None`
    the rows are categories: `bars` fills them top to bottom."""

    def __init__(
        self,
        x: Axis,
        y: Axis | None = None,
        *,
        label: str,
        width: int = 640,
        height: int = 360,
        left: int = 60,
        right: int = 20,
        top: int = 20,
        bottom: int = 50,
    ) -> None:
        self.x, self.y, self.label = x, y, label
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = left, right, top, bottom
        self._parts: list[str] = []
        self._legend: list[tuple[str, str]] = []
        self._placed: list[tuple[float, float, float]] = []  # (x0, x1, baseline) of the point labels drawn so far

    def px(self, v: float) -> float:
        return self.left + (self.width - self.left - self.right) * self.x.fraction(v)

    def py(self, v: float) -> float:
        if self.y is None:
            raise ValueError("a chart of categories (y=None) has no y scale")
        return self.top + (self.height - self.top - self.bottom) * (1.0 - self.y.fraction(v))

    @property
    def _x0(self) -> float:
        return float(self.left)

    @property
    def _x1(self) -> float:
        return float(self.width - self.right)

    @property
    def _y1(self) -> float:
        return float(self.height - self.bottom)

    def line(
        self, points: Iterable[tuple[float, float]], colour: str, *, width: float = 2, dots: float = 0, legend: str = ""
    ) -> None:
        """A polyline through the points (dots of radius `dots` on them when > 0), named in the legend."""
        xy = [(self.px(a), self.py(b)) for a, b in points]
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in xy)
        self._parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{width:g}"/>')
        if dots > 0:
            self._parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{dots:g}" fill="{colour}"/>' for a, b in xy]
        if legend:
            self._legend.append((colour, legend))

    def point(self, x: float, y: float, colour: str, *, r: float = 5, text: str = "") -> None:
        """A dot; its label goes right of it (left where it would leave the drawing), moved down until it overlaps
        no label drawn before: add the points that matter most first."""
        cx, cy = self.px(x), self.py(y)
        self._parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:g}" fill="{colour}"/>')
        if not text:
            return
        w = CHAR_PX * len(text)
        x0 = cx + r + 3 if cx + r + 3 + w <= self.width else cx - r - 3 - w
        baseline = cy - r - 1
        while any(a < x0 + w and x0 < b and abs(baseline - base) < 14 for a, b, base in self._placed):
            baseline += 15
        self._placed.append((x0, x0 + w, baseline))
        self._parts.append(_text(x0, baseline, text))

    def hline(
        self, y: float, colour: str, *, text: str = "", width: float = 1, dash: str = "6 4", outside: bool = False
    ) -> None:
        """A reference line across the plot at y; its label above the line's left end, or `outside` right of it."""
        at = self.py(y)
        self._parts.append(_line(self._x0, at, self._x1, at, colour, width, dash))
        if text and outside:
            self._parts.append(_text(self._x1 + 4, at + 4, text, fill=colour))
        elif text:
            self._parts.append(_text(self._x0 + 4, at - 4, text, fill=colour))

    def vline(self, x: float, colour: str, *, text: str = "", width: float = 1, dash: str = "6 4") -> None:
        """A reference line down the plot at x, its label above it."""
        at = self.px(x)
        self._parts.append(_line(at, self.top, at, self._y1, colour, width, dash))
        if text:
            self._parts.append(_text(at, self.top - 5, text, fill=colour, text_anchor="middle"))

    def bars(self, bars: Sequence[Bar]) -> None:
        """Horizontal bars from the x axis' low end, one row each, labelled at the left; the interval as a black
        whisker, the text in white inside the bar's end."""
        band = (self._y1 - self.top) / max(len(bars), 1)
        thick = band * 0.7
        for i, b in enumerate(bars):
            y = self.top + i * band + (band - thick) / 2
            end = self.px(b.value)
            self._parts.append(_text(self._x0 - 8, y + thick * 0.7, b.label, text_anchor="end"))
            self._parts.append(
                f'<rect x="{self._x0:.1f}" y="{y:.1f}" width="{max(end - self._x0, 0):.1f}" height="{thick:.1f}" '
                f'fill="{b.colour}"/>'
            )
            if b.interval is not None:
                lo, hi = self.px(b.interval[0]), self.px(b.interval[1])
                self._parts.append(_line(lo, y + thick / 2, hi, y + thick / 2, "#000", 2))
            if b.text:
                self._parts.append(_text(end - 8, y + thick * 0.7, b.text, fill="#fff", text_anchor="end"))

    def _axes(self) -> list[str]:
        grid, out = [], [_line(self._x0, self._y1, self._x1, self._y1, "#000")]
        for v in self.x.tick_values():
            at = self.px(v)
            out.append(_line(at, self._y1, at, self._y1 + 4, "#000"))
            out.append(_text(at, self._y1 + 16, self.x.label(v), text_anchor="middle"))
        if self.x.title:
            out.append(_text((self._x0 + self._x1) / 2, self.height - 12, self.x.title, text_anchor="middle"))
        if self.y is not None:
            out.append(_line(self._x0, self.top, self._x0, self._y1, "#000"))
            for v in self.y.tick_values():
                at = self.py(v)
                grid.append(_line(self._x0, at, self._x1, at, "#eee"))
                out.append(_text(self._x0 - 6, at + 4, self.y.label(v), text_anchor="end"))
            if self.y.title:
                middle = (self.top + self._y1) / 2
                out.append(
                    f'<text transform="translate(16 {middle:.1f}) rotate(-90)" text-anchor="middle">'
                    f"{html.escape(self.y.title)}</text>"
                )
        return grid + out

    def svg(self) -> str:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width} {self.height}" width="{self.width}" '
            f'role="img" aria-label="{html.escape(self.label)}" font-family="sans-serif" font-size="12">'
        )
        legend = []
        for i, (colour, name) in enumerate(self._legend):
            y = self.top + 20 * i + 10
            legend += [_line(self._x1 + 15, y, self._x1 + 40, y, colour, 2), _text(self._x1 + 45, y + 4, name)]
        body = [head, f'<rect width="{self.width}" height="{self.height}" fill="#fff"/>', *self._axes()]
        return "\n".join([*body, *self._parts, *legend, "</svg>"]) + "\n"
