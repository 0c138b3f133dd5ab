"""The task file (`task.yaml`): what the student must do, where its inputs come from, and the bar it must clear.

Loaded with pydantic: the sections are in toolkit/sections.py, put together here into `Task`. All validation
errors are reported together on one line, each with the file, line and field. Relative paths are resolved against
the task file's folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import InputError
from .sections import (  # the sections of the file; imported from here by the rest of the package
    DEFAULT_PROMPT,
    DEFAULT_SYSTEM,
    METRICS,
    TEACHER_KINDS,
    AgreementSpec,
    AutoSpec,
    DeploySpec,
    EmbeddingTeacherSpec,
    ExamplesSpec,
    FleetSpec,
    HFTeacherSpec,
    InputSource,
    LabelSpec,
    LossWeights,
    OpenAITeacherSpec,
    PythonTeacherSpec,
    RelevanceSpec,
    SplitSpec,
    StudentSpec,
    TeacherSpec,
    TrainingSpec,
    _Strict,
)
from .textfile import read_json, read_text


class Task(_Strict):
    name: str
    kind: Literal["classify", "embed"] = "classify"
    labels: list[str | LabelSpec] | Path | None = None  # classify: required; embed: none
    inputs: list[InputSource] = Field(min_length=1)
    teacher: TeacherSpec = EmbeddingTeacherSpec()
    fleet: FleetSpec | None = None  # collect with teacher replicas on a Ray cluster
    relevance: RelevanceSpec = RelevanceSpec()
    split: SplitSpec = SplitSpec()
    student: StudentSpec = StudentSpec()
    training: TrainingSpec = TrainingSpec()
    agreement: AgreementSpec = AgreementSpec()
    deploy: DeploySpec | None = None
    targets: list[str] = Field(default_factory=lambda: ["cpu-x86"])
    auto: AutoSpec = AutoSpec()

    _base_dir: Path = PrivateAttr(default=Path("."))
    _labels: list[LabelSpec] = PrivateAttr(default_factory=list)
    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _fits_the_kind(self) -> Task:
        if self.kind == "classify" and self.labels is None:
            raise ValueError("a classify task needs `labels:` (a list, or a file of them)")
        if self.kind == "embed":
            if self.labels is not None:
                raise ValueError("an embed task has no labels: remove `labels:` (or use kind: classify)")
            if self.deploy is not None:
                raise ValueError("deploy: (the hybrid system) defers unsure labels: it needs kind: classify")
            if isinstance(self.teacher, EmbeddingTeacherSpec) and self.teacher.examples is not None:
                raise ValueError("teacher.examples are label prototypes: an embed task's teacher needs none")
        if self.agreement.metric is not None and self.agreement.metric not in METRICS[self.kind]:
            raise ValueError(f"agreement.metric for kind {self.kind}: use {' or '.join(METRICS[self.kind])}")
        if isinstance(self.teacher, HFTeacherSpec) and self.teacher.pipeline is None:
            self.teacher.pipeline = "feature-extraction" if self.kind == "embed" else "text-classification"
        pipeline = getattr(self.teacher, "pipeline", None)
        if pipeline is not None and (pipeline == "feature-extraction") != (self.kind == "embed"):
            wanted = "feature-extraction" if self.kind == "embed" else "text-classification or zero-shot-classification"
            raise ValueError(f"teacher.pipeline {pipeline} does not answer kind: {self.kind} tasks; use {wanted}")
        return self

    @property
    def metric(self) -> str:
        """What agreement means for this task: `agreement.metric`, or the kind's default."""
        return self.agreement.metric or METRICS[self.kind][0]

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
    def encoder(self) -> str:
        """The sentence encoder behind relevance and the student's init: the embedding teacher's own model."""
        return self.teacher.model if isinstance(self.teacher, EmbeddingTeacherSpec) else self.relevance.encoder

    @property
    def label_specs(self) -> list[LabelSpec]:
        return self._labels

    @property
    def label_names(self) -> list[str]:
        return [spec.name for spec in self._labels]

    def for_student(self, spec: StudentSpec) -> Task:
        """This task with `spec` as its student and `spec.training` laid over its training settings."""
        training = TrainingSpec.model_validate({**self.training.model_dump(), **(spec.training or {})})
        task = self.model_copy(update={"student": spec, "training": training})
        task._base_dir, task._labels, task._source = self._base_dir, self._labels, self._source
        return task

    def settings(self, *sections: str) -> dict[str, Any]:
        """The named sections as plain JSON data, for stage fingerprints."""
        data = self.model_dump(mode="json")
        return {s: data[s] for s in sections}


