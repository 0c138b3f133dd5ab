"""`tsd-edge predict PKG [TEXT ...]`: answer queries with a package, one JSON line per input (a label, or for an
embed package the embedding; `--out x.npy` writes the embeddings as one float32 array instead)."""

import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import typer

from .app import SHIP, Annotated, HybridWorkdir, StoreAnswers, TeacherTask, app, guard

# typer evaluates these annotations at run time and this module runs on Python 3.8: Optional/List, no
# `from __future__ import annotations`


def read_inputs(stream: Any) -> Iterator[str]:
    """Texts from a stream: JSON lines with a "text" field, or plain lines (blank lines skipped)."""
    from ..errors import InputError

    for number, line in enumerate(stream, 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("{"):
            try:
                row = json.loads(stripped)
            except ValueError:
                raise InputError(f'stdin line {number}: not valid JSON: give {{"text": ...}} or a plain line') from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise InputError(f'stdin line {number}: a JSON line needs a "text" string field')
            yield row["text"]
        else:
            yield line.rstrip("\n")


def require_training_side(flag: str) -> None:
    """A one-line error for a training-side option used on a Python that runs only the device side."""
    from ..errors import InputError

    if sys.version_info < (3, 11):
        raise InputError(
            f"{flag} runs the task's teacher, which is on the training side (Python 3.11+); here, without it, "
            "unsure answers come back marked deferred"
        )


def hybrid(model: Any, task_file: Path, workdir: Optional[Path], store: bool) -> Any:
    """The package's student in front of the task's teacher (toolkit/hybrid.py; the training side: Python 3.11)."""
    from ..errors import InputError

    if model.kind != "classify":  # before the Python check: on any Python the answer is no
        raise InputError(f"--teacher applies to classify packages; {model.name} is an {model.kind} package: drop it")
    require_training_side("--teacher")
    from ..hybrid import Hybrid
    from .app import load as load_task

    task, run = load_task(task_file, workdir)
    if task.name != model.name:
        raise InputError(f"{task_file} is task {task.name!r}, the package is {model.name!r}: give the package's task")
    return Hybrid(model, task, store=run.pairs if store else None)


def check_options(model: Any, top_k: int, out: Optional[Path]) -> None:
    """The options that fit the package's kind, or InputError naming the one that does not."""
    from ..errors import InputError

    if model.kind == "embed" and top_k != 1:
        raise InputError("--top-k lists labels; an embed package answers with vectors: drop --top-k")
    if out is not None:
        if model.kind != "embed":
            raise InputError(f"--out writes embeddings; {model.name} is a {model.kind} package: drop --out")
        if out.suffix != ".npy":
            raise InputError(f"--out {out}: give a file name ending in .npy")
        if not out.parent.is_dir():
            raise InputError(f"--out {out}: the folder {out.parent} does not exist")


def save_npy(path: Path, rows: List[Any], dim: int) -> None:
    """The embeddings as one float32 [n, dim] .npy (np.load reads it), written whole or not at all."""
    import numpy as np

    array = np.concatenate(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as fh:
        np.save(fh, array, allow_pickle=False)
    partial.replace(path)


@app.command(rich_help_panel=SHIP)
def predict(
    package: Annotated[Path, typer.Argument(help="the .tsdpkg to answer with")],
    texts: Annotated[
        Optional[List[str]], typer.Argument(help="texts to answer [default: one per line on stdin]")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="also list the K most likely labels")] = 1,
    out: Annotated[
        Optional[Path],
        typer.Option(help="embed packages: write the embeddings to this .npy (float32 [n, dim], input order)"),
    ] = None,
    trust: Annotated[Optional[Path], typer.Option(help="ed25519 public key the package must be signed with")] = None,
    threads: Annotated[Optional[int], typer.Option(help="inference threads [default: the runtime's]")] = None,
    batch_size: Annotated[int, typer.Option(help="texts per model call when reading stdin")] = 64,
    teacher: TeacherTask = None,
    workdir: HybridWorkdir = None,
    store: StoreAnswers = True,
) -> None:
    """Answer TEXT... (or stdin: JSON lines with "text", or plain lines) with the package's artifact: one JSON
    line per input with the label, its score and the package's name and target. With a deploy: rule in the
    package each line also says who answered (student, teacher with --teacher, or deferred) and the confidence.
    An embed package answers each input with its embedding (unit length, the package's dim); with --out the
    embeddings go to a .npy file and each line gives the input's row in it."""

    def body() -> None:
        from ..runtime import load

        with load(package, trust=trust, threads=threads) as loaded:
            check_options(loaded, top_k, out)
            model = hybrid(loaded, teacher, workdir, store) if teacher else loaded
            source = {"package": loaded.name, "target": loaded.target}
            stdout = sys.stdout
            chunk: List[str] = []
            saved: List[Any] = []  # --out: each chunk's embeddings
            row = [0]

            def answers() -> Iterator[Dict[str, Any]]:
                if loaded.kind != "embed":
                    for pred in model.predict(chunk, top_k=top_k):
                        yield pred.to_dict()
                    return
                vectors = loaded.embed(chunk)
                if out is None:
                    for vector in vectors:
                        yield {"embedding": vector.tolist()}
                    return
                saved.append(vectors)
                start, row[0] = row[0], row[0] + len(vectors)
                for i in range(len(vectors)):
                    yield {"row": start + i}

            def flush() -> None:
                for text, answer in zip(chunk, answers()):
                    stdout.write(json.dumps({"text": text, **answer, **source}, ensure_ascii=False) + "\n")
                stdout.flush()
                chunk.clear()

            for text in texts if texts else read_inputs(sys.stdin):
                chunk.append(text)
                if len(chunk) >= batch_size:
                    flush()
            if chunk:
                flush()
            if out is not None:
                save_npy(out, saved, loaded.dim or 0)

    guard(body)
