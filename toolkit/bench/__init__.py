"""`tsd-edge bench`: speed, size, memory, energy and cost of the teacher, the student and each compiled
artifact, side by side, on the same held-out inputs, in one run.

Every system answers text → label, as its users run it: the teacher through its own adapter (for the
embedding teacher, sentence-transformers in PyTorch), the student in PyTorch eager (`StudentRunner`),
each compiled artifact through its backend's runner, loaded from its package when that package holds
the current artifact (so the memory figure is that of a process that loads the package and answers).
Tokenization is part of every system's time.

Each system runs in its own worker process (`python -m tsd_edge.bench.worker SPEC`) so its peak memory is its
own (VmHWM from /proc/self/status; ru_maxrss would carry the parent's size across exec). The workers
are started together and then measured one at a time, round-robin, a different one first each repeat:
noise on a shared machine hits every system alike. Figures are medians over repeats.

Energy: RAPL package counters from /sys/class/powercap when readable ("measured", the whole socket);
otherwise CPU time × WATTS_PER_CORE, labelled "estimated" wherever it appears.

Modules: measure (pick systems, drive workers round-robin, summarise), worker (one system in its
own process), flops (FLOPs per query from the ONNX graph), energy (RAPL, the estimate, the machine),
results (the dataclasses saved as bench.json), render (the rich table and the SVG chart).
"""

from __future__ import annotations

from .energy import machine
from .flops import onnx_flop_terms
from .measure import bench
from .render import chart, table
from .results import BenchResult, System

__all__ = ["BenchResult", "System", "bench", "chart", "machine", "onnx_flop_terms", "table"]