def load_task(path: str | Path) -> Task:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"task file not found: {path} (give the path to a task.yaml)")
    text = read_text(path, "give the path to a task.yaml")
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
    _check_targets(task, path, text)
    if task.student.training and task.student.ladder is None:
        task = task.for_student(task.student)  # a hand-picked student's own training settings
    return task


def _check_targets(task: Task, path: Path, text: str) -> None:
    """Every target resolves to a profile now, not after a collection that may cost money."""
    from .targets import load_profile

    for i, name in enumerate(task.targets):
        try:
            load_profile(name)
        except InputError as exc:
            line = _line_of(_compose(text), ["targets", i])
            raise InputError(f"{path}:{line}: targets[{i}]: {exc}") from None


def _compose(text: str) -> Any:
    try:
        return yaml.compose(text)
    except yaml.YAMLError:
        return None


def _load_labels(task: Task, task_path: Path) -> list[LabelSpec]:
    if task.labels is None:  # an embed task
        return []
    if isinstance(task.labels, Path):
        file = task.path(task.labels)
        if not file.is_file():
            raise InputError(f"{task_path}: labels: file not found: {file} (fix the path or list the labels)")
        if file.suffix == ".json":
            items = read_json(file, "a labels file holds a JSON list of names or {name, description}")
            if not isinstance(items, list):
                raise InputError(f"{file}: a labels file holds a JSON list of names or {{name, description}}")
        else:
            items = [ln.strip() for ln in read_text(file, "one label per line").splitlines() if ln.strip()]
    else:
        items = list(task.labels)
    try:
        specs = _label_specs(items, task_path)
    except ValidationError as exc:  # e.g. a name that is not valid Unicode
        raise InputError(f"{task_path}: labels: {exc.errors()[0]['msg']}; fix the label names") from None
    names = [s.name for s in specs]
    if len(names) < 2:
        raise InputError(f"{task_path}: labels: a classify task needs at least 2 labels, found {len(names)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{task_path}: labels: duplicated label(s) {', '.join(dupes)}; each label once")
    return specs


def _label_specs(items: list[Any], task_path: Path) -> list[LabelSpec]:
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
    return specs


def _describe(exc: ValidationError, path: Path, text: str) -> str:
    """All validation errors on one line: `file:line: field: problem`."""
    root = _compose(text)
    parts = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in {"str", "LabelSpec", "Path"}))]
        if loc[:1] == ["teacher"] and len(loc) > 1 and loc[1] in TEACHER_KINDS:
            del loc[1]  # the union's tag: `teacher.base_url`, not `teacher.openai.base_url`
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


__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_SYSTEM",
    "METRICS",
    "TEACHER_KINDS",
    "AgreementSpec",
    "AutoSpec",
    "DeploySpec",
    "EmbeddingTeacherSpec",
    "ExamplesSpec",
    "FleetSpec",
    "HFTeacherSpec",
    "InputSource",
    "LabelSpec",
    "LossWeights",
    "OpenAITeacherSpec",
    "PythonTeacherSpec",
    "RelevanceSpec",
    "SplitSpec",
    "StudentSpec",
    "Task",
    "TeacherSpec",
    "TrainingSpec",
    "load_task",
]
