"""`tsd-edge predict PKG [TEXT ...]`: answer queries with a package, one JSON line per input."""

import json
import sys
from pathlib import Path
from typing import Any, Iterator, List, Optional

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

    require_training_side("--teacher")
    from ..hybrid import Hybrid
    from .app import load as load_task

    task, run = load_task(task_file, workdir)
    if task.name != model.name:
        raise InputError(f"{task_file} is task {task.name!r}, the package is {model.name!r}: give the package's task")
    return Hybrid(model, task, store=run.pairs if store else None)


@app.command(rich_help_panel=SHIP)
def predict(
    package: Annotated[Path, typer.Argument(help="the .tsdpkg to answer with")],
    texts: Annotated[
        Optional[List[str]], typer.Argument(help="texts to classify [default: one per line on stdin]")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="also list the K most likely labels")] = 1,
    trust: Annotated[Optional[Path], typer.Option(help="ed25519 public key the package must be signed with")] = None,
    threads: Annotated[Optional[int], typer.Option(help="inference threads [default: the runtime's]")] = None,
    batch_size: Annotated[int, typer.Option(help="texts per model call when reading stdin")] = 64,
    teacher: TeacherTask = None,
    workdir: HybridWorkdir = None,
    store: StoreAnswers = True,
) -> None:
    """Answer TEXT... (or stdin: JSON lines with "text", or plain lines) with the package's artifact: one JSON
    line per input with the label, its score and the package's name and target. With a deploy: rule in the
    package each line also says who answered (student, teacher with --teacher, or deferred) and the confidence."""

    def body() -> None:
        from ..runtime import load

        with load(package, trust=trust, threads=threads) as loaded:
            model = hybrid(loaded, teacher, workdir, store) if teacher else loaded
            source = {"package": loaded.name, "target": loaded.target}
            out = sys.stdout
            chunk: List[str] = []

            def flush() -> None:
                for text, pred in zip(chunk, model.predict(chunk, top_k=top_k)):
                    out.write(json.dumps({"text": text, **pred.to_dict(), **source}, ensure_ascii=False) + "\n")
                out.flush()
                chunk.clear()

            for text in texts if texts else read_inputs(sys.stdin):
                chunk.append(text)
                if len(chunk) >= batch_size:
                    flush()
            if chunk:
                flush()

    guard(body)
