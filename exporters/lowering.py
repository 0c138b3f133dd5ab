"""Precision lowering at the ONNX level, done and checked on the host before anything goes to a device.

- FP16 (`to_fp16`): onnxconverter-common's float16 converter with a block list. LayerNormalization,
  Softmax and every node of the attention-mask arithmetic stay FP32 (the known FP16 overflow cases
  in BERT-like encoders: variance sums in LayerNorm, and the `finfo(float32).min` mask constant,
  which is -inf in FP16); graph inputs and outputs keep their types. TensorRT >= 10 builds the
  result as a strongly typed network, so the precision of every layer is what this file says.
- INT8 (`to_int8_qdq`): explicit, symmetric Q/DQ around the MatMuls with weights, calibrated on the
  task's own inputs with ONNX Runtime's static quantizer (shared with the onnxruntime backend).
  Symmetric int8 activations (zero point 0) because that is the only Q/DQ form TensorRT accepts.
  Left unquantized: the FFN down-projections, whose input is GELU's output (skewed to one side, so a
  symmetric range wastes half of it: on Banking77's student quantizing them cost 2 points of
  agreement, 0.886 vs 0.907), and the activation-by-activation attention MatMuls.

Both results run in ONNX Runtime on the host: that run is the "predicted" agreement the device
check must later confirm.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..digest import sha256_file
from ..errors import InputError, RuntimeMissingError
from .base import Batch

KEEP_FP32_OPS = ("LayerNormalization", "Softmax")
MASK_INPUT = "attention_mask"


@dataclass
class Lowered:
    """An ONNX file at the precision a target will run, and what was done to it."""

    path: Path
    precision: str
    details: dict[str, Any] = field(default_factory=dict)


def lower(src: Path, precision: str, calibration: Sequence[Batch], out_dir: Path) -> Lowered:
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"model.{precision}.onnx"
    if precision == "fp32":
        out.write_bytes(src.read_bytes())
        details: dict[str, Any] = {}
    elif precision == "fp16":
        details = to_fp16(src, out)
    elif precision == "int8":
        details = to_int8_qdq(src, out, calibration)
    else:
        raise InputError(f"cannot lower to precision '{precision}': use fp32, fp16 or int8 in the profile")
    details["source_onnx_sha256"] = sha256_file(src)
    details["lowered_onnx_sha256"] = sha256_file(out)
    return Lowered(out, precision, details)


def mask_nodes(graph: Any, mask_input: str = MASK_INPUT) -> list[str]:
    """Names of the nodes that compute on the attention mask: those fed by the mask and by no other
    graph input, plus the nodes where the mask meets the activations (the `scores + mask` Add)."""
    others = {i.name for i in graph.input if i.name != mask_input}
    from_mask, from_data = {mask_input}, set(others)
    names = []
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type in {"Shape", "Size"}:
            continue  # a tensor's shape is not its values: sizes taken from the activations are not activations
        mask_in = any(i in from_mask for i in node.input)
        data_in = any(i in from_data for i in node.input)
        if data_in:
            from_data.update(node.output)
        elif mask_in:
            from_mask.update(node.output)
        if mask_in:
            names.append(node.name)
    return names


def _unshare_initializers(model: Any) -> int:
    """Give every consumer of a shared initializer its own copy: the float16 converter cannot give one
    initializer to an FP32 node and an FP16 node at once (a tiny random student shares its zero biases)."""
    import onnx

    inits = {t.name: t for t in model.graph.initializer}
    seen: dict[str, int] = {}
    copies = []
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name not in inits:
                continue
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}__{seen[name]}"
                copies.append(copy)
                node.input[k] = copy.name
    model.graph.initializer.extend(copies)
    return len(copies)


def _fold_identities(model: Any) -> int:
    """Drop Identity nodes that only copy an initializer (the exporter writes one per shared weight):
    the float16 converter casts the initializer but not the copy's consumers when those stay FP32."""
    inits = {t.name for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    alias = {
        n.output[0]: n.input[0]
        for n in model.graph.node
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs
    }
    if not alias:
        return 0
    kept = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        for k, name in enumerate(node.input):
            node.input[k] = alias.get(name, name)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return len(alias)


def to_fp16(src: Path, out: Path) -> dict[str, Any]:
    try:
        import onnx
        from onnxconverter_common import float16
    except ImportError as exc:
        raise RuntimeMissingError("FP16 lowering", exc.name or "onnxconverter-common") from None

    model = onnx.load(str(src))
    _fold_identities(model)
    _unshare_initializers(model)
    io_before = _io_types(model)
    keep_nodes = mask_nodes(model.graph)
    if not keep_nodes:
        raise InputError(f"{src}: no '{MASK_INPUT}' input found; FP16 lowering keeps the mask arithmetic in FP32")
    with warnings.catch_warnings(record=True) as clipped:
        # constants outside FP16's range are clipped to ±1e4 / 1e-7 (the mask's finfo.min becomes -1e4,
        # which is the mask value that fits FP16); the converter warns once per constant
        warnings.simplefilter("always")
        fp16 = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *KEEP_FP32_OPS],
            node_block_list=keep_nodes,
        )
    if _io_types(fp16) != io_before:
        raise InputError(f"{src}: FP16 lowering changed the graph's input/output types: {_io_types(fp16)}")
    onnx.save(fp16, str(out))
    return {
        "lowering": "fp16 (onnxconverter-common float16, keep_io_types)",
        "onnxconverter_common": _version("onnxconverter-common"),
        "kept_fp32_ops": list(KEEP_FP32_OPS),
        "kept_fp32_mask_nodes": len(keep_nodes),
        "clipped_constants": len(clipped),
    }


def to_int8_qdq(src: Path, out: Path, calibration: Sequence[Batch]) -> dict[str, Any]:
    from .onnxruntime import quantize_static

    if not calibration:
        raise InputError("INT8 lowering needs calibration inputs: the task has no relevant training inputs")
    import onnx

    exclude = int8_excluded(onnx.load(str(src)).graph)
    return quantize_static(src, out, calibration, method="minmax", symmetric_activations=True, exclude=exclude)


def int8_excluded(graph: Any) -> list[str]:
    """MatMuls left out of INT8: those without a weight, and those reading a GELU output."""
    weights = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in graph.node for o in n.output}

    def after_gelu(tensor: str, hops: int = 4) -> bool:  # exact GELU exports as x * 0.5 * (1 + erf(x / √2))
        node = producer.get(tensor)
        if node is None:
            return False
        if node.op_type in {"Gelu", "FastGelu", "Erf"}:
            return True
        return hops > 0 and any(after_gelu(i, hops - 1) for i in node.input)

    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and (not any(i in weights for i in n.input) or after_gelu(n.input[0]))
    ]


def _io_types(model: Any) -> list[tuple[str, int]]:
    return [(v.name, v.type.tensor_type.elem_type) for v in [*model.graph.input, *model.graph.output]]


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def fp16_ready(model_path: Path) -> dict[str, int]:
    """How many initializers are FP16 and FP32 in a lowered file (used by tests and the build record)."""
    import onnx

    model = onnx.load(str(model_path))
    kinds = [t.data_type for t in model.graph.initializer]
    return {"fp16": kinds.count(onnx.TensorProto.FLOAT16), "fp32": kinds.count(onnx.TensorProto.FLOAT)}


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
