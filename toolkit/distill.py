"""Distillation: train the student on the teacher's answers to the relevant training inputs.

Reads top to bottom: load pairs, build the student, train with early stopping on held-out
agreement, save the best epoch. What the student is trained toward and judged on is the task kind's
objective (toolkit/objectives.py: for classify the teacher's label, soft labels and embedding; for embed
its embedding and in-batch neighbours), each part weighted in the task file.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .agreement import AgreementReport
from .data import heldout, read_inputs
from .encoder import encoder_dir
from .errors import InputError
from .objectives import objective_of
from .progress import SILENT, progress
from .runtime.infer import predict_logits
from .runtime.tokenizer import TextEncoder, length_batches
from .store import Pair, PairStore
from .task import Task
from .teachers import can_embed

MIN_TRAIN_PAIRS = 20


@dataclass
class DistillResult:
    report: AgreementReport
    parameters: int
    epochs_run: int
    best_epoch: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def label_prototypes(task: Task, teacher: object, pairs: list[Pair]) -> np.ndarray:
    """The teacher's own prototypes when it embeds, else the mean stored embedding per teacher label, else (no
    stored embeddings: a teacher that gives none, under a relevance rule that computed none) the task encoder's
    embeddings of the label descriptions, or names."""
    labels = task.label_names
    if can_embed(teacher):
        return np.asarray(teacher.prototypes, dtype=np.float32)
    stored = [p for p in pairs if p.embedding is not None and p.label is not None]
    if not stored:
        from .encoder import embed

        return embed(task.encoder, [s.description or s.name.replace("_", " ") for s in task.label_specs], 64)
    out = np.zeros((len(labels), stored[0].embedding.shape[0]), dtype=np.float32)  # type: ignore[union-attr]
    for p in stored:
        out[labels.index(p.label)] += p.embedding  # type: ignore[arg-type]
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)


def vocabulary_texts(task: Task, store: PairStore, fingerprint: str) -> list[str]:
    """The texts the student's vocabulary is pruned to: every training-split input, answered or not, so
    a student warm-started from an earlier round (which saw fewer answers) has the same vocabulary."""
    stored = [p.input for p in store.pairs(fingerprint, split="train", status=None)]
    pool = [i.text for i in read_inputs(task, missing_ok=True) if not heldout(i.key, task.split.heldout)]
    return list(dict.fromkeys(stored + pool))


def distill(
    task: Task, store: PairStore, teacher: object, out: Path, *, init_from: Path | None = None
) -> DistillResult:
    """Train a student into `out`; `init_from` warm-starts it from an earlier student (same vocabulary).

    Under `torchrun` / `accelerate launch` every process runs this function: each trains on its share
    of every batch (DDP keeps the replicas equal), rank 0 alone evaluates and writes `out`, and every
    rank returns rank 0's result.
    """
    import torch

    from . import distributed as dist
    from .student import StudentRunner, count_parameters, save_student

    if task.student.ladder is not None:
        raise InputError(
            "the task's student is a ladder (student.ladder): `tsd-edge run` trains its rungs; "
            "to train one by hand, give `student:` that rung's settings"
        )
    dist.setup()
    main, world = dist.is_main(), dist.world_size()
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
    objective = objective_of(task, held, train)
    # classify: the head starts from the label prototypes; embed: no head, the output is in the teacher's dimension
    prototypes = label_prototypes(task, teacher, train) if task.kind == "classify" else None
    teacher_dim = next((p.embedding.shape[0] for p in train if p.embedding is not None), None)

    # the same seed on every rank: the same initial student and the same shuffled batches
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    # the machine's cores are shared between the processes a launcher started on it
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // dist.local_world_size()))
    device = dist.device()

    if spec.kind == "static":  # token vectors distilled with model2vec, a small head (toolkit/static.py)
        from .static import build_static

        fit = [p for p in train if p.embedding is not None]
        model, tokenizer = build_static(
            teacher_dir=encoder_dir(task.encoder),
            labels=labels,
            prototypes=prototypes,
            teacher_temperature=teacher.temperature if can_embed(teacher) else 0.05,
            texts=vocabulary_texts(task, store, fingerprint),
            max_length=spec.max_length,
            width=spec.hidden,
            fit=([p.input for p in fit], np.stack([p.embedding for p in fit])) if fit else None,  # type: ignore[misc]  # fit: pairs with an embedding
            teacher_dim=teacher_dim,
        )
    else:
        model, tokenizer = _build_transformer(task, store, teacher, prototypes, teacher_dim, fingerprint)
    if init_from is not None:
        _warm_start(model, tokenizer, init_from)
    parameters = count_parameters(model)
    if spec.max_params and parameters > spec.max_params:
        raise InputError(
            f"the student has {parameters:,} parameters, over student.max_params={spec.max_params:,}:"
            " use fewer student.layers or raise the limit"
        )
    if main:
        save_student(model, tokenizer, out)  # writes tokenizer.json, which the text encoder below reads
    encode_file = _tokenizer_file(tokenizer, out if main else None)
    encode = TextEncoder(encode_file, spec.max_length)
    model.to(device)

    objective.train_on(train)
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
    steps_per_epoch = -(-len(length_batches(lengths, cfg.batch_size)) // cfg.accumulate)
    epochs = max(cfg.epochs, -(-cfg.min_steps // steps_per_epoch))  # few pairs: more epochs over them
    steps = epochs * steps_per_epoch
    warmup = int(steps * cfg.warmup)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / max(warmup, 1), max(0.0, (steps - s) / max(steps - warmup, 1)))
    )

    # what trains: the student, wrapped in DDP when several processes share the work (it averages the
    # gradients over ranks in backward), compiled on request. Evaluation uses the bare student.
    # No DataLoader: the batches are token ids of in-memory texts, tokenised in microseconds in this
    # process; worker processes would only add start-up time and copies.
    trainer: torch.nn.Module = model
    ddp = None
    if dist.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        trainer = ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        trainer = torch.compile(trainer, dynamic=True)  # type: ignore[assignment]
    bf16 = cfg.precision == "bf16" or (
        cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )

    def backward(batch: list[int], group_size: int) -> float:
        """Forward and backward this rank's share of one batch; returns the share's summed loss.

        The loss is a sum over the share divided by the size of the whole optimizer step (all ranks,
        all accumulated batches), times the world size because DDP averages over ranks: the gradient
        is the mean over the step's examples, as in one process, however the batch is split.
        """
        mine, weight = dist.shard(batch), 1.0
        if not mine:  # fewer items than ranks: take part in the step with a weight of zero
            mine, weight = batch[:1], 0.0
        enc = encode([texts[i] for i in mine])
        ids, mask = (torch.from_numpy(enc[k]).to(device) for k in ("input_ids", "attention_mask"))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            output, embedding = trainer(ids, mask)
        total = objective.loss(output.float(), embedding.float(), mine).sum() * weight
        (total * (world / group_size)).backward()
        return float(total.detach())

    runner = StudentRunner(model, device)

    def outputs() -> np.ndarray:
        model.eval()
        return predict_logits(runner, encode, objective.eval_texts, batch_size=128)

    def heldout_agreement() -> float:
        """Measured on rank 0 alone; the others wait for its figure (early stopping must agree)."""
        return dist.broadcast(objective.score(outputs()) if main else 0.0)

    history: list[dict[str, float]] = []
    best: tuple[float, int, Any] = (-1.0, 0, None)
    if init_from is None:
        # a warm start is not a candidate: it is an earlier round's student, whose held-out figure was
        # already the best of its own epochs; keeping it would ratchet that lucky maximum from round to round
        initial = heldout_agreement()
        history.append({"epoch": 0, "agreement": initial, "loss": float("nan")})
        best = (initial, 0, copy.deepcopy(model.state_dict()) if main else None)
    start, epochs_run, train_seconds = time.perf_counter(), 0, 0.0
    with progress("distill", total=steps) if main else contextlib.nullcontext(SILENT) as bar:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            trainer.train()
            batches = length_batches(lengths, cfg.batch_size)
            random.shuffle(batches)  # the same order on every rank: same seed, same calls
            total = 0.0
            for k in range(0, len(batches), cfg.accumulate):
                group = batches[k : k + cfg.accumulate]
                size = sum(map(len, group))
                for j, batch in enumerate(group):
                    # DDP: gradients are averaged over ranks once per step, at its last batch
                    last = j == len(group) - 1
                    with contextlib.nullcontext() if last or ddp is None else ddp.no_sync():
                        total += backward(batch, size)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                bar.advance(1)
            total = dist.all_sum(total)
            epoch_seconds = time.perf_counter() - t0
            train_seconds += epoch_seconds
            epochs_run = epoch
            agreement = heldout_agreement()
            history.append(
                {"epoch": epoch, "agreement": agreement, "loss": total / len(train), "seconds": round(epoch_seconds, 2)}
            )
            bar.describe(f"distill (epoch {epoch}: held-out agreement {agreement:.4f})")
            if agreement > best[0]:
                best = (agreement, epoch, copy.deepcopy(model.state_dict()) if main else None)
            elif cfg.patience is not None and epoch - best[1] >= cfg.patience:
                break
    seconds = time.perf_counter() - start
    result: DistillResult | None = None
    if main:
        model.load_state_dict(best[2])
        model.to("cpu")  # type: ignore[arg-type]  # transformers types its decorated .to() as if unbound
        save_student(model, tokenizer, out)
        model.to(device)
        report = objective.report(outputs())
        report.details |= {
            "parameters": parameters,
            "best_epoch": best[1],
            "epochs_run": epochs_run,
            "train_pairs": len(train),
            "history": history,
            "train_seconds": round(seconds, 1),
            # the training loop alone (no held-out evaluation), all processes together
            "samples_per_second": round(len(train) * epochs_run / train_seconds, 1),
            "processes": world,
        }
        result = DistillResult(report, parameters, epochs_run, best[1], seconds, history)
    if not main:
        shutil.rmtree(encode_file.parent, ignore_errors=True)
    return dist.broadcast(result)


def _build_transformer(
    task: Task,
    store: PairStore,
    teacher: object,
    prototypes: np.ndarray | None,
    teacher_dim: int | None,
    fingerprint: str,
) -> Any:
    from .student import build_student

    spec = task.student
    return build_student(
        init=spec.init,
        teacher_dir=encoder_dir(task.encoder),  # the embedding teacher's model, else relevance.encoder
        labels=task.label_names,
        prototypes=prototypes,
        teacher_dim=teacher_dim,
        teacher_temperature=teacher.temperature if can_embed(teacher) else 0.05,
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


def _tokenizer_file(tokenizer: dict, out: Path | None) -> Path:
    """Rank 0 reads the tokenizer.json it saved in `out`; the other ranks, which write nothing there
    (on another node it may not even be the same disk), read a private copy."""
    if out is not None:
        return out / "tokenizer.json"
    import json
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="tsd-edge-rank"))
    path = folder / "tokenizer.json"
    path.write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    return path


def _warm_start(model: object, tokenizer: dict, previous: Path) -> None:
    import json

    from .student import load_student

    before = json.loads((previous / "tokenizer.json").read_text(encoding="utf-8"))
    if before["model"]["vocab"] != tokenizer["model"]["vocab"]:
        raise InputError(f"cannot warm-start from {previous}: its vocabulary differs (the task's inputs changed)")
    model.load_state_dict(load_student(previous).state_dict())  # type: ignore[attr-defined]
