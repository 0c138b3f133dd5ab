"""Distillation: train the student on the teacher's answers to the relevant training inputs.

Reads top to bottom: load pairs, build the student, train with early stopping on held-out
agreement, save the best epoch. The loss has three parts, each weighted in the task file:
cross-entropy on the teacher's label, KL to the teacher's soft labels, and 1 − cosine between the
student's sentence embedding and the teacher's (the teacher's geometry is what its labels come from).
"""

from __future__ import annotations

import copy
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .agreement import AgreementReport, compare
from .data import heldout, read_inputs
from .encoder import encoder_dir
from .errors import InputError
from .infer import predict_logits
from .progress import progress
from .store import Pair, PairStore
from .task import Task
from .tokenization import TextEncoder, length_batches

MIN_TRAIN_PAIRS = 20


@dataclass
class DistillResult:
    report: AgreementReport
    parameters: int
    epochs_run: int
    best_epoch: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def label_prototypes(teacher: object, pairs: list[Pair], labels: list[str]) -> np.ndarray:
    """The teacher's own prototypes when it has them, else the mean stored embedding per teacher label."""
    protos = getattr(teacher, "prototypes", None)
    if protos is not None:
        return np.asarray(protos, dtype=np.float32)
    dim = next(p.embedding for p in pairs if p.embedding is not None).shape[0]
    out = np.zeros((len(labels), dim), dtype=np.float32)
    for p in pairs:
        if p.embedding is not None and p.label is not None:
            out[labels.index(p.label)] += p.embedding
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)


def vocabulary_texts(task: Task, store: PairStore, fingerprint: str) -> list[str]:
    """The texts the student's vocabulary is pruned to: every training-split input, answered or not, so
    a student warm-started from an earlier round (which saw fewer answers) has the same vocabulary."""
    stored = [p.input for p in store.pairs(fingerprint, split="train", status=None)]
    pool = [i.text for i in read_inputs(task) if not heldout(i.key, task.split.heldout)]
    return list(dict.fromkeys(stored + pool))


