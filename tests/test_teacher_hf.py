"""The `hf` teacher: tiny transformers models built from a config and saved to tmp (no hub), through collection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tsd_edge.collect import collect
from tsd_edge.errors import InputError
from tsd_edge.store import PairStore
from tsd_edge.task import load_task
from tsd_edge.teachers import load_teacher

LABELS = ["refund", "card_lost", "balance"]
TEXTS = ["where is my money back", "I lost my card yesterday", "how much is in my account", "hello", "pin blocked"]


def _tiny(folder: Path, id2label: dict[int, str]) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    from tsd_edge.encoder import encoder_dir

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir("all-MiniLM-L6-v2")))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # a random head far from uniform, so answers differ between texts
        model.classifier.weight.normal_(0, 3.0)
        model.bert.pooler.dense.weight.normal_(0, 1.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-models")
    return {
        "classifier": _tiny(root / "classifier", {0: "Refund", 1: "card-lost", 2: "BALANCE", 3: "other"}),
        "nli": _tiny(root / "nli", {0: "entailment", 1: "neutral", 2: "contradiction"}),
    }


def write_task(folder: Path, model: Path, **teacher: object) -> Path:
    (folder / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    task = {
        "name": "hf",
        "labels": LABELS,
        "inputs": [{"path": "in.txt"}],
        "relevance": {"method": "teacher"},
        "teacher": {"kind": "hf", "model": str(model), "device": "cpu", "batch_size": 2, **teacher},
    }
    (folder / "task.yaml").write_text(json.dumps(task), encoding="utf-8")
    return folder / "task.yaml"


def _reference(model_dir: Path, texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        logits = model(**tok(texts, return_tensors="pt", padding=True)).logits
    return torch.softmax(logits, -1).numpy()


def test_text_classification_probabilities_are_the_soft_labels(tmp_path: Path, models: dict[str, Path]) -> None:
    task = load_task(write_task(tmp_path, models["classifier"], label_map={"other": None}))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        res = collect(task, store)
        assert res.asked == len(TEXTS) and res.rejected == 0
        pairs = {p.input: p for p in store.pairs(res.teacher, status=None)}
    full = _reference(models["classifier"], TEXTS)  # model order: Refund, card-lost, BALANCE, other
    for text, probs in zip(TEXTS, full, strict=True):
        p = pairs[text]
        if probs[3] > probs[:3].max():
            assert p.label is None and not p.relevant  # "other" is mapped to "none of these"
            continue
        expected = probs[:3] / probs[:3].sum()
        np.testing.assert_allclose(p.probs, expected, atol=1e-4)
        assert p.label == LABELS[int(expected.argmax())]
    assert np.ptp(full, axis=0).max() > 1e-3  # the answers are the model's, text by text


def test_zero_shot_scores_the_task_labels(tmp_path: Path, models: dict[str, Path]) -> None:
    task = load_task(write_task(tmp_path, models["nli"], pipeline="zero-shot-classification"))
    teacher = load_teacher(task)
    answers = teacher.answer(TEXTS)
    assert len(answers) == len(TEXTS)
    for a in answers:
        assert a.status == "ok" and a.probs is not None and a.probs.shape == (3,)
        assert abs(float(a.probs.sum()) - 1) < 1e-5 and a.label == LABELS[int(a.probs.argmax())]
    assert teacher.spec["candidates"] == ["refund", "card lost", "balance"]


def test_a_model_label_without_a_task_label_is_named(tmp_path: Path, models: dict[str, Path]) -> None:
    with pytest.raises(InputError, match=r"label 'other' is not a task label"):
        load_teacher(load_task(write_task(tmp_path, models["classifier"])))


def test_a_folder_without_a_model_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no config\.json"):
        load_teacher(load_task(write_task(tmp_path, tmp_path / "nothing")))


def test_the_fingerprint_follows_the_weights(tmp_path: Path, models: dict[str, Path]) -> None:
    import shutil

    copy = shutil.copytree(models["classifier"], tmp_path / "copy")
    task = load_task(write_task(tmp_path, copy, label_map={"other": None}))
    before = load_teacher(task).fingerprint
    assert (
        load_teacher(load_task(write_task(tmp_path, models["classifier"], label_map={"other": None}))).fingerprint
        == before
    )
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert load_teacher(task).fingerprint != before


@pytest.mark.gpu
def test_runs_on_cuda_when_present(tmp_path: Path, models: dict[str, Path]) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    task = load_task(write_task(tmp_path, models["classifier"], label_map={"other": None}, device="auto"))
    teacher = load_teacher(task)
    assert teacher.answer(TEXTS)[0].status == "ok"
    assert teacher.pipe.device.type == "cuda"
