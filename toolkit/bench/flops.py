"""FLOPs per query, counted from the student's ONNX graph and the teacher's config."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def flops_fn(spec: dict, task: Any, run: Any) -> Callable[[list[str]], float] | None:
    """FLOPs of one forward pass over a batch of texts, each (sub-)batch padded to its longest, as the
    system runs it (`spec["bucket"]`: sub-batches of similar length):
    2 × the weights of every MatMul that has one (read from the student's ONNX graph) × tokens, plus
    2 × L² × hidden per sequence for each MatMul of two activations (attention scores, and their product
    with V), plus each Gemm (the head) once per sequence. The teacher's terms come from its config.json by
    the same rule, its lengths from its own tokenizer. Integer ops count as FLOPs."""
    from ..runtime.tokenizer import TextEncoder, length_batches

    if spec["kind"] == "teacher":
        if task.teacher.kind != "embedding":
            return None
        from ..encoder import encoder_dir

        folder = encoder_dir(task.teacher.model)
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        st = folder / "sentence_bert_config.json"
        longest = json.loads(st.read_text(encoding="utf-8"))["max_seq_length"] if st.is_file() else 512
        encode = TextEncoder(folder / "tokenizer.json", longest)
        h, inner, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
        per_token, per_seq, per_l2 = 2 * (4 * h * h + 2 * h * inner) * layers, 0, 2 * 2 * h * layers
    else:
        if not run.onnx.is_file():
            return None
        try:
            per_token, per_seq, per_l2 = onnx_flop_terms(run.onnx)
        except ImportError:
            return None
        encode = TextEncoder(run.student / "tokenizer.json", task.student.max_length)

    bucket = spec.get("bucket")

    def flops(texts: list[str]) -> float:
        lengths = encode.lengths(texts)
        total = 0.0
        for idx in length_batches(lengths, bucket or len(texts) or 1):  # the sub-batches the system runs
            width = max(lengths[i] for i in idx)
            total += len(idx) * (width * per_token + per_seq + width * width * per_l2)
        return total

    return flops


def onnx_flop_terms(path: Path) -> tuple[int, int, int]:
    """(FLOPs per token, per sequence, per sequence per L²) from a BERT-like ONNX graph (see `flops_fn`)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name: list(i.dims) for i in graph.initializer}
    per_token = per_seq = attention = 0
    hidden = 0
    for node in graph.node:
        dims = next((weights[x] for x in node.input[1:2] if x in weights), None)
        if node.op_type == "MatMul" and dims and len(dims) == 2:
            per_token += 2 * dims[0] * dims[1]
            hidden = hidden or dims[0]
        elif node.op_type == "MatMul":
            attention += 1
        elif node.op_type == "Gemm" and dims:
            per_seq += 2 * dims[0] * dims[1]
    return per_token, per_seq, 2 * hidden * attention
