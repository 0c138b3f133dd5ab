"""`tsd-edge auto`: the loop that asks the teacher only for what the student needs (toolkit/auto.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .app import PIPELINE, TaskArg, Workdir, app, console, context, guard, show


@app.command(rich_help_panel=PIPELINE)
def auto(
    task: TaskArg,
    budget: Annotated[int, typer.Option("--budget", "-b", min=1, help="teacher calls allowed, held-out included")],
    workdir: Workdir = None,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="targets [default: the task's]")] = None,
    rounds: Annotated[int | None, typer.Option(min=1, help="run at most N rounds now (run again to go on)")] = None,
) -> None:
    """Reach the agreement threshold with few teacher calls: ask for a random sample, then in rounds distill
    (warm-started), measure held-out agreement and ask for the inputs the student is least sure of. When the
    threshold holds: export, compile, check and package as `run` does. Exit 1 when the budget is spent first,
    naming the labels that hold agreement back. Interrupted, it resumes where it stopped."""

    def body() -> int:
        from ..auto import auto as loop
        from ..pipeline import ship
        from ..stages import export

        ctx = context(task, workdir)
        t, run_dir = ctx.task, ctx.run
        err = console(stderr=True)
        result = loop(
            t,
            run_dir,
            budget,
            teacher=ctx.teacher,
            max_rounds=rounds,
            on_round=_show_round,
            say=lambda m: err.print(f"[dim]{m}[/]"),
        )
        if result.resumed:
            console().print(
                f"[dim]resumed: {result.resumed} round(s) were already done ({run_dir.root / 'auto.jsonl'})[/]"
            )
        if not result.passed:
            _not_reached(result, t)
            return 1
        last = result.rounds[-1]
        console().print(
            f"[green]threshold {t.agreement.threshold} holds[/] at round {last.round} after {last.calls:,} teacher "
            f"calls ({last.heldout_calls:,} held-out + {last.train_calls:,} training) of a budget of {budget:,}",
            soft_wrap=True,
        )
        ctx.refresh()  # the loop added answers and left its last student
        show(export(ctx))
        from .pipeline import finish, show_target

        return finish(ship(ctx, target or t.targets, on_stage=show, on_target=show_target), run_dir)

    guard(body)


def _show_round(r: Any) -> None:
    from rich.markup import escape

    lo, hi = r.ci95
    weakest = ", ".join(f"{escape(name)} {a:.2f}" for name, a in list(r.deficits.items())[:3])
    mark = "[green]holds[/]" if r.passed else ""
    console().print(
        f"[bold]round {r.round:<3}[/] {r.calls:>6,} calls ({r.heldout_calls:,} held-out + {r.train_calls:,} training, "
        f"{r.asked:,} new, {r.strategy})  agreement [bold]{r.agreement:.4f}[/] (95% CI {lo:.3f}–{hi:.3f}, n={r.n}) "
        f"{mark}{'  weakest: ' + weakest if weakest and not r.passed else ''}  [dim]{r.seconds:.0f} s[/]",
        soft_wrap=True,
    )


def _not_reached(result: Any, task: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    report = result.report
    lo, hi = report.ci95
    why = {
        "budget": f"budget spent: {result.calls:,} of {result.budget:,} teacher calls",
        "pool": f"no inputs left to ask after {result.calls:,} teacher calls",
        "rounds": f"paused after {len(result.rounds) - result.resumed} round(s) (--rounds); run again to go on",
    }[result.stopped]
    console().print(
        f"[bold red]not reached[/] — {why}; agreement {report.agreement:.4f} (95% CI {lo:.3f}–{hi:.3f}, "
        f"n={report.n}), threshold {task.agreement.threshold} ({task.agreement.rule})",
        soft_wrap=True,
    )
    weak = result.weak_labels()
    if weak:
        confused: dict[str, Any] = {}
        for c in report.confusions:
            confused.setdefault(c["teacher"], c)
        table = Table(title="labels that hold agreement back (held-out)", title_justify="left")
        for col in ("label", "agreement", "n", "most often taken for"):
            table.add_column(col, justify="left" if col in ("label", "most often taken for") else "right")
        for name, agreement, n in weak:
            c = confused.get(name)
            table.add_row(
                escape(name), f"{agreement:.3f}", str(n), escape(f"{c['predicted']} ({c['count']})") if c else ""
            )
        console().print(table)
    hint = {"budget": "; raise --budget and run again to go on from here", "rounds": "", "pool": ""}[result.stopped]
    console().print(f"[dim]{len(result.rounds)} round(s) recorded in auto.jsonl{hint}[/]")
