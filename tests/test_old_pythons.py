"""The device side on the Pythons of JetPack 5 (3.8) and JetPack 6 (3.10), for real: a venv per version from
pyenv, the base install of this checkout (a wheel built from a copy of it, no extras) with what pip resolves
there, and the session pipeline's package gated and predicted with it; the answers must be this Python's
(`tsd_edge.runtime.load(pkg).predict`). The training side says in one line that it needs 3.11.

The venvs are cached under ~/.cache/tsd-edge/pyvenvs, keyed by the hash of pyproject.toml and the version;
each run reinstalls only tsd-edge itself there (--no-deps). A cold run (wheel, two venvs, pip resolving the
base dependencies for each Python) takes about 2.5 min on the 2-core machine, so those tests are marked `slow`
(`pytest -m slow tests/test_old_pythons.py`); warm, they take seconds. Also, in every run: the runtime side's
modules checked statically for 3.8 with vermin.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Ran

ROOT = Path(__file__).resolve().parents[1]
PYENV = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
VERSIONS = ("3.8.18", "3.10.13")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tsd-edge" / "pyvenvs"
TEXTS = ["how do I top up my card?", "my card was declined at the shop", "what is the exchange rate for euros"]


def _python(version: str) -> Path:
    python = PYENV / "versions" / version / "bin" / "python3"
    if not python.is_file():
        pytest.skip(f"pyenv has no Python {version} here ({python} is missing): `pyenv install {version}`")
    return python


def _run(argv: list[str | Path], timeout: float = 900, **kwargs: object) -> Ran:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "COLUMNS": "200"},
        **kwargs,  # type: ignore[arg-type]
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tsd-edge built as a wheel from a copy of this checkout (its tracked and unignored files): what
    `pip install tsd-edge` gives, not an editable install."""
    tmp = tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    src = tmp / "src"
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    ran = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", src])
    assert ran.code == 0, ran.err[-3000:]
    (built,) = (tmp / "dist").glob("tsd_edge-*.whl")
    return built


def _venv(version: str, wheel: Path) -> Path:
    """A venv with `version`'s interpreter and tsd-edge's base dependencies (cached), and this wheel in it."""
    python = _python(version)
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + version.encode()).hexdigest()[:16]
    folder = CACHE / f"py{version}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per venv, also across concurrent test runs
        if not (folder / ".ready").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            ran = _run([python, "-m", "venv", folder])
            assert ran.code == 0, ran.err
            ran = _run([folder / "bin" / "python", "-m", "pip", "install", "-q", wheel])
            assert ran.code == 0, f"pip install on Python {version}:\n{ran.err[-4000:]}"
            (folder / ".ready").write_text(version + "\n", encoding="utf-8")
        else:  # the dependencies are the cached ones (same pyproject.toml); tsd-edge itself is this checkout's
            ran = _run(
                [folder / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", wheel]
            )
            assert ran.code == 0, ran.err[-4000:]
    return folder


@pytest.fixture(scope="module", params=VERSIONS)
def old(request: pytest.FixtureRequest, wheel: Path) -> Iterator[tuple[str, Path]]:
    """(version, venv) with this checkout's base install."""
    yield request.param, _venv(request.param, wheel)


@pytest.fixture(scope="module")
def package(pipeline: tuple[Path, Path, Ran]) -> Path:
    _, workdir, ran = pipeline
    assert ran.code == 0, ran.err[-2000:]
    (pkg,) = (workdir / "dist").glob("*.tsdpkg")
    return pkg


@pytest.mark.slow
def test_the_base_install_has_no_training_side(old: tuple[str, Path]) -> None:
    version, venv = old
    ran = _run(
        [venv / "bin" / "python", "-c", "import sys, tsd_edge, numpy, onnxruntime, tokenizers; print(sys.version)"]
    )
    assert ran.code == 0 and ran.out.startswith(version), ran.out + ran.err
    for heavy in ("torch", "transformers", "asyncssh"):
        gone = _run([venv / "bin" / "python", "-c", f"import {heavy}"])
        assert gone.code != 0, f"{heavy} is installed on Python {version}: the base install must not pull it"
    ran = _run([venv / "bin" / "python", "-m", "pip", "check"])
    assert ran.code == 0, ran.out + ran.err


@pytest.mark.slow
def test_gate_and_predict_give_this_pythons_answers(old: tuple[str, Path], package: Path, tmp_path: Path) -> None:
    from tsd_edge.gate import gate_package
    from tsd_edge.runtime import load

    _, venv = old
    gate = _run([venv / "bin" / "tsd-edge", "gate", package, "--json", tmp_path / "g.json"])
    assert gate.code == 0, gate.out + gate.err
    there = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))[0]
    here = gate_package(package).to_dict()
    assert there["passed"] and here["passed"]
    assert there["report"]["agreement"] == here["report"]["agreement"] and there["report"]["n"] == here["report"]["n"]
    assert there["report"]["confusions"] == here["report"]["confusions"]

    ran = _run([venv / "bin" / "tsd-edge", "predict", package, *TEXTS, "--top-k", "3"])
    assert ran.code == 0, ran.out + ran.err
    answers = [json.loads(line) for line in ran.out.splitlines() if line.strip()]
    with load(package) as model:
        expected = model.predict(TEXTS, top_k=3)
    assert [a["text"] for a in answers] == TEXTS
    assert [a["label"] for a in answers] == [p.label for p in expected]
    for got, want in zip(answers, expected, strict=True):
        assert got["score"] == pytest.approx(want.score, abs=1e-4)
        assert [k["label"] for k in got["top_k"]] == [label for label, _ in want.top_k]


