"""Where the memory of a process that loads a package and answers queries goes, step by step.

`python -m benchmarks memory PACKAGE` runs the steps below in one fresh process (no torch, as on a
device) and reports VmHWM (peak) and VmRSS (now) after each one.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _now(name: str) -> tuple[str, float, float]:
    return name, _mib("VmHWM"), _mib("VmRSS")


def steps(package: Path, batch_size: int = 32) -> Iterator[tuple[str, float, float]]:
    yield _now("python")
    import numpy as np  # noqa: F401

    yield _now("+ import numpy")
    import tokenizers  # noqa: F401

    yield _now("+ import tokenizers")
    import onnxruntime  # noqa: F401

    yield _now("+ import onnxruntime")
    from tsd_edge.runtime.artifact import Artifact
    from tsd_edge.runtime.backends import open_runner
    from tsd_edge.runtime.package import read_package
    from tsd_edge.runtime.tokenizer import TextEncoder

    yield _now("+ import tsd_edge (package, runner)")
    with tempfile.TemporaryDirectory() as tmp:
        pkg = read_package(package, Path(tmp))
        yield _now("+ read_package (verify, unpack)")
        artifact = Artifact.load_meta(pkg.file("artifact.json"))
        artifact.path = pkg.file(artifact.path.name)
        encode = TextEncoder(pkg.file("tokenizer.json"), pkg.manifest["max_length"])
        texts = [json.loads(ln)["input"] for ln in pkg.file("heldout.jsonl").read_text(encoding="utf-8").splitlines()]
        yield _now("+ tokenizer, held-out texts")
        with open_runner(artifact, 1) as runner:
            yield _now("+ load the artifact (session)")
            for text in texts[:32]:
                runner.run(encode([text]))
            yield _now("+ 32 queries at batch 1")
            for i in range(0, 4 * batch_size, batch_size):
                runner.run(encode(texts[i : i + batch_size]))
            yield _now(f"+ 4 batches of {batch_size}")
            longest = sorted(texts, key=len)[-batch_size:]
            runner.run(encode(longest))
            yield _now(f"+ the {batch_size} longest held-out inputs")
