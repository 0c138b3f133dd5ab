"""Teacher calls to reach an agreement: `tsd-edge auto`'s selection vs random sampling of the same pool.

    python -m benchmarks.active_learning [--strategies mix random] [--seeds 0 1 2] [--max-calls 6000]
    python -m benchmarks.active_learning --plot benchmarks/results/active_learning-<host>.json

Each (strategy, seed) runs the real loop (toolkit/auto.py: collect with `only=`, warm-started distill,
held-out agreement, selection) on the Banking77 sample in a fresh run folder, with the task's
`auto.strategy` and `auto.seed` set, until agreement reaches the highest level asked for or
`--max-calls` training inputs have been asked. Random sampling is the same loop with
`strategy: random`: same rounds, same training, same held-out set; only the choice differs.

What is cached, so that the benchmark costs training time rather than teacher time: the teacher's
answers (a replay of a full collection, `runs/banking77/pairs.sqlite` by default: each answer is
still asked for through `collect` and stored, and so counted, one per input) and the encoder's
embeddings that relevance needs (copied into each fresh store). The held-out set is the same for
every run and is counted apart: the calls on the curve are training inputs asked.

Writes results/active_learning-<host-kind>.json (machine, versions, settings, every round) and a
chart of agreement vs teacher calls, averaged over seeds: results/active_learning-<host-kind>.svg
(toolkit/charts.py, the toolkit's one chart writer).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tsd_edge.charts import BLUE, GREEN, GREY, ORANGE, PURPLE, Axis, Chart

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
TASK = ROOT / "samples" / "banking77" / "task.yaml"
CACHE = ROOT / "runs" / "banking77" / "pairs.sqlite"
LEVELS = (0.85, 0.87)  # the edge-first student reaches 0.888 with every answer: 0.90 is past it


class ReplayTeacher:
    """The task's real teacher (fingerprint, spec, prototypes), answering from a stored full collection."""

    def __init__(self, task: Any, cache: Path) -> None:
        from tsd_edge.store import PairStore
        from tsd_edge.teachers import load_teacher

        self.real = load_teacher(task)
        self.fingerprint, self.spec = self.real.fingerprint, self.real.spec
        self.batch_size = getattr(self.real, "batch_size", 32)
        with PairStore(cache) as store:
            pairs = list(store.pairs(self.fingerprint, status=None))
        if not pairs:
            raise SystemExit(f"{cache} holds no answers of teacher {self.fingerprint}: run `tsd-edge collect` first")
        self.answers = {p.input: p for p in pairs}
        self.asked = 0

    @property
    def prototypes(self) -> Any:
        return self.real.prototypes

    def vectors(self) -> dict[str, np.ndarray]:
        return {p.input_hash: p.embedding for p in self.answers.values() if p.embedding is not None}

    def answer(self, batch: list[str]) -> list[Any]:
        from tsd_edge.teachers import Response

        self.asked += len(batch)
        out = []
        for text in batch:
            p = self.answers[text]
            out.append(Response(label=p.label, probs=p.probs, embedding=p.embedding, status=p.status, reason=p.reason))
        return out


def one_run(task: Any, teacher: ReplayTeacher, workdir: Path, budget: int, saved: Any = None) -> list[dict[str, Any]]:
    from tsd_edge.auto import auto
    from tsd_edge.rundir import RunDir
    from tsd_edge.store import PairStore

    run = RunDir(workdir)
    with PairStore(run.pairs) as store:  # the encoder's embeddings, so relevance does not recompute them
        store.add_vectors(task.encoder, teacher.vectors())
    rounds: list[dict[str, Any]] = []

    def record(r: Any) -> None:
        rounds.append({k: getattr(r, k) for k in ("round", "train_calls", "heldout_calls", "agreement", "seconds")})
        sys.stderr.write(
            f"[{time.strftime('%H:%M:%S')}] {task.auto.strategy} seed {task.auto.seed} round {r.round}: "
            f"{r.train_calls} calls, agreement {r.agreement:.4f} ({r.seconds:.0f} s)\n"
        )
        if saved is not None:  # after every round: a run cut short still leaves its rounds
            saved(rounds)

    auto(task, run, budget, teacher=teacher, on_round=record)
    return rounds


