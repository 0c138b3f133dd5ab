"""`runs/<task>/report.html`: one self-contained page a person can read to see where agreement was lost.

A stage table, a bar chart of agreement per stage with its 95% interval and the threshold line,
per-label agreement (worst first) and the most frequent disagreements with an example input.
The charts are inline SVG (toolkit/charts.py): they need no plotting library and no network, and the page
opens anywhere (a CI artifact, an air-gapped laptop).
"""

from __future__ import annotations

import html
from pathlib import Path

from .agreement import AgreementReport
from .charts import BLUE, GREEN, RED, Axis, Bar, Chart

ORDER = ["teacher", "student", "onnx"]


def load_reports(folder: Path) -> list[AgreementReport]:
    """Every agreement report in the folder (other JSON files there, of other schemas, are left out)."""
    import json

    from .agreement import SCHEMA

    paths = sorted(folder.glob("*.json"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 9, p.stem))
    return [AgreementReport.load(p) for p in paths if json.loads(p.read_text(encoding="utf-8")).get("schema") == SCHEMA]


def _chart(reports: list[AgreementReport]) -> str:
    """Agreement per stage as bars (red where it does not hold) with the 95% interval, and the threshold line."""
    rows = [r for r in reports if r.stage != "teacher"]
    if not rows:
        return ""
    lo = max(0.0, min(min(r.ci95[0] for r in rows), min(r.threshold or 1 for r in rows)) - 0.05)
    chart = Chart(
        Axis(lo, 1.0, "agreement with the teacher (black: its 95% interval)"),
        label="agreement per stage",
        width=760,
        height=20 + 38 * len(rows) + 40,
        left=210,
        bottom=40,
    )
    bars = [Bar(r.stage, r.agreement, GREEN if r.passed else RED, r.ci95, f"{r.agreement:.4f}") for r in rows]
    chart.bars(bars)
    for t in sorted({r.threshold for r in rows if r.threshold is not None}):
        chart.vline(t, BLUE, text=f"threshold {t}", width=2)
    return chart.svg()


def _deferral_chart(name: str, d: dict) -> str:
    """Coverage (x) against the agreement on the answered inputs (y), most confident first; the target line,
    and the shipped threshold's point as measured on the held-out half it was not chosen on."""
    curve = d.get("curve") or []
    if not curve:
        return ""
    lo = max(0.0, min(min(pt["answered_agreement"] for pt in curve), d["target"]) - 0.02)
    chart = Chart(
        Axis(0.0, 1.0, "coverage (share the student answers)"),
        Axis(lo, 1.0, "answered agreement"),
        label="coverage and answered agreement",
        height=310,
        top=16,
    )
    chart.line([(pt["coverage"], pt["answered_agreement"]) for pt in curve], GREEN)
    chart.hline(d["target"], BLUE, text=f"target {d['target']}", width=2)
    ev = d.get("evaluation") or {}
    if d.get("threshold") is not None and ev.get("answered_agreement") is not None:
        text = f"τ = {d['threshold']:.3f}: coverage {ev['coverage']:.2f}, answered {ev['answered_agreement']:.3f}"
        chart.point(ev["coverage"], ev["answered_agreement"], RED, r=6, text=text)
    note = (
        f"<p>{html.escape(name)}: the student answers when its {html.escape(d['measure'])} is at least τ, chosen "
        f"so that with {d['confidence']:.0%} confidence it agrees with the teacher on at least {d['target']} of "
        "what it answers (SGR, Geifman &amp; El-Yaniv 2017). The curve is every held-out input; the red point is "
        "measured on the half of them τ was not chosen on.</p>"
    )
    return note + chart.svg()


def _embedding_sections(reports: list[AgreementReport], last: AgreementReport | None) -> list[str]:
    """An embed task's stages side by side (cosine, recall@k both ways, top-1), the distribution of the cosine to
    the teacher per stage (the share of held-out queries at or under each cosine), and the queries furthest away."""
    if not reports:
        return []

    def fig(e: dict, key: str) -> str:
        value = e.get(key)
        return "" if value is None else f"{value:.3f}"

    k = reports[0].details["embedding"].get("k")
    rows = []
    for r in reports:
        e = r.details["embedding"]
        under = "" if e.get("under_floor") is None else f"{100 * e['under_floor']:.1f}% under {e['floor']:g}"
        keys = ("mean_cosine", "recall_symmetric", "recall_asymmetric", "top1_symmetric", "top1_asymmetric")
        rows.append([html.escape(r.stage), *(fig(e, key) for key in keys), under])
    head = ["stage", "mean cosine", f"recall@{k} sym", f"recall@{k} asym", "top-1 sym", "top-1 asym", "cosine"]
    corpus = reports[0].details["embedding"]["corpus"]
    out = [
        "<h2>Embeddings against the teacher, per stage</h2>",
        f"<p>Symmetric: the student embeds the held-out query and the corpus of {corpus} training inputs; "
        "asymmetric: the student's query against the teacher-built index.</p>",
        _table(head, rows),
    ]
    with_cosine = [r for r in reports if r.details["embedding"].get("cosine_histogram")]
    if with_cosine:
        lo = min(r.details["embedding"]["cosine_quantiles"]["p1"] for r in with_cosine)
        chart = Chart(
            Axis(max(-1.0, round(lo - 0.05, 1)), 1.0, "cosine to the teacher's embedding"),
            Axis(0.0, 1.0, "share of held-out queries at or under"),
            label="distribution of the cosine to the teacher",
            height=300,
            right=170,
        )
        colours = [GREEN, BLUE, RED, "#6a1b9a", "#ef6c00", "#00838f", "#5d4037"]
        for i, r in enumerate(with_cosine):
            e = r.details["embedding"]
            edges, counts = e["cosine_histogram"]["edges"], e["cosine_histogram"]["counts"]
            total, running, points = max(sum(counts), 1), 0, []
            for edge, count in zip(edges[1:], counts, strict=True):
                running += count
                if edge >= chart.x.lo:
                    points.append((edge, running / total))
            chart.line(points, colours[i % len(colours)], legend=r.stage)
        chart.vline(with_cosine[0].details["embedding"]["floor"], RED, text="floor")
        out.append(chart.svg())
    if last is not None and last.confusions:
        out += [
            f"<h2>Queries furthest from the teacher, {html.escape(last.stage)}</h2>",
            _table(
                ["query", "cosine", f"recall@{k} sym", f"recall@{k} asym"],
                [
                    [
                        html.escape(c.get("text") or ""),
                        fig(c, "cosine"),
                        fig(c, "recall_symmetric"),
                        fig(c, "recall_asymmetric"),
                    ]
                    for c in last.confusions
                ],
            ),
        ]
    return out


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
    judged = [r for r in reports if r.stage != "teacher"]
    metric, measure = (judged[0].metric, judged[0].measure) if judged else ("label", "agreement")
    sections = [
        f"<h1>tsd-edge: {html.escape(task_name)}</h1>",
        "<p>Agreement of each stage with the teacher on the held-out inputs (the teacher's row gives its "
        "accuracy on the gold labels, where the data has them). Latency is from <code>tsd-edge bench</code>, "
        "where it has been run.</p>",
        _table(
            [
                "stage",
                "n",
                measure,
                "95% CI",
                "gold acc.",
                "same prediction as fp32 student" if metric == "label" else "same top-1 neighbour as fp32 student",
                "max |Δ logit|" if metric == "label" else "max |Δ output|",
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
    if metric != "label":
        sections += _embedding_sections([r for r in reports if "embedding" in r.details], last)
    elif last is not None:
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
