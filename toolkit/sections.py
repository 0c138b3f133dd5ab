"""The task file's sections (teacher, relevance, student, training, agreement, deploy, ...), one pydantic model each.

`toolkit/task.py` puts them together into `Task` and loads the file; every model forbids unknown keys (`extra=
"forbid"`), so a misspelt key is an error, not a silent default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator


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
