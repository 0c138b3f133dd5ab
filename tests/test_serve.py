"""`tsd-edge serve` for real: the CLI started as a subprocess on 127.0.0.1 (a free port), serving the package the
end-to-end run built, answered over HTTP by concurrent clients, Triton's own KServe v2 client, fuzzed bodies;
the bearer key, --trust refusals and SIGTERM with a request in flight. Every server is stopped by its test."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Ran
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.network

SAMPLE_TEST = Path(__file__).resolve().parents[1] / "samples" / "banking77" / "data" / "test.csv"
KEY_ENV = "TSD_SERVE_TEST_KEY"
# one client for every plain request: a top-level httpx.get/post builds a TLS context per call (~0.3 s here)
HTTP = httpx.Client(timeout=60)


class Server:
    """`tsd-edge serve ARGS --port 0` in a subprocess; knows its URL once it has announced it."""

    def __init__(self, *args: str | Path, env: dict[str, str] | None = None, command: list[str] | None = None) -> None:
        command = command or [sys.executable, "-m", "tsd_edge", "serve"]  # another Python's CLI: tests/test_old_pythons
        self.proc = subprocess.Popen(
            [*command, *map(str, args), "--port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "200", **(env or {})},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.url = ""

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def wait_ready(self, timeout: float = 90) -> Server:
        deadline = time.monotonic() + timeout
        while not self.url:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            if found:
                self.url = found.group(1)
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"server did not start: {''.join(self.stderr)}")
        while time.monotonic() < deadline:
            try:
                if HTTP.get(self.url + "/ready", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("server never became ready")

    def exit(self, timeout: float = 60) -> Ran:
        """Wait for the process to end by itself (a refusal): its exit code and stderr."""
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return Ran(code, "", "".join(self.stderr))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def package(pipeline: tuple[Path, Path, Ran]) -> Path:
    _, workdir, ran = pipeline
    assert ran.code == 0, ran.err[-2000:]
    pkg = workdir / "dist" / "bank-slice-cpu-x86.tsdpkg"
    assert pkg.is_file()
    return pkg


@pytest.fixture(scope="module")
def texts() -> list[str]:
    with SAMPLE_TEST.open(encoding="utf-8", newline="") as fh:
        rows = [row["text"] for row in csv.DictReader(fh)]
    return random.Random(0).sample(rows, 200)


@pytest.fixture(scope="module")
def server(package: Path) -> Iterator[Server]:
    srv = Server(
        package,
        "--max-batch",
        "32",
        "--max-delay-ms",
        "2",
        "--max-texts",
        "64",
        "--max-chars",
        "2000",
        "--max-body-bytes",
        "65536",
    ).wait_ready()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in HTTP.get(url + "/metrics", timeout=10).text.splitlines():
        sample = line.startswith(name + "{") or line.startswith(name + " ")
        if sample and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_concurrent_clients_get_the_answers_predict_gives(server: Server, package: Path, texts: list[str]) -> None:
    from tsd_edge.runtime import load

    rng = random.Random(1)
    jobs = []  # (texts, top_k) per request: mostly one text, some several, some with top-k
    at = 0
    while at < len(texts):
        n = rng.choice([1, 1, 1, 2, 5])
        jobs.append((texts[at : at + n], rng.choice([1, 1, 3])))
        at += n
    with load(package) as model:
        expected = [[p.to_dict() for p in model.predict(t, top_k=k)] for t, k in jobs]
    batches_before = metric(server.url, "tsd_serve_batch_requests_count")

    async def run() -> list[dict]:
        limit = asyncio.Semaphore(32)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def one(t: list[str], k: int) -> dict:
                async with limit:
                    r = await client.post("/v1/classify", json={"texts": t, "top_k": k})
                    assert r.status_code == 200, r.text
                    return r.json()  # type: ignore[no-any-return]

            return await asyncio.gather(*(one(t, k) for t, k in jobs))

    answers = asyncio.run(run())
    for (t, _), got, want in zip(jobs, answers, expected, strict=True):
        assert got["model"] == "bank-slice" and got["target"] == "cpu-x86"
        assert len(got["predictions"]) == len(t)
        for g, w in zip(got["predictions"], want, strict=True):
            assert g["label"] == w["label"]
            assert g["score"] == pytest.approx(w["score"], abs=1e-4)
            assert [e["label"] for e in g.get("top_k", [])] == [e["label"] for e in w.get("top_k", [])]
    # dynamic batching happened: fewer model calls than requests, and some held several requests
    calls = metric(server.url, "tsd_serve_batch_requests_count") - batches_before
    assert 0 < calls < len(jobs), (calls, len(jobs))
    assert metric(server.url, "tsd_serve_requests_total", endpoint="/v1/classify", status="200") >= len(jobs)


def test_kserve_v2_with_the_triton_client(server: Server, package: Path, texts: list[str]) -> None:
    import numpy as np
    import tritonclient.http as triton
    from tsd_edge.runtime import load

    sample = [*texts[:7], "héllo — ünïcode 💳"]
    with load(package) as model:
        want = model.predict(sample)
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("bank-slice")
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        meta = client.get_model_metadata("bank-slice")
        assert meta["name"] == "bank-slice"
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        assert {(o["name"], o["datatype"]) for o in meta["outputs"]} == {("label", "BYTES"), ("score", "FP32")}
        for binary in (True, False):  # the client's default (binary tensors) and plain JSON
            tensor = triton.InferInput("text", [len(sample)], "BYTES")
            tensor.set_data_from_numpy(np.array(sample, dtype=object), binary_data=binary)
            outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "score")]
            result = client.infer("bank-slice", [tensor], outputs=outputs, request_id="r-1")
            labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
            assert labels == [p.label for p in want]
            scores = result.as_numpy("score")
            assert scores.dtype == np.float32 and scores.shape == (len(sample),)
            assert np.allclose(scores, [p.score for p in want], atol=1e-4)
            assert result.get_response()["id"] == "r-1"
        tensor = triton.InferInput("text", [2, 1], "BYTES")  # any shape: its elements, row-major
        tensor.set_data_from_numpy(np.array([[sample[0]], [sample[1]]], dtype=object))
        assert [x.decode() for x in client.infer("bank-slice", [tensor]).as_numpy("label")] == [
            p.label for p in want[:2]
        ]
        wrong = triton.InferInput("text", [1], "FP32")
        wrong.set_data_from_numpy(np.array([1.0], dtype=np.float32))
        with pytest.raises(triton.InferenceServerException, match="BYTES"):
            client.infer("bank-slice", [wrong])
    finally:
        client.close()
    # the same request as plain JSON, checked field by field
    r = HTTP.post(
        server.url + "/v2/models/bank-slice/infer",
        json={"id": "x", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": sample[:2]}]},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["model_name"] == "bank-slice" and body["id"] == "x"
    assert [(o["name"], o["datatype"], o["shape"]) for o in body["outputs"]] == [
        ("label", "BYTES", [2]),
        ("score", "FP32", [2]),
    ]
    assert body["outputs"][0]["data"] == [p.label for p in want[:2]]
    assert HTTP.get(server.url + "/v2/models/nope").status_code == 404
    assert HTTP.get(server.url + "/v2/models/bank-slice/versions/1/ready").status_code == 200


def _binary_infer(payload: bytes, header: dict | None = None, declared: int | None = None) -> tuple[bytes, dict]:
    head = json.dumps(
        {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(payload)}}]}
    ).encode()
    return head + payload, {"Inference-Header-Content-Length": str(len(head) if declared is None else declared)}


BAD = [  # (path, body, extra headers, status, words in the reason)
    ("/v1/classify", b'{"texts": ["a"', {}, 400, "not valid JSON"),
    ("/v1/classify", b'["a"]', {}, 400, "JSON object"),
    ("/v1/classify", b"[" * 50_000, {}, 400, "not valid JSON"),
    ("/v1/classify", b"{}", {}, 422, "missing field 'texts'"),
    ("/v1/classify", b'{"texts": "one string"}', {}, 422, "list of strings"),
    ("/v1/classify", b'{"texts": []}', {}, 422, "empty"),
    ("/v1/classify", b'{"texts": ["ok", 3]}', {}, 422, "text 1 is a int"),
    ("/v1/classify", b'{"texts": ["ok", "   "]}', {}, 422, "text 1 is empty"),
    ("/v1/classify", json.dumps({"texts": ["x"] * 65}).encode(), {}, 413, "over the limit of 64"),
    ("/v1/classify", json.dumps({"texts": ["x" * 2001]}).encode(), {}, 422, "2001 characters"),
    ("/v1/classify", json.dumps({"texts": ["x" * 70_000]}).encode(), {}, 413, "over the limit of 65536"),
    ("/v1/classify", b'{"texts": ["a"], "top_k": 0}', {}, 422, "top_k"),
    ("/v1/classify", b'{"texts": ["a"], "top_k": "2"}', {}, 422, "top_k"),
    ("/v1/classify", b'{"texts": ["a"], "top_k": true}', {}, 422, "top_k"),
    ("/v1/classify", b'{"texts": ["a"], "model": "nope"}', {}, 404, "no model named 'nope'"),
    ("/v1/classify", b'{"texts": ["a"], "model": 7}', {}, 422, "'model' must be a string"),
    ("/v1/classify", b'{"texts": ["a"], "extra": 1}', {}, 422, "unknown field"),
    ("/v1/classify", b"\xff\xfe", {}, 400, "not valid JSON"),
    ("/v2/models/bank-slice/infer", b"{}", {}, 400, "'inputs'"),
    (
        "/v2/models/bank-slice/infer",
        b'{"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}',
        {},
        400,
        "holds 2 elements but 1",
    ),
    (
        "/v2/models/bank-slice/infer",
        b'{"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": [1]}]}',
        {},
        422,
        "not a string",
    ),
    (
        "/v2/models/bank-slice/infer",
        b'{"inputs": [{"name": "t", "shape": [-1], "datatype": "BYTES", "data": []}]}',
        {},
        400,
        "non-negative",
    ),
    (
        "/v2/models/bank-slice/infer",
        b'{"inputs": [{"name": "t", "shape": [0], "datatype": "BYTES", "data": []}]}',
        {},
        422,
        "empty",
    ),
    ("/v2/models/bank-slice/infer", *_binary_infer(b"\x05\x00\x00\x00ab"), 400, "runs past the data"),
    ("/v2/models/bank-slice/infer", *_binary_infer(b"\x02\x00\x00\x00\xff\xfe"), 422, "not UTF-8"),
    ("/v2/models/bank-slice/infer", *_binary_infer(b"\x01\x00\x00\x00a", declared=10**6), 400, "Inference-Header"),
    ("/v2/models/bank-slice/infer", b'{"inputs": [], "outputs": [{"name": "logits"}]}', {}, 400, "'inputs'"),
    ("/v2/models/bank-slice/versions/2/infer", b"{}", {}, 404, "version 1 only"),
    ("/v2/models/nope/infer", b"{}", {}, 404, "no model named"),
]


@pytest.mark.parametrize(("path", "body", "headers", "status", "reason"), BAD)
def test_bad_requests_get_a_4xx_with_the_reason(
    server: Server, path: str, body: bytes, headers: dict, status: int, reason: str
) -> None:
    r = HTTP.post(server.url + path, content=body, headers={"Content-Type": "application/json", **headers})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert reason in r.json()["error"]


def test_a_body_without_content_length_is_still_bounded(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"texts": ["'
        for _ in range(40):
            yield b"x" * 4096
        yield b'"]}'

    r = HTTP.post(server.url + "/v1/classify", content=chunks())  # chunked transfer encoding
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    assert HTTP.get(server.url + "/v1/nope").json() == {"error": "Not Found"}
    assert HTTP.get(server.url + "/v1/classify").status_code == 405


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
TEXTS = st.lists(st.text(min_size=0, max_size=40) | st.integers() | st.none(), max_size=6)
CLASSIFY = st.fixed_dictionaries(
    {},
    optional={
        "texts": TEXTS | JSON,
        "top_k": st.integers(-3, 200) | JSON,
        "model": st.sampled_from(["bank-slice", "x"]) | JSON,
    },
)
INFER = st.fixed_dictionaries(
    {
        "inputs": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": st.text(max_size=5) | JSON,
                    "shape": st.lists(st.integers(-2, 8), max_size=3) | JSON,
                    "datatype": st.sampled_from(["BYTES", "FP32", "INT64"]) | JSON,
                    "data": TEXTS | JSON,
                    "parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]), JSON, max_size=2),
                },
            ),
            max_size=2,
        )
        | JSON
    },
    optional={"id": JSON, "outputs": JSON, "parameters": JSON},
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=st.one_of(
        st.tuples(st.just("/v1/classify"), CLASSIFY.map(lambda d: json.dumps(d).encode())),
        st.tuples(st.just("/v2/models/bank-slice/infer"), INFER.map(lambda d: json.dumps(d).encode())),
        st.tuples(st.sampled_from(["/v1/classify", "/v2/models/bank-slice/infer"]), st.binary(max_size=64)),
    ),
    header=st.none() | st.text("0123456789-x", max_size=4),
)
def test_fuzzed_bodies_get_200_or_a_4xx_never_a_5xx(
    server: Server, case: tuple[str, bytes], header: str | None
) -> None:
    path, body = case
    headers = {"Inference-Header-Content-Length": header} if header is not None and "v2" in path else {}
    r = HTTP.post(server.url + path, content=body, headers=headers, timeout=30)
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text, body)
    if r.status_code != 200:
        assert isinstance(r.json()["error"], str)


def test_the_fuzzed_server_is_still_up_with_no_server_errors(server: Server) -> None:
    assert HTTP.get(server.url + "/health").json() == {"status": "live"}
    r = HTTP.post(server.url + "/v1/classify", json={"texts": ["I lost my card"]})
    assert r.status_code == 200
    assert metric(server.url, "tsd_serve_errors_total", kind="server") == 0
    assert metric(server.url, "tsd_serve_errors_total", kind="client") > 0
    assert server.proc.poll() is None


def test_bearer_key_and_two_named_packages(package: Path) -> None:
    srv = Server(
        f"a={package}", f"b={package}", "--api-key-env", KEY_ENV, "--no-batching", env={KEY_ENV: "s3cret-key"}
    ).wait_ready()
    try:
        url = srv.url
        body = {"model": "b", "texts": ["I lost my card"]}
        assert HTTP.post(url + "/v1/classify", json=body).status_code == 401
        wrong = HTTP.post(url + "/v1/classify", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
        assert wrong.headers["www-authenticate"] == "Bearer"
        auth = {"Authorization": "Bearer s3cret-key"}
        ok = HTTP.post(url + "/v1/classify", json=body, headers=auth)
        assert ok.status_code == 200 and ok.json()["model"] == "b"
        ambiguous = HTTP.post(url + "/v1/classify", json={"texts": ["x"]}, headers=auth)
        assert ambiguous.status_code == 422 and "a, b" in ambiguous.json()["error"]
        assert HTTP.get(url + "/v2/models/a/ready", headers=auth).status_code == 200
        assert HTTP.get(url + "/metrics").status_code == 401
        assert "tsd_serve_requests_total" in HTTP.get(url + "/metrics", headers=auth).text
        for probe in ("/health", "/ready", "/v2/health/live", "/v2/health/ready"):  # probes need no key
            assert HTTP.get(url + probe).status_code == 200
        assert "s3cret-key" not in "".join(srv.stderr)
    finally:
        assert srv.stop() == 0
    unset = Server(package, "--api-key-env", "TSD_SERVE_NO_SUCH_VAR").exit()
    assert unset.code == 2 and "TSD_SERVE_NO_SUCH_VAR" in unset.err


def _repack(src: Path, out: Path, *, sign_with: Path | None = None, tamper: bool = False) -> Path:
    with tarfile.open(src, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]
    members.pop("manifest.sig", None)
    if sign_with is not None:
        from tsd_edge.signing import sign

        manifest = members.pop("manifest.json")
        members = {"manifest.json": manifest, "manifest.sig": sign(manifest, sign_with), **members}
    if tamper:
        members["labels.json"] = members["labels.json"].replace(b'"', b'"x', 1)
    with tarfile.open(out, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def test_trust_refuses_a_tampered_or_unsigned_package(package: Path, tmp_path: Path) -> None:
    from tsd_edge.signing import keygen

    private, public = keygen(tmp_path / "ci")
    signed = _repack(package, tmp_path / "signed.tsdpkg", sign_with=private)
    tampered = _repack(package, tmp_path / "tampered.tsdpkg", sign_with=private, tamper=True)
    for pkg, words in ((package, "not signed"), (tampered, "labels.json does not match")):
        refused = Server(pkg, "--trust", public).exit()
        assert refused.code == 2, refused.err
        assert "refusing to serve" in refused.err and words in refused.err
        assert len(refused.err.strip().splitlines()) == 1 and "Traceback" not in refused.err
    untrusted = Server(tampered).exit()  # a changed package is refused with or without --trust
    assert untrusted.code == 2 and "does not match" in untrusted.err
    srv = Server(signed, "--trust", public).wait_ready()
    try:
        meta = HTTP.get(srv.url + "/v2/models/bank-slice").json()
        assert meta["parameters"]["verified_signature"] is True
    finally:
        assert srv.stop() == 0


def test_sigterm_lets_the_request_in_flight_finish(package: Path) -> None:
    from tsd_edge.runtime import load

    sample = ["I lost my card", "how do I top up my account"]
    with load(package) as model:
        want = [p.label for p in model.predict(sample)]
    srv = Server(package, "--grace", "20").wait_ready()
    host, port = srv.url.removeprefix("http://").split(":")
    body = json.dumps({"texts": sample}).encode()
    head = (
        f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(head + body[:10])  # the request has begun; its body is not all there
            deadline = time.monotonic() + 30
            while metric(srv.url, "tsd_serve_in_flight_requests") < 2:  # this /metrics call + ours
                assert time.monotonic() < deadline
                time.sleep(0.02)
            srv.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while True:  # the server stops accepting new connections...
                try:
                    socket.create_connection((host, int(port)), timeout=1).close()
                except OSError:
                    break
                assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
                time.sleep(0.05)
            assert srv.proc.poll() is None  # ...but waits for the request in flight
            conn.sendall(body[10:])
            raw = b""
            while chunk := conn.recv(65536):
                raw += chunk
        status_line, _, rest = raw.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 200"), raw
        answer = json.loads(rest.partition(b"\r\n\r\n")[2])
        assert [p["label"] for p in answer["predictions"]] == want
        assert srv.proc.wait(timeout=30) == 0
    finally:
        srv.stop()


def test_serve_refuses_bad_arguments(package: Path, tmp_path: Path) -> None:
    missing = Server(tmp_path / "nope.tsdpkg").exit()
    assert missing.code == 2 and "no package at" in missing.err
    dup = Server(package, package).exit()
    assert dup.code == 2 and "two packages are named 'bank-slice'" in dup.err
    zero = Server(package, "--max-batch", "0").exit()
    assert zero.code == 2 and "--max-batch" in zero.err
