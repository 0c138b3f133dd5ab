"""One system in its own process (`python -m tsd_edge.bench.worker SPEC`), driven by JSON lines over
a pipe, so its peak memory is its own; and `Worker`, the parent's handle on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .energy import joules, rapl_uj

if TYPE_CHECKING:
    import numpy as np

    from ..runtime.artifact import Batch


class Worker:
    """One system in its own process, driven by JSON lines over a pipe. `program`: the worker's command line before
    the spec file's path (default: this module's `main`; a benchmark may run its own worker loop), run in `cwd`."""

    def __init__(
        self, spec: dict, warmup: list[str], program: list[str] | None = None, cwd: Path | None = None
    ) -> None:
        self.name = spec["name"]
        self.tmp = tempfile.TemporaryDirectory(prefix="tsd-bench-")
        path = Path(self.tmp.name) / "spec.json"
        path.write_text(json.dumps({**spec, "warmup": warmup, "scratch": self.tmp.name}), encoding="utf-8")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(spec.get("threads", 1))
        self.stderr = open(Path(self.tmp.name) / "stderr.txt", "w", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*(program or [sys.executable, "-m", "tsd_edge.bench.worker"]), str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
            cwd=cwd,
        )

    def receive(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = (Path(self.tmp.name) / "stderr.txt").read_text(encoding="utf-8").strip().splitlines()[-3:]
            return {"error": f"worker exited with {self.proc.returncode}: {' / '.join(tail)}"}
        return json.loads(line)

    def ask(self, command: dict) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.receive()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        self.tmp.cleanup()


def _status_mib(field_: str) -> float:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(field_ + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Timed:
    """A runner that adds up the seconds spent inside `run`: the model's time without its input pipeline."""

    def __init__(self, runner: Any) -> None:
        self.runner, self.seconds = runner, 0.0

    def run(self, batch: Batch) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self.runner.run(batch)
        finally:
            self.seconds += time.perf_counter() - t0


def _load(spec: dict) -> tuple[Callable[[list[str]], Any], _Timed | None, int | None]:
    """(answer texts → labels, the timed runner, parameters). The runner is None where the model's time
    cannot be separated from its input pipeline (the teacher). The student and compiled systems answer
    through `predict_logits`, the path the gate and a device use: a batch is tokenized once, sorted by
    length and run in sub-batches of `spec["bucket"]` (the whole batch when unset)."""
    threads = spec["threads"]
    if spec["kind"] in ("teacher", "student"):
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
    if spec["kind"] == "teacher":
        from ..task import load_task
        from ..teachers import load_teacher

        teacher = load_teacher(load_task(Path(spec["task"])))
        params: int | None = None
        if hasattr(teacher, "prototypes") or getattr(teacher, "spec", {}).get("task") == "embed":
            from ..encoder import load_encoder

            if hasattr(teacher, "prototypes"):
                _ = teacher.prototypes
            params = sum(p.numel() for p in load_encoder(teacher.spec["model"]).parameters())
        return (lambda texts: [r.label for r in teacher.answer(texts)]), None, params
    from ..runtime.infer import predict_logits
    from ..runtime.tokenizer import TextEncoder

    if spec["kind"] == "student":
        from ..student import StudentRunner, count_parameters

        folder = Path(spec["student"])
        runner: Any = StudentRunner.load(folder)
        params = count_parameters(runner.model)
        encode = TextEncoder(folder / "tokenizer.json", spec["max_length"])
        labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    else:
        from ..runtime.artifact import Artifact
        from ..runtime.backends import open_runner

        params = None
        if spec.get("package"):
            from ..runtime.package import read_package

            pkg = read_package(Path(spec["package"]), Path(spec["scratch"]) / "package")  # removed by the parent
            artifact = Artifact.load_meta(pkg.file("artifact.json"))
            artifact.path = pkg.file(artifact.path.name)
            tokenizer, label_file = pkg.file("tokenizer.json"), pkg.file("labels.json")
        else:
            artifact = Artifact.load_meta(Path(spec["artifact"]))
            tokenizer, label_file = Path(spec["student"]) / "tokenizer.json", Path(spec["student"]) / "labels.json"
        runner = open_runner(artifact, threads)
        encode = TextEncoder(tokenizer, spec["max_length"])
        labels = json.loads(label_file.read_text(encoding="utf-8"))
    timed = _Timed(runner)

    def answer(texts: list[str]) -> Any:
        logits = predict_logits(timed, encode, texts, batch_size=spec.get("bucket") or len(texts))
        if not labels:  # kind: embed (labels.json is []): the output is the sentence embedding, the answer itself
            return logits
        return [labels[i] for i in logits.argmax(1)]

    return answer, timed, params


def _measure(answer: Callable, timed: _Timed | None, command: dict) -> dict:
    single_ms = []
    cpu0, e0 = time.process_time(), rapl_uj()
    for text in command["single"]:
        t0 = time.perf_counter()
        answer([text])
        single_ms.append(1e3 * (time.perf_counter() - t0))
    cpu1, e1 = time.process_time(), rapl_uj()
    queries, model_before = 0, timed.seconds if timed else 0.0
    start = time.perf_counter()
    for texts in command["batches"]:
        answer(texts)
        queries += len(texts)
    batch_s = time.perf_counter() - start
    cpu2, e2 = time.process_time(), rapl_uj()
    return {
        "single_ms": single_ms,
        "batch_s": batch_s,
        "batch_queries": queries,
        "model_s": timed.seconds - model_before if timed else None,
        "cpu_single": cpu1 - cpu0,
        "cpu_batch": cpu2 - cpu1,
        "joules_single": joules(e0, e1),
        "joules_batch": joules(e1, e2),
        "hwm_mib": _status_mib("VmHWM"),
    }


def _worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything a library writes to stdout goes to stderr, not into the protocol

    def send(msg: dict) -> None:
        channel.write(json.dumps(msg) + "\n")
        channel.flush()

    start = time.perf_counter()
    try:
        answer, timed, params = _load(spec)
        for text in spec["warmup"][:4]:
            answer([text])
        answer(spec["warmup"])
    except Exception as exc:  # reported to the parent, which skips this system and says why
        send({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"})
        return
    send({"load_s": time.perf_counter() - start, "rss_mib": _status_mib("VmRSS"), "parameters": params})
    for line in sys.stdin:
        try:
            send(_measure(answer, timed, json.loads(line)))
        except Exception as exc:
            send({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    _worker(sys.argv[1])
