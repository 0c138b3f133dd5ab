"""`tsd-edge serve` of an embed package, for real: the CLI on 127.0.0.1 serving tests/embed_package.py's package,
OpenAI's POST /v1/embeddings called with httpx and with the official `openai` client, concurrent requests through
the dynamic batcher, KServe v2 with Triton's client, OpenAI-shaped errors, and the bearer key."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from embed_package import DIM, sample_texts
from test_serve import HTTP, Server, metric

pytestmark = pytest.mark.network

NAME = "bank-embed"
KEY_ENV = "TSD_SERVE_EMBED_TEST_KEY"


@pytest.fixture(scope="module")
def server(embed_package: Path) -> Iterator[Server]:
    srv = Server(embed_package, "--max-texts", "16", "--max-delay-ms", "5").wait_ready()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [*sample_texts(40, skip=1), "héllo — ünïcode 💳"]


def _expected(pkg: Path, texts: list[str]) -> tuple[np.ndarray, list[int]]:
    from tsd_edge.runtime import load

    with load(pkg) as model:
        return model.embed_counted(texts)


def test_embeddings_float_and_base64_are_the_models_vectors(server: Server, embed_package: Path) -> None:
    sample = ["I lost my card", "how do I top up?", "héllo — ünïcode 💳"]
    want, tokens = _expected(embed_package, sample)
    r = HTTP.post(server.url + "/v1/embeddings", json={"input": sample, "model": NAME})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == NAME
    assert body["usage"] == {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)}
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and {d["object"] for d in body["data"]} == {"embedding"}
    floats = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert floats.shape == (3, DIM) and np.allclose(floats, want, atol=1e-5)

    r = HTTP.post(server.url + "/v1/embeddings", json={"input": sample, "encoding_format": "base64", "dimensions": DIM})
    assert r.status_code == 200, r.text
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]])
    assert np.array_equal(decoded, floats)  # the same request, the same float32 bits either way

    one = HTTP.post(server.url + "/v1/embeddings", json={"input": sample[0]}).json()  # one string; model optional
    assert len(one["data"]) == 1 and np.allclose(one["data"][0]["embedding"], want[0], atol=1e-5)
    assert one["usage"]["prompt_tokens"] == tokens[0]


def test_the_openai_client_gets_the_models_vectors(server: Server, embed_package: Path) -> None:
    openai = pytest.importorskip("openai", reason="the openai client is not installed: pip install -e '.[dev]'")
    sample = ["my card was declined", "what is the exchange rate for euros", "x " * 400]
    want, tokens = _expected(embed_package, sample)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    try:
        # the client asks for base64 by default and decodes it itself; float when asked
        for fmt in (None, "float"):
            extra = {"encoding_format": fmt} if fmt else {}
            result = client.embeddings.create(model=NAME, input=sample, **extra)
            got = np.array([d.embedding for d in result.data], dtype=np.float32)
            assert got.shape == (3, DIM) and np.allclose(got, want, atol=1e-5)
            assert result.model == NAME and result.usage.prompt_tokens == sum(tokens) == result.usage.total_tokens
        assert [m.id for m in client.models.list()] == [NAME]
        with pytest.raises(openai.BadRequestError, match="384-dimension embeddings only") as bad:
            client.embeddings.create(model=NAME, input="hi", dimensions=128)
        assert bad.value.param == "dimensions" and bad.value.type == "invalid_request_error"
        with pytest.raises(openai.NotFoundError, match="no model named 'gpt-x'") as missing:
            client.embeddings.create(model="gpt-x", input="hi")
        assert missing.value.code == "model_not_found"
    finally:
        client.close()


def test_concurrent_requests_are_batched_and_answered_in_order(
    server: Server, embed_package: Path, texts: list[str]
) -> None:
    sizes = itertools.cycle([1, 3, 1, 2, 1, 5])  # requests of one text and of several
    jobs: list[list[str]] = []
    while sum(map(len, jobs)) < len(texts):
        at = sum(map(len, jobs))
        jobs.append(texts[at : at + next(sizes)])
    want = {t: v for t, v in zip(texts, _expected(embed_package, texts)[0], strict=True)}
    batches_before = metric(server.url, "tsd_serve_batch_requests_count")
    texts_before = metric(server.url, "tsd_serve_texts_total", model=NAME)

    async def run() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def one(batch: list[str]) -> dict:
                r = await client.post("/v1/embeddings", json={"input": batch, "model": NAME})
                assert r.status_code == 200, r.text
                return r.json()  # type: ignore[no-any-return]

            return await asyncio.gather(*(one(b) for b in jobs))

    for batch, got in zip(jobs, asyncio.run(run()), strict=True):
        assert [d["index"] for d in got["data"]] == list(range(len(batch)))
        vectors = np.array([d["embedding"] for d in got["data"]], dtype=np.float32)
        assert np.allclose(vectors, np.stack([want[t] for t in batch]), atol=1e-5)
    calls = metric(server.url, "tsd_serve_batch_requests_count") - batches_before
    assert 0 < calls < len(jobs), (calls, len(jobs))  # some model calls answered several requests
    assert metric(server.url, "tsd_serve_texts_total", model=NAME) - texts_before == sum(map(len, jobs))
    assert metric(server.url, "tsd_serve_requests_total", endpoint="/v1/embeddings", status="200") >= len(jobs)


@pytest.mark.parametrize(
    ("body", "status", "param", "why"),
    [
        ({"input": "hi", "dimensions": 128}, 400, "dimensions", "omit 'dimensions' or give 384"),
        ({"input": "hi", "dimensions": True}, 400, "dimensions", "384-dimension"),
        ({"input": "hi", "encoding_format": "int8"}, 400, "encoding_format", "'float' or 'base64'"),
        ({"input": [101, 2023]}, 400, "input", "token arrays are not accepted"),
        ({"input": [[101, 2023]]}, 400, "input", "token arrays are not accepted"),
        ({"input": []}, 400, "input", "is empty"),
        ({"input": [""]}, 400, "input", "text 0 is empty"),
        ({"input": ["a", 3]}, 400, "input", "text 1 is a int"),
        ({"input": None}, 400, "input", "must be a list of strings"),
        ({"input": ["a"] * 17}, 413, "input", "over the limit of 16"),
        ({"texts": ["a"]}, 400, "texts", "unrecognized request argument(s) 'texts'"),
        ({"model": NAME}, 400, "input", "missing field 'input'"),
        ({"input": "hi", "model": "nope"}, 404, "model", "no model named 'nope'"),
        ({"input": "hi", "model": 7}, 400, "model", "'model' must be a string"),
    ],
)
def test_bad_requests_get_openais_error_object(server: Server, body: dict, status: int, param: str, why: str) -> None:
    r = HTTP.post(server.url + "/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert why in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"


def test_not_json_and_wrong_method_are_openai_errors_too(server: Server) -> None:
    r = HTTP.post(server.url + "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "the body is not valid JSON"
    r = HTTP.get(server.url + "/v1/embeddings")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"


def test_classify_answers_400_naming_the_embeddings_endpoint(server: Server) -> None:
    r = HTTP.post(server.url + "/v1/classify", json={"texts": ["hi"]})
    assert r.status_code == 400 and "POST /v1/embeddings" in r.json()["error"]


def test_ready_models_and_metadata_say_kind_and_dim(server: Server) -> None:
    shape = {NAME: {"kind": "embed", "dim": DIM}}
    assert HTTP.get(server.url + "/health").json() == {"status": "live"}  # as for classify
    assert HTTP.get(server.url + "/ready").json() == {"status": "ready", "models": [NAME], "kinds": shape}
    (listed,) = HTTP.get(server.url + "/v1/models").json()["models"]
    assert listed["kind"] == "embed" and listed["dim"] == DIM and listed["labels"] == 0
    meta = HTTP.get(server.url + f"/v2/models/{NAME}").json()
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, DIM]}]
    assert meta["parameters"]["kind"] == "embed" and meta["parameters"]["dim"] == DIM


def test_kserve_v2_answers_an_fp32_embedding_tensor(server: Server, embed_package: Path, texts: list[str]) -> None:
    import tritonclient.http as triton

    sample = texts[:6]
    want, _ = _expected(embed_package, sample)
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        assert client.is_model_ready(NAME)
        for binary in (True, False):
            tensor = triton.InferInput("text", [len(sample)], "BYTES")
            tensor.set_data_from_numpy(np.array(sample, dtype=object), binary_data=binary)
            out = [triton.InferRequestedOutput("embedding", binary_data=binary)]
            got = client.infer(NAME, [tensor], outputs=out).as_numpy("embedding")
            assert got.dtype == np.float32 and got.shape == (len(sample), DIM)
            assert np.allclose(got, want, atol=1e-5)
        with pytest.raises(triton.InferenceServerException, match="this model gives 'embedding'"):
            tensor = triton.InferInput("text", [1], "BYTES")
            tensor.set_data_from_numpy(np.array(sample[:1], dtype=object))
            client.infer(NAME, [tensor], outputs=[triton.InferRequestedOutput("label")])
    finally:
        client.close()
    r = HTTP.post(
        server.url + f"/v2/models/{NAME}/infer",
        json={"id": "e", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": sample[:2]}]},
    )
    assert r.status_code == 200, r.text
    (output,) = r.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("embedding", "FP32", [2, DIM])
    assert np.allclose(np.array(output["data"], dtype=np.float32).reshape(2, DIM), want[:2], atol=1e-5)


def test_the_bearer_key_refusal_is_an_openai_authentication_error(embed_package: Path) -> None:
    openai = pytest.importorskip("openai", reason="the openai client is not installed: pip install -e '.[dev]'")
    srv = Server(embed_package, "--api-key-env", KEY_ENV, env={KEY_ENV: "s3cret"}).wait_ready()
    try:
        r = HTTP.post(srv.url + "/v1/embeddings", json={"input": "hi"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.json()["error"]["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError, match="missing or wrong API key"):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0).embeddings.create(
                model=NAME, input="hi"
            )
        good = openai.OpenAI(base_url=srv.url + "/v1", api_key="s3cret", max_retries=0)
        assert len(good.embeddings.create(model=NAME, input=["a", "b"]).data) == 2
        good.close()
    finally:
        assert srv.stop() == 0, "".join(srv.stderr)
