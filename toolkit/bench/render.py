"""The bench result for people: a rich table and an SVG chart of latency against agreement."""

from __future__ import annotations

from typing import Any

from .results import BenchResult


def table(result: BenchResult) -> Any:
    from rich.table import Table

    estimated = any(s.energy.get("source") == "estimated" for s in result.systems)
    title = f"bench {result.task}: {result.machine['cpu']}, {result.settings['threads']} thread(s)"
    t = Table(title=title, title_justify="left")
    heads = ["system", "runtime", "b1 p50/p90/p99 ms", f"b{result.settings['batch_size']} q/s", "peak MiB"]
    heads += ["size MB", "params M", "agreement", "J/1k q" + (" (estimated)" if estimated else ""), "$/1M q"]
    for h in heads:
        t.add_column(h, justify="left" if h in ("system", "runtime") else "right")
    for s in result.systems:
        lat = s.latency_ms
        t.add_row(
            s.name,
            f"{s.runtime} {s.precision}",
            f"{lat['p50']:.2f}/{lat['p90']:.2f}/{lat['p99']:.2f}",
            f"{s.throughput_qps:,.0f}",
            f"{s.peak_rss_mib:.0f}",
            "" if s.size_bytes is None else f"{s.size_bytes / 1e6:.1f}",
            "" if s.parameters is None else f"{s.parameters / 1e6:.2f}",
            "—" if s.kind == "teacher" else ("" if s.agreement is None else f"{s.agreement:.4f}"),
            f"{s.energy['joules_per_1k_b32']:.1f}",
            f"{s.cost_per_1m_usd['total']:.3f}",
        )
    return t


def chart(result: BenchResult, threshold: float | None = None) -> str:
    """Latency at batch 1 (p50, log scale) against agreement with the teacher: one point per system."""
    import html
    import math

    points = [s for s in result.systems if s.latency_ms]
    width, height, left, right, top, bottom = 640, 360, 60, 150, 20, 50
    xs = [math.log10(max(s.latency_ms["p50"], 1e-3)) for s in points]
    lo_x, hi_x = math.floor(min(xs, default=0)), math.ceil(max(xs, default=1))
    hi_x = max(hi_x, lo_x + 1)
    ys = [1.0 if s.kind == "teacher" else (s.agreement or 0.0) for s in points] + ([threshold] if threshold else [])
    lo_y = max(0.0, math.floor((min(ys, default=0.5) - 0.02) * 20) / 20)

    def x(v: float) -> float:
        return left + (width - left - right) * (v - lo_x) / (hi_x - lo_x)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1.0 - (v - lo_y) / (1.0 - lo_y or 1.0))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" role="img" '
        f'aria-label="latency against agreement" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<line x1="{left}" x2="{width - right}" y1="{y(lo_y):.1f}" y2="{y(lo_y):.1f}" stroke="#000"/>',
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{y(lo_y):.1f}" stroke="#000"/>',
    ]
    for d in range(lo_x, hi_x + 1):
        parts.append(f'<text x="{x(d):.1f}" y="{y(lo_y) + 16:.1f}" text-anchor="middle">{10.0**d:g}</text>')
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">latency at batch 1, '
        "p50 (ms, log scale)</text>"
    )
    steps = round((1.0 - lo_y) / 0.05)
    for i in range(steps + 1):
        v = lo_y + i * 0.05
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    parts.append(f'<text x="14" y="{top + 120}" transform="rotate(-90 14 {top + 120})">agreement with teacher</text>')
    if threshold:
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
            'stroke="#1565c0" stroke-dasharray="6 4"/>'
        )
        parts.append(
            f'<text x="{width - right + 4}" y="{y(threshold) + 4:.1f}" fill="#1565c0">threshold {threshold}</text>'
        )
    placed: list[tuple[float, float, float]] = []  # (x0, x1, baseline) of labels drawn so far
    for s, lx, ay in sorted(zip(points, xs, ys, strict=False), key=lambda t: (-t[2], t[1])):
        colour = {"teacher": "#6a1b9a", "student": "#ef6c00"}.get(s.kind, "#2e7d32")
        label = f"{s.name} ({s.latency_ms['p50']:.2f} ms)"
        x0, ly = x(lx) + 8, y(ay) - 6
        x1 = x0 + 7 * len(label)  # about 7 px a character at 12 px
        while any(a < x1 and x0 < b and abs(ly - base) < 14 for a, b, base in placed):
            ly += 15  # move down until it overlaps no other label
        placed.append((x0, x1, ly))
        parts.append(f'<circle cx="{x(lx):.1f}" cy="{y(ay):.1f}" r="5" fill="{colour}"/>')
        parts.append(f'<text x="{x0:.1f}" y="{ly:.1f}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
