"""`runs/<task>/report.html`: one self-contained page a person can read to see where agreement was lost.

A stage table, a bar chart of agreement per stage with its 95% interval and the threshold line,
per-label agreement (worst first) and the most frequent disagreements with an example input.
The chart is inline SVG written here: it needs no plotting library and no network, and the page
opens anywhere (a CI artifact, an air-gapped laptop).
"""

from __future__ import annotations

import html
from pathlib import Path

from .agreement import AgreementReport

ORDER = ["teacher", "student", "onnx"]


def load_reports(folder: Path) -> list[AgreementReport]:
    """Every agreement report in the folder (other JSON files there, of other schemas, are left out)."""
    import json

    from .agreement import SCHEMA

    paths = sorted(folder.glob("*.json"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 9, p.stem))
    return [AgreementReport.load(p) for p in paths if json.loads(p.read_text(encoding="utf-8")).get("schema") == SCHEMA]


def _chart(reports: list[AgreementReport]) -> str:
    rows = [r for r in reports if r.stage != "teacher"]
    if not rows:
        return ""
    width, bar, gap, left, top = 760, 26, 12, 210, 10
    height = top + len(rows) * (bar + gap) + 30
    lo = max(0.0, min(min(r.ci95[0] for r in rows), min(r.threshold or 1 for r in rows)) - 0.05)

    def x(v: float) -> float:
        return left + (width - left - 20) * (v - lo) / (1 - lo)

    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" role="img" aria-label="agreement per stage">']
    for i, r in enumerate(rows):
        y = top + i * (bar + gap)
        colour = "#2e7d32" if r.passed else "#c62828"
        parts.append(f'<text x="{left - 8}" y="{y + bar * 0.7}" text-anchor="end">{html.escape(r.stage)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{x(r.agreement) - left:.1f}" height="{bar}" fill="{colour}"/>')
        parts.append(
            f'<line x1="{x(r.ci95[0]):.1f}" x2="{x(r.ci95[1]):.1f}" y1="{y + bar / 2}" y2="{y + bar / 2}" '
            'stroke="#000" stroke-width="2"/>'
        )
        parts.append(
            f'<text x="{x(r.agreement) + 4:.1f}" y="{y + bar * 0.7}" fill="#fff" font-size="12" '
            f'text-anchor="end" dx="-8">{r.agreement:.4f}</text>'
        )
    thresholds = {r.threshold for r in rows if r.threshold is not None}
    for t in thresholds:
        parts.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="0" y2="{height - 20}" stroke="#1565c0" '
            'stroke-dasharray="6 4" stroke-width="2"/>'
        )
        parts.append(f'<text x="{x(t):.1f}" y="{height - 5}" text-anchor="middle" fill="#1565c0">threshold {t}</text>')
    parts.append(f'<text x="{left}" y="{height - 5}" font-size="11">{lo:.2f}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _deferral_chart(name: str, d: dict) -> str:
    """Coverage (x) against the agreement on the answered inputs (y), most confident first; the target line,
    and the shipped threshold's point as measured on the held-out half it was not chosen on."""
    width, height, left, bottom, top = 640, 300, 60, 40, 16
    curve = d.get("curve") or []
    if not curve:
        return ""
    lo = max(0.0, min(min(pt["answered_agreement"] for pt in curve), d["target"]) - 0.02)

    def x(cov: float) -> float:
        return left + (width - left - 20) * cov

    def y(agr: float) -> float:
        return top + (height - top - bottom) * (1 - (agr - lo) / (1 - lo))

    path = " ".join(f"{x(pt['coverage']):.1f},{y(pt['answered_agreement']):.1f}" for pt in curve)
    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="{width}" role="img" aria-label="coverage and answered agreement">',
        f'<polyline points="{path}" fill="none" stroke="#2e7d32" stroke-width="2"/>',
        f'<line x1="{x(0)}" x2="{x(1)}" y1="{y(d["target"]):.1f}" y2="{y(d["target"]):.1f}" stroke="#1565c0" '
        'stroke-dasharray="6 4" stroke-width="2"/>',
        f'<text x="{x(0) + 4}" y="{y(d["target"]) - 4:.1f}" fill="#1565c0">target {d["target"]}</text>',
        f'<line x1="{x(0)}" x2="{x(1)}" y1="{height - bottom}" y2="{height - bottom}" stroke="#888"/>',
        f'<text x="{x(0.5)}" y="{height - 8}" text-anchor="middle">coverage (share the student answers)</text>',
        f'<text x="{x(0) - 6}" y="{y(1):.1f}" text-anchor="end">1.00</text>',
        f'<text x="{x(0) - 6}" y="{y(lo):.1f}" text-anchor="end">{lo:.2f}</text>',
        f'<text x="{x(1)}" y="{height - bottom + 14}" text-anchor="end">1.0</text>',
    ]
    ev = d.get("evaluation") or {}
    if d.get("threshold") is not None and ev.get("answered_agreement") is not None:
        cx, cy = x(ev["coverage"]), y(ev["answered_agreement"])
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="#c62828"/>')
        anchor, dx = ("end", -10) if ev["coverage"] > 0.5 else ("start", 10)  # keep the label inside the chart
        parts.append(
            f'<text x="{cx + dx:.1f}" y="{cy + 20:.1f}" text-anchor="{anchor}">τ = {d["threshold"]:.3f}: coverage '
            f"{ev['coverage']:.2f}, answered {ev['answered_agreement']:.3f}</text>"
        )
    parts.append("</svg>")
    note = (
        f"<p>{html.escape(name)}: the student answers when its {html.escape(d['measure'])} is at least τ, chosen "
        f"so that with {d['confidence']:.0%} confidence it agrees with the teacher on at least {d['target']} of "
        "what it answers (SGR, Geifman &amp; El-Yaniv 2017). The curve is every held-out input; the red point is "
        "measured on the half of them τ was not chosen on.</p>"
    )
    return note + "\n".join(parts)


