"""toolkit/charts.py, the one chart writer: scales, ticks, labels kept apart and inside, escaped text."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET

import pytest
from tsd_edge.charts import Axis, Bar, Chart, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


def test_ticks_are_round_values_inside_the_range() -> None:
    assert nice_ticks(0.62, 0.9) == pytest.approx([0.65, 0.7, 0.75, 0.8, 0.85, 0.9])
    assert nice_ticks(0, 3307.5) == [0, 1000, 2000, 3000]
    assert nice_ticks(0.5, 0.5) == [0.5]
    assert Axis(0.62, 0.9).label(0.7) == "0.70" and Axis(0, 3307.5).label(2000) == "2000"
    log = Axis(0.1, 100, log=True)
    assert log.tick_values() == pytest.approx([0.1, 1, 10, 100]) and log.label(0.1) == "0.1"
    assert log.fraction(1) == pytest.approx(1 / 3) and log.fraction(100) == pytest.approx(1)


def test_a_chart_is_well_formed_svg_with_its_parts() -> None:
    chart = Chart(Axis(0, 1, "coverage"), Axis(0.5, 1, "agreement"), label="a <b> & c")
    chart.line([(0, 1), (0.5, 0.9), (1, 0.6)], "#2e7d32", dots=2, legend="curve <1>")
    chart.hline(0.8, "#1565c0", text="target 0.8")
    chart.point(0.5, 0.9, "#c62828", text="τ <here>")
    text = chart.svg()
    root = ET.fromstring(text)  # parses: the text is escaped
    assert root.get("aria-label") == "a <b> & c"
    assert len(root.findall(f"{SVG}polyline")) == 1 and len(root.findall(f"{SVG}circle")) == 3 + 1
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert {"coverage", "agreement", "target 0.8", "τ <here>", "curve <1>", "0.5", "1.0"} <= set(labels)
    assert text == chart.svg()  # deterministic


def test_point_labels_keep_apart_and_inside_the_drawing() -> None:
    chart = Chart(Axis(0, 1), Axis(0, 1), label="points", width=400, height=300, right=100)
    for i in range(4):  # four labelled points almost on top of each other
        chart.point(0.5 + i * 0.001, 0.5, "#000", text=f"system number {i}")
    chart.point(1.0, 0.2, "#000", text="a long label at the right edge")
    spans = [
        (float(m[1]), float(m[2]), len(m[3]))
        for m in re.finditer(r'<text x="([\d.]+)" y="([\d.]+)">([^<]*)</text>', chart.svg())
    ]
    assert len(spans) == 5
    baselines = sorted(y for _, y, _ in spans[:4])
    assert all(b - a >= 14 for a, b in itertools.pairwise(baselines))  # no two overlap
    x, _, n = spans[4]
    assert x + 7 * n <= 400 and x < chart.px(1.0)  # moved left of its point to stay inside


def test_bars_fill_rows_from_the_axis_low_end() -> None:
    chart = Chart(Axis(0.5, 1.0), label="bars", width=500, height=200, left=100, right=0, top=20, bottom=40)
    chart.bars([Bar("a", 1.0, "#2e7d32", (0.9, 1.0), "1.000"), Bar("b", 0.75, "#c62828")])
    root = ET.fromstring(chart.svg())
    rects = root.findall(f"{SVG}rect")[1:]  # after the background
    assert [float(r.get("width", 0)) for r in rects] == pytest.approx([400, 200])
    assert [r.get("fill") for r in rects] == ["#2e7d32", "#c62828"]
    assert float(rects[0].get("y", 0)) < float(rects[1].get("y", 0)) < 160
    with pytest.raises(ValueError, match="no y scale"):
        chart.py(0.5)