def distill(
    task: Task, store: PairStore, teacher: object, out: Path, *, init_from: Path | None = None
) -> DistillResult:
    """Train a student into `out`; `init_from` warm-starts it from an earlier student (same vocabulary)."""
    import torch
    import torch.nn.functional as F

    from .student import StudentRunner, build_student, count_parameters, save_student

    fingerprint: str = teacher.fingerprint  # type: ignore[attr-defined]
    cfg, spec = task.training, task.student
    labels = task.label_names
    train = list(store.pairs(fingerprint, split="train", relevant=True))
    held = list(store.pairs(fingerprint, split="heldout", relevant=True))
    if len(train) < MIN_TRAIN_PAIRS:
        raise InputError(
            f"only {len(train)} relevant training pairs (need ≥ {MIN_TRAIN_PAIRS}): run `tsd-edge collect`"
            " or add inputs"
        )
    if not held:
        raise InputError("no relevant held-out pairs to measure agreement on: add inputs or raise split.heldout")

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    model, tokenizer = build_student(
        init=spec.init,
        teacher_dir=encoder_dir(task.encoder),  # the embedding teacher's model, else relevance.encoder
        labels=labels,
        prototypes=label_prototypes(teacher, train, labels),
        teacher_temperature=task.teacher.temperature if task.teacher.kind == "embedding" else 0.05,
        texts=vocabulary_texts(task, store, fingerprint),
        layers=spec.layers,
        max_length=spec.max_length,
        prune_vocab=spec.prune_vocab,
        teacher_layers=spec.teacher_layers,
        dropout=spec.dropout,
        hidden=spec.hidden,
        heads=spec.heads,
        intermediate=spec.intermediate,
    )
    if init_from is not None:
        _warm_start(model, tokenizer, init_from)
    parameters = count_parameters(model)
    if spec.max_params and parameters > spec.max_params:
        raise InputError(
            f"the student has {parameters:,} parameters, over student.max_params={spec.max_params:,}:"
            " use fewer student.layers or raise the limit"
        )
    out.mkdir(parents=True, exist_ok=True)
    save_student(model, tokenizer, out)  # writes tokenizer.json, which the text encoder below reads
    encode = TextEncoder(out / "tokenizer.json", spec.max_length)
    model.to(device)

    label_index = {name: i for i, name in enumerate(labels)}
    hard = torch.tensor([label_index[p.label] for p in train])  # type: ignore[index]
    soft = torch.from_numpy(np.stack([p.probs for p in train])) if all(p.probs is not None for p in train) else None
    emb = (
        torch.from_numpy(np.stack([p.embedding for p in train]))
        if cfg.loss.embedding > 0 and all(p.embedding is not None for p in train)
        else None
    )
    texts = [p.input for p in train]
    lengths = encode.lengths(texts)

    # no weight decay on biases and LayerNorm; fused AdamW is 10x faster a step on CPU with a large embedding
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        fused=device.type == "cpu" or None,
    )
    steps = cfg.epochs * -(-len(train) // cfg.batch_size)
    warmup = int(steps * cfg.warmup)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / max(warmup, 1), max(0.0, (steps - s) / max(steps - warmup, 1)))
    )

    runner = StudentRunner(model, device)

    def predict(pairs: list[Pair]) -> list[str]:
        model.eval()
        logits = predict_logits(runner, encode, [p.input for p in pairs], batch_size=128)
        return [labels[i] for i in logits.argmax(1)]

    teacher_held = [p.label for p in held]
    history: list[dict[str, float]] = []
    initial = compare("student", teacher_held, predict(held)).agreement  # type: ignore[arg-type]
    history.append({"epoch": 0, "agreement": initial, "loss": float("nan")})
    best = (initial, 0, copy.deepcopy(model.state_dict()))
    start, epochs_run, T = time.perf_counter(), 0, cfg.soft_temperature
    with progress("distill", total=steps) as bar:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            batches = length_batches(lengths, cfg.batch_size)
            random.shuffle(batches)
            total = 0.0
            for idx in batches:
                batch = encode([texts[i] for i in idx])
                ids, mask = (torch.from_numpy(batch[k]).to(device) for k in ("input_ids", "attention_mask"))
                logits, embedding = model(ids, mask)
                loss = cfg.loss.hard * F.cross_entropy(logits, hard[idx].to(device))
                if soft is not None and cfg.loss.soft > 0:
                    target = soft[idx].to(device)
                    if T != 1.0:
                        target = F.softmax(torch.log(target.clamp_min(1e-12)) / T, dim=-1)
                    loss = loss + cfg.loss.soft * (T * T) * F.kl_div(
                        F.log_softmax(logits / T, dim=-1), target, reduction="batchmean"
                    )
                if emb is not None:
                    loss = loss + cfg.loss.embedding * (1 - F.cosine_similarity(embedding, emb[idx].to(device))).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * len(idx)
                bar.advance(0, 1)
            epochs_run = epoch
            agreement = compare("student", teacher_held, predict(held)).agreement  # type: ignore[arg-type]
            history.append({"epoch": epoch, "agreement": agreement, "loss": total / len(train)})
            bar.update(0, description=f"distill (epoch {epoch}: held-out agreement {agreement:.4f})")
            if agreement > best[0]:
                best = (agreement, epoch, copy.deepcopy(model.state_dict()))
            elif epoch - best[1] >= cfg.patience:
                break
    seconds = time.perf_counter() - start
    model.load_state_dict(best[2])
    model.to("cpu")
    save_student(model, tokenizer, out)
    model.to(device)
    report = compare(
        "student",
        teacher_held,
        predict(held),
        threshold=task.agreement.threshold,  # type: ignore[arg-type]
        rule=task.agreement.rule,
        texts=[p.input for p in held],
        gold=[p.gold for p in held],
    )
    report.details = {
        "parameters": parameters,
        "best_epoch": best[1],
        "epochs_run": epochs_run,
        "train_pairs": len(train),
        "history": history,
        "train_seconds": round(seconds, 1),
    }
    return DistillResult(report, parameters, epochs_run, best[1], seconds, history)


def _warm_start(model: object, tokenizer: dict, previous: Path) -> None:
    import json

    from .student import load_student

    before = json.loads((previous / "tokenizer.json").read_text(encoding="utf-8"))
    if before["model"]["vocab"] != tokenizer["model"]["vocab"]:
        raise InputError(f"cannot warm-start from {previous}: its vocabulary differs (the task's inputs changed)")
    model.load_state_dict(load_student(previous).state_dict())  # type: ignore[attr-defined]
