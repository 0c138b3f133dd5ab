"""`tsd-edge auto`: reach the agreement threshold with as few teacher calls as it takes.

    round 0   ask the held-out inputs (fixed up front: never selected from, never trained on) and
              a random sample of the pool (the training split's inputs)
    round k   distill, warm-started from round k-1's student, for `auto.epochs` epochs
              → held-out agreement holds: stop (the CLI then compiles, checks and packages as `run` does)
              → else choose the next batch from the pool (toolkit/selection.py) within the budget, ask
                for it, and go on; no budget left: stop

A teacher call is one answer in the pair store: the store never asks an input twice, so the calls
so far are the answers stored for this teacher (a failed request is not stored, nor counted).

The run directory keeps the loop's memory, so an interrupted loop resumes where it stopped:
`auto.jsonl` has one line per finished round; `auto/batches.jsonl` has the inputs chosen for each
round, written before they are asked, so a resumed round asks what was chosen (the store skips what
is already answered) and nothing is chosen twice; `auto/round-<k>/` holds round k's student and its
held-out report (the last two rounds are kept; toolkit/auto_log.py). The last round's student is copied to `student/`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .agreement import AgreementReport
from .auto_log import AutoLog, Round
from .data import TaskInput, heldout, read_inputs
from .errors import InputError
from .progress import progress
from .rundir import RunDir
from .selection import Pool, select
from .store import PairStore
from .task import Task

WEAK_LABELS_SHOWN = 10
MIN_TRAIN_PAIRS = 20  # distill's own minimum


@dataclass
class AutoResult:
    rounds: list[Round]
    report: AgreementReport  # the last round's held-out agreement
    budget: int
    stopped: str  # "threshold", "budget", "pool" (no candidates left) or "rounds" (--rounds reached)
    resumed: int = 0  # rounds found already done
    student: Path | None = None

    @property
    def passed(self) -> bool:
        return self.stopped == "threshold"

    @property
    def calls(self) -> int:
        return self.rounds[-1].calls if self.rounds else 0

    def weak_labels(self, limit: int = WEAK_LABELS_SHOWN) -> list[tuple[str, float, int]]:
        """(label, held-out agreement, held-out inputs) for the labels under the threshold, by lost agreement."""
        return weak_labels(self.report, limit)


def weak_labels(report: AgreementReport, limit: int = WEAK_LABELS_SHOWN) -> list[tuple[str, float, int]]:
    bar = report.threshold if report.threshold is not None else 1.0
    rows = [(name, v["agreement"], int(v["n"])) for name, v in report.per_label.items() if v["agreement"] < bar]
    # by agreement points lost overall, so a large label at 0.8 comes before a tiny one at 0.5
    rows.sort(key=lambda r: (-(1 - r[1]) * r[2], r[1]))
    return rows[:limit]


@dataclass
class Split:
    held: list[TaskInput]  # the held-out inputs the loop asks for
    pool: list[TaskInput]  # every training-split input, in key order
    held_keys: set[str] = field(default_factory=set)
    pool_keys: set[str] = field(default_factory=set)


def split_inputs(task: Task) -> Split:
    share = task.split.heldout
    items = sorted(read_inputs(task), key=lambda i: i.key)  # key order: a fixed, unbiased order
    held = [i for i in items if heldout(i.key, share)]
    pool = [i for i in items if not heldout(i.key, share)]
    all_held = {i.key for i in held}
    return Split(held[: task.auto.heldout], pool, all_held, {i.key for i in pool})


def auto(
    task: Task,
    run: RunDir,
    budget: int,
    *,
    teacher: Any = None,
    max_rounds: int | None = None,
    on_round: Callable[[Round], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> AutoResult:
    """Run (or resume) the loop until the threshold holds, the budget is spent or `max_rounds` rounds ran."""
    from .collect import collect
    from .teachers import load_teacher

    teacher = teacher or load_teacher(task)
    fp: str = teacher.fingerprint
    spec = task.auto
    log = AutoLog(run)
    split = split_inputs(task)
    note = say or (lambda _msg: None)
    done = log.rounds()
    batches = log.batches()
    ran = 0
    kept: dict[str, bool] = {}  # input key -> the relevance rule keeps it
    with PairStore(run.pairs) as store:

        def calls() -> tuple[int, int]:
            answered = store.answered(fp)
            return len(answered & split.held_keys), len(answered & split.pool_keys)

        held_calls, train_calls = calls()
        answered = store.answered(fp)
        missing_held = sum(i.key not in answered for i in split.held)
        need = held_calls + train_calls + missing_held + MIN_TRAIN_PAIRS
        if not done and need > budget:
            stored = f", {held_calls + train_calls} answers already stored" if held_calls + train_calls else ""
            raise InputError(
                f"--budget {budget} does not cover the {len(split.held)} held-out inputs and a first sample of"
                f" {MIN_TRAIN_PAIRS}{stored}: give --budget {need} or more, or set auto.heldout in the task file"
            )
        report = _last_report(task, log, done)
        while True:
            k = len(done)
            if done and report is not None and report.passed:
                return _finish(task, run, log, done, report, budget, "threshold", k - ran)
            if max_rounds is not None and ran >= max_rounds:
                assert report is not None
                return _finish(task, run, log, done, report, budget, "rounds", k - ran)
            start = time.perf_counter()
            held_calls, train_calls = calls()
            answered = store.answered(fp)
            missing_held = sum(i.key not in answered for i in split.held) if k == 0 else 0
            room = budget - held_calls - train_calls - missing_held
            batch = batches.get(k)
            if batch is None:
                n = min(spec.initial if k == 0 else spec.batch, room)
                if n <= 0:
                    assert report is not None
                    return _finish(task, run, log, done, report, budget, "budget", k - ran)
                strategy = "random" if k == 0 else spec.strategy
                note(f"round {k}: choosing {n} inputs ({strategy})")
                keys = _choose(task, store, teacher, split, log, k, n, strategy, report, kept)
                if not keys:
                    assert report is not None
                    return _finish(task, run, log, done, report, budget, "pool", k - ran)
                log.add_batch(k, strategy, keys)
                batch = batches[k] = {"round": k, "strategy": strategy, "keys": keys}
            before = held_calls + train_calls
            if k == 0:
                note(f"round 0: asking the teacher for {len(split.held)} held-out inputs")
                collect(task, store, teacher, only={i.key for i in split.held})
            keys = [key for key in batch["keys"] if key in split.pool_keys and key not in answered][: max(room, 0)]
            note(f"round {k}: asking the teacher for {len(keys)} inputs")
            collect(task, store, teacher, only=set(keys))
            held_calls, train_calls = calls()
            note(f"round {k}: training on {train_calls} answers")
            result = _train(task, store, teacher, log, k)
            report = result.report
            round_ = Round(
                round=k,
                calls=held_calls + train_calls,
                heldout_calls=held_calls,
                train_calls=train_calls,
                asked=held_calls + train_calls - before,
                strategy=batch["strategy"],
                agreement=round(report.agreement, 6),
                ci95=(round(report.ci95[0], 6), round(report.ci95[1], 6)),
                n=report.n,
                passed=report.passed,
                deficits={name: round(a, 4) for name, a, _ in weak_labels(report)},
                train_pairs=int(report.details.get("train_pairs", 0)),
                epochs=int(report.details.get("epochs_run", 0)),
                seconds=round(time.perf_counter() - start, 1),
            )
            log.add_round(round_)
            done.append(round_)
            ran += 1
            for old in range(k - 1):  # keep this round's student and the one before it
                shutil.rmtree(log.student(old), ignore_errors=True)
            if on_round:
                on_round(round_)


def _last_report(task: Task, log: AutoLog, done: list[Round]) -> AgreementReport | None:
    """The last finished round's report, judged against the task's threshold as it is now."""
    if not done:
        return None
    path = log.student(done[-1].round) / "report.json"
    if not path.is_file():
        raise InputError(f"{path} is missing: the auto loop's state is damaged; remove {log.rounds_path} to start over")
    report = AgreementReport.load(path)
    report.threshold, report.rule = task.agreement.threshold, task.agreement.rule
    return report


def _train(task: Task, store: PairStore, teacher: Any, log: AutoLog, k: int) -> Any:
    from .distill import distill

    # every epoch runs (no early stopping: a warm start's first epochs at the peak learning rate are
    # often worse than where it started), and at least `min_steps` steps: a first round of a few
    # hundred answers is a handful of batches an epoch, too few for a student whose layers start random
    spec = task.auto
    training = {"epochs": spec.epochs or task.training.epochs, "patience": None, "min_steps": spec.min_steps}
    per_round = task.model_copy(update={"training": task.training.model_copy(update=training)})
    out = log.student(k)
    previous = log.student(k - 1) if k else None
    result = distill(per_round, store, teacher, out, init_from=previous)
    result.report.save(out / "report.json")
    return result


def _finish(
    task: Task,
    run: RunDir,
    log: AutoLog,
    done: list[Round],
    report: AgreementReport,
    budget: int,
    why: str,
    resumed: int,
) -> AutoResult:
    """Put the last round's student where the later stages look for it (student/, reports/student.json)."""
    source = log.student(done[-1].round)
    run.invalidate("distill")
    with run.staged(run.student) as folder:
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("report.json"), dirs_exist_ok=True)
    report.details["artifact_bytes"] = (run.student / "model.safetensors").stat().st_size
    report.details["auto_round"] = done[-1].round
    report.save(run.report("student"))
    # a finished student for export; not `distill`'s own key, so `tsd-edge distill` trains its own
    run.finish("distill", f"auto-round-{done[-1].round}", [run.student])
    return AutoResult(done, report, budget, why, resumed, run.student)


