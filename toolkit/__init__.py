"""tsd-edge: distil a teacher into a small task-specific student, compile it, gate it.

The import package is deliberately light: importing ``tsd_edge`` pulls in no torch, transformers,
runtime or numpy. Heavy libraries are imported inside the functions that need them; the public names
below are imported on first use.

    tsd_edge.load("x.tsdpkg") -> Model          a verified package, ready to answer: .predict(texts), .logits(texts)
    tsd_edge.load_task("task.yaml") -> Task     a validated task file
    tsd_edge.run(task, workdir) -> RunResult    collect, distill, export, then compile, check, package per target
    tsd_edge.RunContext.open(task, workdir)     what every stage reads, built once: the run directory, the teacher,
                                                the held-out pairs, the student's encoder and labels
    stage by stage: tsd_edge.stages (collect, distill, export), tsd_edge.compile_check (compile, check),
    tsd_edge.packaging (package); each takes a RunContext and returns a StageResult

Errors are TsdEdgeError subclasses, each with the CLI's exit code (tsd_edge.errors, docs/architecture.md).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "InputError",
    "Model",
    "NotBuildableHere",
    "Prediction",
    "RefusedError",
    "RunContext",
    "RunDir",
    "RunResult",
    "StageResult",
    "TargetResult",
    "Task",
    "TsdEdgeError",
    "__version__",
    "load",
    "load_task",
    "run",
]

_LAZY = {
    "load": "runtime.model",
    "Model": "runtime.model",
    "Prediction": "runtime.model",
    "load_task": "task",
    "Task": "task",
    "RunContext": "context",
    "RunDir": "rundir",
    "run": "pipeline",
    "RunResult": "pipeline",
    "TargetResult": "pipeline",
    "StageResult": "stages",
    "TsdEdgeError": "errors",
    "InputError": "errors",
    "RefusedError": "errors",
    "NotBuildableHere": "errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
