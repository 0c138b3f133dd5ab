"""The device side of `kind: embed`: `tsd_edge.load(pkg).embed`, and `tsd-edge predict` on an embed package (the
real package of tests/embed_package.py: a tiny encoder exported to ONNX, run by ONNX Runtime)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tsd
from embed_package import DIM, MAX_LENGTH, sample_texts

TEXTS = ["I lost my card", "how do I top up my account", "my transfer has not arrived", "hi"]


def _direct(pkg: Path, texts: list[str], tmp: Path) -> np.ndarray:
    """Each text through the package's ONNX file alone, with onnxruntime and tokenizers directly (no batching)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer
    from tsd_edge.runtime.package import read_package

    read_package(pkg, tmp)
    tok = Tokenizer.from_file(str(tmp / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_LENGTH)
    session = ort.InferenceSession(str(tmp / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = []
    for text in texts:
        ids = np.array([tok.encode(text).ids], dtype=np.int64)
        rows.append(session.run(["embedding"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0])
    return np.stack(rows)


def test_embed_gives_the_artifacts_unit_vectors_in_input_order(embed_package: Path, tmp_path: Path) -> None:
    import tsd_edge

    texts = [*TEXTS, *sample_texts(30, skip=5)]
    with tsd_edge.load(embed_package) as model:
        assert model.kind == "embed" and model.dim == DIM and model.labels == []
        vectors = model.embed(texts)
        one_by_one = model.embed(texts, batch_size=1)
        backwards = model.embed(texts[::-1])
        raw = model.logits(texts)
        info = model.describe()
        assert model.embed([]).shape == (0, DIM) and model.logits([]).shape == (0, DIM)
    assert vectors.shape == (len(texts), DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert np.allclose(vectors, _direct(embed_package, texts, tmp_path), atol=1e-5)
    assert np.allclose(vectors, one_by_one, atol=1e-5) and np.allclose(vectors, backwards[::-1], atol=1e-5)
    assert np.allclose(vectors, raw, atol=1e-6)  # this artifact ends in a normalisation: logits are the vectors
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)  # different texts, different vectors
    assert info["kind"] == "embed" and info["dim"] == DIM and info["metric"] == "cosine" and info["labels"] == 0


def test_embed_normalises_what_the_artifact_leaves_off_unit_length(tmp_path: Path) -> None:
    import tsd_edge
    from embed_package import build_embed_package

    pkg = build_embed_package(tmp_path / "raw", normalize=False, heldout=10, corpus=10)
    with tsd_edge.load(pkg) as model:
        raw = model.logits(TEXTS)
        vectors = model.embed(TEXTS)
    norms = np.linalg.norm(raw, axis=1)
    assert np.all(np.abs(norms - 1) > 0.01), norms  # the artifact's own vectors are off unit length
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert np.allclose(vectors, raw / norms[:, None], atol=1e-6)


def test_embed_counted_counts_the_tokens_the_model_read(embed_package: Path) -> None:
    import tsd_edge

    with tsd_edge.load(embed_package) as model:
        vectors, tokens = model.embed_counted(["hi", "I lost my card", "card " * 500])
        assert np.allclose(vectors, model.embed(["hi", "I lost my card", "card " * 500]), atol=1e-6)
    assert tokens == [3, 6, MAX_LENGTH]  # [CLS] + words + [SEP]; a long text truncated to max_length


def test_the_kinds_refuse_each_others_calls_in_one_line(embed_package: Path) -> None:
    import tsd_edge
    from tsd_edge.errors import InputError

    with tsd_edge.load(embed_package) as model:
        with pytest.raises(InputError, match=r"embed package: use embed\(\)"):
            model.predict(TEXTS)
        for bad, why in (("one string", "list of texts"), ([""], "empty"), ([3], "not a string")):
            with pytest.raises(InputError, match=why):
                model.embed(bad)  # type: ignore[arg-type]


def _repackaged(pkg: Path, tmp: Path, **changes: object) -> Path:
    """`pkg` written again with its manifest changed (a package as another tsd-edge might write it)."""
    from tsd_edge.runtime.package import read_package, write_package

    opened = read_package(pkg, tmp / "open")
    files = {name: opened.file(name).read_bytes() for name in opened.manifest["files"]}
    manifest = {k: v for k, v in opened.manifest.items() if k not in ("files", "schema", "created")}
    return write_package(tmp / "changed.tsdpkg", files, {**manifest, **changes})


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"dim": "384"}, "positive whole 'dim'"),
        ({"dim": 0}, "positive whole 'dim'"),
        ({"kind": "generate"}, "kind 'generate'"),
    ],
)
def test_a_manifest_without_a_sound_kind_or_dim_is_refused(
    embed_package: Path, tmp_path: Path, changes: dict[str, object], why: str
) -> None:
    import tsd_edge
    from tsd_edge.errors import InputError

    with pytest.raises(InputError, match=why):
        tsd_edge.load(_repackaged(embed_package, tmp_path, **changes))


def test_an_artifact_that_disagrees_with_its_manifests_dim_is_an_error(embed_package: Path, tmp_path: Path) -> None:
    import tsd_edge
    from tsd_edge.errors import InputError

    with (
        tsd_edge.load(_repackaged(embed_package, tmp_path, dim=128)) as model,
        pytest.raises(InputError, match="dim 128"),
    ):
        model.embed(TEXTS)


def test_cli_predict_prints_each_embedding(embed_package: Path) -> None:
    import tsd_edge

    with tsd_edge.load(embed_package) as model:
        want = model.embed(TEXTS)
    ran = tsd("predict", embed_package, *TEXTS)
    assert ran.code == 0, ran.err
    rows = [json.loads(line) for line in ran.out.splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    assert all(r["package"] == "bank-embed" and r["target"] == "cpu-x86" and "label" not in r for r in rows)
    got = np.array([r["embedding"] for r in rows], dtype=np.float32)
    assert np.array_equal(got, want)  # float32 -> JSON -> float32 is exact


def test_cli_predict_out_writes_the_embeddings_as_npy(embed_package: Path, tmp_path: Path) -> None:
    import tsd_edge

    texts = sample_texts(70, skip=2)  # more than one --batch-size chunk
    stdin = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    out = tmp_path / "vectors.npy"
    proc = subprocess.run(
        [sys.executable, "-m", "tsd_edge", "predict", str(embed_package), "--out", str(out), "--batch-size", "32"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["row"] for r in rows] == list(range(len(texts))) and [r["text"] for r in rows] == texts
    assert all("embedding" not in r for r in rows)
    with tsd_edge.load(embed_package) as model:
        want = model.embed(texts)
    got = np.load(out, allow_pickle=False)
    assert got.dtype == np.float32 and got.shape == (len(texts), DIM)
    assert np.allclose(got, want, atol=1e-5)
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--top-k", "3"], "drop --top-k"),
        (["--out", "vectors.txt"], "ending in .npy"),
        (["--out", "no/such/folder/v.npy"], "does not exist"),
        (["--teacher", "task.yaml"], "--teacher applies to classify packages"),
    ],
)
def test_cli_predict_refuses_options_that_do_not_fit_an_embed_package(
    embed_package: Path, tmp_path: Path, args: list[str], why: str
) -> None:
    (tmp_path / "task.yaml").write_text("name: bank-embed\n", encoding="utf-8")
    ran = tsd("predict", embed_package, "hello", *args, cwd=tmp_path)
    assert ran.code == 2, ran.out + ran.err
    assert why in ran.err and "Traceback" not in ran.err and len(ran.err.strip().splitlines()) == 1
    assert ran.out == ""
