"""The KServe v2 / Open Inference Protocol's inference request and response, JSON and binary.

Request: one BYTES input tensor of texts (any name and shape; its elements, row-major, are the texts):

    {"id": "1", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}],
     "outputs": [{"name": "label"}, {"name": "score"}]}

Response: `label` (BYTES, shape [N]) and `score` (FP32, shape [N]) for the N texts; from an embed model one
`embedding` tensor (FP32, shape [N, dim], row-major).

Triton's binary tensor data extension is understood both ways, because `tritonclient` uses it by default:
the JSON header is followed by raw tensor bytes (the `Inference-Header-Content-Length` header gives the JSON's
length; an input's `parameters.binary_data_size` its bytes; a BYTES element is a 4-byte little-endian length
and the UTF-8 bytes). Outputs are sent binary when the request asks for it (`binary_data` on an output, or
`binary_data_output` in the request's parameters).
"""

from __future__ import annotations

import json
import struct
from typing import Any, List, Tuple

HEADER_LENGTH = "inference-header-content-length"
OUTPUTS = ("label", "score")
EMBED_OUTPUTS = ("embedding",)
# datatype, shape, binary bytes, JSON data; typing.Tuple, not tuple[...]: an alias is evaluated, also on Python 3.8
Tensor = Tuple[str, List[int], bytes, List[Any]]


class ProtocolError(Exception):
    """A request that does not follow the protocol: the HTTP status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _flatten(data: Any, out: list[Any], depth: int = 0) -> None:
    if depth > 32:
        raise ProtocolError(400, "input data is nested too deeply")
    for element in data:
        if isinstance(element, list):
            _flatten(element, out, depth + 1)
        else:
            out.append(element)


def _decode_bytes_tensor(raw: bytes, name: str) -> list[str]:
    texts: list[str] = []
    at = 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise ProtocolError(400, f"input {name!r}: binary BYTES data ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + length > len(raw):
            raise ProtocolError(400, f"input {name!r}: binary BYTES element runs past the data")
        try:
            texts.append(raw[at : at + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError(422, f"input {name!r}: element {len(texts)} is not UTF-8 text") from None
        at += length
    return texts


def encode_bytes_tensor(items: list[str]) -> bytes:
    parts = []
    for item in items:
        data = item.encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters", {})
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ProtocolError(400, f"{where}: 'parameters' must be a JSON object")
    return params


def parse_request(
    body: bytes, header_length: str | None, outputs: tuple[str, ...] = OUTPUTS
) -> tuple[str | None, list[str], list[str], bool]:
    """(request id, texts, outputs wanted, send them binary) from an infer request's body, or ProtocolError.
    `outputs`: the model's output names (OUTPUTS for classify, EMBED_OUTPUTS for embed)."""
    binary = b""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise ProtocolError(400, "Inference-Header-Content-Length must be a whole number") from None
        if size < 0 or size > len(body):
            raise ProtocolError(400, f"Inference-Header-Content-Length is {size} but the body has {len(body)} bytes")
        body, binary = body[:size], body[size:]
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        raise ProtocolError(400, "the request body is not valid JSON") from None
    if not isinstance(request, dict):
        raise ProtocolError(400, "the request body must be a JSON object with 'inputs'")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(400, "'id' must be a string")
    params = _parameters(request, "request")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError(400, "'inputs' must be a list holding one BYTES tensor of texts")
    if len(inputs) != 1:
        raise ProtocolError(400, f"give one input tensor (the texts), not {len(inputs)}")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise ProtocolError(400, "each input must be a JSON object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise ProtocolError(400, "the input needs a 'name' string")
    if tensor.get("datatype") != "BYTES":
        raise ProtocolError(400, f"input {name!r}: datatype must be BYTES (texts), not {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ProtocolError(400, f"input {name!r}: 'shape' must be a list of non-negative integers")
    count = 1
    for dim in shape:
        count *= dim
        if count > 1 << 31:
            raise ProtocolError(413, f"input {name!r}: shape {shape} is too large")
    binary_size = _parameters(tensor, f"input {name!r}").get("binary_data_size")
    if binary_size is not None:
        if not isinstance(binary_size, int) or isinstance(binary_size, bool) or not 0 <= binary_size <= len(binary):
            raise ProtocolError(400, f"input {name!r}: binary_data_size does not match the binary data sent")
        if binary_size != len(binary):
            raise ProtocolError(400, f"input {name!r}: {len(binary) - binary_size} bytes of binary data left over")
        texts = _decode_bytes_tensor(binary, name)
    else:
        if binary:
            raise ProtocolError(400, "binary data was sent but no input names its binary_data_size")
        data = tensor.get("data")
        if not isinstance(data, list):
            raise ProtocolError(400, f"input {name!r}: 'data' must be a list of strings")
        flat: list[Any] = []
        _flatten(data, flat)
        for i, element in enumerate(flat):
            if not isinstance(element, str):
                raise ProtocolError(422, f"input {name!r}: element {i} is a {type(element).__name__}, not a string")
        texts = flat
    if len(texts) != count:
        raise ProtocolError(400, f"input {name!r}: shape {shape} holds {count} elements but {len(texts)} were sent")

    wanted = list(outputs)
    binary_out = params.get("binary_data_output") is True
    asked = request.get("outputs")
    if asked is not None:
        if not isinstance(asked, list):
            raise ProtocolError(400, "'outputs' must be a list of {\"name\": ...}")
        wanted = []
        binary_out = False
        for out in asked:
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise ProtocolError(400, "each requested output needs a 'name' string")
            if out["name"] not in outputs:
                gives = " and ".join(repr(name) for name in outputs)
                raise ProtocolError(400, f"unknown output {out['name']!r}: this model gives {gives}")
            wanted.append(out["name"])
            binary_out = binary_out or _parameters(out, f"output {out['name']!r}").get("binary_data") is True
        if not wanted:
            wanted = list(outputs)
    return request_id, texts, wanted, binary_out


def response(
    model: str, request_id: str | None, answers: list[dict[str, Any]], wanted: list[str], binary: bool
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it."""
    n = len(answers)
    tensors: dict[str, Tensor] = {}
    if "label" in wanted:
        labels = [str(a["label"]) for a in answers]
        tensors["label"] = ("BYTES", [n], encode_bytes_tensor(labels) if binary else b"", labels)
    if "score" in wanted:
        scores = [float(a["score"]) for a in answers]
        tensors["score"] = ("FP32", [n], struct.pack(f"<{n}f", *scores) if binary else b"", scores)
    return _assemble(model, request_id, [(name, *tensors[name]) for name in wanted], binary)


def embedding_response(model: str, request_id: str | None, vectors: Any, binary: bool) -> tuple[bytes, int | None]:
    """An embed model's response: `embedding`, FP32 [n, dim] (`vectors`: a float32 numpy array)."""
    import numpy as np

    array = np.ascontiguousarray(vectors, dtype="<f4")
    raw = array.tobytes() if binary else b""
    data = [] if binary else array.ravel().tolist()
    return _assemble(model, request_id, [("embedding", "FP32", list(array.shape), raw, data)], binary)


def _assemble(
    model: str, request_id: str | None, tensors: list[tuple[str, str, list[int], bytes, list[Any]]], binary: bool
) -> tuple[bytes, int | None]:
    outputs = []
    tail = []
    for name, datatype, shape, raw, data in tensors:
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            entry["data"] = data
        outputs.append(entry)
    head: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": outputs}
    if request_id is not None:
        head["id"] = request_id
    header = json.dumps(head, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if not binary:
        return header, None
    return header + b"".join(tail), len(header)