# -- choosing the next batch -----------------------------------------------------------------------


def _choose(
    task: Task,
    store: PairStore,
    teacher: Any,
    split: Split,
    log: AutoLog,
    k: int,
    n: int,
    strategy: str,
    report: AgreementReport | None,
    kept: dict[str, bool],
) -> list[str]:
    spec = task.auto
    answered = store.answered(teacher.fingerprint)
    candidates = [i for i in split.pool if i.key not in answered]
    rng = np.random.default_rng(spec.seed + k)
    if k == 0 or strategy == "random":  # uniform over the pool, as the task's inputs come
        return [candidates[i].key for i in sorted(rng.permutation(len(candidates))[:n])]
    # inputs the task's relevance rule would drop are never trained on: asking for them is waste
    # (judged once per input and process: the rule does not change between rounds)
    unjudged = [i for i in candidates if i.key not in kept]
    if unjudged:
        vectors = encoder_vectors(task, store, teacher, unjudged)
        kept.update(zip([i.key for i in unjudged], relevant(task, store, teacher, unjudged, vectors), strict=True))
    candidates = [i for i in candidates if kept[i.key]]
    if spec.candidates and len(candidates) > spec.candidates:  # bounds the student's work per round
        candidates = [candidates[i] for i in sorted(rng.permutation(len(candidates))[: spec.candidates])]
    if not candidates:
        return []
    vectors = store.vectors(task.encoder, [i.key for i in candidates], teacher.fingerprint)
    asked, asked_labels = asked_answers(task, store, teacher)
    pool = Pool(
        keys=[i.key for i in candidates],
        logits=student_logits(log.student(k - 1), task, [i.text for i in candidates]),
        embeddings=np.stack([vectors[i.key] for i in candidates]),
        asked=asked,
        asked_labels=asked_labels,
    )
    per_label = per_label_agreement(report)
    return select(pool, n, strategy, labels=task.label_names, per_label=per_label, seed=spec.seed + k)