def calls_to_reach(rounds: list[dict[str, Any]], level: float) -> float | None:
    """Training calls at which agreement first reaches `level`, interpolated between rounds; None if never."""
    prev = None
    for r in rounds:
        if r["agreement"] >= level:
            if prev is None or prev["agreement"] >= level:
                return float(r["train_calls"])
            f = (level - prev["agreement"]) / (r["agreement"] - prev["agreement"])
            return prev["train_calls"] + f * (r["train_calls"] - prev["train_calls"])
        prev = r
    return None


def summarise(runs: dict[str, dict[str, list[dict[str, Any]]]], max_calls: int) -> dict[str, Any]:
    """Per strategy: mean calls to each level over seeds (None when a seed never reached it), and the ratios."""
    table: dict[str, Any] = {}
    for strategy, by_seed in runs.items():
        row = {}
        for level in LEVELS:
            each = [calls_to_reach(rounds, level) for rounds in by_seed.values()]
            reached = [c for c in each if c is not None]
            row[f"{level:.2f}"] = {
                "per_seed": each,
                "mean": float(np.mean(reached)) if len(reached) == len(each) else None,
                "reached": f"{len(reached)}/{len(each)}",
                # where the runs that never reached it stopped (max_calls, or earlier if cut short)
                "not_by": None
                if len(reached) == len(each)
                else min(
                    max((r["train_calls"] for r in rounds), default=0)
                    for rounds, c in zip(by_seed.values(), each, strict=True)
                    if c is None
                ),
            }
        table[strategy] = row
    if "random" in table:
        for row in table.values():
            for level, cell in row.items():
                base = table["random"][level]["mean"]
                cell["vs_random"] = cell["mean"] / base if cell["mean"] is not None and base else None
    return table


def mean_curve(by_seed: dict[str, list[dict[str, Any]]]) -> list[tuple[int, float, int]]:
    """(training calls, mean agreement, seeds) at each call count some seed's round reached."""
    points: dict[int, list[float]] = {}
    for rounds in by_seed.values():
        for r in rounds:
            points.setdefault(r["train_calls"], []).append(r["agreement"])
    return [(c, float(np.mean(v)), len(v)) for c, v in sorted(points.items())]


COLOURS = {"mix": GREEN, "diverse": PURPLE, "margin": ORANGE, "random": BLUE}


def svg(result: dict[str, Any]) -> str:
    """Agreement vs training calls per strategy (mean over seeds), with the levels as dashed lines."""
    curves = {s: mean_curve(by_seed) for s, by_seed in result["runs"].items()}
    xs = [c for pts in curves.values() for c, _, _ in pts] or [1]
    ys = [a for pts in curves.values() for _, a, _ in pts] or [0.5]
    y_lo, y_hi = min(min(ys), min(LEVELS)) - 0.02, min(1.0, max(max(ys), max(LEVELS)) + 0.02)
    chart = Chart(
        Axis(0, max(xs) * 1.05, "teacher calls (training inputs asked; the held-out set is counted apart)"),
        Axis(y_lo, y_hi, "held-out agreement with the teacher"),
        label="agreement vs teacher calls",
        width=720,
        height=420,
        right=150,
    )
    for level in LEVELS:
        chart.hline(level, GREY, dash="5 4")
    for strategy, pts in curves.items():
        legend = f"{strategy} ({len(result['runs'][strategy])} seeds)"
        chart.line([(c, a) for c, a, _ in pts], COLOURS.get(strategy, "#444"), dots=2.5, legend=legend)
    return chart.svg()


