"""The auto loop's memory in the run directory (toolkit/auto.py): `auto.jsonl`, one line per finished round;
`auto/batches.jsonl`, the inputs chosen for each round (written before they are asked); `auto/round-<k>/`,
round k's student. Lines are appended and fsynced; a torn last line (a killed write) never happened.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .rundir import RunDir


@dataclass
class Round:
    """One finished round, as recorded in auto.jsonl."""

    round: int
    calls: int  # teacher answers stored so far, held-out included
    heldout_calls: int
    train_calls: int
    asked: int  # new answers this round
    strategy: str  # what chose this round's inputs
    agreement: float
    ci95: tuple[float, float]
    n: int
    passed: bool
    deficits: dict[str, float]  # the weakest labels under the threshold: held-out agreement
    train_pairs: int
    epochs: int
    seconds: float


class AutoLog:
    """auto.jsonl (rounds) and auto/batches.jsonl (chosen inputs); a torn last line is ignored."""

    def __init__(self, run: RunDir) -> None:
        self.rounds_path = run.root / "auto.jsonl"
        self.folder = run.root / "auto"
        self.batches_path = self.folder / "batches.jsonl"

    @staticmethod
    def _read(path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # killed mid-write: that line, and anything after it, never happened
        return out

    @staticmethod
    def _append(path: Path, record: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = path.read_text(encoding="utf-8") if path.is_file() else ""
        if existing and not existing.endswith("\n"):  # drop a torn line before appending after it
            path.write_text(existing[: existing.rfind("\n") + 1], encoding="utf-8")
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def rounds(self) -> list[Round]:
        out = []
        for r in self._read(self.rounds_path):
            r["ci95"] = tuple(r["ci95"])
            out.append(Round(**r))
        return out

    def batches(self) -> dict[int, dict[str, Any]]:
        return {b["round"]: b for b in self._read(self.batches_path)}

    def add_round(self, r: Round) -> None:
        self._append(self.rounds_path, asdict(r))

    def add_batch(self, round_: int, strategy: str, keys: list[str]) -> None:
        self._append(self.batches_path, {"round": round_, "strategy": strategy, "keys": keys})

    def student(self, round_: int) -> Path:
        return self.folder / f"round-{round_}"
