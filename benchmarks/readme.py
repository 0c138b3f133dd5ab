"""benchmarks/README.md's tables, regenerated from a results file between two markers; the text around
them is written by hand and kept."""

from __future__ import annotations

import json
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _f(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def render(data: dict, name: str) -> str:
    m, v, b = data["machine"], data["versions"], data["bench"]
    roof = data["roofline"]["used"]
    estimated = any(s["energy"]["source"] == "estimated" for s in b["systems"])
    energy_head = "J / 1k queries b1 · b32" + (" (**estimated**)" if estimated else " (RAPL)")
    libs = ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "transformers", "onnxruntime", "openvino") if v.get(k))
    st = b["settings"]
    lines = [
        f"Recorded in [`results/{name}`](results/{name}), {data['created']}: `{data['command']}`",
        "",
        f"Machine: **{m['cpu']}**, {m['cores']} cores ({', '.join(m['flags'])}), {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}, GPU: {m['gpu'] or 'none'}; {libs}. {st['threads']} thread per system, "
        f"{st['repeats']} interleaved repeats of {st['queries_b1_per_repeat']} batch-1 queries and "
        f"{st['batches_per_repeat']} batches of {st['batch_size']}, on held-out inputs; medians.",
        "",
        f"| system | runtime | b1 p50 · p90 · p99 ms | b{st['batch_size']} queries/s | MFLOP / query "
        f"| GFLOP/s (% fp32 peak) | peak MiB | size MB | params M | agreement | {energy_head} | $ / 1M queries |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in b["systems"]:
        lat, e, c = s["latency_ms"], s["energy"], s["cost_per_1m_usd"]
        frac = s.get("fraction_of_fp32_peak")
        gflops = "—" if s["gflops"] is None else f"{s['gflops']:.1f} ({100 * frac:.0f}%)"
        mflop = _f(s.get("mflop_per_query"), ",.0f")
        size = _f(s["size_bytes"] and s["size_bytes"] / 1e6, ".1f")
        params = _f(s["parameters"] and s["parameters"] / 1e6, ".2f")
        lines.append(
            f"| {s['name']} | {s['runtime']} {s['precision']} | {lat['p50']:.2f} · {lat['p90']:.2f} · "
            f"{lat['p99']:.2f} | {s['throughput_qps']:,.0f} | {mflop} | {gflops} | {s['peak_rss_mib']:.0f} | "
            f"{size} | {params}"
            f" | {'(itself)' if s['kind'] == 'teacher' else _f(s['agreement'], '.4f')} | "
            f"{e['joules_per_1k_b1']:.1f} · {e['joules_per_1k_b32']:.1f} | {c['total']:.3f} |"
        )
    lines += [
        "",
        f"Targets (issue 6), judged on `{data['primary']}` against the teacher and the eager student; the task's "
        f"agreement threshold is {data['agreement_threshold']}:",
        "",
        "| target | bound | measured | met |",
        "| --- | ---: | ---: | :---: |",
    ]
    for t in data["targets"]:
        val = t["measured"]
        shown = "—" if val is None else (f"{val:.2f}" if t["key"] == "fraction_of_fp32_peak" else f"{val:,.1f}")
        if val is not None and (t["key"].endswith("vs_teacher") or t["key"] == "latency_b1_vs_eager"):
            shown += "×"
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['what']} | {t['target']} | {shown} | {met} |")
    g = roof["gflops"]
    sizes = roof["sizes"]
    lines += [
        "",
        f"Roofline, {roof['threads']} thread, best of {roof['repeats']} (N×N, N = {', '.join(map(str, sizes))}; "
        f"numpy BLAS: {roof['blas']}): fp32 peak **{roof['fp32_peak_gflops']:.1f} GFLOP/s**, "
        f"int8 (ORT MatMulInteger u8×s8) **{roof['int8_peak_gops']:.1f} GOP/s**.",
        "",
        "| N | numpy fp32 | ORT MatMul fp32 | ORT MatMulInteger int8 |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for n in sizes:
        lines.append(f"| {n} | {g[f'numpy_fp32_{n}']:.1f} | {g[f'ort_fp32_{n}']:.1f} | {g[f'ort_int8_{n}']:.1f} |")
    if b.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{s['name']} ({s['reason']})" for s in b["skipped"])]
    return "\n".join(lines)


def write_readme(result: Path) -> Path:
    data = json.loads(result.read_text(encoding="utf-8"))
    return replace_block(README, START, END, render(data, result.name))


def replace_block(readme: Path, start: str, end: str, body: str, heading: str = "") -> Path:
    """Put `body` between the `start` and `end` markers of `readme` (a generated block); where the markers are not
    there yet, they go at the end, under `heading` when one is given."""
    text = readme.read_text(encoding="utf-8") if readme.is_file() else "# Benchmarks\n"
    if start not in text or end not in text:
        text = text.rstrip() + ("\n\n" + heading if heading else "") + f"\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{start}\n{body}\n{end}{tail}", encoding="utf-8")
    return readme
