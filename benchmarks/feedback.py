"""The hybrid system's feedback round on Banking77, end to end with the real CLI, the real offline teacher and
real HTTP: does what the student deferred make the next student answer more?

    python -m benchmarks feedback [--work /tmp/feedback] [--holdback 0.4] [--bench-repeats 3]
    python -m benchmarks.feedback ...                       (the same)

1. *derive*: the Banking77 sample task with a stable, hash-chosen share (`--holdback`) of the training-split
   inputs of data/train.csv held back from its pool. Only training-split inputs are held back (the held-out
   split is a pure function of the input hash, toolkit/data.py `heldout`), so both rounds are judged on the
   same held-out inputs. The teacher (its few-shot examples), the labels and the relevance reference stay the
   sample's own files: the same teacher, fingerprint and relevance rule in both rounds.
2. *round 1*: `tsd-edge run` on the derived task; the package is kept as round1.tsdpkg.
3. *serve*: `tsd-edge serve round1.tsdpkg --teacher TASK --workdir serve/` on 127.0.0.1 (a free port), and
   every held-back input is sent to it over HTTP, one text per request (`--per-request`), one request at a
   time; each answer says who gave it. The teacher's answers land in serve/pairs.sqlite, as on a serving host.
4. *import*: `tsd-edge pairs export TASK deferred.jsonl --workdir serve/ --embeddings`, then
   `tsd-edge pairs import TASK deferred.jsonl --workdir run/`: the deferred pairs join round 1's store.
5. *round 2*: `tsd-edge run` again on the same run folder: only what changed is redone (no new collection;
   the student is retrained on the pool + the deferred pairs); the package is kept as round2.tsdpkg.
6. *compare*: τ, coverage, answered agreement, system agreement and teacher calls of both packages, read from
   their deferral rules (calibrated by `package` on the compiled artifact's held-out answers), on held-out
   inputs checked to be the same; and coverage at the target without a bound, re-measured here by running
   both packages on those inputs.
7. *cost* (`--bench-repeats 0` leaves it out): `tsd-edge bench` on round 2's run folder measures the teacher and
   the compiled student on this machine; energy and cost per 1M queries of teacher only, student only and the
   hybrid (student for every query + the teacher for the deferred share + the deferral decision).

Each step keeps its output in `--work` and is skipped when it is there (`--redo STEP` redoes it and what
follows). Writes benchmarks/results/feedback-<host kind>.json.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLE = ROOT / "samples" / "banking77"
RESULTS = HERE / "results"
STEPS = ("derive", "round1", "serve", "import", "round2", "compare", "cost")


def say(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def tsd(*args: Any, log: Path | None = None) -> str:
    """One `tsd-edge` command, its output kept in `log`; a failure stops the benchmark with that output."""
    cmd = [sys.executable, "-m", "tsd_edge", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if log is not None:
        log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}", encoding="utf-8")
    if proc.returncode != 0:
        raise SystemExit(f"tsd-edge {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


# -- 1. the derived task ---------------------------------------------------------------------------


def held_back(text: str, share: float) -> bool:
    """The inputs held back from round 1: a hash of the input independent of the held-out split's."""
    return int(hashlib.sha256(b"feedback-holdback\0" + text.encode("utf-8")).hexdigest()[:8], 16) / 2**32 < share


