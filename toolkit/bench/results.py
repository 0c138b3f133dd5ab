"""What a bench run measured: one `System` per model, the `BenchResult` saved as bench.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "tsd-edge/bench/1"


@dataclass
class System:
    name: str
    kind: str  # teacher | student | compiled
    runtime: str
    precision: str
    source: str
    size_bytes: int | None = None
    parameters: int | None = None
    agreement: float | None = None
    agreement_n: int | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    throughput_qps: float | None = None
    throughput_runs: list[float] = field(default_factory=list)
    model_ms_per_batch: float | None = None
    gflops: float | None = None
    mflop_per_query: float | None = None
    peak_rss_mib: float | None = None
    rss_after_load_mib: float | None = None
    load_s: float | None = None
    cpu_s_per_query: dict[str, float] = field(default_factory=dict)
    energy: dict[str, Any] = field(default_factory=dict)
    cost_per_1m_usd: dict[str, float] = field(default_factory=dict)  # energy, machine, tokens (HTTP teacher), total
    tokens_per_query: dict[str, float] | None = None


@dataclass
class BenchResult:
    task: str
    systems: list[System]
    settings: dict[str, Any]
    machine: dict[str, Any]
    skipped: list[dict[str, str]] = field(default_factory=list)
    schema: str = SCHEMA

    @property
    def ratios(self) -> dict[str, dict[str, float]]:
        """Each non-teacher system against the teacher (× faster, × less energy) and against the eager student."""
        by = {s.name: s for s in self.systems}
        teacher, eager = by.get("teacher"), by.get("student")
        out: dict[str, dict[str, float]] = {}
        for s in self.systems:
            if s.kind == "teacher":
                continue
            r: dict[str, float] = {}
            if teacher and teacher.throughput_qps and s.throughput_qps:
                r["throughput_vs_teacher"] = s.throughput_qps / teacher.throughput_qps
            if teacher and teacher.latency_ms and s.latency_ms:
                r["latency_b1_vs_teacher"] = teacher.latency_ms["p50"] / s.latency_ms["p50"]
            if eager and eager is not s and eager.latency_ms and s.latency_ms:
                r["latency_b1_vs_eager"] = eager.latency_ms["p50"] / s.latency_ms["p50"]
            for regime in ("b1", "b32"):
                key = f"joules_per_1k_{regime}"
                if teacher and teacher.energy.get(key) and s.energy.get(key):
                    r[f"energy_{regime}_vs_teacher"] = teacher.energy[key] / s.energy[key]
            out[s.name] = r
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratios": self.ratios}

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path
