"""`tsd-edge profiles`: the target profiles a package can be compiled for."""

from __future__ import annotations

from .app import SHIP, app, console, guard


@app.command(rich_help_panel=SHIP)
def profiles() -> None:
    """List the built-in target profiles, one line each, and the family aliases."""

    def body() -> None:
        from rich.markup import escape

        from ..targets import ALIASES, all_profiles

        out = console()
        items = all_profiles()
        width = max(len(p.name) for p in items)
        for p in items:
            trt = f" TRT {p.tensorrt}" if p.tensorrt else ""
            where = "on device" if p.build_on == "device" else "on host"
            out.print(
                f"[bold]{p.name:<{width}}[/]  {p.backend:<11} {p.precision:<4} {where:<10}{trt:<16}  "
                f"{escape(p.description)}",
                soft_wrap=True,
            )
        for alias, name in ALIASES.items():
            out.print(f"[dim]{alias:<{width}}  alias of {name}[/]", soft_wrap=True)

    guard(body)