def asked_answers(task: Task, store: PairStore, teacher: Any) -> tuple[np.ndarray, np.ndarray]:
    """The training inputs answered so far, as selection sees them: the task encoder's vector of each
    ([m, dim]) and the index of the teacher's label for it ([m])."""
    index = {name: i for i, name in enumerate(task.label_names)}
    told = {p.input_hash: index[p.label] for p in store.pairs(teacher.fingerprint, split="train") if p.label in index}
    known = store.vectors(task.encoder, list(told), teacher.fingerprint)
    keys = [key for key in told if key in known]
    if not keys:
        return np.zeros((0, 1), np.float32), np.zeros(0, np.int64)
    return np.stack([known[key] for key in keys]), np.array([told[key] for key in keys], dtype=np.int64)


def per_label_agreement(report: AgreementReport | None) -> dict[str, float]:
    """Held-out agreement by teacher label (`report is None`, not `not report`: a report that does not
    hold is falsy, and that is exactly when selection needs it)."""
    return {name: v["agreement"] for name, v in report.per_label.items()} if report is not None else {}


def encoder_vectors(task: Task, store: PairStore, teacher: Any, items: list[TaskInput]) -> dict[str, np.ndarray]:
    """The task encoder's sentence embedding of each input (what relevance scores with), cached in the store:
    these are not teacher calls, and are computed once per run directory."""
    from .encoder import embed

    known = store.vectors(task.encoder, [i.key for i in items], teacher.fingerprint)
    todo = [i for i in items if i.key not in known]
    if todo:
        with progress("auto: embedding the pool", total=len(todo)) as bar:
            for start in range(0, len(todo), 1024):
                part = todo[start : start + 1024]
                new = dict(zip([i.key for i in part], embed(task.encoder, [i.text for i in part], 64), strict=True))
                store.add_vectors(task.encoder, new)
                known.update(new)
                bar.advance(len(part))
    return known


def relevant(
    task: Task, store: PairStore, teacher: Any, items: list[TaskInput], vectors: dict[str, np.ndarray]
) -> list[bool]:
    """Whether the task's relevance rule (relevance.Relevance, the one collect marks pairs with) would keep
    each input, judged before it is asked."""
    from .relevance import Relevance

    return Relevance(task, store, teacher).keeps(teacher.fingerprint, [i.key for i in items], vectors)


def student_logits(student: Path, task: Task, texts: list[str]) -> np.ndarray:
    """The student's logits for every text, in order."""
    from .runtime.infer import predict_logits
    from .runtime.tokenizer import TextEncoder
    from .student import StudentRunner

    encode = TextEncoder(student / "tokenizer.json", task.student.max_length)
    return predict_logits(StudentRunner.load(student), encode, texts, batch_size=128)