@pytest.mark.slow
def test_training_commands_name_python_311_in_one_line(old: tuple[str, Path], pipeline: tuple[Path, Path, Ran]) -> None:
    version, venv = old
    task, _, _ = pipeline
    ran = _run([venv / "bin" / "tsd-edge", "run", task])
    assert ran.code == 2, ran.out + ran.err
    lines = [ln for ln in ran.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Python 3.11" in lines[0] and f"Python {version}" in lines[0], ran.err
    assert "Traceback" not in ran.err


@pytest.mark.slow
@pytest.mark.network
def test_serve_answers_as_predict_does(old: tuple[str, Path], package: Path) -> None:
    """`tsd-edge serve` under the old Python on 127.0.0.1: a classify request gets this Python's predict answers."""
    import httpx
    from test_serve import Server
    from tsd_edge.runtime import load

    _, venv = old
    old_server = Server(package, command=[str(venv / "bin" / "tsd-edge"), "serve"]).wait_ready()
    try:
        got = httpx.post(old_server.url + "/v1/classify", json={"texts": TEXTS}, timeout=60).json()
    finally:
        assert old_server.stop() == 0
    with load(package) as model:
        assert [p["label"] for p in got["predictions"]] == [p.label for p in model.predict(TEXTS)]


# -- static: the runtime side's modules hold nothing newer than Python 3.8 ------------------------

# what runs on a device or a CI runner: the runtime, the gate and the CLI around it, the device sessions
RUNTIME_SIDE = [
    "toolkit/runtime",
    "toolkit/device",
    "toolkit/gate.py",
    "toolkit/agreement.py",
    "toolkit/embedding_agreement.py",
    "toolkit/verdict.py",
    "toolkit/errors.py",
    "toolkit/digest.py",
    "toolkit/cli/__init__.py",
    "toolkit/cli/app.py",
    "toolkit/cli/ship.py",
    "toolkit/cli/predict.py",
    "toolkit/cli/serve.py",
    "toolkit/serve",
]


def test_the_runtime_side_needs_nothing_newer_than_python_38() -> None:
    """vermin over every runtime-side module. A module without `from __future__ import annotations` has its
    annotations evaluated at run time (typer reads the CLI's): there vermin evaluates them too. typing.Annotated
    is imported from typing_extensions before 3.9 (cli/app.py), so vermin is told to leave it."""
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent))
    if vermin is None:
        pytest.skip("vermin is not installed: pip install -e '.[dev]'")
    files = sorted(
        str(p.relative_to(ROOT))
        for name in RUNTIME_SIDE
        for p in ([ROOT / name] if name.endswith(".py") else sorted((ROOT / name).rglob("*.py")))
    )
    lazy = [f for f in files if "from __future__ import annotations" in (ROOT / f).read_text(encoding="utf-8")]
    evaluated = [f for f in files if f not in lazy]
    base = [vermin, "-t=3.8-", "--violations", "--no-tips", "--exclude", "typing.Annotated"]
    for group, extra in ((lazy, []), (evaluated, ["--eval-annotations"])):
        ran = _run([*base, *extra, *group], cwd=ROOT, timeout=300)
        assert ran.code == 0, ran.out + ran.err
