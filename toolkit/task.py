"""The task file (`task.yaml`): what the student must do, where its inputs come from, and the bar it must clear.

Loaded with pydantic (`extra="forbid"`, so a misspelt key is an error, not a silent default).
All validation errors are reported together on one line, each with the file, line and field.
Relative paths are resolved against the task file's folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from .errors import InputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelSpec(_Strict):
    name: str = Field(min_length=1)
    description: str | None = None


class InputSource(_Strict):
    """One file of task inputs. `label_field` names gold labels, used only to report accuracy."""

    path: Path
    format: Literal["txt", "jsonl", "csv"] | None = None
    text_field: str = "text"
    label_field: str | None = None
    limit: int | None = Field(default=None, gt=0)

    @property
    def resolved_format(self) -> str:
        return self.format or {".txt": "txt", ".jsonl": "jsonl", ".csv": "csv"}.get(self.path.suffix, "txt")


class ExamplesSpec(_Strict):
    """Labelled examples the teacher uses few-shot (the first `per_label` of each label)."""

    path: Path
    text_field: str = "text"
    label_field: str = "label"
    per_label: int = Field(default=5, gt=0)


class TeacherSpec(_Strict):
    kind: str = "embedding"
    model: str = "all-MiniLM-L6-v2"
    examples: ExamplesSpec | None = None
    use_descriptions: bool = False
    temperature: float = Field(default=0.05, gt=0)
    batch_size: int = Field(default=32, gt=0)


class RelevanceSpec(_Strict):
    """Inputs whose best similarity to the task's labels is under `threshold` are not trained on."""

    threshold: float = Field(default=0.40, ge=-1, le=1)


class SplitSpec(_Strict):
    heldout: float = Field(default=0.2, gt=0, lt=1)


class StudentSpec(_Strict):
    init: Literal["teacher", "config"] = "teacher"
    layers: int = Field(default=2, ge=1)
    # which teacher layers `init: teacher` copies; default: spread from the first to the last
    teacher_layers: list[int] | None = None
    hidden: int = Field(default=384, ge=8)
    heads: int = Field(default=12, ge=1)
    intermediate: int = Field(default=1536, ge=8)
    prune_vocab: bool = True
    max_length: int = Field(default=64, ge=8, le=512)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    max_params: int | None = Field(default=6_000_000, gt=0)


class LossWeights(_Strict):
    hard: float = Field(default=1.0, ge=0)
    soft: float = Field(default=1.0, ge=0)
    embedding: float = Field(default=1.0, ge=0)


class TrainingSpec(_Strict):
    epochs: int = Field(default=6, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=3e-4, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup: float = Field(default=0.06, ge=0, lt=1)
    soft_temperature: float = Field(default=1.0, gt=0)
    loss: LossWeights = LossWeights()
    patience: int = Field(default=2, ge=1)
    seed: int = 0
    threads: int | None = Field(default=None, ge=1)


class AgreementSpec(_Strict):
    """`rule: point` holds when the measured agreement reaches `threshold`; `rule: strict` when the lower
    end of its 95% Wilson interval does (so a small held-out set cannot pass by luck)."""

    threshold: float = Field(default=0.85, ge=0, le=1)
    rule: Literal["point", "strict"] = "point"
    max_drop: float | None = Field(default=0.01, ge=0, le=1)
    min_n: int = Field(default=50, ge=1)


class Task(_Strict):
    name: str
    kind: Literal["classify"] = "classify"
    labels: list[str | LabelSpec] | Path
    inputs: list[InputSource] = Field(min_length=1)
    teacher: TeacherSpec = TeacherSpec()
    relevance: RelevanceSpec = RelevanceSpec()
    split: SplitSpec = SplitSpec()
    student: StudentSpec = StudentSpec()
    training: TrainingSpec = TrainingSpec()
    agreement: AgreementSpec = AgreementSpec()
    targets: list[str] = Field(default_factory=lambda: ["cpu-x86"])

    _base_dir: Path = PrivateAttr(default=Path("."))
    _labels: list[LabelSpec] = PrivateAttr(default_factory=list)
    _source: Path | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it names the run folder)")
        return v

    def path(self, p: Path) -> Path:
        """A path from the task file, resolved against the task file's folder."""
        return p if p.is_absolute() else (self._base_dir / p)

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def label_specs(self) -> list[LabelSpec]:
        return self._labels

    @property
    def label_names(self) -> list[str]:
        return [spec.name for spec in self._labels]

    def settings(self, *sections: str) -> dict[str, Any]:
        """The named sections as plain JSON data, for stage fingerprints."""
        data = self.model_dump(mode="json")
        return {s: data[s] for s in sections}


def load_task(path: str | Path) -> Task:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"task file not found: {path} (give the path to a task.yaml)")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InputError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a task file is a YAML mapping (name:, labels:, inputs:, ...)")
    try:
        task = Task.model_validate(raw)
    except ValidationError as exc:
        raise InputError(_describe(exc, path, text)) from None
    task._base_dir = path.resolve().parent
    task._source = path
    task._labels = _load_labels(task, path)
    return task


def _load_labels(task: Task, task_path: Path) -> list[LabelSpec]:
    if isinstance(task.labels, Path):
        file = task.path(task.labels)
        if not file.is_file():
            raise InputError(f"{task_path}: labels: file not found: {file} (fix the path or list the labels)")
        if file.suffix == ".json":
            try:
                items = json.loads(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise InputError(f"{file}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
            if not isinstance(items, list):
                raise InputError(f"{file}: a labels file holds a JSON list of names or {{name, description}}")
        else:
            items = [ln.strip() for ln in file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    else:
        items = list(task.labels)
    specs: list[LabelSpec] = []
    for item in items:
        if isinstance(item, LabelSpec):
            specs.append(item)
        elif isinstance(item, str) and item:
            specs.append(LabelSpec(name=item))
        elif (
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("description", ""), str | None)
        ):
            specs.append(LabelSpec(name=item["name"], description=item.get("description")))
        else:
            raise InputError(
                f"{task_path}: labels: entry {item!r} is not a label name; use strings or {{name, description}}"
            )
    names = [s.name for s in specs]
    if len(names) < 2:
        raise InputError(f"{task_path}: labels: a classify task needs at least 2 labels, found {len(names)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{task_path}: labels: duplicated label(s) {', '.join(dupes)}; each label once")
    return specs


def _describe(exc: ValidationError, path: Path, text: str) -> str:
    """All validation errors on one line: `file:line: field: problem`."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        root = None
    parts = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in {"str", "LabelSpec", "Path"}))]
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(root, loc)
        where = f"{path}:{line}" if line else str(path)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (remove it or check its spelling)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"{where}: {field}: {msg}")
    return "; ".join(parts)


def _line_of(node: Any, loc: list[Any]) -> int | None:
    """The line of the YAML node a pydantic error path points at (the key's line for a mapping entry)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if getattr(k, "value", None) == key]
            if not match:
                return line  # a missing field: the line of the mapping that should hold it
            key_node, node = match[0]
            line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line
