"""`tsd-edge pairs`: look into the pair store, and move pairs to and from Parquet / JSONL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import DATA, Workdir, app, console, guard, load


@app.command(no_args_is_help=True, rich_help_panel=DATA)
def pairs(
    args: Annotated[list[str], typer.Argument(metavar="[show|export|import] TASK [FILE]", show_default=False)],
    workdir: Workdir = None,
    embeddings: Annotated[bool, typer.Option(help="export: include each pair's sentence embedding")] = False,
    shard_size: Annotated[
        int | None, typer.Option(help="export: write FILE as a folder of part-NNNNN.parquet shards of N rows")
    ] = None,
    sample: Annotated[int, typer.Option(help="show: how many rejected answers to list")] = 5,
) -> None:
    """Show the pair store (counts by status, split, label, relevance; rejected answers), or move pairs
    to and from a .parquet / .jsonl file: `pairs TASK`, `pairs export TASK FILE`, `pairs import TASK FILE`.
    At scale: `pairs export TASK DIR --shard-size N`; `pairs import TASK DIR` (or files, or a quoted glob)."""

    def body() -> None:
        from ..errors import InputError

        action, rest = (args[0], args[1:]) if args[0] in ("show", "export", "import") else ("show", args)
        if len(rest) != (1 if action == "show" else 2) and not (action == "import" and len(rest) > 2):
            raise InputError(f"usage: tsd-edge pairs {action} TASK{'' if action == 'show' else ' FILE'}")
        files = [Path(f) for f in rest[1:]]
        _pairs(action, Path(rest[0]), files, workdir, embeddings, sample, shard_size)

    guard(body)


def _pairs(
    action: str,
    task: Path,
    files: list[Path],
    workdir: Path | None,
    embeddings: bool,
    sample: int,
    shard_size: int | None = None,
) -> None:
    from rich.markup import escape

    from ..errors import InputError
    from ..pairs import export_pairs, import_pairs, summarise
    from ..store import PairStore
    from ..teachers import load_teacher

    t, run = load(task, workdir)
    teacher = load_teacher(t)
    fingerprint = teacher.fingerprint
    if action != "import" and not run.pairs.is_file():
        raise InputError(f"no pair store at {run.pairs}: run `tsd-edge collect {task}` first")
    out = console()
    with PairStore(run.pairs) as store:
        if action == "export":
            n = export_pairs(store, fingerprint, files[0], embeddings=embeddings, shard_size=shard_size)
            out.print(f"exported {n} pairs of teacher {fingerprint} to {files[0]}")
            return
        if action == "import":
            added, had = import_pairs(store, t, fingerprint, files, teacher)
            named = str(files[0]) if len(files) == 1 else f"{len(files)} files"
            out.print(f"imported {added} pairs from {named} ({had} were already stored)")
            return
        s = summarise(store, fingerprint, sample)
    if not s.total:
        out.print(f"no pairs of teacher {fingerprint} ({t.teacher.kind}) in {run.pairs}")
        return

    def line(title: str, counts: dict[str, int]) -> str:
        return f"[bold]{title:<10}[/] " + ", ".join(f"{escape(k)} {v}" for k, v in counts.items())

    out.print(f"[bold]teacher[/]    {fingerprint} ({s.spec.get('kind', '?')}), {s.total} pairs in {run.pairs}")
    out.print(line("status", s.by_status))
    out.print(line("split", s.by_split))
    rule = s.relevance_rule or {}
    shown = f"{rule.get('method')} ≥ {rule['threshold']:.3f}" if rule else f"threshold {t.relevance.threshold}"
    out.print(line("relevance", s.by_relevance) + f"  ({shown})")
    for src, (n, kept) in sorted(s.by_source.items()):
        out.print(f"{'':<11}{escape(src)}: {kept}/{n} relevant")
    if s.embedding_dim is not None:  # an embed teacher: its answers are vectors, not labels
        out.print(f"[bold]{'answers':<10}[/] embeddings of {s.embedding_dim} dimensions")
    else:
        top = list(s.by_label.items())
        more = f", … ({len(top)} labels)" if len(top) > 12 else ""
        out.print(f"[bold]{'labels':<10}[/] " + ", ".join(f"{escape(k)} {v}" for k, v in top[:12]) + more)
    if s.tokens_in or s.tokens_out or s.latency_ms_median is not None:
        lat = f"median latency {s.latency_ms_median:.0f} ms" if s.latency_ms_median is not None else ""
        out.print(
            f"[bold]{'cost':<10}[/] {s.tokens_in:,} prompt + {s.tokens_out:,} completion tokens; {lat}; "
            f"{s.retried} answers needed retries"
        )
    for text, reason, raw in s.rejected:
        shown = f" — raw {escape(raw[:60])!r}" if raw else ""
        out.print(f"  [red]rejected[/] {escape(text[:60])!r}: {escape(reason)}{shown}")
