"""The `hf` teacher: a local transformers model through a `text-classification` or `zero-shot-classification` pipeline.

Batched (`teacher.batch_size`), each call's texts sorted by token count first so that a batch pads
little, on CUDA when there is one (`device: auto`). Its probabilities are the
soft labels: for `text-classification` the model's scores for every one of its labels, mapped onto
the task's labels by name (case, `_`, `-` and spaces do not matter) or by `label_map`, where a model
label mapped to null means "none of these"; for `zero-shot-classification` the scores of the task's
labels (their descriptions with `use_descriptions`, else their names with `_` as spaces) put in
`hypothesis_template`. No hub access: `model` is a local folder (config.json, weights, tokenizer).

`feature-extraction` answers an embed task: each input's token vectors (the model's last hidden state) are
averaged over its attention mask and made unit length, as sentence-transformers' mean pooling and
Normalize do (a sentence-transformers folder such as all-MiniLM-L6-v2 gives its own embeddings, within 1e-5).

The fingerprint covers the pipeline settings, the labels, config.json and, for each weights file,
its size and the SHA-256 of its first and last MiB (hashing many GB on every run would be slow).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, RuntimeMissingError
from ..task import HFTeacherSpec, Task
from . import Response
from .labels import normalise

WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".gguf", ".h5", ".msgpack")


class HFTeacher:
    def __init__(self, task: Task) -> None:
        spec = task.teacher
        assert isinstance(spec, HFTeacherSpec)
        self.cfg = spec
        self.labels = task.label_names
        self.folder = task.path(Path(spec.model))
        if not (self.folder / "config.json").is_file():
            raise InputError(f"teacher.model: no config.json in {self.folder}; give a local transformers model folder")
        config = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        self.candidates = [
            (s.description if spec.use_descriptions and s.description else s.name.replace("_", " "))
            for s in task.label_specs
        ]
        self.model_labels: list[str] = []
        self.mapping: dict[str, str | None] = {}
        if spec.pipeline == "text-classification":
            id2label = config.get("id2label") or {}
            self.model_labels = [id2label[k] for k in sorted(id2label, key=int)]
            self.mapping = self._map(self.model_labels)
        # model label -> index of its task label (None: "none of these"), looked up per score
        self.index = {name: None if t is None else self.labels.index(t) for name, t in self.mapping.items()}
        self.spec = {
            "kind": "hf",
            "pipeline": spec.pipeline,
            "model": _model_digest(self.folder),
            "labels": self.labels,
            "label_map": spec.label_map,
            "candidates": self.candidates if spec.pipeline == "zero-shot-classification" else None,
            "hypothesis_template": spec.hypothesis_template if spec.pipeline == "zero-shot-classification" else None,
            "max_length": spec.max_length,
        }
        if spec.pipeline == "feature-extraction":
            self.spec |= {"task": "embed", "pooling": "mean", "normalize": True}
        self.fingerprint = hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:16]
        self._pipe: Any = None
        self._model: Any = None  # feature-extraction: (tokenizer, model, device)

    def _map(self, model_labels: list[str]) -> dict[str, str | None]:
        task_keys = {normalise(name): name for name in self.labels}
        mapping: dict[str, str | None] = {}
        for name in model_labels:
            if name in self.cfg.label_map:
                target = self.cfg.label_map[name]
                if target is not None and target not in self.labels:
                    raise InputError(f"teacher.label_map: '{name}' maps to '{target}', which is not a task label")
                mapping[name] = target
            elif normalise(name) in task_keys:
                mapping[name] = task_keys[normalise(name)]
            else:
                raise InputError(
                    f"teacher.model: the model's label '{name}' is not a task label; "
                    f"add it to teacher.label_map (null for 'none of these')"
                )
        missing = sorted(set(self.labels) - {v for v in mapping.values() if v})
        if missing:
            raise InputError(f"teacher.model: no model label for task label(s) {', '.join(missing[:5])}; fix label_map")
        return mapping

    def _device(self) -> str:
        try:
            import torch
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise RuntimeMissingError("the hf teacher", "transformers") from None
        hf_logging.disable_progress_bar()
        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise InputError("teacher.device is cuda but no CUDA device is visible; use device: auto or cpu")
        return device

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            device = self._device()
            from transformers import pipeline

            kwargs: dict[str, Any] = {"top_k": None} if self.cfg.pipeline == "text-classification" else {}
            make: Any = pipeline  # its overloads want a literal task name; ours comes from the task file
            self._pipe = make(self.cfg.pipeline, model=str(self.folder), device=device, **kwargs)
        return self._pipe

    @property
    def encoder(self) -> tuple[Any, Any, str]:
        """feature-extraction: the tokenizer and the bare model, run by hand (see `_embed`)."""
        if self._model is None:
            device = self._device()
            from transformers import AutoModel, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
            model = AutoModel.from_pretrained(str(self.folder)).to(device).eval()
            self._model = (tokenizer, model, device)
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self.encoder[0] if self.cfg.pipeline == "feature-extraction" else getattr(self.pipe, "tokenizer", None)

    def answer(self, batch: list[str]) -> list[Response]:
        texts = list(batch)
        if not texts:
            return []
        # longest first, as sentence-transformers does: a forward pass pads to its longest input, so
        # batches of like lengths pad less (512 Banking77 queries, batches of 32: 14,560 tokens padded
        # in input order, 8,320 sorted; collection 1.4x faster, benchmarks/README.md)
        order = self._by_length(texts)
        sorted_texts = [texts[i] for i in order]
        cfg = self.cfg
        if cfg.pipeline == "feature-extraction":
            answers = [Response(label=None, embedding=e) for e in self._embed(sorted_texts)]
        elif cfg.pipeline == "text-classification":
            out = self.pipe(sorted_texts, batch_size=cfg.batch_size, truncation=True, max_length=cfg.max_length)
            answers = [self._classified(scores) for scores in out]
        else:
            out = self.pipe(
                sorted_texts,
                candidate_labels=self.candidates,
                hypothesis_template=cfg.hypothesis_template,
                multi_label=False,
                batch_size=cfg.batch_size,
            )
            out = [out] if isinstance(out, dict) else out
            answers = [self._zero_shot(item) for item in out]
        position = [0] * len(texts)
        for k, i in enumerate(order):
            position[i] = k
        return [answers[k] for k in position]

    def _by_length(self, texts: list[str]) -> list[int]:
        """Indices of `texts`, most tokens first (characters when the pipeline has no fast tokenizer)."""
        tokenizer = self.tokenizer
        if getattr(tokenizer, "is_fast", False):  # a few ms per thousand texts
            ids = tokenizer(texts, truncation=True, max_length=self.cfg.max_length)["input_ids"]
            lengths = [len(x) for x in ids]
        else:
            lengths = [len(t) for t in texts]
        return sorted(range(len(texts)), key=lambda i: -lengths[i])

    def _embed(self, texts: list[str]) -> list[np.ndarray]:
        """Mean-pooled, unit-length sentence embeddings, `batch_size` texts a forward pass.

        By hand rather than through transformers' `feature-extraction` pipeline: the pipeline returns token
        vectors, not a sentence vector, and leaves out the attention mask the mean must be taken over.
        """
        import torch

        tokenizer, model, device = self.encoder
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.cfg.batch_size):
                batch = texts[start : start + self.cfg.batch_size]
                enc = tokenizer(
                    batch, padding=True, truncation=True, max_length=self.cfg.max_length, return_tensors="pt"
                ).to(device)
                tokens = model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                mean = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                unit = torch.nn.functional.normalize(mean, p=2, dim=1)
                out.extend(unit.cpu().numpy().astype(np.float32))
        return out

    def _classified(self, scores: list[dict[str, Any]]) -> Response:
        probs = np.zeros(len(self.labels), dtype=np.float64)
        none = 0.0
        for s in scores:
            target = self.index[s["label"]]
            if target is None:
                none += float(s["score"])
            else:
                probs[target] += float(s["score"])
        if none > probs.max():
            return Response(label=None, reason="teacher answered none of the labels")
        probs = (probs / probs.sum()) if probs.sum() > 0 else np.full(len(self.labels), 1 / len(self.labels))
        return Response(label=self.labels[int(probs.argmax())], probs=probs.astype(np.float32))

    def _zero_shot(self, item: dict[str, Any]) -> Response:
        index = {c: i for i, c in enumerate(self.candidates)}
        probs = np.zeros(len(self.labels), dtype=np.float64)
        for name, score in zip(item["labels"], item["scores"], strict=True):
            probs[index[name]] = float(score)
        probs /= probs.sum()
        return Response(label=self.labels[int(probs.argmax())], probs=probs.astype(np.float32))


def _model_digest(folder: Path) -> dict[str, Any]:
    config = (folder / "config.json").read_bytes()
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name.endswith(WEIGHTS):
            size = path.stat().st_size
            h = hashlib.sha256()
            with path.open("rb") as fh:
                if size <= 2 << 20:
                    h.update(fh.read())
                else:
                    h.update(fh.read(1 << 20))
                    fh.seek(-(1 << 20), 2)
                    h.update(fh.read(1 << 20))
            files[str(path.relative_to(folder))] = [size, h.hexdigest()]
    return {"config_sha256": hashlib.sha256(config).hexdigest(), "weights": files}