def load_deferrals(folder: Path) -> dict[str, dict]:
    import json

    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((folder / "deferral").glob("*.json"))}


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def bench_latency(path: Path) -> dict[str, float]:
    """Batch-1 p50 latency per stage from `tsd-edge bench` (bench.json), where it has been run."""
    import json

    if not path.is_file():
        return {}
    try:
        systems = json.loads(path.read_text(encoding="utf-8"))["systems"]
        return {s["name"]: float(s["latency_ms"]["p50"]) for s in systems}
    except (ValueError, KeyError, TypeError):
        return {}  # a bench file from another version: the report goes on without latency


def render(
    task_name: str,
    reports: list[AgreementReport],
    latency_ms: dict[str, float] | None = None,
    deferrals: dict[str, dict] | None = None,
) -> str:
    latency_ms = latency_ms or {}
    stage_rows = []
    for r in reports:
        fid = r.fidelity or {}
        itself = r.stage == "teacher"
        stage_rows.append(
            [
                html.escape(r.stage),
                str(r.n),
                "—" if itself else f"{r.agreement:.4f}",
                "" if itself else f"{r.ci95[0]:.3f}–{r.ci95[1]:.3f}",
                "" if r.gold_accuracy is None else f"{r.gold_accuracy:.3f}",
                f"{fid['prediction_match']:.4f}" if fid else "",
                f"{fid['max_abs_dlogit']:.3g}" if fid else "",
                f"{r.details['artifact_bytes'] / 1e6:.1f} MB" if "artifact_bytes" in r.details else "",
                f"{latency_ms[r.stage]:.2f} ms" if r.stage in latency_ms else "",
                "" if r.threshold is None or itself else ("holds" if r.passed else "<b>does not hold</b>"),
            ]
        )
    # the evidence is shown for the stage that lost the most agreement: that is where a person looks
    last = min((r for r in reports if r.stage != "teacher"), key=lambda r: r.agreement, default=None)
    sections = [
        f"<h1>tsd-edge: {html.escape(task_name)}</h1>",
        "<p>Agreement of each stage with the teacher on the held-out inputs (the teacher's row gives its "
        "accuracy on the gold labels, where the data has them). Latency is from <code>tsd-edge bench</code>, "
        "where it has been run.</p>",
        _table(
            [
                "stage",
                "n",
                "agreement",
                "95% CI",
                "gold acc.",
                "same prediction as fp32 student",
                "max |Δ logit|",
                "size",
                "latency, batch 1 (p50)",
                "threshold",
            ],
            stage_rows,
        ),
        _chart(reports),
    ]
    for name, d in (deferrals or {}).items():
        sections += [f"<h2>The hybrid system, {html.escape(name)}</h2>", _deferral_chart(name, d)]
    if last is not None:
        worst = sorted(last.per_label.items(), key=lambda kv: kv[1]["agreement"])[:20]
        sections += [
            f"<h2>Per-label agreement, {html.escape(last.stage)} (worst 20)</h2>",
            _table(
                ["label", "n", "agreement"],
                [[html.escape(k), str(int(v["n"])), f"{v['agreement']:.3f}"] for k, v in worst],
            ),
            f"<h2>Most frequent disagreements, {html.escape(last.stage)}</h2>",
            _table(
                ["teacher said", "artifact said", "count", "example"],
                [
                    [
                        html.escape(c["teacher"]),
                        html.escape(c["predicted"]),
                        str(c["count"]),
                        html.escape(c.get("example") or ""),
                    ]
                    for c in last.confusions
                ],
            ),
        ]
    style = (
        "body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}svg text{font-size:13px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>tsd-edge: {html.escape(task_name)}</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n"
    )


def write_report(task_name: str, reports_dir: Path, out: Path) -> Path:
    """The page for a run folder; latency comes from `bench.json` beside it when `tsd-edge bench` has run."""
    latency = bench_latency(out.parent / "bench.json")
    page = render(task_name, load_reports(reports_dir), latency, load_deferrals(reports_dir))
    from .ladder import html_section  # the student ladder's rungs, when the run had one

    page = page.replace("</body>", html_section(reports_dir) + "</body>", 1)
    out.write_text(page, encoding="utf-8")
    return out
