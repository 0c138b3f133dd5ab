"""The run directory: where each stage keeps its output, and the rule that keeps stages atomic.

    runs/<task>/pairs.sqlite            collect
    runs/<task>/student/                distill
    runs/<task>/onnx/model.onnx         export
    runs/<task>/reports/student_logits.npy   export: the fp32 student's held-out logits (the reference)
    runs/<task>/compiled/<target>/      compile
    runs/<task>/reports/<target>_logits.npy  check: the compiled artifact's held-out logits (package calibrates on them)
    runs/<task>/reports/*.json          every stage's agreement report
    runs/<task>/dist/*.tsdpkg           package
    runs/<task>/records/<stage>.json    the hash of each stage's inputs and settings, and of its outputs

Issue 13's rule: a stage builds in a temporary folder and renames it into place (`staged`); its record is
removed first (`invalidate`) and written last (`finish`) with the SHA-256 of its outputs; no stage reads
another's output without a matching record (`require`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .digest import sha256_file
from .errors import InputError
from .textfile import load_json_or_none

if TYPE_CHECKING:
    from .task import Task


@dataclass
class RunDir:
    """The run directory. Each stage builds its output in a temporary folder next to it (`staged`) and
    renames it into place only when finished; its record is removed first (`invalidate`) and written
    last (`finish`) with the SHA-256 of every output file. A stage without a record that matches its
    outputs is not done, and no stage reads another's output without one (`require`)."""

    root: Path

    @classmethod
    def for_task(cls, task: Task, workdir: Path | None) -> RunDir:
        run = cls(workdir or Path("runs") / task.name)
        run.validate()
        return run

    pairs = property(lambda self: self.root / "pairs.sqlite")
    student = property(lambda self: self.root / "student")
    onnx = property(lambda self: self.root / "onnx" / "model.onnx")
    reports = property(lambda self: self.root / "reports")
    dist = property(lambda self: self.root / "dist")
    # the fp32 student's logits on the held-out inputs, written by export: what compiled artifacts are held to
    student_logits = property(lambda self: self.reports / "student_logits.npy")

    def compiled(self, target: str) -> Path:
        return self.root / "compiled" / target

    def check_logits(self, target: str) -> Path:
        """The compiled artifact's logits on the held-out inputs, written by check and listed in its record:
        `package` calibrates the deferral rule on them instead of running the artifact again."""
        return self.reports / f"{target}_logits.npy"

    def report(self, stage: str) -> Path:
        return self.reports / f"{stage}.json"

    def record(self, stage: str) -> Path:
        return self.root / "records" / f"{stage}.json"

    def validate(self) -> None:
        """A file where the run directory keeps a folder (or the reverse) is bad input, said before any work."""
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"--workdir {self.root} is a file, not a folder: give a folder (or leave it out)")
        folders = [
            self.student,
            self.onnx.parent,
            self.reports,
            self.dist,
            self.root / "records",
            self.root / "compiled",
        ]
        compiled = self.root / "compiled"
        if compiled.is_dir():
            folders += [p for p in compiled.iterdir() if not p.name.startswith(".")]
        for folder in folders:
            if folder.exists() and not folder.is_dir():
                raise InputError(
                    f"{folder}: a file where tsd-edge keeps a folder; move it away or use another --workdir"
                )
        if self.pairs.exists() and not self.pairs.is_file():
            raise InputError(f"{self.pairs}: a folder where the pair store should be; move it away")

    # -- records ------------------------------------------------------------------------------------

    def _outputs(self, paths: tuple[Path, ...] | list[Path]) -> dict[str, str]:
        files = []
        for p in paths:
            files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        return {f.relative_to(self.root).as_posix(): sha256_file(f) for f in files}

    def _intact(self, rec: Any) -> bool:
        outputs = rec.get("outputs") if isinstance(rec, dict) else None
        if not isinstance(outputs, dict) or not outputs:
            return False
        for name, digest in outputs.items():
            path = self.root / str(name)
            if not path.is_file() or sha256_file(path) != digest:
                return False
        return True

    def up_to_date(self, stage: str, key: str, *outputs: Path) -> bool:
        """The stage's record matches `key` and every output file it recorded is there, unchanged."""
        rec = load_json_or_none(self.record(stage))
        if not isinstance(rec, dict) or rec.get("key") != key or not all(p.exists() for p in outputs):
            return False
        return self._intact(rec)

    def require(self, stage: str, what: str, fix: str, key: str | None = None) -> None:
        """Refuse to read `stage`'s output unless its record is there, matches `key` (if given) and its outputs."""
        rec = load_json_or_none(self.record(stage))
        if not isinstance(rec, dict) or (key is not None and rec.get("key") != key) or not self._intact(rec):
            raise InputError(f"{what} is missing, out of date or half-made (no matching {self.record(stage)}): {fix}")

    def invalidate(self, stage: str) -> None:
        """Before a stage touches its output: from here until `finish` it is not done."""
        self.record(stage).unlink(missing_ok=True)

    def finish(self, stage: str, key: str, outputs: list[Path] | None = None, **info: Any) -> None:
        """The stage's record, written last: its key and the SHA-256 of each of its output files."""
        rec = self.record(stage)
        rec.parent.mkdir(parents=True, exist_ok=True)
        data = {"key": key, "finished": time.time(), "outputs": self._outputs(outputs or []), **info}
        write_atomic(rec, (json.dumps(data, indent=2) + "\n").encode())

    # -- building an output beside the live one ------------------------------------------------------

    @contextmanager
    def staged(self, target: Path, *, carry: tuple[str, ...] = (), active: bool = True) -> Iterator[Path]:
        """A fresh temporary folder next to `target`, renamed onto it when the block ends without an error
        (removed when it raises or the process dies: the next `staged` of that target clears leftovers).
        `carry` names files of the live folder the new one keeps; inactive (other DDP ranks): `target`."""
        if not active:
            yield target
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        for left in target.parent.glob(f".{target.name}.*-*"):  # leftovers of a killed stage
            shutil.rmtree(left, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            for name in carry:
                if (target / name).is_file():
                    shutil.copy2(target / name, tmp / name)
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def npy_bytes(array: Any) -> bytes:
    """An array as the bytes of a float32 .npy file, for `write_atomic` or a package (np.load reads it, nothing is
    pickled)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype="<f4"), allow_pickle=False)
    return buf.getvalue()


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([__version__, *parts], sort_keys=True, default=str).encode()).hexdigest()
