"""Precision lowering of the ONNX on the host (FP16 with FP32 islands, INT8 symmetric Q/DQ), run in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from test_student_export import TEXTS, tiny  # noqa: F401 (the tiny-student fixture)
from tsd_edge.errors import InputError
from tsd_edge.exporters.lowering import KEEP_FP32_OPS, int8_excluded, lower, mask_nodes
from tsd_edge.exporters.onnx import export_onnx
from tsd_edge.runtime.tokenizer import TextEncoder


@pytest.fixture(scope="module")
def tiny_onnx(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The tiny student exported to ONNX, validated against PyTorch (shared by the backend tests)."""
    out = tmp_path_factory.mktemp("tiny-onnx") / "model.onnx"
    encode = TextEncoder(tiny / "tokenizer.json", 32)
    export_onnx(tiny, out, [encode(TEXTS[:2]), encode(TEXTS)])
    return out


@pytest.fixture(scope="module")
def batches(tiny: Path) -> list[dict[str, np.ndarray]]:  # noqa: F811
    encode = TextEncoder(tiny / "tokenizer.json", 32)
    return [encode(TEXTS), encode(TEXTS[:1]), encode([TEXTS[1]] * 3)]


def _run(path: Path, batch: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, batch)[0]


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}


def test_fp16_keeps_io_types_and_fp32_islands(tiny_onnx: Path, tmp_path: Path, batches: list) -> None:
    lowered = lower(tiny_onnx, "fp16", [], tmp_path)
    assert lowered.path.name == "model.fp16.onnx"
    src, out = onnx.load(str(tiny_onnx)), onnx.load(str(lowered.path))
    io = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in [*m.graph.input, *m.graph.output]]  # noqa: E731
    assert io(out) == io(src)
    kinds = [t.data_type for t in out.graph.initializer]
    assert kinds.count(onnx.TensorProto.FLOAT16) > 0  # the MatMul weights went to FP16
    types = _types(out)
    kept = [n for n in out.graph.node if n.op_type in KEEP_FP32_OPS]
    assert len(kept) >= 3  # 2 layers × (2 LayerNorm + Softmax) + embeddings' LayerNorm
    for node in kept:
        assert types[node.output[0]] == onnx.TensorProto.FLOAT, node.name
    # the mask arithmetic too: every node computing on the mask produces FP32 (or ints/bools)
    masked = set(mask_nodes(src.graph))
    assert masked and lowered.details["kept_fp32_mask_nodes"] == len(masked)
    for node in out.graph.node:
        if node.name in masked and node.output[0] in types:
            assert types[node.output[0]] != onnx.TensorProto.FLOAT16, node.name
    for batch in batches:
        ref, got = _run(tiny_onnx, batch), _run(lowered.path, batch)
        assert got.dtype == np.float32
        assert np.abs(ref - got).max() < 1e-2
        assert (ref.argmax(1) == got.argmax(1)).all()


def test_mask_nodes_are_the_ones_fed_by_the_mask(tiny_onnx: Path) -> None:
    graph = onnx.load(str(tiny_onnx)).graph
    names = mask_nodes(graph)
    by_name = {n.name: n for n in graph.node}
    assert any(by_name[n].op_type == "Cast" for n in names)  # the mask's cast to float
    # the Adds where the mask meets the attention scores, one per layer
    assert sum(1 for n in names if by_name[n].op_type == "Add" and "attention" in n) == 2
    assert not mask_nodes(graph, mask_input="no-such-input")


def test_int8_is_symmetric_qdq_with_the_gelu_matmuls_left_out(tiny_onnx: Path, tmp_path: Path, batches: list) -> None:
    lowered = lower(tiny_onnx, "int8", batches, tmp_path)
    model = onnx.load(str(lowered.path))
    inits = {t.name: t for t in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for q in qs:  # TensorRT accepts only int8 with zero point 0
        zero = onnx.numpy_helper.to_array(inits[q.input[2]])
        assert zero.dtype == np.int8 and not zero.any(), q.name
    excluded = int8_excluded(onnx.load(str(tiny_onnx)).graph)
    assert sum("output/dense" in n and "attention" not in n for n in excluded) == 2  # the FFN down-projections
    assert sum(n.endswith(("self/MatMul", "self/MatMul_1")) for n in excluded) == 4  # Q·K and P·V
    assert lowered.details["not_quantized"] == len(excluded)
    assert lowered.details["source_onnx_sha256"] != lowered.details["lowered_onnx_sha256"]
    for batch in batches:
        ref, got = _run(tiny_onnx, batch), _run(lowered.path, batch)
        assert got.shape == ref.shape and np.isfinite(got).all()


def test_int8_needs_calibration_and_unknown_precision_is_refused(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="calibration"):
        lower(tiny_onnx, "int8", [], tmp_path)
    with pytest.raises(InputError, match="fp32, fp16 or int8"):
        lower(tiny_onnx, "int4", [], tmp_path)
