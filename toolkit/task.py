"""The task file (`task.yaml`): what the student must do, where its inputs come from, and the bar it must clear.

Loaded with pydantic (`extra="forbid"`, so a misspelt key is an error, not a silent default).
All validation errors are reported together on one line, each with the file, line and field.
Relative paths are resolved against the task file's folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InputError
from .textfile import read_json, read_text


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


class EmbeddingTeacherSpec(_Strict):
    """A sentence encoder answering by cosine to label prototypes (see docs/teachers/embedding.md)."""

    kind: Literal["embedding"] = "embedding"
    model: str = "all-MiniLM-L6-v2"
    examples: ExamplesSpec | None = None
    use_descriptions: bool = False
    temperature: float = Field(default=0.05, gt=0)
    batch_size: int = Field(default=32, gt=0)


DEFAULT_SYSTEM = "You are a careful annotator. You label texts for a classifier and answer with a label only."
DEFAULT_PROMPT = """Classify the text into exactly one of these labels:
{labels}

Answer with the label only{none_clause}.

Text: {input}"""


class OpenAITeacherSpec(_Strict):
    """Any OpenAI-compatible chat/completions endpoint (see docs/teachers/openai.md).

    Only `model`, the prompt, the constraint, the sampling settings and the labels make up the
    fingerprint: the URL, the key, concurrency, timeouts and budgets do not change the answers.
    """

    kind: Literal["openai"]
    base_url: str | list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="e.g. http://localhost:8000/v1, or a list of replicas of one model"
    )
    model: str = Field(min_length=1)
    api_key_env: str | None = Field(default=None, description="name of the env variable holding the key")
    constrain: Literal["json_schema", "choice", "guided_choice", "prompt"] = "json_schema"
    system: str | None = DEFAULT_SYSTEM
    prompt: str = DEFAULT_PROMPT
    use_descriptions: bool = True
    allow_none: bool = True
    temperature: float = Field(default=0.0, ge=0, le=2)
    seed: int | None = None
    max_answer_tokens: int = Field(default=64, ge=1)
    logprobs: int = Field(default=5, ge=0, le=20)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    concurrency: int = Field(default=16, ge=1, le=1024)
    timeout: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    backoff: float = Field(default=1.0, ge=0)
    max_backoff: float = Field(default=60.0, ge=0)
    cooldown: float = Field(default=30.0, ge=0, description="seconds a failing server of several is left out")
    max_calls: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, gt=0)
    # an embed task asks /v1/embeddings (vLLM, TEI, NIM, OpenAI) instead of chat: `dimensions` is passed on where
    # the model supports shortened embeddings; the answer is made unit length
    dimensions: int | None = Field(default=None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _prompt_has_input(cls, v: str) -> str:
        if "{input}" not in v:
            raise ValueError("the prompt template must contain {input} (and may contain {labels}, {none_clause})")
        return v


class PythonTeacherSpec(_Strict):
    """`module:function` answering a batch of strings (see docs/teachers/python.md)."""

    kind: Literal["python"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    path: Path | None = Field(default=None, description="folder put on sys.path first [default: the task's folder]")
    options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(default=64, gt=0)


class HFTeacherSpec(_Strict):
    """A local transformers model through a pipeline (see docs/teachers/hf.md); `feature-extraction` (mean-pooled,
    unit length) answers an embed task."""

    kind: Literal["hf"]
    model: str = Field(min_length=1, description="a local model folder")
    pipeline: Literal["text-classification", "zero-shot-classification", "feature-extraction"] | None = Field(
        default=None, description="default: text-classification for classify, feature-extraction for embed"
    )
    label_map: dict[str, str | None] = Field(default_factory=dict)
    hypothesis_template: str = "This example is {}."
    use_descriptions: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_length: int = Field(default=256, ge=8)
    batch_size: int = Field(default=32, gt=0)


def _teacher_kind(v: Any) -> str:
    return str(v.get("kind", "embedding")) if isinstance(v, dict) else str(getattr(v, "kind", "embedding"))


TeacherSpec = Annotated[
    Annotated[EmbeddingTeacherSpec, Tag("embedding")]
    | Annotated[OpenAITeacherSpec, Tag("openai")]
    | Annotated[PythonTeacherSpec, Tag("python")]
    | Annotated[HFTeacherSpec, Tag("hf")],
    Discriminator(
        _teacher_kind,
        custom_error_type="teacher_kind",
        custom_error_message="unknown teacher kind; use embedding, openai, python or hf",
    ),
]
TEACHER_KINDS = ("embedding", "openai", "python", "hf")


class RelevanceSpec(_Strict):
    """Which inputs are about the task: pairs scoring under the threshold are stored but not trained on.

    `knn`: the mean cosine of an input to its `k` nearest `reference` inputs (known on-task texts),
    with the threshold calibrated so that a share `keep` of the reference itself passes (each
    reference input scored against the others). `max_cosine`: the best cosine to the label
    prototypes (default threshold 0.40). `teacher`: only the teacher's own verdict ("none of
    these"). `auto`: `knn` when there is a reference (default: every row of the embedding teacher's
    examples file), else `max_cosine`. See docs/teachers/relevance.md for the measurements.
    """

    method: Literal["auto", "knn", "max_cosine", "teacher"] = "auto"
    reference: InputSource | None = None
    k: int = Field(default=5, ge=1)
    keep: float = Field(default=0.99, gt=0, le=1)
    threshold: float | None = Field(default=None, ge=-1, le=1)
    encoder: str = "all-MiniLM-L6-v2"


class SplitSpec(_Strict):
    heldout: float = Field(default=0.2, gt=0, lt=1)


class StudentSpec(_Strict):
    # transformer: a small BERT encoder (below); static: token embeddings distilled from the teacher with the
    # model2vec library, mean-pooled, with a small head (toolkit/static.py); `hidden` is then its width (256)
    kind: Literal["transformer", "static"] = "transformer"
    init: Literal["teacher", "config"] = "teacher"
    layers: int = Field(default=2, ge=1)
    # which teacher layers `init: teacher` copies; default: spread from the first to the last
    teacher_layers: list[int] | None = None
    # width; default: the teacher's under `init: teacher` (narrower projects its embeddings), else 384
    hidden: int | None = Field(default=None, ge=8)
    heads: int | None = Field(default=None, ge=1)  # default: hidden / 64
    intermediate: int | None = Field(default=None, ge=8)  # default: 4 × hidden
    prune_vocab: bool = True
    max_length: int = Field(default=64, ge=8, le=512)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    max_params: int | None = Field(default=6_000_000, gt=0)
    # training settings for this student only, over the task's `training:` (e.g. a static student's higher lr)
    training: dict[str, Any] | None = None
    # the student ladder (toolkit/ladder.py): `run` trains these students from the first (cheapest) on, compiles
    # each and ships the first whose compiled agreement holds; `auto`: static, narrow transformer, 2 teacher layers
    ladder: list[StudentSpec] | Literal["auto"] | None = None

    @model_validator(mode="after")
    def _ladder_alone(self) -> StudentSpec:
        if self.ladder is not None and self.model_fields_set - {"ladder"}:
            extra = ", ".join(sorted(self.model_fields_set - {"ladder"}))
            raise ValueError(f"student.ladder replaces the other student settings ({extra}): move them into a rung")
        if isinstance(self.ladder, list) and not self.ladder:
            raise ValueError("student.ladder is empty: give at least one rung, or `ladder: auto`")
        if self.training:
            unknown = set(self.training) - set(TrainingSpec.model_fields)
            if unknown:
                raise ValueError(f"student.training: unknown settings {sorted(unknown)}")
        return self


class LossWeights(_Strict):
    hard: float = Field(default=1.0, ge=0)
    soft: float = Field(default=1.0, ge=0)
    embedding: float = Field(default=1.0, ge=0)
    # embed: KL between the student's and the teacher's in-batch neighbour distributions (toolkit/objectives.py)
    neighbours: float = Field(default=1.0, ge=0)


class FleetSpec(_Strict):
    """Answer with replicas of a local teacher on a Ray cluster (docs/scale.md); needs `tsd-edge[ray]`."""

    # passed to ray.init: none = RAY_ADDRESS, else a cluster `ray start` made here, else a new local Ray;
    # "auto", "local", "HOST:PORT" or "ray://HOST:10001"
    ray: str | None = None
    replicas: int | None = Field(default=None, ge=1, description="default: one per GPU, else one per `cpus`")
    gpus: float | None = Field(default=None, ge=0, description="per replica; default: 1 when the cluster has GPUs")
    cpus: float = Field(default=1.0, gt=0, description="per replica")


class TrainingSpec(_Strict):
    epochs: int = Field(default=6, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=3e-4, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup: float = Field(default=0.06, ge=0, lt=1)
    soft_temperature: float = Field(default=1.0, gt=0)
    loss: LossWeights = LossWeights()
    patience: int | None = Field(default=2, ge=1, description="None: no early stopping, every epoch runs")
    min_steps: int = Field(default=0, ge=0, description="optimizer steps at least: more epochs when pairs are few")
    seed: int = 0
    threads: int | None = Field(default=None, ge=1)
    # beyond one machine (docs/scale.md): optimizer steps of `accumulate` batches; compile; bf16 autocast
    accumulate: int = Field(default=1, ge=1)
    compile: bool = False
    precision: Literal["auto", "fp32", "bf16"] = "auto"


METRICS = {"classify": ("label",), "embed": ("recall_asymmetric", "recall_symmetric", "cosine")}


class AgreementSpec(_Strict):
    """`rule: point` holds when the measured agreement reaches `threshold`; `rule: strict` when the lower
    end of its 95% interval does (so a small held-out set cannot pass by luck).

    What "agreement" is depends on the task's kind (`metric`): `label` for classify (the student's label is the
    teacher's); for embed (docs/embed.md) `recall_asymmetric` (default: the share of the teacher's top-`k`
    neighbours in `corpus` training inputs that the student's query embedding finds in the teacher-built index),
    `recall_symmetric` (both sides embedded by the student) or `cosine` (mean cosine to the teacher's embedding).
    """

    threshold: float = Field(default=0.85, ge=0, le=1)
    rule: Literal["point", "strict"] = "point"
    max_drop: float | None = Field(default=0.01, ge=0, le=1)
    min_n: int = Field(default=50, ge=1)
    metric: Literal["label", "recall_asymmetric", "recall_symmetric", "cosine"] | None = Field(
        default=None, description="default: label for classify, recall_asymmetric for embed"
    )
    k: int = Field(default=10, ge=1, description="embed: neighbours compared per query")
    corpus: int = Field(default=10_000, ge=10, description="embed: training inputs the neighbours are searched in")
    floor: float = Field(default=0.8, ge=-1, le=1, description="embed: the report counts cosines under it")


class DeploySpec(_Strict):
    """The hybrid system (docs/deploy.md): the package's student answers when its confidence clears a threshold
    chosen at package time so that, with probability `confidence`, its agreement on the inputs it answers is
    at least `answered_agreement`; the rest go to the teacher."""

    answered_agreement: float = Field(ge=0, le=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    min_coverage: float = Field(default=0.5, ge=0, le=1, description="below this share answered, say it is not useful")
    max_coverage_drop: float = Field(default=0.05, ge=0, le=1, description="the gate's allowance for lost coverage")
    measure: Literal["probability", "margin"] | None = Field(default=None, description="None: the better of the two")


class AutoSpec(_Strict):
    """`tsd-edge auto`: ask the teacher only for the inputs the student needs (see docs/auto.md)."""

    initial: int = Field(default=200, ge=20, description="random training inputs asked before the first round")
    batch: int = Field(default=200, ge=1, description="inputs asked per round")
    epochs: int | None = Field(default=None, ge=1, description="epochs per round, all run [default: training's]")
    min_steps: int = Field(default=300, ge=0, description="optimizer steps per round at least (early rounds)")
    strategy: Literal["mix", "diverse", "margin", "random"] = "mix"
    candidates: int = Field(default=2000, ge=0, description="pool inputs the student scores per round (0: all)")
    heldout: int | None = Field(default=None, ge=1, description="held-out inputs to ask [default: the whole split]")
    seed: int = 0


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
