"""The static student (toolkit/static.py): model2vec's distillation of the real offline teacher, a small head,
exported to ONNX as Gather + masked mean + head and run in ONNX Runtime, fp32 and INT8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TEXTS = [
    "I still have not received my new card",
    "can I get a refund for this charge",
    "why was my transfer declined",
    "how do I top up with apple pay",
    "my card payment was charged twice",
    "what is the exchange rate for euros",
]
LABELS = ["card_arrival", "request_refund", "declined_transfer"]


@pytest.fixture(scope="module")
def static_student(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    from tsd_edge.encoder import encoder_dir
    from tsd_edge.static import build_static
    from tsd_edge.student import save_student

    rng = np.random.default_rng(0)
    protos = rng.normal(size=(len(LABELS), 384)).astype(np.float32)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    target = rng.normal(size=(len(TEXTS), 384))
    model, tokenizer = build_static(
        teacher_dir=encoder_dir("all-MiniLM-L6-v2"),
        labels=LABELS,
        prototypes=protos,
        teacher_temperature=0.05,
        texts=TEXTS,
        max_length=32,
        width=16,
        fit=(TEXTS * 4, np.concatenate([target] * 4)),
    )
    out = tmp_path_factory.mktemp("static") / "student"
    save_student(model, tokenizer, out)  # type: ignore[arg-type]
    return out, model


def test_static_student_is_model2vec_vectors_of_the_task_vocabulary(static_student: tuple[Path, object]) -> None:
    from tsd_edge.static import StaticStudent, is_static
    from tsd_edge.student import load_student

    folder, _ = static_student
    assert is_static(folder)
    loaded = load_student(folder)
    assert isinstance(loaded, StaticStudent)
    # pruned to the task's ids (plus special tokens and single characters): far under the teacher's 30,522
    vocab, width = loaded.embeddings.weight.shape
    assert 100 < vocab < 1000 and width == 16
    assert float(loaded.embeddings.weight.detach().abs().sum()) > 0


def test_static_student_exports_to_gather_pooling_head_and_quantizes(
    static_student: tuple[Path, object], tmp_path: Path
) -> None:
    import onnx
    from tsd_edge.exporters.onnx import export_onnx
    from tsd_edge.runtime.backends.onnxruntime import OnnxRuntimeRunner
    from tsd_edge.runtime.tokenizer import TextEncoder
    from tsd_edge.student import StudentRunner

    folder, _ = static_student
    encode = TextEncoder(folder / "tokenizer.json", 32)
    samples = [encode(TEXTS[:1]), encode(TEXTS)]
    out = tmp_path / "model.onnx"
    validation = export_onnx(folder, out, samples)
    assert validation.passed
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "Gather" in ops and not ops & {"Softmax", "LayerNormalization", "Attention"}
    with OnnxRuntimeRunner(out, threads=1) as runner:
        got = runner.run(encode(TEXTS))
    expected = StudentRunner.load(folder).run(encode(TEXTS))
    np.testing.assert_allclose(got, expected, atol=1e-4)

    from tsd_edge.exporters.onnxruntime import quantize_static

    int8 = tmp_path / "int8.onnx"
    quantize_static(out, int8, [encode(TEXTS, pad_to=12)], "minmax")
    with OnnxRuntimeRunner(int8, threads=1) as runner:
        assert runner.run(encode(TEXTS)).shape == (len(TEXTS), len(LABELS))


def test_an_embed_static_student_has_no_head_and_exports_its_unit_embedding(tmp_path: Path) -> None:
    """kind: embed: no prototypes, so no head; the ONNX graph's one output is `embedding`, in the teacher's
    dimension, unit length, the same in ONNX Runtime as in PyTorch — and again after INT8 quantization."""
    import onnx
    from tsd_edge.encoder import encoder_dir
    from tsd_edge.exporters.onnx import export_onnx
    from tsd_edge.exporters.onnxruntime import quantize_static
    from tsd_edge.runtime.backends.onnxruntime import OnnxRuntimeRunner
    from tsd_edge.runtime.tokenizer import TextEncoder
    from tsd_edge.static import build_static
    from tsd_edge.student import StudentRunner, load_student, save_student

    target = np.random.default_rng(1).normal(size=(len(TEXTS) * 4, 384))
    model, tokenizer = build_static(
        teacher_dir=encoder_dir("all-MiniLM-L6-v2"),
        labels=[],
        prototypes=None,
        teacher_temperature=0.05,
        texts=TEXTS,
        max_length=32,
        width=16,
        fit=(TEXTS * 4, target),
        teacher_dim=384,
    )
    assert model.head is None
    folder = tmp_path / "student"
    save_student(model, tokenizer, folder)  # type: ignore[arg-type]
    assert (folder / "labels.json").read_text().strip() == "[]" and load_student(folder).head is None
    encode = TextEncoder(folder / "tokenizer.json", 32)
    out = tmp_path / "model.onnx"
    assert export_onnx(folder, out, [encode(TEXTS[:1]), encode(TEXTS)]).passed
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["embedding"]
    with OnnxRuntimeRunner(out, threads=1) as runner:
        got = runner.run(encode(TEXTS))
    assert got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, StudentRunner.load(folder).run(encode(TEXTS)), atol=1e-4)
    int8 = tmp_path / "int8.onnx"
    quantize_static(out, int8, [encode(TEXTS, pad_to=12)], "minmax")
    with OnnxRuntimeRunner(int8, threads=1) as runner:
        quantized = runner.run(encode(TEXTS))
    cosine = (quantized * got).sum(1) / np.linalg.norm(quantized, axis=1)
    assert cosine.min() > 0.9, cosine  # INT8 moves an embedding; it must not turn it
