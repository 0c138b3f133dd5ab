"""The static student: token embeddings distilled from the teacher with model2vec, mean-pooled, a small head.

The cheapest rung of the student ladder (toolkit/ladder.py). Built in three steps:
1. the task's vocabulary: the teacher's tokenizer pruned to the WordPiece ids the task's inputs use
   (`prune_tokenizer`, the same as the transformer student's), so the runtime tokenizes exactly as before;
2. one vector per kept token from the `model2vec` library's own distillation (`create_embeddings`: each
   token through the teacher as `[CLS] token [SEP]`, mean-pooled), its PCA (`apply_pca`) to `hidden`
   dimensions and its Zipf/SIF token weights (`compute_weights`, over the teacher's whole vocabulary);
3. the head of the transformer student: a linear map to the teacher's embedding space (started from the
   least-squares fit of the pooled vectors to the teacher's stored embeddings), unit length, then a linear
   layer started from the label prototypes over the teacher's temperature.
Then tsd-edge's own recipe trains all of it (toolkit/distill.py: the teacher's label, its soft labels, its
sentence embedding). `forward(input_ids, attention_mask) -> (logits, embedding)` like `student.Student`, so
training, export (Gather, masked mean, two MatMuls), compile, check, package and the runtime need no change.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.modeling_utils import PreTrainedModel

from .student import is_classifier, prune_tokenizer

MODEL_TYPE = "tsd-edge-static"
DEFAULT_WIDTH = 256  # model2vec's own default PCA width


class StaticConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(
        self,
        vocab_size: int = 1,
        hidden_size: int = DEFAULT_WIDTH,
        teacher_dim: int = 384,
        kind: str = "classify",
        **kw: Any,
    ):
        super().__init__(**kw)
        self.vocab_size, self.hidden_size, self.teacher_dim = vocab_size, hidden_size, teacher_dim
        self.kind = kind  # embed: no head, the output is the sentence embedding itself


class StaticStudent(PreTrainedModel):
    config_class = StaticConfig
    base_model_prefix = "static"

    def __init__(self, config: StaticConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.project = nn.Linear(config.hidden_size, config.teacher_dim)
        self.head = nn.Linear(config.teacher_dim, config.num_labels) if is_classifier(config) else None  # type: ignore[arg-type]  # set for a classifier
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            module.weight.data.normal_(0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        vectors = self.embeddings(input_ids)
        mask = attention_mask.unsqueeze(-1).to(vectors.dtype)
        return (vectors * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = nn.functional.normalize(self.project(self.pool(input_ids, attention_mask)), dim=-1)
        return (embedding if self.head is None else self.head(embedding)), embedding


def distilled_vectors(teacher_dir: Path, kept: list[int], width: int) -> np.ndarray:
    """model2vec's distillation of the teacher, for the kept teacher token ids: (len(kept), width)."""
    from model2vec.distill import inference
    from model2vec.distill.inference import PoolingMode, apply_pca, compute_weights, create_embeddings
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    spec = json.loads((teacher_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    cls_id, sep_id, pad_id = vocab.get("[CLS]"), vocab.get("[SEP]"), vocab.get("[PAD]", 0)
    prefix, suffix = [cls_id] if cls_id is not None else [], [sep_id] if sep_id is not None else []
    model = AutoModel.from_pretrained(str(teacher_dir))
    tokens = [[*prefix, i, *suffix] for i in kept]
    with mock.patch.object(inference, "tqdm", functools.partial(inference.tqdm, disable=True)):  # no bar
        vectors = create_embeddings(model, tokens, "cpu", pad_id, PoolingMode.MEAN)
    vectors = apply_pca(vectors, min(width, *vectors.shape))
    weights = compute_weights(len(vocab), sif_coefficient=1e-4)[np.asarray(kept)]
    return (vectors * weights[:, None]).astype(np.float32)


def build_static(
    *,
    teacher_dir: Path,
    labels: list[str],
    prototypes: np.ndarray | None,
    teacher_temperature: float,
    texts: list[str],
    max_length: int,
    width: int | None = None,
    fit: tuple[list[str], np.ndarray] | None = None,
    teacher_dim: int | None = None,
) -> tuple[StaticStudent, dict]:
    """A static student and its (pruned) tokenizer.json; `fit`: training texts and the teacher's embeddings
    of them, to start the projection from their least-squares fit. Without `prototypes` it embeds (kind: embed):
    no head, its output is the embedding in `teacher_dim` dimensions."""
    tokenizer, kept = prune_tokenizer(teacher_dir / "tokenizer.json", texts, max_length)
    vectors = distilled_vectors(teacher_dir, kept, width or DEFAULT_WIDTH)
    config = StaticConfig(
        vocab_size=len(kept),
        hidden_size=vectors.shape[1],
        teacher_dim=prototypes.shape[1] if prototypes is not None else (teacher_dim or vectors.shape[1]),
        kind="classify" if prototypes is not None else "embed",
        pad_token_id=0,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = StaticStudent(config)
    with torch.no_grad():
        model.embeddings.weight.copy_(torch.from_numpy(vectors))
        if fit is not None and len(fit[0]) >= vectors.shape[1]:
            _fit_projection(model, tokenizer, max_length, *fit)
        if model.head is not None and prototypes is not None:
            model.head.weight.copy_(torch.from_numpy(prototypes / teacher_temperature))
            model.head.bias.zero_()
    return model, tokenizer


def _fit_projection(
    model: StaticStudent, tokenizer: dict, max_length: int, texts: list[str], target: np.ndarray
) -> None:
    """Least squares from the pooled token vectors to the teacher's sentence embeddings (with a bias)."""
    import tempfile

    from .runtime.tokenizer import TextEncoder

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(json.dumps(tokenizer), encoding="utf-8")
        encode = TextEncoder(path, max_length)
        pooled = []
        for i in range(0, len(texts), 512):
            batch = encode(texts[i : i + 512])
            ids, mask = (torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask"))
            pooled.append(model.pool(ids, mask).double())
    x = torch.cat(pooled)
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    y = torch.from_numpy(np.asarray(target, dtype=np.float64))
    ridge = 1e-3 * torch.eye(x.shape[1], dtype=x.dtype) * x.pow(2).mean()
    w = torch.linalg.solve(x.T @ x + ridge, x.T @ y)
    model.project.weight.copy_(w[:-1].T.float())
    model.project.bias.copy_(w[-1].float())


def is_static(student_dir: Path) -> bool:
    config = student_dir / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text(encoding="utf-8")).get("model_type") == MODEL_TYPE
