"""Student, ONNX export and the ONNX Runtime backend on tiny models built from configs (seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tsd_edge.encoder import encoder_dir
from tsd_edge.exporters import get_backend
from tsd_edge.exporters.onnx import ExportMismatchError, export_onnx, validate
from tsd_edge.runtime.artifact import Artifact
from tsd_edge.runtime.backends import open_runner
from tsd_edge.runtime.tokenizer import TextEncoder
from tsd_edge.student import build_student, count_parameters, load_student, prune_tokenizer, save_student, spread_layers
from tsd_edge.targets import load_profile

TEXTS = [
    "How do I locate my card?",
    "I still have not received my new card, I ordered over a week ago.",
    "my pin is blocked",
    "what is the exchange rate for euros",
    "Can I top up with a bank transfer?",
    "cancel the transfer please",
]
LABELS = ["card_arrival", "pin_blocked", "exchange_rate"]


def _protos(dim: int = 384, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=(len(LABELS), dim)).astype(np.float32)
    return p / np.linalg.norm(p, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide student from a config, with the task-pruned teacher tokenizer (seeded: the same model in
    every run, so the backends' tests compare like with like)."""
    import torch

    torch.manual_seed(0)
    model, tok = build_student(
        init="config",
        teacher_dir=encoder_dir("all-MiniLM-L6-v2"),
        labels=LABELS,
        prototypes=_protos(),
        teacher_temperature=0.05,
        texts=TEXTS,
        layers=2,
        max_length=32,
        hidden=32,
        heads=2,
        intermediate=64,
    )
    out = tmp_path_factory.mktemp("tiny")
    save_student(model, tok, out)
    return out


def test_pruned_tokenizer_tokenizes_like_the_teacher() -> None:
    from tokenizers import Tokenizer

    teacher_json = encoder_dir("all-MiniLM-L6-v2") / "tokenizer.json"
    spec, kept = prune_tokenizer(teacher_json, TEXTS, 64)
    assert len(kept) < 400  # 30,522 → the task's pieces, specials and single characters
    pruned = Tokenizer.from_str(json.dumps(spec))
    full = Tokenizer.from_file(str(teacher_json))
    full.no_padding()
    for text in TEXTS:
        assert pruned.encode(text).tokens == full.encode(text).tokens
    # an unseen word splits into known characters instead of becoming [UNK]
    assert "[UNK]" not in pruned.encode("zyzzogeton").tokens
    assert pruned.encode("card").ids[0] == pruned.token_to_id("[CLS]")


def test_teacher_init_copies_weights_and_stays_small() -> None:
    from safetensors.torch import load_file

    teacher_dir = encoder_dir("all-MiniLM-L6-v2")
    model, tok = build_student(
        init="teacher",
        teacher_dir=teacher_dir,
        labels=LABELS,
        prototypes=_protos(),
        teacher_temperature=0.05,
        texts=TEXTS,
        layers=2,
        max_length=64,
    )
    teacher = {k.removeprefix("bert."): v for k, v in load_file(str(teacher_dir / "model.safetensors")).items()}
    last = "encoder.layer.5.attention.self.query.weight"
    assert (model.bert.state_dict()["encoder.layer.1.attention.self.query.weight"] == teacher[last]).all()
    cls_old = json.loads((teacher_dir / "tokenizer.json").read_text())["model"]["vocab"]["[CLS]"]
    cls_new = tok["model"]["vocab"]["[CLS]"]
    assert (
        model.bert.embeddings.word_embeddings.weight[cls_new] == teacher["embeddings.word_embeddings.weight"][cls_old]
    ).all()
    assert count_parameters(model) < 6_000_000
    assert spread_layers(2, 6) == [0, 5] and spread_layers(3, 6) == [0, 2, 5]


