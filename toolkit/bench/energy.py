"""Energy per query: RAPL package counters when readable, else CPU time × a documented share of TDP;
and the machine the figures were taken on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# The estimate's power per busy core: an AMD EPYC 7B13 (Zen 3, the CPU these machines report) is
# 240 W TDP for 64 cores, 3.75 W a core. A dynamic share of TDP: idle power, DRAM and the rest of
# the machine are left out, so the ratio between systems is the ratio of their CPU time.
WATTS_PER_CORE = 240.0 / 64
RAPL = Path("/sys/class/powercap/intel-rapl:0")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "cpu": "unknown", "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and info["cpu"] == "unknown":
            info["cpu"] = value.strip()
        if key.strip() == "flags" and not info["flags"]:
            wanted = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
            info["flags"] = [f for f in wanted if f in value.split()]
    info["energy_counter"] = "rapl" if rapl_uj() is not None else "none"
    return info


def rapl_uj() -> int | None:
    try:
        return int((RAPL / "energy_uj").read_text())
    except (OSError, ValueError):
        return None


def joules(start: int | None, end: int | None) -> float | None:
    if start is None or end is None:
        return None
    if end < start:  # the counter wrapped
        end += int((RAPL / "max_energy_range_uj").read_text())
    return (end - start) / 1e6
