"""The bench result for people: a rich table and a chart of latency against agreement (toolkit/charts.py)."""

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
    import math

    from ..charts import BLUE, GREEN, ORANGE, PURPLE, Axis, Chart, nice_ticks

    measured = [s for s in result.systems if s.latency_ms]
    points = [(s, s.latency_ms["p50"], 1.0 if s.kind == "teacher" else (s.agreement or 0.0)) for s in measured]
    decades = [math.log10(max(ms, 1e-3)) for _, ms, _ in points]
    lo_x, hi_x = math.floor(min(decades, default=0)), math.ceil(max(decades, default=1))
    ys = [a for _, _, a in points] + ([threshold] if threshold else [])
    lo_y = max(0.0, math.floor((min(ys, default=0.5) - 0.02) * 20) / 20)
    chart = Chart(
        Axis(10.0**lo_x, 10.0 ** max(hi_x, lo_x + 1), "latency at batch 1, p50 (ms, log scale)", log=True),
        Axis(lo_y, 1.0, "agreement with teacher", ticks=nice_ticks(lo_y, 1.0, round((1.0 - lo_y) / 0.05) or 1)),
        label="latency against agreement",
        right=150,
    )
    if threshold:
        chart.hline(threshold, BLUE, text=f"threshold {threshold}", outside=True)
    for s, ms, agreement in sorted(points, key=lambda p: (-p[2], p[1])):  # the best labelled first, near its point
        colour = {"teacher": PURPLE, "student": ORANGE}.get(s.kind, GREEN)
        chart.point(ms, agreement, colour, text=f"{s.name} ({ms:.2f} ms)")
    return chart.svg()
