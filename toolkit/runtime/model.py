"""A package, opened to answer queries: `tsd_edge.load("x.tsdpkg").predict(["text", ...])`, or for a package of
`kind: embed`, `.embed(["text", ...])` (unit-length vectors in the teacher's dimension).

Opening verifies the package exactly as the gate does (every file's SHA-256 against the manifest, the
signature with `trust`), then tokenizes with the package's own tokenizer (truncated to the length the
student was trained with) and runs its artifact through the one runner of its backend.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from .artifact import Artifact, Runner
from .backends import open_runner
from .confidence import from_probabilities
from .infer import predict_logits, run_rows
from .package import Package, read_package
from .tokenizer import TextEncoder

MAX_TEXT_CHARS = 100_000  # far past any max_length; bounds the tokenizer's work on hostile input
KINDS = ("classify", "embed")


@dataclass
class Prediction:
    """One answer: the label, its probability (softmax of the logits), and the top-k labels."""

    label: str
    score: float
    top_k: list[tuple[str, float]] = field(default_factory=list)
    # with a deferral rule in the package (the hybrid system): who answers, and the confidence it was judged on.
    # "deferred": the student is not sure and no teacher was configured; the caller decides
    source: str = "student"
    confidence: float | None = None
    error: str | None = None  # why the teacher did not answer a deferred input (hybrid use)

    @property
    def deferred(self) -> bool:
        return self.source == "deferred"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "score": round(self.score, 6)}
        if self.confidence is not None:
            out.update(source=self.source, confidence=round(self.confidence, 6))
        if self.error:
            out["error"] = self.error
        if self.top_k:
            out["top_k"] = [{"label": lab, "score": round(s, 6)} for lab, s in self.top_k]
        return out


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def check_texts(texts: Any) -> list[str]:
    """The inputs as a list of non-empty strings, or InputError saying which one is wrong and why."""
    if isinstance(texts, str):
        raise InputError("give a list of texts, not one string: predict([text])")
    try:
        items = list(texts)
    except TypeError:
        raise InputError(f"texts must be a list of strings, not {type(texts).__name__}") from None
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise InputError(f"text {i} is a {type(text).__name__}, not a string: give text")
        if not text.strip():
            raise InputError(f"text {i} is empty: give text to classify")
        if len(text) > MAX_TEXT_CHARS:
            raise InputError(f"text {i} has {len(text)} characters, over the limit of {MAX_TEXT_CHARS}: shorten it")
    return items


class Model:
    """A verified package with its runner loaded. Use as a context manager, or call `close()`."""

    def __init__(self, package: Package, threads: int | None = None, *, owns: Path | None = None) -> None:
        self.package = package
        self.manifest = package.manifest
        self.name: str = self.manifest["task"]
        self.target: str = self.manifest["target"]
        self.kind: str = self.manifest.get("kind", "classify")
        if self.kind not in KINDS:
            raise InputError(
                f"{self.name}: a package of kind {self.kind!r}; this tsd-edge runs {' and '.join(KINDS)}: upgrade it"
            )
        self.labels: list[str] = json.loads(package.file("labels.json").read_text(encoding="utf-8"))
        self.dim: int | None = _dim_of(self.manifest) if self.kind == "embed" else None
        self.max_length: int = int(self.manifest["max_length"])
        self.encoder = TextEncoder(package.file("tokenizer.json"), self.max_length)
        self.artifact = Artifact.load_meta(package.file("artifact.json"))
        self.artifact.path = package.file(self.artifact.path.name)
        self.runner: Runner = open_runner(self.artifact, threads)
        self.deferral: dict[str, Any] | None = self.manifest.get("deferral")
        self._owns = owns

    @property
    def runtime(self) -> str:
        return str(getattr(self.runner, "runtime", self.artifact.backend))

    def logits(self, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """Raw logits, one row per text, in input order."""
        items = check_texts(texts)
        if not items:
            return np.zeros((0, self.dim or len(self.labels)), dtype=np.float32)
        return predict_logits(self.runner, self.encoder, items, batch_size=batch_size)

    def embed(self, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """An embed package's sentence embeddings: float32 [n, dim], unit rows, in input order."""
        return self.embed_counted(texts, batch_size)[0]

    def embed_counted(self, texts: Sequence[str], batch_size: int = 16) -> tuple[np.ndarray, list[int]]:
        """`embed`, and how many tokens the model read of each text (after truncation to max_length, with the
        tokenizer's special tokens): the usage count of serve's /v1/embeddings, from one tokenization."""
        if self.kind != "embed":
            raise InputError(f"{self.name} is a {self.kind} package: use predict(), not embed()")
        items = check_texts(texts)
        dim = self.dim or 0  # set for every embed package (checked when it was opened)
        if not items:
            return np.zeros((0, dim), dtype=np.float32), []
        rows = self.encoder.ids(items)
        out = run_rows(self.runner, self.encoder, rows, batch_size=batch_size)
        if out.ndim != 2 or out.shape[1] != dim:
            raise InputError(
                f"{self.name}: the artifact gives shape {list(out.shape)}, the manifest says dim {dim}: "
                "the package is inconsistent, package it again"
            )
        # the artifact ends in a normalisation, but INT8 (or FP16) arithmetic can move the norm off 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, np.float32(1e-12))
        return out, [len(r) for r in rows]

    def predict(self, texts: Sequence[str], top_k: int = 1, batch_size: int = 16) -> list[Prediction]:
        """The label and its probability for each text; `top_k` > 1 also lists the runners-up."""
        if self.kind == "embed":
            raise InputError(f"{self.name} is an embed package: use embed(), not predict()")
        if top_k < 1:
            raise InputError(f"top_k must be at least 1, not {top_k}")
        logits = self.logits(texts, batch_size)
        probs = softmax(logits)
        k = min(top_k, len(self.labels))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        conf: list[float | None] = [None] * len(probs)
        sure = [True] * len(probs)
        if self.deferral is not None and len(probs):
            tau = self.deferral["threshold"]
            conf = [float(c) for c in from_probabilities(probs, self.deferral["measure"])]
            sure = [tau is not None and c >= tau for c in conf]
        out = []
        for row, idx, c, ok in zip(probs, order, conf, sure):
            top = [(self.labels[int(i)], float(row[int(i)])) for i in idx]
            source = "student" if ok else "deferred"
            out.append(Prediction(top[0][0], top[0][1], top if top_k > 1 else [], source=source, confidence=c))
        return out

    def describe(self) -> dict[str, Any]:
        """What a client needs to know about the model (serve's metadata endpoints, predict's output)."""
        out = {
            "name": self.name,
            "target": self.target,
            "kind": self.kind,
            "backend": self.artifact.backend,
            "precision": self.artifact.precision,
            "runtime": self.runtime,
            "labels": len(self.labels),
            "max_length": self.max_length,
            "agreement": self.manifest.get("agreement"),
            "threshold": self.manifest.get("threshold"),
            "signed": self.package.signed,
            "verified_signature": self.package.verified,
        }
        if self.kind == "embed":
            out.update(dim=self.dim, metric=self.manifest.get("metric"))
        return out

    def close(self) -> None:
        self.runner.__exit__(None, None, None)
        if self._owns is not None:
            shutil.rmtree(self._owns, ignore_errors=True)
            self._owns = None

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dim_of(manifest: dict[str, Any]) -> int:
    dim = manifest.get("dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise InputError(
            f"{manifest.get('task')}: an embed package needs a positive whole 'dim' in its manifest, "
            f"not {dim!r}: package it again"
        )
    return dim


def load(path: str | Path, *, trust: str | Path | None = None, threads: int | None = None) -> Model:
    """Open and verify a .tsdpkg and load its artifact. `trust`: a public key the package must be signed with.
    Raises InputError (not a package) or PackageIntegrityError (changed, or not signed with `trust`)."""
    tmp = Path(tempfile.mkdtemp(prefix="tsd-model-"))
    try:
        pkg = read_package(Path(path), tmp, Path(trust) if trust else None)
        return Model(pkg, threads, owns=tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