def write_charts(result: dict[str, Any], json_path: Path) -> list[Path]:
    out = json_path.with_suffix(".svg")
    out.write_text(svg(result), encoding="utf-8")
    return [out]


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several with the same settings (e.g. strategies run in separate processes)."""
    first = results[0]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        if {k: v for k, v in r["settings"].items() if k != "heldout_calls"} != {
            k: v for k, v in first["settings"].items() if k != "heldout_calls"
        }:
            raise SystemExit("cannot merge results recorded with different settings")
        for strategy, by_seed in r["runs"].items():
            runs.setdefault(strategy, {}).update(by_seed)
    return {
        **first,
        "command": " + ".join(r["command"] for r in results),
        "seconds": sum(r["seconds"] for r in results),
        "runs": runs,
        "summary": summarise(runs, first["settings"]["max_calls"]),
    }


def ablate(run_dir: Path, cache: Path, batch: int, candidates: int) -> dict[str, Any]:
    """Without training: what each strategy would ask for next from a loop's last round, judged against the
    teacher's cached answers (how many of the chosen inputs the student gets wrong: the new information
    in a batch), how many off-task inputs it asks for, and how spread over labels it is."""
    from tsd_edge.agreement import AgreementReport
    from tsd_edge.auto import AutoLog, asked_answers, encoder_vectors, relevant, split_inputs, student_logits
    from tsd_edge.rundir import RunDir
    from tsd_edge.selection import STRATEGIES, Pool, select
    from tsd_edge.store import PairStore
    from tsd_edge.task import load_task

    task = load_task(TASK)
    teacher = ReplayTeacher(task, cache)
    run, log = RunDir(run_dir), AutoLog(RunDir(run_dir))
    last = log.rounds()[-1]
    report = AgreementReport.load(log.student(last.round) / "report.json")
    per_label = {name: v["agreement"] for name, v in report.per_label.items()}
    split = split_inputs(task)
    rng = np.random.default_rng(0)
    with PairStore(run.pairs) as store:
        answered = store.answered(teacher.fingerprint)
        pool = [i for i in split.pool if i.key not in answered]
        pool = [pool[i] for i in sorted(rng.permutation(len(pool))[:candidates])]
        vectors = encoder_vectors(task, store, teacher, pool)
        keep = dict(zip([i.key for i in pool], relevant(task, store, teacher, pool, vectors), strict=True))
        asked, asked_labels = asked_answers(task, store, teacher)
    logits = student_logits(log.student(last.round), task, [i.text for i in pool])
    labels = task.label_names
    rows = {}
    for filtered in (True, False):
        idx = [n for n, i in enumerate(pool) if keep[i.key] or not filtered]
        cand = Pool(
            [pool[n].key for n in idx],
            logits[idx],
            np.stack([vectors[pool[n].key] for n in idx]),
            asked,
            asked_labels,
        )
        for strategy in STRATEGIES:
            chosen = set(select(cand, batch, strategy, labels=labels, per_label=per_label, seed=0))
            picked = [n for n in idx if pool[n].key in chosen]
            teacher_labels = [teacher.answers[pool[n].text].label for n in picked]
            student = [labels[int(logits[n].argmax())] for n in picked]
            relevant_ = [keep[pool[n].key] for n in picked]
            counts = np.unique([t for t, r in zip(teacher_labels, relevant_, strict=True) if r], return_counts=True)[1]
            rows[f"{strategy}{'' if filtered else ' (no relevance filter)'}"] = {
                "student_wrong": float(np.mean([s != t for s, t in zip(student, teacher_labels, strict=True)])),
                # how sure the teacher itself was: a low figure is inputs on the teacher's own boundary
                "teacher_top_prob": float(np.mean([teacher.answers[pool[n].text].probs.max() for n in picked])),
                "off_task": float(1 - np.mean(relevant_)),
                "labels_covered": len(counts),
                "largest_label_share": float(counts.max() / counts.sum()) if len(counts) else 0.0,
            }
    return {
        "round": last.round,
        "train_calls": last.train_calls,
        "agreement": last.agreement,
        "batch": batch,
        "candidates": candidates,
        "strategies": rows,
    }


START, END = "<!-- active-learning:start -->", "<!-- active-learning:end -->"


def _calls(cell: dict[str, Any]) -> str:
    if cell["mean"] is not None:
        return f"{cell['mean']:,.0f}"
    reached = [c for c in cell["per_seed"] if c is not None]
    return f"> {cell['not_by']:,} in {len(cell['per_seed']) - len(reached)} of {len(cell['per_seed'])} seeds"


def readme_table(result: dict[str, Any], path: Path) -> str:
    """The table for benchmarks/README.md: training calls to each level per strategy, and the ratio to random."""
    s, m = result["settings"], result["machine"]
    lines = [
        f"Recorded in [`results/{path.name}`](results/{path.name}), {result['created']}, "
        f"{result['seconds'] / 60:.0f} min: `{result['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}. Banking77 sample, offline teacher "
        f"(answers replayed from a full collection, each still asked through `collect` and counted); "
        f"{s['heldout_calls']} held-out inputs (calls made by every run, not in the table); first sample "
        f"{s['initial']}, then rounds of {s['batch']}, warm-started, {s['epochs_per_round']} epochs a round "
        f"(at least {s.get('min_steps_per_round', 0)} optimizer steps), "
        f"{s['candidates']} candidates scored per round; a run stops at {s['stop_at']} or {s['max_calls']:,} "
        "training calls. Calls to a level are interpolated between rounds, then averaged over seeds.",
        "",
        *([f"**{result['note']}**", ""] if result.get("note") else []),
        "| strategy | seeds | " + " | ".join(f"calls to {level:.2f} | vs random" for level in LEVELS) + " |",
        "| --- | ---: |" + " ---: | ---: |" * len(LEVELS),
    ]
    for strategy, row in result["summary"].items():
        seeds = ", ".join(result["runs"][strategy])
        cells = []
        for level in (f"{level:.2f}" for level in LEVELS):
            cell = row[level]
            ratio = f"{cell['vs_random']:.2f}" if cell.get("vs_random") is not None else "—"
            cells += [_calls(cell), ratio]
        lines.append(f"| {strategy} | {seeds} | " + " | ".join(cells) + " |")
    curves = {strategy: dict((c, a) for c, a, _ in mean_curve(by_seed)) for strategy, by_seed in result["runs"].items()}
    calls = sorted({c for curve in curves.values() for c in curve})
    lines += [
        "",
        "Held-out agreement by training calls, mean over seeds:",
        "",
        "| training calls | " + " | ".join(f"{c:,}" for c in calls) + " |",
        "| --- |" + " ---: |" * len(calls),
        *(
            f"| {strategy} | " + " | ".join(f"{curve[c]:.3f}" if c in curve else "" for c in calls) + " |"
            for strategy, curve in curves.items()
        ),
        "",
        f"![agreement vs teacher calls](results/{path.with_suffix('.svg').name})",
    ]
    return "\n".join(lines)


def write_readme(result: dict[str, Any], path: Path) -> Path:
    readme = HERE / "README.md"
    text = readme.read_text(encoding="utf-8")
    if START not in text:
        text = text.rstrip("\n") + "\n\n## Teacher calls: `tsd-edge auto` vs random sampling\n\n" + f"{START}\n{END}\n"
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{START}\n{readme_table(result, path)}\n{END}{tail}", encoding="utf-8")
    return readme


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.active_learning", description=__doc__.split("\n")[0])
    ap.add_argument("--strategies", nargs="+", default=["mix", "diverse", "random"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--initial", type=int, default=200)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=None, help="epochs per round [default: the task's training.epochs]")
    ap.add_argument("--min-steps", type=int, default=300, help="optimizer steps per round at least")
    ap.add_argument("--candidates", type=int, default=2000, help="pool inputs the student scores per round")
    ap.add_argument("--heldout", type=int, default=1000, help="held-out inputs (0: the whole split)")
    ap.add_argument("--max-calls", type=int, default=3000, help="stop a run after this many training inputs")
    ap.add_argument("--stop-at", type=float, default=max(LEVELS), help="stop a run once agreement reaches this")
    ap.add_argument("--cache", type=Path, default=CACHE, help="a store holding the teacher's answers to every input")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="only redraw the charts of a results file")
    ap.add_argument(
        "--ablate", type=Path, default=None, help="only compare the strategies' next batch from a loop's run dir"
    )
    ap.add_argument("--readme", type=Path, default=None, help="only write benchmarks/README.md's table from a file")
    ap.add_argument(
        "--merge", type=Path, nargs="+", default=None, help="combine results files (runs run apart) into --out"
    )
    args = ap.parse_args()
    if args.merge:
        merged = merge([json.loads(p.read_text(encoding="utf-8")) for p in args.merge])
        out = args.out or args.merge[0]
        out.write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
        for p in [out, *write_charts(merged, out)]:
            sys.stdout.write(f"{p}\n")
        return 0
    if args.ablate:
        from .__main__ import machine

        info = machine()
        data = {
            "machine": info,
            "run_dir": str(args.ablate),
            **ablate(args.ablate, args.cache, args.batch, args.candidates),
        }
        out = args.out or RESULTS / f"active_learning-selection-{info['host_kind']}.json"
        out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        sys.stdout.write(json.dumps(data["strategies"], indent=1) + "\n")
        return 0
    if args.readme:
        sys.stdout.write(f"{write_readme(json.loads(args.readme.read_text(encoding='utf-8')), args.readme)}\n")
        return 0
    if args.plot:
        result = json.loads(args.plot.read_text(encoding="utf-8"))
        for p in write_charts(result, args.plot):
            sys.stdout.write(f"{p}\n")
        return 0

    from tsd_edge.auto import split_inputs
    from tsd_edge.task import load_task

    from .__main__ import machine, versions

    info = machine()
    base = load_task(TASK)
    teacher = ReplayTeacher(base, args.cache)
    settings = {
        "task": str(TASK.relative_to(ROOT)),
        "initial": args.initial,
        "batch": args.batch,
        "epochs_per_round": args.epochs or base.training.epochs,
        "min_steps_per_round": args.min_steps,
        "candidates": args.candidates,
        "heldout": args.heldout,
        "max_calls": args.max_calls,
        "stop_at": args.stop_at,
        "student": base.student.model_dump(mode="json"),
        "training": base.training.model_dump(mode="json"),
    }
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    out = args.out or RESULTS / f"active_learning-{info['host_kind']}.json"
    started = time.time()
    for seed in args.seeds:  # seeds outermost, so a cut-short run still has every strategy for the first seeds
        for strategy in args.strategies:
            auto_spec = base.auto.model_copy(
                update={
                    "strategy": strategy,
                    "seed": seed,
                    "initial": args.initial,
                    "batch": args.batch,
                    "epochs": args.epochs,
                    "min_steps": args.min_steps,
                    "heldout": args.heldout or None,
                    "candidates": args.candidates,
                }
            )
            task = base.model_copy(
                update={
                    "auto": auto_spec,
                    "training": base.training.model_copy(update={"seed": seed}),
                    "agreement": base.agreement.model_copy(update={"threshold": args.stop_at}),
                }
            )

            def save(rounds: list[dict[str, Any]], strategy: str = strategy, seed: int = seed) -> dict[str, Any]:
                runs.setdefault(strategy, {})[str(seed)] = rounds
                settings["heldout_calls"] = rounds[0]["heldout_calls"] if rounds else None
                result = {
                    "schema": "tsd-edge/benchmarks/active-learning/1",
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "command": " ".join(["python -m benchmarks.active_learning", *sys.argv[1:]]),
                    "machine": info,
                    "versions": versions(),
                    "settings": settings,
                    "seconds": round(time.time() - started),
                    "runs": runs,
                    "summary": summarise(runs, args.max_calls),
                }
                out.parent.mkdir(exist_ok=True)
                out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
                write_charts(result, out)
                return result

            budget = len(split_inputs(task).held) + args.max_calls
            with tempfile.TemporaryDirectory(prefix="tsd-al-") as tmp:
                result = save(one_run(task, teacher, Path(tmp), budget=budget, saved=save))
    sys.stdout.write(json.dumps(result["summary"], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
