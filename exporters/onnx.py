"""Student to ONNX: opset 17, dynamic batch and sequence axes, validated in ONNX Runtime against PyTorch.

The legacy TorchScript exporter (`dynamo=False`) is used on purpose: for BERT-like encoders it
exports in about half a second (the dynamo exporter takes 12-15 s), and with eager attention its
graph is the one ONNX Runtime's transformer optimizer knows how to fuse. optimum-onnx would be the
tool of choice, but it requires transformers < 4.58 and the teacher needs transformers 5.
A validation mismatch is an error, never a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import TsdEdgeError

OPSET = 17
INPUTS = ("input_ids", "attention_mask")


class ExportMismatchError(TsdEdgeError):
    """The exported graph does not compute what the PyTorch model computes."""


@dataclass
class ExportValidation:
    batches: int
    max_abs_diff: float
    prediction_match: float
    atol: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol and self.prediction_match == 1.0

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def export_onnx(
    student_dir: Path, out: Path, samples: list[dict[str, np.ndarray]], atol: float = 1e-4
) -> ExportValidation:
    """Export the student in `student_dir` to `out` and validate it on `samples` (tokenized batches)."""
    import onnx
    import torch

    from ..student import load_student

    model = load_student(student_dir)
    if hasattr(model, "set_attn_implementation") and getattr(model.config, "num_attention_heads", None):
        model.set_attn_implementation("eager")  # the static student (toolkit/static.py) has no attention
    model.eval()

    # a classifier's output is its logits; an embed student's (kind: embed) is its unit sentence embedding
    output = "logits" if getattr(model.config, "kind", "classify") == "classify" else "embedding"

    class OutputOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.student = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.student(input_ids, attention_mask)[0]

    wrapper = OutputOnly().eval()  # export restores the wrapper's mode afterwards: it must be eval too
    example = {k: torch.from_numpy(v) for k, v in samples[0].items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns about Python-side shape checks in transformers' mask code; validation below
        # is what tells whether the graph is right for other shapes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example["input_ids"], example["attention_mask"]),
            str(out),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUTS),
            output_names=[output],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                output: {0: "batch"},
            },
        )
    onnx.checker.check_model(str(out), full_check=True)
    return validate(model, out, samples, atol, embeds=output == "embedding")


def validate(
    model: object, onnx_path: Path, samples: list[dict[str, np.ndarray]], atol: float, *, embeds: bool = False
) -> ExportValidation:
    """ONNX Runtime against PyTorch on `samples`: the largest difference, and the share of rows that answer the
    same (a classifier's top label; an embedding's direction, to within a cosine of 1e-6)."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst, matches, total = 0.0, 0, 0
    with torch.no_grad():
        for batch in samples:
            expected = model(*(torch.from_numpy(batch[k]) for k in INPUTS))[0].numpy()  # type: ignore[operator]
            got = session.run(None, {k: batch[k] for k in INPUTS})[0]
            worst = max(worst, float(np.abs(expected - got).max()))
            if embeds:
                matches += int(((expected * got).sum(1) >= 1 - 1e-6).sum())
            else:
                matches += int((expected.argmax(1) == got.argmax(1)).sum())
            total += len(got)
    result = ExportValidation(len(samples), worst, matches / max(total, 1), atol)
    if not result:
        raise ExportMismatchError(
            f"ONNX export does not match PyTorch: max |Δ logit| {worst:.2e} (tolerance {atol:.0e}), "
            f"prediction match {result.prediction_match:.4f}; report this with the student folder"
        )
    return result
