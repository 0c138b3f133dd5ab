"""The student ladder against the fastest peer: `python -m benchmarks.ladder TASK [--workdir RUN]`.

Side by side, on the task's held-out inputs and its teacher's answers (the same pairs for every system):
- the teacher, through its own adapter (sentence-transformers in PyTorch, prototypes);
- model2vec's classifier: `model2vec.distill` of the same teacher (its defaults: PCA 256, SIF), then
  `StaticModelForClassification.fit` on the teacher's labels of the relevant training pairs — the library's
  own training, untouched (needs `model2vec[train]`: datasets);
- every rung of the task's ladder (`ladder: auto` when the task has none), compiled for each target (the
  rungs the ladder did not need are trained here, in the same cached rung folders `tsd-edge run` uses).

Speed is end to end from raw text to a label, tokenization included, 1 thread everywhere (torch,
OpenMP/BLAS, ONNX Runtime, the tokenizers' Rayon pool), in one process: each repeat measures every system
in turn, a different one first each time (interleaved), and figures are medians over repeats. Batches of 32
are taken as they come; batch 1 is one text per call. Written with the machine and load average to
benchmarks/results/ladder-<date>-<host-kind>.json; prints the Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# before numpy, torch or tokenizers load: their thread pools read these once
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

HERE = Path(__file__).resolve().parent


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


class System:
    def __init__(self, name: str, predict: Callable[[list[str]], list[str]], size: int, agreement: float | None):
        self.name, self.predict, self.size, self.agreement = name, predict, size, agreement
        self.b32: list[float] = []
        self.b1: list[float] = []


def model2vec_classifier(teacher_dir: Path, folder: Path, train: list[Any], log: Callable[[str], None]) -> Any:
    """model2vec's own distillation of the teacher and its own classifier, trained on the teacher's labels."""
    from model2vec.inference import StaticModelPipeline

    if (folder / "pipeline").is_dir():
        return StaticModelPipeline.from_pretrained(str(folder / "pipeline"))
    from model2vec.distill import distill
    from model2vec.train import StaticModelForClassification

    start = time.perf_counter()
    base = distill(model_name=str(teacher_dir), device="cpu")  # its defaults: PCA 256, SIF 1e-4
    log(f"model2vec distill: {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    classifier = StaticModelForClassification.from_static_model(model=base)
    classifier.fit([p.input for p in train], [p.label for p in train], device="cpu")
    log(f"model2vec classifier fit: {time.perf_counter() - start:.0f} s")
    pipeline = classifier.to_pipeline()
    pipeline.save_pretrained(str(folder / "pipeline"))
    return pipeline


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--texts", type=int, default=1024, help="held-out texts per repeat at batch 32 (students)")
    ap.add_argument("--b1", type=int, default=256, help="texts per repeat at batch 1 (students)")
    ap.add_argument("--teacher-texts", type=int, default=64, help="per repeat at batch 32 (the teacher is slow)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--rungs", default=None, help="which rungs, e.g. 1,2 (default: all)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from tsd_edge import ladder, stages
    from tsd_edge.agreement import compare
    from tsd_edge.bench.energy import machine
    from tsd_edge.encoder import encoder_dir
    from tsd_edge.runtime.artifact import Artifact
    from tsd_edge.runtime.backends import open_runner
    from tsd_edge.store import PairStore
    from tsd_edge.targets import load_profile
    from tsd_edge.task import StudentSpec, load_task

    from benchmarks.__main__ import LIBRARIES

    def log(msg: str) -> None:
        print(msg, flush=True)

    task = load_task(args.task)
    run = stages.RunDir.for_task(task, args.workdir)
    if task.student.ladder is None:
        task = task.model_copy(update={"student": StudentSpec(ladder="auto")})
    teacher = stages._teacher(task)
    with PairStore(run.pairs) as store:
        held = stages._heldout(store, teacher.fingerprint)
        train = list(store.pairs(teacher.fingerprint, split="train", relevant=True))
    texts, teacher_labels = [p.input for p in held], [p.label for p in held]
    systems: list[System] = []

    # the teacher
    def teacher_predict(batch: list[str]) -> list[str]:
        return [r.label for r in teacher.answer(batch)]

    teacher_size = _folder_bytes(encoder_dir(task.encoder) / "model.safetensors")
    systems.append(System("the teacher (all-MiniLM-L6-v2, PyTorch, prototypes)", teacher_predict, teacher_size, None))

    # model2vec's classifier
    m2v_dir = run.root / "bench" / "model2vec"
    pipeline = model2vec_classifier(encoder_dir(task.encoder), m2v_dir, train, log)

    def m2v_predict(batch: list[str]) -> list[str]:
        return list(pipeline.predict(batch, use_multiprocessing=False))

    m2v_agreement = compare("model2vec", teacher_labels, m2v_predict(texts)).agreement
    systems.append(System("model2vec distilled + its classifier", m2v_predict, _folder_bytes(m2v_dir), m2v_agreement))

    # every rung, compiled for every target
    rows_meta: list[dict[str, Any]] = []
    chosen = {int(x) for x in args.rungs.split(",")} if args.rungs else None
    for i, rung in enumerate(ladder.rungs(task, run), 1):
        if chosen is not None and i not in chosen:
            continue
        t, rd = rung.task, rung.run
        rd.validate()
        for step in (stages.distill, stages.export):
            log(f"{rung.name}: {step(t, rd).summary}")
        for target in task.targets:
            profile = load_profile(target)
            log(f"{rung.name}: {stages.compile(t, rd, target).summary}")
            checked = stages.check(t, rd, target)
            artifact = Artifact.load_meta(rd.compiled(profile.name) / "artifact.json")
            runner = open_runner(artifact, 1).__enter__()
            encode = stages._encoder(rd, t)
            labels = stages._labels(rd)

            def predict(batch: list[str], runner: Any = runner, encode: Any = encode, labels: list = labels):
                return [labels[i] for i in runner.run(encode(batch)).argmax(1)]

            size = checked.report.details.get("artifact_bytes", 0) if checked.report else 0
            name = f"tsd-edge {rung.name}, {artifact.backend} {artifact.precision} ({target})"
            systems.append(System(name, predict, size, checked.report.agreement if checked.report else None))
            rows_meta.append({"rung": rung.name, "target": target, "why_not": stages.verdict(t, rd, checked.report)})

    # interleaved timing
    loads = [os.getloadavg()[0]]
    for s in systems:  # warm-up
        s.predict(texts[:32])
        s.predict(texts[:1])
    for rep in range(args.repeats):
        order = systems[rep % len(systems) :] + systems[: rep % len(systems)]
        offset = (rep * args.texts) % max(1, len(texts) - args.texts)
        for s in order:
            slow = s is systems[0]
            n32 = args.teacher_texts if slow else args.texts
            n1 = max(8, args.teacher_texts // 8) if slow else args.b1
            chunk = texts[offset : offset + n32]
            start = time.perf_counter()
            for i in range(0, len(chunk) - 31, 32):
                s.predict(chunk[i : i + 32])
            s.b32.append((len(chunk) // 32 * 32) / (time.perf_counter() - start))
            start = time.perf_counter()
            for text in chunk[:n1]:
                s.predict([text])
            s.b1.append((time.perf_counter() - start) / min(n1, len(chunk)) * 1e3)
        loads.append(os.getloadavg()[0])
        log(f"repeat {rep + 1}/{args.repeats}: load average {loads[-1]:.2f}")

    from importlib import metadata

    versions = {}
    for lib in (*LIBRARIES, "model2vec"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[lib] = metadata.version(lib)
    result = {
        "schema": "tsd-edge/bench-ladder/1",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "task": task.name,
        "heldout_n": len(held),
        "machine": machine(),
        "versions": versions,
        "load_average": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
        "threads": 1,
        "repeats": args.repeats,
        "systems": [
            {
                "system": s.name,
                "bytes": s.size,
                "agreement": s.agreement,
                "texts_per_s_b32": statistics.median(s.b32),
                "ms_b1": statistics.median(s.b1),
                "b32_all": [round(x) for x in s.b32],
                "b1_all": [round(x, 4) for x in s.b1],
            }
            for s in systems
        ],
        "rungs": rows_meta,
    }
    words = result["machine"]["cpu"].lower().replace("(r)", "").replace("(tm)", "").split()
    host = "-".join([*words[:2], f"{result['machine']['cores']}c"])
    out = args.out or HERE / "results" / f"ladder-{time.strftime('%Y-%m-%d')}-{host}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log(f"written: {out}")
    print(markdown(result))
    return 0


def markdown(result: dict[str, Any]) -> str:
    teacher = result["systems"][0]["texts_per_s_b32"]
    lines = [
        "| system | size | agreement | texts/s at b32 | ms at b1 | × teacher at b32 |",
        "|---|---|---|---|---|---|",
    ]
    for s in result["systems"]:
        agreement = "—" if s["agreement"] is None else f"{s['agreement']:.3f}"
        lines.append(
            f"| {s['system']} | {s['bytes'] / 1e6:.1f} MB | {agreement} | {s['texts_per_s_b32']:,.0f} | "
            f"{s['ms_b1']:.3f} | {s['texts_per_s_b32'] / teacher:,.0f}× |"
        )
    load = result["load_average"]
    lines.append(
        f"\n{result['date']}, {result['machine'].get('cpu', '')}, 1 thread, {result['repeats']} interleaved repeats, "
        f"load average {load['min']:.1f}–{load['max']:.1f} (median {load['median']:.1f}); "
        f"agreement on {result['heldout_n']} held-out inputs."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