def derive(work: Path, share: float) -> dict[str, Any]:
    import yaml
    from tsd_edge.data import heldout, input_key

    spec = yaml.safe_load((SAMPLE / "task.yaml").read_text(encoding="utf-8"))
    split = float(spec["split"]["heldout"])
    train_file = SAMPLE / "data" / "train.csv"
    others: set[str] = set()  # inputs also in another input file stay in round 1's pool whatever happens to train.csv
    for src in spec["inputs"]:
        if Path(src["path"]).name != "train.csv":
            path = SAMPLE / src["path"]
            lines = path.read_text(encoding="utf-8").splitlines()
            texts = [r["text"] for r in csv.DictReader(lines)] if path.suffix == ".csv" else lines
            others.update(t.strip() for t in texts if t.strip())
    with train_file.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = list(reader.fieldnames or []), list(reader)
    back: list[str] = []  # in file order, once each; every row of a held-back text leaves the pool (duplicates too)
    for row in rows:
        text = row["text"].strip()
        if text and text not in others and not heldout(input_key(text), split) and held_back(text, share):
            back.append(text)
    back = list(dict.fromkeys(back))
    gone = set(back)
    kept = [row for row in rows if row["text"].strip() not in gone]
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    with (data / "train-round1.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    (work / "heldback.txt").write_text("".join(t + "\n" for t in back), encoding="utf-8")
    shutil.copy2(SAMPLE / "data" / "LICENSE", data / "LICENSE")  # Banking77 is CC-BY-4.0: its attribution travels
    shutil.copy2(SAMPLE / "data" / "SOURCE-banking77.md", data / "SOURCE-banking77.md")
    spec["labels"] = str(SAMPLE / spec["labels"])
    spec["teacher"]["examples"]["path"] = str(train_file)  # the same few-shot examples: the same teacher
    for src in spec["inputs"]:
        name = Path(src["path"]).name
        src["path"] = str(data / "train-round1.csv") if name == "train.csv" else str(SAMPLE / src["path"])
    (work / "task.yaml").write_text(
        "# tsd-edge benchmarks/feedback.py: the Banking77 sample with part of its training pool held back\n"
        + yaml.safe_dump(spec, sort_keys=False),
        encoding="utf-8",
    )
    train_split = sum(1 for r in rows if r["text"].strip() and not heldout(input_key(r["text"].strip()), split))
    return {
        "holdback_share": share,
        "train_csv_rows": len(rows),
        "train_csv_training_split": train_split,
        "held_back": len(back),
        "round1_train_csv_rows": len(kept),
    }


# -- 2./5. the runs --------------------------------------------------------------------------------


def run_round(work: Path, n: int) -> dict[str, Any]:
    run = work / "run"
    before = _pairs_total(run)
    t0 = time.perf_counter()
    out = tsd("run", work / "task.yaml", "--workdir", run, log=work / f"round{n}.log")
    seconds = time.perf_counter() - t0
    pkg = run / "dist" / "banking77-cpu-x86.tsdpkg"
    shutil.copy2(pkg, work / f"round{n}.tsdpkg")
    from tsd_edge.store import PairStore
    from tsd_edge.task import load_task
    from tsd_edge.teachers import load_teacher

    fp = load_teacher(load_task(work / "task.yaml")).fingerprint
    with PairStore(run / "pairs.sqlite") as store:
        counts = store.count_by(fp, "source")
        relevant = store.count_by(fp, "relevant", ok_only=True)
        train = sum(1 for _ in store.pairs(fp, split="train", relevant=True))
    return {
        "seconds": seconds,
        "pairs_by_source": counts,
        "relevance": relevant,
        "relevant_train_pairs": train,
        "new_teacher_calls": _pairs_total(run) - before,  # every answer the teacher gave is stored
        "log_tail": out.strip().splitlines()[-12:],
    }


def _pairs_total(run: Path) -> int:
    import sqlite3

    if not (run / "pairs.sqlite").is_file():
        return 0
    with sqlite3.connect(f"file:{run / 'pairs.sqlite'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0])


# -- 3. the served stream --------------------------------------------------------------------------


def serve_stream(work: Path, per_request: int) -> dict[str, Any]:
    texts = (work / "heldback.txt").read_text(encoding="utf-8").splitlines()
    served = work / "serve"
    shutil.rmtree(served, ignore_errors=True)
    served.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "tsd_edge",
        "serve",
        str(work / "round1.tsdpkg"),
        "--teacher",
        str(work / "task.yaml"),
        "--workdir",
        str(served),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--threads",
        "1",
    ]
    err = (work / "serve.log").open("w", encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        host, port = _wait_listening(work / "serve.log", proc)
        conn = http.client.HTTPConnection(host, port, timeout=300)
        sources: dict[str, int] = {}
        errors: dict[str, int] = {}
        latency: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        for i in range(0, len(texts), per_request):
            chunk = texts[i : i + per_request]
            body = json.dumps({"texts": chunk})
            start = time.perf_counter()
            conn.request("POST", "/v1/classify", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            reply = json.loads(resp.read())
            ms = (time.perf_counter() - start) * 1e3
            if resp.status != 200:
                raise SystemExit(f"serve answered {resp.status}: {reply}")
            who = set()
            for p in reply["predictions"]:
                sources[p["source"]] = sources.get(p["source"], 0) + 1
                who.add(p["source"])
                if p.get("error"):
                    key = p["error"].split(":")[0]
                    errors[key] = errors.get(key, 0) + 1
            latency.setdefault("teacher" if who - {"student"} else "student", []).append(ms)
            if (i // per_request) % 500 == 0:
                say(f"serve: {i + len(chunk)}/{len(texts)} sent, {sources}")
        seconds = time.perf_counter() - t0
        conn.close()
    finally:
        proc.terminate()
        code = proc.wait(timeout=120)
        err.close()
    from tsd_edge.store import PairStore
    from tsd_edge.task import load_task
    from tsd_edge.teachers import load_teacher

    fp = load_teacher(load_task(work / "task.yaml")).fingerprint
    with PairStore(served / "pairs.sqlite") as store:
        stored = store.count_by(fp, "status")
    calls = sources.get("teacher", 0) + sources.get("deferred", 0)  # every input the student did not answer
    return {
        "url": f"http://{host}:{port}/v1/classify",
        "texts": len(texts),
        "per_request": per_request,
        "seconds": seconds,
        "answers_by_source": sources,
        "errors": errors,
        "teacher_calls": calls,
        "deferred_share": calls / len(texts),
        "stored_pairs": stored,
        "request_ms_p50": {k: statistics.median(v) for k, v in latency.items()},
        "requests_by_who": {k: len(v) for k, v in latency.items()},
        "server_exit": code,
    }


def _wait_listening(log: Path, proc: subprocess.Popen) -> tuple[str, int]:
    """The address serve announces on stderr ("... on http://127.0.0.1:PORT ..."), then /ready."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve stopped ({proc.returncode}): {log.read_text(encoding='utf-8')[-2000:]}")
        text = log.read_text(encoding="utf-8")
        if " on http://" in text:
            addr = text.split(" on http://", 1)[1].split()[0].rstrip("/")
            host, port = addr.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                conn.close()
                return host, int(port)
            conn.close()
        time.sleep(0.2)
    raise SystemExit("serve did not get ready within 300 s")


# -- 4. closing the loop ---------------------------------------------------------------------------


def import_deferred(work: Path) -> dict[str, Any]:
    exported = work / "deferred.jsonl"
    out = tsd(
        "pairs",
        "export",
        work / "task.yaml",
        exported,
        "--workdir",
        work / "serve",
        "--embeddings",
        log=work / "export.log",
    )
    out += tsd("pairs", "import", work / "task.yaml", exported, "--workdir", work / "run", log=work / "import.log")
    rows = sum(1 for line in exported.read_text(encoding="utf-8").splitlines() if line.strip())
    return {"exported_rows": rows, "output": out.strip().splitlines()}


# -- 6. before and after ---------------------------------------------------------------------------


def heldout_rows(model: Any) -> list[dict[str, Any]]:
    """The package's held-out inputs with the teacher's answers (what check, package and the gate use)."""
    text = model.package.file("heldout.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line]


def compare(work: Path) -> dict[str, Any]:
    import numpy as np
    import tsd_edge
    from tsd_edge.deferral import calibration_half, coverage_at
    from tsd_edge.runtime.confidence import confidences

    out: dict[str, Any] = {}
    heldouts = []
    for n in (1, 2):
        with tsd_edge.load(work / f"round{n}.tsdpkg", threads=1) as model:
            rule = json.loads(model.package.file("deferral.json").read_text(encoding="utf-8"))
            rows = heldout_rows(model)
            texts = [r["input"] for r in rows]
            logits = model.logits(texts)
            agreement = json.loads(model.package.file("report.json").read_text(encoding="utf-8"))["agreement"]
        heldouts.append({(r["input"], r["teacher"]) for r in rows})
        labels = model.labels
        agree = np.array([labels[i] == r["teacher"] for i, r in zip(logits.argmax(1), rows, strict=True)], dtype=float)
        conf = confidences(logits, rule["measure"])
        ev = np.array([not calibration_half(t) for t in texts])
        target = rule["target"]
        e = rule["evaluation"]
        system = None
        if e["answered_agreement"] is not None:
            system = (e["answered"] * e["answered_agreement"] + (e["n"] - e["answered"])) / e["n"]
        out[f"round{n}"] = {
            "measure": rule["measure"],
            "threshold": rule["threshold"],
            "bound_on_calibration_half": rule["bound"],
            "calibration": rule["calibration"],
            "evaluation": rule["evaluation"],
            "overall": rule["overall"],
            "system_agreement_evaluation": system,
            "teacher_calls_per_query_evaluation": 1 - e["coverage"],
            "student_agreement": agreement,
            # no bound, no search: the most confident share whose measured agreement is still ≥ the target
            "coverage_at_target_measured": {
                "all": coverage_at(conf, agree, target),
                "evaluation_half": coverage_at(conf[ev], agree[ev], target),
            },
            "aurc": rule["aurc"],
        }
    out["same_heldout"] = heldouts[0] == heldouts[1]
    out["heldout_n"] = len(heldouts[0])
    r1, r2 = out["round1"], out["round2"]
    out["coverage_gain_points"] = {
        "evaluation_half": 100 * (r2["evaluation"]["coverage"] - r1["evaluation"]["coverage"]),
        "all_heldout": 100 * (r2["overall"]["coverage"] - r1["overall"]["coverage"]),
    }
    return out


# -- 7. energy and cost per 1M queries --------------------------------------------------------------


def recorded_bench(host_kind: str) -> Path | None:
    """The newest `python -m benchmarks run` result recorded on this kind of machine (results/<date>-<kind>.json)."""
    found = sorted(RESULTS.glob(f"20*-{host_kind}.json"))
    return found[-1] if found else None


def cost(work: Path, repeats: int, deferred: dict[str, float], reuse: Path | None) -> dict[str, Any]:
    """Per-system figures from a recorded bench result of this machine kind (`reuse`), else measured now with
    `tsd-edge bench` on round 2's run folder (`repeats` round-robin repeats)."""
    if reuse is not None:
        recorded = json.loads(reuse.read_text(encoding="utf-8"))
        bench = recorded["bench"]
        origin = f"recorded: results/{reuse.name} ({recorded['created']}, `{recorded['command']}`)"
    else:
        tsd(
            "bench",
            work / "task.yaml",
            "--workdir",
            work / "run",
            "--repeats",
            repeats,
            "--target",
            "cpu-x86",
            log=work / "bench.log",
        )
        bench = json.loads((work / "run" / "bench.json").read_text(encoding="utf-8"))
        origin = f"measured now: tsd-edge bench on round 2's run folder, {repeats} repeats"
    systems = {s["name"]: s for s in bench["systems"]}
    teacher, student = systems["teacher"], systems["cpu-x86"]
    decision = _decision_ms(work)
    from tsd_edge.bench.energy import WATTS_PER_CORE

    price_kwh = bench["settings"]["price_kwh_usd"]

    def row(name: str, s: dict[str, Any]) -> dict[str, Any]:
        return {
            "system": name,
            "energy_source": s["energy"]["source"],
            "kwh_per_1m_b32": s["energy"]["joules_per_1k_b32"] * 1e3 / 3.6e6,
            "kwh_per_1m_b1": s["energy"]["joules_per_1k_b1"] * 1e3 / 3.6e6,
            "usd_per_1m": s["cost_per_1m_usd"]["total"],
            "usd_per_1m_parts": s["cost_per_1m_usd"],
            "throughput_qps_b32": s["throughput_qps"],
            "latency_ms_b1_p50": s["latency_ms"]["p50"],
        }

    rows = [row("teacher only", teacher), row("student only (cpu-x86, ORT INT8)", student)]
    # the decision's CPU time, charged as the student's energy is (one busy core × W per core): a few µs a query
    decision_kwh = {k: decision[k] / 1e3 * WATTS_PER_CORE * 1e6 / 3.6e6 for k in ("b1", "b32")}
    for name, share in deferred.items():
        t, s = rows[0], rows[1]
        kwh32 = s["kwh_per_1m_b32"] + share * t["kwh_per_1m_b32"] + decision_kwh["b32"]
        kwh1 = s["kwh_per_1m_b1"] + share * t["kwh_per_1m_b1"] + decision_kwh["b1"]
        usd = s["usd_per_1m"] + share * t["usd_per_1m"] + decision_kwh["b32"] * price_kwh
        rows.append(
            {
                "system": f"hybrid, teacher for {share:.1%} ({name})",
                "energy_source": "estimated" if "estimated" in (t["energy_source"], s["energy_source"]) else "measured",
                "kwh_per_1m_b32": kwh32,
                "kwh_per_1m_b1": kwh1,
                "usd_per_1m": usd,
                "deferred_share": share,
            }
        )
    return {
        "bench": origin,
        "rows": rows,
        "decision_ms_per_query": decision,
        "bench_machine": bench["machine"],
        "bench_settings": bench["settings"],
        "energy_method": teacher["energy"]["method"],
    }


def _decision_ms(work: Path) -> dict[str, float]:
    """The deferral decision alone (ms a query): the rule's confidence from the probabilities predict has, vs τ."""
    import tsd_edge
    from tsd_edge.runtime.confidence import from_probabilities
    from tsd_edge.runtime.model import softmax

    with tsd_edge.load(work / "round2.tsdpkg", threads=1) as model:
        rule = model.deferral
        rows = [r["input"] for r in heldout_rows(model)]
        out = {}
        for name, texts in (("b1", rows[:1]), ("b32", rows[:32])):
            probs, reps = softmax(model.logits(texts)), 2000
            best = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(reps):
                    _ = from_probabilities(probs, rule["measure"]) >= (rule["threshold"] or 0.0)
                best.append((time.perf_counter() - t0) / reps / len(texts) * 1e3)
            out[name] = min(best)
    return out


# -- the whole round ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks feedback", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tsd-feedback"))
    parser.add_argument("--holdback", type=float, default=0.4, help="share of the training-split inputs held back")
    parser.add_argument("--per-request", type=int, default=1, help="texts per HTTP request to serve")
    parser.add_argument(
        "--bench-repeats",
        type=int,
        default=3,
        help="cost step: `tsd-edge bench` repeats when no bench result of this machine kind is recorded (0: no cost)",
    )
    parser.add_argument("--measure", action="store_true", help="cost step: measure now even if a result is recorded")
    parser.add_argument("--redo", choices=STEPS, default=None, help="redo this step and the ones after it")
    parser.add_argument("--stop-after", choices=STEPS, default=None, help="stop once this step is done")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--readme", action="store_true", help="regenerate README.md's feedback tables from it")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .__main__ import machine, versions

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    state_file = work / "feedback.json"
    state: dict[str, Any] = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
    if args.redo:
        for name in STEPS[STEPS.index(args.redo) :]:
            state.pop(name, None)
    loads: list[list[float]] = state.setdefault("load_average", [])

    def step(name: str, fn: Any, *a: Any) -> Any:
        if args.stop_after and STEPS.index(name) > STEPS.index(args.stop_after):
            raise SystemExit(0)
        if name not in state:
            say(f"{name} ...")
            before = os.getloadavg()
            state[name] = fn(*a)
            loads.append([round(x, 2) for x in (*before, *os.getloadavg())])
            state_file.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
            say(f"{name}: done")
        return state[name]

    step("derive", derive, work, args.holdback)
    step("round1", run_round, work, 1)
    step("serve", serve_stream, work, args.per_request)
    step("import", import_deferred, work)
    step("round2", run_round, work, 2)
    cmp_ = step("compare", compare, work)
    if args.bench_repeats > 0:
        shares = {
            "round 1, served stream": state["serve"]["deferred_share"],
            "round 1, held-out evaluation half": cmp_["round1"]["teacher_calls_per_query_evaluation"],
            "round 2, held-out evaluation half": cmp_["round2"]["teacher_calls_per_query_evaluation"],
        }
        reuse = None if args.measure else recorded_bench(machine()["host_kind"])
        step("cost", cost, work, args.bench_repeats, shares, reuse)
    info = machine()
    result = {
        "schema": "tsd-edge/benchmarks/feedback/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python -m benchmarks feedback", *(argv if argv is not None else sys.argv[1:])]),
        "machine": info,
        "versions": versions(),
        **state,
    }
    path = args.out or HERE / "results" / f"feedback-{info['host_kind']}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.readme and "cost" in state:
        write_readme(path)
    _print_summary(result)
    sys.stdout.write(f"{path}\n")
    return 0


START, END = "<!-- feedback:start -->", "<!-- feedback:end -->"


def render(r: dict[str, Any], name: str) -> str:
    """The README's tables for one recorded round (between the feedback markers; the prose is by hand)."""
    m, d, sv, c = r["machine"], r["derive"], r["serve"], r["compare"]
    loads = [x for row in r.get("load_average", []) for x in row[:1] + row[3:4]]
    lines = [
        f"Recorded in [`results/{name}`](results/{name}), {r['created']}: `{r['command']}`",
        "",
        f"Machine: **{m['cpu']}**, {m['cores']} cores, {m.get('memory_gib')} GiB, GPU: {m.get('gpu') or 'none'}; "
        f"1-minute load average {min(loads):.1f}–{max(loads):.1f} over the steps (other jobs on the machine).",
        "",
        f"Held back from round 1: **{d['held_back']:,}** of the {d['train_csv_training_split']:,} training-split "
        f"inputs of data/train.csv ({d['holdback_share']:.0%}, chosen by a hash independent of the split's). "
        f"Round 1 collected {sum(r['round1']['pairs_by_source'].values()):,} teacher answers (the pool without them).",
        "",
        f"Served: `tsd-edge serve round1.tsdpkg --teacher TASK` on {sv['url'].split('/v1')[0]}, "
        f"{sv['texts']:,} held-back inputs, {sv['per_request']} text(s) per request, one request at a time, "
        f"{sv['seconds']:.0f} s: "
        + ", ".join(f"{k} {v:,}" for k, v in sv["answers_by_source"].items())
        + f"; **{sv['teacher_calls']:,} teacher calls ({sv['deferred_share']:.1%})**, "
        f"{sum(sv['stored_pairs'].values()):,} pairs stored. Median request: "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in sv["request_ms_p50"].items())
        + ".",
        "",
        f"Held-out inputs: {c['heldout_n']:,}, the same in both rounds: **{'yes' if c['same_heldout'] else 'NO'}**.",
        "",
        "| | round 1 | round 2 (+ the deferred pairs) |",
        "| --- | ---: | ---: |",
    ]
    r1, r2 = c["round1"], c["round2"]

    def both(fn: Any) -> str:
        return f"{fn(r1)} | {fn(r2)}"

    def f3(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}"

    rows = [
        ("relevant training pairs", lambda x: None),
        ("rule", lambda x: f"{x['measure']} ≥ {x['threshold']:.4f}" if x["threshold"] is not None else "none"),
        ("lower 95% bound on the calibration half", lambda x: f3(x["bound_on_calibration_half"])),
        ("**coverage, evaluation half** (τ never saw it)", lambda x: f"**{x['evaluation']['coverage']:.3f}**"),
        ("answered agreement, evaluation half", lambda x: f3(x["evaluation"]["answered_agreement"])),
        ("system agreement, evaluation half", lambda x: f3(x["system_agreement_evaluation"])),
        ("teacher calls per query, evaluation half", lambda x: f3(x["teacher_calls_per_query_evaluation"])),
        ("coverage, all held-out", lambda x: f3(x["overall"]["coverage"])),
        ("coverage at 0.97 measured (no bound), all held-out", lambda x: f3(x["coverage_at_target_measured"]["all"])),
        ("student alone (agreement)", lambda x: f"{x['student_agreement']:.4f}"),
    ]
    train = (r["round1"]["relevant_train_pairs"], r["round2"]["relevant_train_pairs"])
    for label, fn in rows:
        if label == "relevant training pairs":
            lines.append(f"| {label} | {train[0]:,} | {train[1]:,} |")
        else:
            lines.append(f"| {label} | {both(fn)} |")
    gain = c["coverage_gain_points"]
    lines += [
        "",
        f"Coverage gain: **{gain['evaluation_half']:+.1f} points** on the evaluation half, "
        f"{gain['all_heldout']:+.1f} on all held-out inputs (goal: ≥ +5). Teacher calls: round 1 "
        f"{sum(r['round1']['pairs_by_source'].values()):,} (collection) + {sv['teacher_calls']:,} (serving); "
        f"round 2 {r['round2'].get('new_teacher_calls', 0):,} new.",
    ]
    cost = r.get("cost")
    if cost:
        src = {row["energy_source"] for row in cost["rows"]}
        lines += [
            "",
            f"Energy and cost per 1M queries, from `tsd-edge bench`'s per-system figures ({cost['bench']}; 1 thread, "
            f"batch 32 unless marked b1; energy "
            f"**{'/'.join(sorted(src))}**: {cost['energy_method']}; cost = energy × "
            f"{cost['bench_settings']['price_kwh_usd']} USD/kWh + machine time × "
            f"{cost['bench_settings']['price_hour_usd']} USD/h). The hybrid = the student for every query + the "
            f"teacher for the deferred share + the decision ({cost['decision_ms_per_query']['b32'] * 1e3:.1f} µs a "
            "query at batch 32).",
            "",
            "| system | Wh / 1M queries (b32) | Wh / 1M queries (b1) | USD / 1M queries | cost vs teacher |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        teacher_usd = cost["rows"][0]["usd_per_1m"]
        for row in cost["rows"]:
            lines.append(
                f"| {row['system']} | {row['kwh_per_1m_b32'] * 1e3:.2f} | {row['kwh_per_1m_b1'] * 1e3:.2f} | "
                f"{row['usd_per_1m']:.4f} | {row['usd_per_1m'] / teacher_usd:.2f}× |"
            )
    return "\n".join(lines)


def write_readme(result: Path) -> Path:
    from .readme import replace_block

    body = render(json.loads(result.read_text(encoding="utf-8")), result.name)
    return replace_block(HERE / "README.md", START, END, body, heading="## The feedback round")


def _print_summary(r: dict[str, Any]) -> None:
    c = r.get("compare")
    if not c:
        return
    for n in (1, 2):
        x = c[f"round{n}"]
        e = x["evaluation"]
        sys.stdout.write(
            f"round {n}: τ ({x['measure']}) {x['threshold']}, coverage (evaluation half) {e['coverage']:.3f} at "
            f"answered agreement {e['answered_agreement']}, system agreement {x['system_agreement_evaluation']}, "
            f"student alone {x['student_agreement']:.4f}\n"
        )
    sys.stdout.write(f"coverage gain: {c['coverage_gain_points']}; same held-out inputs: {c['same_heldout']}\n")
    s = r.get("serve")
    if s:
        calls = s["teacher_calls"]
        sys.stdout.write(f"served {s['texts']} held-back inputs: {s['answers_by_source']}, teacher calls {calls}\n")


if __name__ == "__main__":
    raise SystemExit(main())
