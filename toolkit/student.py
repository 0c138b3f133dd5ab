"""The student: a small BERT encoder that starts from the teacher's own knowledge.

`init: teacher` copies the teacher's token embeddings (only the rows of the WordPiece ids the task
uses, which keeps the student small), its position embeddings and its first `layers` layers. The
head mirrors the embedding teacher: mean-pool, L2-normalise, then a linear layer initialised with
the label prototypes divided by the teacher's temperature, so the untrained student already
answers the way the teacher does, as far as its shallower encoder allows.
A student narrower than the teacher (`student.hidden` below the teacher's width) cannot take its
layers; it takes the teacher's token and position embeddings projected onto their top principal
directions (which keeps most of what distinguishes words), and its layers start random.
`init: config` builds a randomly initialised encoder of the given size (used for tiny test models).

Saved with `save_pretrained` (safetensors) plus the pruned `tokenizer.json` and `labels.json`.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import BertConfig, BertModel
from transformers.modeling_utils import PreTrainedModel

from .errors import InputError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class StudentConfig(BertConfig):
    model_type = "tsd-edge-student"

    def __init__(self, teacher_dim: int = 384, kind: str = "classify", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.teacher_dim = teacher_dim
        self.kind = kind  # embed: no head, the output is the sentence embedding itself


class Student(PreTrainedModel):
    config_class = StudentConfig
    base_model_prefix = "bert"

    def __init__(self, config: StudentConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        dim = config.teacher_dim
        self.project = nn.Identity() if dim == config.hidden_size else nn.Linear(config.hidden_size, dim)
        self.head = nn.Linear(dim, config.num_labels) if is_classifier(config) else None  # type: ignore[arg-type]  # set for a classifier
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, self.config.initializer_range)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, self.config.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The student's sentence embedding: mean over real tokens, projected, unit length."""
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return nn.functional.normalize(self.project(pooled), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, embedding): the output is the logits, or for an embed student the embedding itself."""
        embedding = self.encode(input_ids, attention_mask)
        return (embedding if self.head is None else self.head(embedding)), embedding


def is_classifier(config: Any) -> bool:
    return getattr(config, "kind", "classify") == "classify"


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune_tokenizer(tokenizer_json: Path, texts: list[str], max_length: int) -> tuple[dict, list[int]]:
    """A tokenizer.json with only the vocabulary the task uses, and the teacher ids it keeps (in order).

    Kept: special tokens, every id the task's inputs produce, and the single ASCII characters with
    their '##' forms, so a word never seen in the task still splits into known pieces instead of [UNK].
    The tokenizers library has no vocabulary-pruning API, hence the edit of its documented JSON.
    """
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab: dict[str, int] = spec["model"]["vocab"]
    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.enable_truncation(max_length)
    used: set[int] = {vocab[t] for t in SPECIAL_TOKENS if t in vocab}
    for enc in tok.encode_batch(texts):
        used.update(enc.ids)
    chars = [c for c in string.printable if not c.isspace()]
    used.update(vocab[t] for c in chars for t in (c, "##" + c) if t in vocab)
    kept = sorted(used)
    inverse = {i: t for t, i in vocab.items()}
    new_id = {old: new for new, old in enumerate(kept)}
    spec["model"]["vocab"] = {inverse[old]: new for new, old in enumerate(kept)}
    for added in spec.get("added_tokens", []):
        added["id"] = new_id[added["id"]]
    for special in (spec.get("post_processor") or {}).get("special_tokens", {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    spec["padding"] = None
    spec["truncation"] = None
    return spec, kept


def build_student(
    *,
    init: str,
    teacher_dir: Path,
    labels: list[str],
    prototypes: np.ndarray | None,
    teacher_temperature: float,
    texts: list[str],
    layers: int,
    teacher_dim: int | None = None,
    max_length: int,
    prune_vocab: bool = True,
    teacher_layers: list[int] | None = None,
    dropout: float = 0.1,
    hidden: int | None = None,
    heads: int | None = None,
    intermediate: int | None = None,
) -> tuple[Student, dict]:
    """A student and its tokenizer.json (as a dict); see the module docstring for what `init` does.

    With `prototypes` (one unit vector per label) it classifies; without, it embeds: its output is its sentence
    embedding in `teacher_dim` dimensions, the teacher's (kind: embed)."""
    tokenizer_json = teacher_dir / "tokenizer.json"
    if prune_vocab:
        tokenizer, kept = prune_tokenizer(tokenizer_json, texts, max_length)
    else:
        tokenizer = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        tokenizer["padding"] = tokenizer["truncation"] = None
        kept = list(range(len(tokenizer["model"]["vocab"])))
    teacher_cfg = json.loads((teacher_dir / "config.json").read_text(encoding="utf-8"))
    narrow = init == "teacher" and hidden is not None and hidden != teacher_cfg["hidden_size"]
    if init == "teacher" and not narrow:
        if layers > teacher_cfg["num_hidden_layers"]:
            raise InputError(f"student.layers={layers} but the teacher has {teacher_cfg['num_hidden_layers']}")
        hidden, heads, intermediate = (
            teacher_cfg["hidden_size"],
            teacher_cfg["num_attention_heads"],
            teacher_cfg["intermediate_size"],
        )
    hidden = hidden or 384
    heads = heads or max(1, hidden // 64)
    intermediate = intermediate or 4 * hidden
    if hidden % heads:
        raise InputError(f"student.hidden={hidden} is not a multiple of student.heads={heads}")
    config = StudentConfig(
        teacher_dim=prototypes.shape[1] if prototypes is not None else (teacher_dim or teacher_cfg["hidden_size"]),
        kind="classify" if prototypes is not None else "embed",
        vocab_size=len(kept),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_length,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        layer_norm_eps=teacher_cfg.get("layer_norm_eps", 1e-12),
        pad_token_id=0,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = Student(config)
    if narrow:
        if teacher_layers:
            raise InputError("student.teacher_layers needs student.hidden equal to the teacher's width; drop one")
        _project_teacher_embeddings(model, teacher_dir, kept, max_length)
    elif init == "teacher":
        depth = teacher_cfg["num_hidden_layers"]
        chosen = teacher_layers or spread_layers(layers, depth)
        if len(chosen) != layers or not all(0 <= i < depth for i in chosen):
            raise InputError(f"student.teacher_layers={chosen}: give {layers} distinct layer indices in 0..{depth - 1}")
        _copy_teacher(model, teacher_dir, kept, chosen, max_length)
    if model.head is not None and prototypes is not None:
        with torch.no_grad():
            model.head.weight.copy_(torch.from_numpy(prototypes / teacher_temperature))
            model.head.bias.zero_()
    return model, tokenizer


def spread_layers(k: int, depth: int) -> list[int]:
    """k teacher layers from the first to the last: the first keeps the token-level features the copied
    embeddings expect, the last holds the sentence-level features the teacher's answers come from
    (measured on Banking77: layers [0, 5] beat [0, 1])."""
    if k == 1:
        return [0]
    return [round(i * (depth - 1) / (k - 1)) for i in range(k)]


def _copy_teacher(model: Student, teacher_dir: Path, kept: list[int], layers: list[int], max_length: int) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(teacher_dir / "model.safetensors"))
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    state = {}
    for name, value in weights.items():
        if name == "embeddings.word_embeddings.weight":
            value = value[torch.tensor(kept)]
        elif name == "embeddings.position_embeddings.weight":
            value = value[:max_length]
        elif name.startswith("encoder.layer."):
            _, _, index, rest = name.split(".", 3)
            if int(index) not in layers:
                continue
            name = f"encoder.layer.{layers.index(int(index))}.{rest}"
        elif name.startswith("pooler.") or name == "embeddings.position_ids":
            continue
        state[name] = value
    missing, unexpected = model.bert.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if "position_ids" not in k]
    missing = [k for k in missing if "position_ids" not in k and "token_type_ids" not in k]
    if missing or unexpected:
        raise RuntimeError(
            f"teacher weights do not fit the student: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def _project_teacher_embeddings(model: Student, teacher_dir: Path, kept: list[int], max_length: int) -> None:
    from safetensors.torch import load_file

    weights = {k.removeprefix("bert."): v for k, v in load_file(str(teacher_dir / "model.safetensors")).items()}
    words = weights["embeddings.word_embeddings.weight"][torch.tensor(kept)].double()
    # principal directions of the task's own token embeddings: what tells this task's words apart
    _, _, vt = torch.linalg.svd(words - words.mean(0), full_matrices=False)
    basis = vt[: model.config.hidden_size].T
    emb = model.bert.embeddings
    with torch.no_grad():
        emb.word_embeddings.weight.copy_((words @ basis).float())
        emb.position_embeddings.weight.copy_(
            (weights["embeddings.position_embeddings.weight"][:max_length].double() @ basis).float()
        )
        emb.token_type_embeddings.weight.copy_(
            (weights["embeddings.token_type_embeddings.weight"].double() @ basis).float()
        )


def save_student(model: PreTrainedModel, tokenizer: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)] if is_classifier(model.config) else []  # type: ignore[index, arg-type]  # set for a classifier
    (out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")


def load_student(path: Path) -> Student:
    if not (path / "config.json").is_file():
        raise InputError(f"no student in {path}: run `tsd-edge distill` first")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from .static import StaticStudent, is_static

    if is_static(path):  # the static rung of the student ladder (toolkit/static.py)
        return StaticStudent.from_pretrained(path)  # type: ignore[return-value]
    return Student.from_pretrained(path)


class StudentRunner:
    """The PyTorch student behind the same `run(batch) -> logits` interface as a compiled artifact."""

    def __init__(self, model: PreTrainedModel, device: torch.device | str = "cpu") -> None:
        self.model, self.device = model, torch.device(device)

    @classmethod
    def load(cls, path: Path) -> StudentRunner:
        return cls(load_student(path).eval())

    def __enter__(self) -> StudentRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            ids, mask = (torch.from_numpy(batch[k]).to(self.device) for k in ("input_ids", "attention_mask"))
            return self.model(ids, mask)[0].float().cpu().numpy()
