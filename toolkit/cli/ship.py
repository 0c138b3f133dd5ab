"""Packages in CI: the gate, and the keys packages are signed with."""

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from .app import SHIP, Annotated, Identity, KnownHosts, app, console, guard

# typer evaluates these annotations at run time and this module runs on Python 3.8: Optional/List, no
# `from __future__ import annotations`


@app.command(rich_help_panel=SHIP)
def gate(
    packages: Annotated[List[Path], typer.Argument(help="one or more .tsdpkg files")],
    baseline: Annotated[Optional[Path], typer.Option(help="fail if agreement dropped against this package")] = None,
    max_drop: Annotated[float, typer.Option(help="largest drop allowed against --baseline")] = 0.01,
    trust: Annotated[Optional[Path], typer.Option(help="ed25519 public key the packages must be signed with")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="override the packaged threshold")] = None,
    device: Annotated[
        Optional[str],
        typer.Option(help="re-run the artifact on this device over SSH (ssh://user@host[:port]), as it will run there"),
    ] = None,
    identity: Identity = None,
    known_hosts: KnownHosts = None,
    accept_packaged_report: Annotated[
        bool,
        typer.Option(
            "--accept-packaged-report",
            help="where the artifact cannot be re-run (no runtime here, no --device), judge the packaged report "
            "instead of failing as not verified",
        ),
    ] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the JSON report here")] = Path(
        "tsd-gate.json"
    ),
    junit: Annotated[Optional[Path], typer.Option(help="write JUnit XML here")] = Path("tsd-gate.junit.xml"),
    summary: Annotated[
        Optional[Path], typer.Option(help="append a Markdown summary here [default: $GITHUB_STEP_SUMMARY when set]")
    ] = None,
    threads: Annotated[int, typer.Option(help="inference threads")] = 1,
) -> None:
    """CI gate: verify each package and re-run its artifact on its held-out inputs; exit 1 if any fails.
    An artifact that cannot be re-run here (or on --device) is NOT VERIFIED and fails the gate."""

    def body() -> int:
        from ..gate import gate_package, markdown, write_junit

        target = None
        if device is not None:
            from ..device import SshDevice

            target = SshDevice.parse(device, identity, known_hosts)
        results = [
            gate_package(
                p,
                threshold,
                threads,
                baseline=baseline,
                max_drop=max_drop,
                trust=trust,
                accept_packaged=accept_packaged_report,
                device=target,
            )
            for p in packages
        ]
        out = console()
        for r in results:
            status = "[green]PASS[/]" if r else "[bold red]FAIL[/]"
            out.print(f"{status} {r.package} [dim]({r.seconds:.1f} s)[/]", soft_wrap=True)
            for c in r.checks:
                out.print(f"  {'✓' if c.passed else '✗'} {c.name}: {c.message}", soft_wrap=True, markup=False)
        if json_out:
            json_out.write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n", encoding="utf-8")
        if junit:
            write_junit(results, junit)
        md_path = summary or (
            Path(os.environ["GITHUB_STEP_SUMMARY"]) if os.environ.get("GITHUB_STEP_SUMMARY") else None
        )
        if md_path:
            with md_path.open("a", encoding="utf-8") as fh:
                fh.write(markdown(results))
        return 0 if all(results) else 1

    guard(body)


@app.command(rich_help_panel=SHIP)
def keygen(
    key: Annotated[Path, typer.Argument(help="private key file to write; the public key goes to KEY.pub")],
) -> None:
    """Make an ed25519 key pair for signing packages (package --sign KEY, gate --trust KEY.pub)."""

    def body() -> None:
        from ..signing import keygen as make

        private, public = make(key)
        console().print(f"private key: {private} (keep it secret)\npublic key:  {public} (give it to gate --trust)")

    guard(body)