def test_narrow_teacher_init_projects_the_teachers_embeddings() -> None:
    """Narrower than the teacher: its embeddings on their top principal directions, so words that are close
    in the teacher stay close in the student; layers start random."""
    import torch
    from safetensors.torch import load_file

    teacher_dir = encoder_dir("all-MiniLM-L6-v2")
    kwargs = {"labels": LABELS, "prototypes": _protos(), "teacher_temperature": 0.05, "texts": TEXTS}
    model, tok = build_student(init="teacher", teacher_dir=teacher_dir, layers=2, max_length=64, hidden=128, **kwargs)
    assert model.config.hidden_size == 128 and model.config.num_attention_heads == 2
    assert model.config.intermediate_size == 512 and model.project.out_features == 384
    teacher = load_file(str(teacher_dir / "model.safetensors"))
    full = teacher.get("embeddings.word_embeddings.weight", teacher.get("bert.embeddings.word_embeddings.weight"))
    vocab = json.loads((teacher_dir / "tokenizer.json").read_text())["model"]["vocab"]
    kept = sorted(tok["model"]["vocab"], key=tok["model"]["vocab"].__getitem__)
    old = full[[vocab[w] for w in kept]]
    new = model.bert.embeddings.word_embeddings.weight.detach()

    def similarities(m: torch.Tensor) -> torch.Tensor:
        m = torch.nn.functional.normalize(m - m.mean(0), dim=1)
        return (m @ m.T).flatten()

    # which words are neighbours survives the projection (a random init would give ~0)
    assert torch.corrcoef(torch.stack([similarities(old), similarities(new)]))[0, 1] > 0.8
    with pytest.raises(Exception, match="teacher_layers"):
        build_student(
            init="teacher",
            teacher_dir=teacher_dir,
            layers=2,
            max_length=64,
            hidden=128,
            teacher_layers=[0, 5],
            **kwargs,
        )


def test_save_load_round_trip(tiny: Path) -> None:
    import torch

    model = load_student(tiny).eval()
    batch = TextEncoder(tiny / "tokenizer.json", 32)(TEXTS)
    with torch.no_grad():
        logits, emb = model(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"]))
    assert logits.shape == (len(TEXTS), len(LABELS))
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)
    assert json.loads((tiny / "labels.json").read_text()) == LABELS


def test_export_validates_against_pytorch(tiny: Path, tmp_path: Path) -> None:
    import onnx

    enc = TextEncoder(tiny / "tokenizer.json", 32)
    result = export_onnx(tiny, tmp_path / "m.onnx", [enc(TEXTS[:1]), enc(TEXTS)])
    assert result and result.max_abs_diff < 1e-4
    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert graph.opset_import[0].version >= 17
    dims = [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]


def test_export_mismatch_is_an_error(tiny: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    enc = TextEncoder(tiny / "tokenizer.json", 32)
    path = tmp_path / "m.onnx"
    export_onnx(tiny, path, [enc(TEXTS)])
    graph = onnx.load(str(path))
    big = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(big).copy()
    arr += np.random.default_rng(0).normal(scale=0.5, size=arr.shape).astype(arr.dtype)  # not a constant: LN
    big.CopyFrom(numpy_helper.from_array(arr, big.name))
    onnx.save(graph, str(path))
    with pytest.raises(ExportMismatchError, match="does not match PyTorch"):
        validate(load_student(tiny).eval(), path, [enc(TEXTS)], atol=1e-4)


@pytest.mark.parametrize("target", ["cpu-x86-fp32", "cpu-x86"])
def test_onnxruntime_backend_builds_and_runs(tiny: Path, tmp_path: Path, target: str) -> None:
    enc = TextEncoder(tiny / "tokenizer.json", 32)
    onnx_path = tmp_path / "m.onnx"
    export_onnx(tiny, onnx_path, [enc(TEXTS)])
    backend = get_backend("onnxruntime")
    assert backend.available()
    profile = load_profile(target)
    artifact = backend.build(onnx_path, profile, [enc(TEXTS[:3]), enc(TEXTS[3:])], tmp_path / "out")
    artifact.save_meta(tmp_path / "out" / "artifact.json")
    again = Artifact.load_meta(tmp_path / "out" / "artifact.json")
    assert again.precision == profile.precision and again.path == artifact.path
    with open_runner(again, threads=1) as runner:
        logits = runner.run(enc(TEXTS))
    assert logits.shape == (len(TEXTS), len(LABELS))
    if target == "cpu-x86":
        import onnx

        ops = {n.op_type for n in onnx.load(str(artifact.path)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # explicit Q/DQ, calibrated
        assert artifact.build["calibration_batches"] == 2
