"""kind: embed end to end on a Banking77 slice: the real teacher's embeddings, an edge encoder distilled from them,
exported, compiled to ONNX Runtime INT8, re-checked on neighbour agreement, packaged and gated — and a package
whose embeddings were perturbed fails the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import Ran, tsd


@pytest.fixture(scope="module")
def embed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Ran]:
    from slices import write_embed_slice

    folder = tmp_path_factory.mktemp("bank-search")
    task = write_embed_slice(folder, extra="targets: [cpu-x86, openvino-cpu]\n")
    workdir = folder / "run"
    return task, workdir, tsd("run", task, "--workdir", workdir)


def test_run_packages_a_gated_int8_encoder(embed_run: tuple[Path, Path, Ran], tmp_path: Path) -> None:
    _, run, ran = embed_run
    assert ran.code == 0, ran.out[-3000:] + ran.err[-3000:]
    report = json.loads((run / "reports" / "cpu-x86.json").read_text())
    assert report["metric"] == "recall_asymmetric" and report["passed"]
    emb = report["details"]["embedding"]
    assert 0.3 <= report["agreement"] <= 1.0 and emb["k"] == 5
    assert report["fidelity"]["prediction_match"] > 0.5  # INT8 keeps most top-1 neighbours of the fp32 student
    student = json.loads((run / "reports" / "student.json").read_text())
    assert student["metric"] == "recall_asymmetric" and student["n"] == report["n"]

    from tsd_edge.runtime.package import read_package

    pkg = read_package(run / "dist" / "bank-search-cpu-x86.tsdpkg", run / "unpacked")
    m = pkg.manifest
    assert m["kind"] == "embed" and m["metric"] == "recall_asymmetric" and m["dim"] == 384
    corpus = np.load(pkg.file("corpus_teacher.npy"))
    assert corpus.shape[1] == 384 and np.allclose(np.linalg.norm(corpus, axis=1), 1, atol=1e-4)
    gate = tsd(
        "gate",
        run / "dist" / "bank-search-cpu-x86.tsdpkg",
        "--json",
        tmp_path / "g.json",
        "--junit",
        tmp_path / "g.xml",
    )
    assert gate.code == 0, gate.out + gate.err
    assert "recall asymmetric" in gate.out


def test_gate_fails_a_package_whose_embeddings_were_perturbed(
    embed_run: tuple[Path, Path, Ran], tmp_path: Path
) -> None:
    import onnx
    from onnx import numpy_helper
    from tsd_edge.runtime.package import read_package, write_package

    _, run, ran = embed_run
    assert ran.code == 0, ran.err[-2000:]
    pkg = read_package(run / "dist" / "bank-search-cpu-x86.tsdpkg", tmp_path / "pkg")
    m = pkg.manifest
    files = {name: pkg.file(name).read_bytes() for name in m["files"]}
    # noise on the largest float weight of the compiled encoder (the token embeddings): hashes re-made, so the
    # package is sound — only what it computes changed
    model = onnx.load_from_string(files[m["artifact"]])
    weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    emb = max(weights, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(emb).copy()
    arr += np.random.default_rng(0).normal(scale=2 * arr.std(), size=arr.shape).astype(arr.dtype)
    emb.CopyFrom(numpy_helper.from_array(arr, emb.name))
    files[m["artifact"]] = model.SerializeToString()
    manifest = {k: v for k, v in m.items() if k not in ("files", "schema", "created")}
    bad = write_package(tmp_path / "perturbed.tsdpkg", files, manifest)
    gate = tsd("gate", bad, "--json", tmp_path / "g.json", "--junit", tmp_path / "g.xml")
    assert gate.code == 1, gate.out + gate.err
    assert "✗ agreement" in gate.out and "does not hold" in gate.out
    base = run / "dist" / "bank-search-cpu-x86.tsdpkg"
    good = tsd(
        "gate",
        bad,
        "--baseline",
        base,
        "--threshold",
        "0",
        "--json",
        tmp_path / "g2.json",
        "--junit",
        tmp_path / "g2.xml",
    )
    assert good.code == 1 and "✗ regression" in good.out, good.out


def test_openvino_compiles_and_checks_the_encoder(embed_run: tuple[Path, Path, Ran]) -> None:
    _, run, ran = embed_run
    assert ran.code == 0, ran.err[-2000:]
    report = json.loads((run / "reports" / "openvino-cpu.json").read_text())
    assert report["metric"] == "recall_asymmetric" and report["details"]["backend"] == "openvino"
    assert report["fidelity"]["mean_cosine_to_reference"] > 0.999  # fp32 OpenVINO: the fp32 student's vectors
    assert (run / "dist" / "bank-search-openvino-cpu.tsdpkg").is_file()


def test_a_jetson_target_lowers_the_encoder_and_predicts_its_agreement_on_the_host(
    embed_run: tuple[Path, Path, Ran],
) -> None:
    """TensorRT cannot be installed here: the host lowers the ONNX for the engine (FP16) and predicts its recall in
    ONNX Runtime, then says where to build it (exit 2), as for classify."""
    task, run, ran = embed_run
    assert ran.code == 0, ran.err[-2000:]
    compiled = tsd("compile", task, "--workdir", run, "--target", "jetson-orin-nano")
    assert compiled.code == 2 and "build on the device" in compiled.err, compiled.out + compiled.err
    predicted = json.loads((run / "reports" / "jetson-orin-nano-predicted.json").read_text())
    assert predicted["metric"] == "recall_asymmetric" and predicted["details"]["predicted"]
    assert predicted["fidelity"]["mean_cosine_to_reference"] > 0.99


def test_predict_embeds_with_the_package(embed_run: tuple[Path, Path, Ran]) -> None:
    _, run, ran = embed_run
    assert ran.code == 0, ran.err[-2000:]
    import tsd_edge

    with tsd_edge.load(run / "dist" / "bank-search-cpu-x86.tsdpkg") as model:
        vectors = model.embed(["my card has not arrived yet", "where is my new card"])
    assert vectors.shape == (2, 384)
    assert float(vectors[0] @ vectors[1]) > 0.5


def test_embed_run_folder_can_be_copied_and_rechecked(embed_run: tuple[Path, Path, Ran], tmp_path: Path) -> None:
    task, run, ran = embed_run
    assert ran.code == 0, ran.err[-2000:]
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    again = tsd("run", task, "--workdir", copy)
    assert again.code == 0, again.out + again.err
    assert "skipped" in again.out or "up to date" in again.out


def test_bench_measures_an_embed_run(embed_run: tuple[Path, Path, Ran], tmp_path: Path) -> None:
    """`tsd-edge bench` on an embed run folder: every system answers (the compiled ones with embeddings, not labels),
    and each one's agreement is its stage report's gated metric."""
    task, run, ran = embed_run
    assert ran.code == 0, ran.err[-2000:]
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    out = tsd("bench", task, "--workdir", copy, "--repeats", "2", "--queries", "2", "--batches", "1",
              "--batch-size", "8", timeout=300)  # fmt: skip
    assert out.code == 0, out.out + out.err
    data = json.loads((copy / "bench.json").read_text(encoding="utf-8"))
    assert data["skipped"] == []
    systems = {s["name"]: s for s in data["systems"]}
    assert list(systems) == ["teacher", "student", "cpu-x86", "openvino-cpu"]
    for name in ("student", "cpu-x86", "openvino-cpu"):
        report = json.loads((copy / "reports" / f"{name}.json").read_text(encoding="utf-8"))
        assert systems[name]["agreement"] == report["agreement"] and report["metric"] == "recall_asymmetric"
        assert systems[name]["throughput_qps"] > 0 and systems[name]["latency_ms"]["p50"] > 0
    teacher, student = systems["teacher"], systems["student"]
    assert teacher["agreement"] is None and teacher["parameters"] > 10 * student["parameters"]  # MiniLM's own count
