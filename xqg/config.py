"""One typed config tree for a run; defaults follow Zhuang, Shou & Zuccon (SIGIR 2023)."""

from __future__ import annotations

import hashlib
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from xqg.languages import PAPER_LANGUAGES, normalise_code
from xqg.names import check_name


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the key."""


def _number_kind(annotation: Any) -> tuple[type | None, bool]:
    """(int or float, whether a list of them) for a field typed int, float, X | None or list[X]; (None, False) else."""
    if annotation in (int, float):
        return annotation, False
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and args and args[0] in (int, float):
        return args[0], True
    if origin in (typing.Union, types.UnionType):
        kinds = {_number_kind(a) for a in args if a is not type(None)}
        if len(kinds) == 1:
            return kinds.pop()
    return None, False


def _refuse_cast(value: Any, kind: type) -> None:
    """A ValueError for a value pydantic's lax mode would quietly cast: true -> 1, 2.0 -> 2, false -> 0.0."""
    if isinstance(value, bool):
        expected = "an integer" if kind is int else "a number"
        raise ValueError(f"expected {expected}, got a boolean ({str(value).lower()})")
    if kind is int and isinstance(value, float):
        raise ValueError(f"expected an integer, got {value!r}")


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, assignments are validated, numbers are not cast.

    An int field takes no boolean or float (`num_queries: true` is not 1, `num_shards: 2.0` is not 2), a float
    field no boolean, and no float is infinite or NaN (allow_inf_nan: no option here means anything by them).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_not_cast(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        kind, is_list = _number_kind(field.annotation) if field is not None else (None, False)
        if kind is not None:
            for item in value if is_list and isinstance(value, list) else [value]:
                _refuse_cast(item, kind)
        return value


class ScratchModel(Strict):
    """A tiny model built from scratch offline: tokenizer trained on run text, random weights.

    mt5: a seq2seq generator; bert: a bi-encoder; llama: a decoder-only (causal LM) generator.
    """

    scratch: Literal["mt5", "bert", "llama"] = Field(
        description="Architecture to build: mt5 (seq2seq generator), bert (bi-encoder), llama (decoder-only generator)."
    )
    vocab_size: int = Field(
        4000, ge=100, description="Tokenizer vocabulary trained on the run's text; small, as the demo's text is small."
    )
    d_model: int = Field(64, ge=8, description="Hidden size; tiny so that the demo trains on a CPU in minutes.")
    num_layers: int = Field(2, ge=1, description="Transformer layers (each of encoder and decoder for mt5).")
    num_heads: int = Field(4, ge=1, description="Attention heads per layer.")
    d_ff: int = Field(128, ge=8, description="Feed-forward inner size.")
    max_length: int = Field(512, ge=16, description="Longest input in tokens (position embeddings of bert and llama).")
    dropout: float = Field(
        0.1, ge=0, lt=1, description="Dropout of the built mt5 / bert (transformers' default 0.1); llama has none."
    )
    tokenizer_texts: list[str] = Field(
        default_factory=list,
        description="Files to train the tokenizer on; empty = the run's corpus, query sets and training files.",
    )
    seed: int = Field(0, description="Seed of the random initial weights: the same spec builds the same model.")

    def fingerprint(self) -> str:
        """Short stable hash naming the built model folder."""
        blob = json.dumps(self.model_dump(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


ModelRef = str | ScratchModel

def _use_gpu_none_is_auto(v: Any) -> Any:
    """null (the old 'decide from the cluster') reads as auto."""
    return "auto" if v is None else v


# A stage's device: "auto" = GPUs when the connected cluster has them at job start (local runs); true = GPU actors
# only (a cluster without GPUs yet waits for the autoscaler, never falls back to the CPU); false = CPU only.
UseGpu = Annotated[Literal["auto", True, False], BeforeValidator(_use_gpu_none_is_auto)]
MAX_FAILURES_HELP = (
    "Ray Train restarts from the newest checkpoint after this many worker failures (a preempted spot node is one); "
    "-1 = unlimited (spot clusters)."
)
USE_GPU_HELP = (
    "auto = GPUs when the cluster has them at job start; true = GPU only (waits for GPU nodes, no CPU fallback); "
    "false = CPU only."
)


class Choices:
    """The values of a string option that a registry holds (generation backends, corpus formats): a config is
    checked against the registry when it is validated, and docs/configuration.md lists them."""

    def __init__(self, kind: str, registered: Callable[[], list[str]], fixed: tuple[str, ...] = ()) -> None:
        self.kind, self.registered, self.fixed = kind, registered, fixed

    def names(self) -> list[str]:
        """The fixed values first (e.g. "auto"), then the registered names, sorted."""
        return [*self.fixed, *self.registered()]

    def check(self, value: str) -> str:
        """value itself, or a ValueError listing the choices."""
        if value not in self.names():
            raise ValueError(f"unknown {self.kind} {value!r}; choose one of {self.names()}")
        return value


def _backend_names() -> list[str]:
    from xqg.generate.backends import backend_names  # imported here: loading the backends costs a few imports

    return backend_names()


def _corpus_format_names() -> list[str]:
    from xqg.ingest.corpus import format_names  # imported here: the readers bring pyarrow

    return format_names()


_BACKENDS = Choices("generation backend", _backend_names)
_CORPUS_FORMATS = Choices("corpus format", _corpus_format_names, fixed=("auto",))
# A generation backend / corpus format: one file of xqg/generate/backends/ / xqg/ingest/formats/ each.
BackendName = Annotated[str, AfterValidator(_BACKENDS.check), _BACKENDS]
CorpusFormatName = Annotated[str, AfterValidator(_CORPUS_FORMATS.check), _CORPUS_FORMATS]


class CorpusConfig(Strict):
    """The passage collection to ingest."""

    path: str | None = Field(
        None, description="The passage collection: a local path or URI (s3://, gs://, ...); .gz/.bz2/.zst decompressed."
    )
    format: CorpusFormatName = Field(
        "auto", description="dpr_tsv (id, text, title), jsonl, parquet or xquad (a folder); auto = from the name."
    )
    num_shards: int = Field(
        16, ge=1, le=99999,
        description="Hash shards of the corpus: the unit of every per-shard stage; more shards, smaller units.",
    )


class QuerySetConfig(Strict):
    """An evaluation query set (XOR-TyDi JSONL or an XQuAD folder)."""

    name: str = Field(
        description="The set's name in the run directory (queries/<name>, runs/<index>.<name>); a plain name."
    )
    path: str = Field(description="The XOR-TyDi JSONL file or the XQuAD folder; a local path or URI.")
    format: Literal["xor_tydi", "xquad"] = Field(
        "xor_tydi",
        description="xor_tydi (JSONL: id, question, answers, lang) or xquad (a folder of xquad.<lang>.json).",
    )
    languages: list[str] | None = Field(None, description="XQuAD: question languages to read; XOR: keep only these.")

    @field_validator("name")
    @classmethod
    def _name_is_a_path_part(cls, v: str) -> str:
        return check_name("query set name", v)

    @field_validator("languages")
    @classmethod
    def _languages_known(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [normalise_code(c) for c in v]


class TrainQGConfig(Strict):
    """Fine-tuning the cross-lingual query generator (mT5) on passage -> question pairs.

    Defaults: DSI-QG's step 1 (ielab/DSI-QG, the generator of the xQG paper): prompts cut to 128 tokens, lr 1e-4,
    no warm-up then linear decay, global batch 128, 2,000 optimizer steps, evaluation (and a checkpoint) every
    100 steps, the checkpoint with the lowest eval loss kept (load_best_model_at_end). DSI-QG evaluates on
    XOR-TyDi's gold-paragraph dev file (gp_squad_dev_data.json, minus question ids also in training): name it in
    eval_files; or hold out eval_examples / eval_ratio of the training pairs. Without either, no evaluation and
    the final model is kept. DSI-QG does not cut targets (questions); max_target_len 64 keeps every XOR-TyDi one.
    """

    model: ModelRef = Field(
        "google/mt5-base",
        description="Generator to fine-tune: a hub name, a local folder or a scratch spec (mt5 or llama).",
    )
    train_files: list[str] = Field(
        default_factory=list,
        description="Tevatron JSONL / DPR JSON / gp_squad (XOR-TyDi gold-paragraph, SQuAD layout) files.",
    )
    languages: list[str] | None = Field(None, description="Target languages to train on; None = the run's languages.")
    epochs: int = Field(3, ge=1, description="Passes over the pairs when max_steps is null (ignored otherwise).")
    max_steps: int | None = Field(
        2000, ge=1, description="Optimizer steps to train (DSI-QG: 2,000); epochs repeat as needed. null = epochs."
    )
    batch_size: int = Field(128, ge=1, description="Global batch size (split across workers; DSI-QG: 8 x 4 x 4 = 128).")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (DSI-QG: 1e-4).")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Linear warm-up share of the steps (DSI-QG: none).")
    max_input_len: int = Field(128, ge=8, description="Prompt tokens in training (DSI-QG: 128).")
    max_target_len: int = Field(
        64, ge=4, description="Question tokens; DSI-QG does not cut them and 64 keeps every XOR-TyDi question."
    )
    eval_files: list[str] = Field(
        default_factory=list,
        description="Evaluation pairs (e.g. XOR-TyDi's gp_squad_dev_data.json, as DSI-QG); question ids also in "
        "training are rejects (duplicate question id). Exclusive with eval_examples / eval_ratio.",
    )
    eval_examples: int = Field(0, ge=0, description="Hold out this many training pairs (seeded) for evaluation.")
    eval_ratio: float = Field(0.0, ge=0, lt=1, description="Hold out this share of the training pairs instead.")
    num_workers: int = Field(
        2, ge=1, description="Ray Train workers (one GPU each with use_gpu); the global batch is split across them."
    )
    use_gpu: UseGpu = Field("auto", description=USE_GPU_HELP)
    checkpoint_every_steps: int = Field(
        100, ge=1, description="Checkpoint (and evaluate, with an eval set) every this many steps (DSI-QG: 100)."
    )
    max_failures: int = Field(2, ge=-1, description=MAX_FAILURES_HELP)
    trust_remote_code: bool = Field(
        False, description="Let transformers run model code shipped with a hub model; off unless you trust it."
    )
    seed: int = Field(
        42, description="Seed of initialisation, data order and held-out split: a rerun trains the same model."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="GPU autocast; auto = bf16 where supported, else fp32 (mT5 overflows in fp16). CPU: fp32."
    )
    log_every_steps: int = Field(10, ge=1, description="Log the training loss every this many steps.")

    @model_validator(mode="after")
    def _one_eval_set(self) -> TrainQGConfig:
        chosen = [k for k in ("eval_files", "eval_examples", "eval_ratio") if getattr(self, k)]
        if len(chosen) > 1:
            raise ValueError(f"train_qg: set one of eval_files, eval_examples, eval_ratio (got {', '.join(chosen)})")
        return self

    @property
    def has_eval(self) -> bool:
        """Whether the training evaluates (and keeps its best checkpoint by eval loss)."""
        return bool(self.eval_files or self.eval_examples or self.eval_ratio)


class ActorPoolSettings(Strict):
    """The actor pool of a Ray Data stage: it starts at min_actors and grows (as nodes join) up to max_actors."""

    min_actors: int = Field(
        1, ge=1, description="Actors the pool starts with and keeps (capped by max_actors); more start as nodes join."
    )
    max_actors: int | None = Field(
        None, ge=1, validation_alias=AliasChoices("max_actors", "concurrency"),
        description="Most actors (alias: concurrency). None = the most the cluster can ever hold of the pool's "
        "resource (GPU or CPU): the autoscaler's node types x max_workers when Ray knows them, else what is up at "
        "job start. Never more than the units to do.",
    )

    @model_validator(mode="after")
    def _min_not_above_max(self) -> ActorPoolSettings:
        if self.max_actors is not None and self.min_actors > self.max_actors:
            raise ValueError(f"min_actors ({self.min_actors}) is above max_actors ({self.max_actors})")
        return self


class GenerateConfig(ActorPoolSettings):
    """Sampling n queries per passage per language."""

    model: ModelRef | None = Field(None, description="None = the run's trained generator <run>/models/qg.")
    backend: BackendName = Field(
        "ctranslate2",
        description="hf (transformers, any model), ctranslate2 (fast mT5, CPU and GPU) or vllm (GPU, decoder-only).",
    )
    num_queries: int = Field(5, ge=1, description="Queries sampled per passage and language (the paper: 5).")
    top_k: int = Field(10, ge=0, description="Top-k sampling (the paper: 10); 0 = sample from the whole vocabulary.")
    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature; 1.0 samples from the model's own distribution, as the paper."
    )
    max_new_tokens: int = Field(32, ge=1, description="At most this many new tokens per query (DSI-QG: 32).")
    max_input_len: int = Field(256, ge=8, description="Prompt tokens, the passage cut to fit (DSI-QG's generation: 256).")
    template: str = Field(
        "Generate a {language} question for this passage: {title} {text}",
        description="Prompt; {language} and {text} required, {title} optional. The paper's wording by default.",
    )
    batch_size: int = Field(32, ge=1, description="Passages per generation call in an actor.")
    use_gpu: UseGpu = Field("auto", description=USE_GPU_HELP)
    compute_type: Literal[
        "auto", "default", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32"
    ] = Field(
        "auto",
        description=(
            "CTranslate2 compute type; hf uses the float ones. auto: CPU int8 (ct2) / fp32 (hf); GPU bf16 for T5-family "
            "generators (fp32 without bf16), else ct2's / torch's fastest. float16 and int8_float16 with a T5-family "
            "generator (mT5) are config errors: it overflows in fp16."
        ),
    )
    seed: int = Field(
        42, description="Base of the per-(passage, language) sampling seeds: redoing a shard gives the same queries."
    )
    trust_remote_code: bool = Field(
        False, description="Let transformers run model code shipped with a hub model; off unless you trust it."
    )

    @field_validator("template")
    @classmethod
    def _template_fields(cls, v: str) -> str:
        for key in ("{language}", "{text}"):
            if key not in v:
                raise ValueError(f"template must contain {key}")
        from xqg.generate.prompts import check_template

        check_template(v)  # only {language}, {title}, {text}: anything else would fail in every actor
        return v


class XQGPairsConfig(Strict):
    """Generated (query, passage) pairs added to bi-encoder training (beyond the paper)."""

    enabled: bool = Field(
        False, description="Add generated (query, passage) pairs to the bi-encoder's training data; off = the paper."
    )
    ratio: float = Field(0.5, gt=0, description="Generated pairs per original training example.")
    languages: list[str] | None = Field(
        None, description="Languages of the generated queries to add; None = every generated language."
    )


class TrainDRConfig(Strict):
    """Contrastive fine-tuning of the bi-encoder (Tevatron's recipe, as in the paper)."""

    model: ModelRef = Field(
        "bert-base-multilingual-cased",
        description="Bi-encoder to fine-tune: a hub name, a local folder or a scratch spec (bert).",
    )
    train_files: list[str] = Field(
        default_factory=list,
        description="Tevatron JSONL or DPR JSON training files (query, positives, hard negatives).",
    )
    train_n_passages: int = Field(8, ge=1, description="1 positive + (n-1) hard negatives per query.")
    batch_size: int = Field(128, ge=1, description="Global batch of queries (split across workers).")
    lr: float = Field(1e-5, gt=0, description="AdamW learning rate (Tevatron's recipe, the paper: 1e-5).")
    epochs: int = Field(40, ge=1, description="Passes over the training queries (the paper: 40).")
    max_steps: int | None = Field(
        None, ge=1, description="Optimizer steps to train (epochs repeat as needed); null = train_dr.epochs passes."
    )
    warmup_ratio: float = Field(
        0.1, ge=0, le=1, description="Linear warm-up share of the steps (Tevatron's default 0.1)."
    )
    temperature: float = Field(
        1.0, gt=0, description="Scores are divided by it in the contrastive loss; 1.0 = Tevatron's raw dot products."
    )
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="Text vector: the CLS token (the paper, Tevatron) or the mean of the tokens."
    )
    shared_encoder: bool = Field(
        True, description="One encoder for queries and passages (Tevatron's default); false = two encoders."
    )
    gather_negatives: bool = Field(
        True,
        description="Score each query against the passages of every worker's part of the global batch (the paper's "
        "semantics: Tevatron on one GPU, 128 queries x 8 passages = 1,024 per query), so the loss does not depend "
        "on num_workers. false: only the worker's own part (fewer negatives per query with more workers).",
    )
    passage_format: Literal["title_text_concat", "title_text_pair", "text"] = Field(
        "title_text_concat",
        description="How passages are tokenized: title_text_concat = \"title text\" as one segment, no token type "
        "ids (Tevatron's, the paper's); title_text_pair = tokenizer(title, text); text = text only. Recorded in "
        "models/dr/xqg_dr.json; the encode stage encodes the model the same way.",
    )
    languages: list[str] | None = Field(
        None, description="Train only on examples of these languages (e.g. [en]: zero-shot); None = every example."
    )
    num_workers: int = Field(
        2, ge=1, description="Ray Train workers (one GPU each with use_gpu); the global batch is split across them."
    )
    use_gpu: UseGpu = Field("auto", description=USE_GPU_HELP)
    checkpoint_every_steps: int = Field(
        500, ge=1, description="Checkpoint every this many steps; a rerun resumes from the newest."
    )
    max_failures: int = Field(2, ge=-1, description=MAX_FAILURES_HELP)
    seed: int = Field(42, description="Seed of initialisation and data order: a rerun trains the same model.")
    xqg_pairs: XQGPairsConfig = Field(
        default_factory=XQGPairsConfig,
        description="Generated pairs added to training (beyond the paper; off by default).",
    )
    trust_remote_code: bool = Field(
        False, description="Let transformers run model code shipped with a hub model; off unless you trust it."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="GPU autocast; auto = bf16 where supported, else fp16. CPU: fp32."
    )
    log_every_steps: int = Field(10, ge=1, description="Log the training loss every this many steps.")


class SettingConfig(Strict):
    """Another bi-encoder evaluated on the same corpus and generated queries, e.g. zero-shot (trained on English).

    Its train_dr, encode, fuse, index, search and evaluate outputs carry the setting's name (models/dr-<name>,
    embeddings/passages-<name>/, index/baseline-<name>, runs/<fuse name>-<name>.tsv, ...), so both settings live
    in one run directory and each is fingerprinted and resumed on its own.
    """

    name: str = Field(
        description="The setting's name, appended to its outputs (models/dr-<name>, index/baseline-<name>, ...)."
    )
    train_languages: list[str] = Field(description="train_dr.languages of this setting (zero-shot: [en]).")
    label: str = Field("", description="Heading in the report; empty = the name.")
    xqg_pairs: XQGPairsConfig | None = Field(
        None, description="train_dr.xqg_pairs of this setting (e.g. zero-shot + generated pairs); None = train_dr's."
    )
    epochs: int | None = Field(None, ge=1, description="train_dr.epochs of this setting; None = train_dr's.")
    max_steps: int | None = Field(None, ge=1, description="train_dr.max_steps of this setting; None = train_dr's.")

    @field_validator("name")
    @classmethod
    def _name_is_a_path_part(cls, v: str) -> str:
        return check_name("settings.name", v)

    @field_validator("train_languages")
    @classmethod
    def _languages_known(cls, v: list[str]) -> list[str]:
        return [normalise_code(c) for c in v]


class EncodeConfig(ActorPoolSettings):
    """Encoding passages, generated queries and evaluation queries."""

    model: ModelRef | None = Field(None, description="None = the run's trained bi-encoder <run>/models/dr.")
    pooling: Literal["cls", "mean"] | None = Field(None, description="None = as the bi-encoder was trained.")
    batch_size: int = Field(128, ge=1, description="Texts per forward pass in an actor.")
    use_gpu: UseGpu = Field("auto", description=USE_GPU_HELP)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Inference precision; auto = float32 on the CPU, bfloat16 (else float16) on a GPU."
    )
    trust_remote_code: bool = Field(
        False, description="Let transformers run model code shipped with a hub model; off unless you trust it."
    )
    passage_format: Literal["title_text_concat", "title_text_pair", "text"] | None = Field(
        None,
        description="None = as the bi-encoder was trained (its xqg_dr.json); a model without one (a hub model): "
        "title_text_concat (Tevatron's). A value that differs from the model's recorded format is an error.",
    )
    num_queries: int | None = Field(
        None, ge=1, description="Generated target: only the first k queries of each list, into embeddings/generated-k{k}/."
    )
    torch_threads: int | None = Field(None, ge=1, description="CPU actors: torch threads each; None = Ray's CPU share.")
    chunk_size: int = Field(16_384, ge=1, description="Texts tokenized and length-sorted together inside an actor.")


class FuseConfig(Strict):
    """e'(p) = (1 - alpha) e(p) + alpha * sum_q e(q)."""

    name: str = Field(
        "xqg", description="The fused set's name (fused/<name>, index/<name>, runs/<name>.tsv); 'baseline' is reserved."
    )
    alpha: float = Field(
        0.01, ge=0, le=1,
        description="Weight of the generated queries: e'(p) = (1 - alpha) e(p) + alpha sum_q e(q); the paper: 0.01.",
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_path_part(cls, v: str) -> str:
        check_name("fuse.name", v)
        if v in ("baseline", "passages") or v.startswith("baseline-"):
            raise ValueError(f"fuse.name {v!r} is reserved for the baseline index; choose another name")
        return v

    languages: list[str] | None = Field(
        None, description="The fused set's languages; None = the run's languages (a new language never changes a set)."
    )
    num_queries: int | None = Field(None, ge=1, description="Use the first k queries of each list; None = all.")
    reduce: Literal["sum", "mean", "norm"] = Field(
        "sum",
        description="How a passage's generated-query embeddings are reduced: sum (the paper's), mean, or norm (the "
        "sum rescaled to the length of e(p), so alpha is the share of the fused vector whatever the encoder's scale).",
    )


class TuneConfig(Strict):
    """Choosing the fusion (alpha, reduction) per setting on a held-out query set, never on the evaluated one."""

    query_set: str | None = Field(
        None, description="The held-out query set to tune on (one of queries, not the evaluated one); None = no tuning."
    )
    alphas: list[float] = Field(
        default_factory=lambda: [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 0.5],
        description="The alphas tried, each with every reduction (the configured fuse.alpha / reduce is tried first).",
    )
    reductions: list[Literal["sum", "mean", "norm"]] = Field(
        default_factory=lambda: ["sum", "mean", "norm"], description="The reductions tried (see fuse.reduce)."
    )
    metric: Literal["R@2kt", "R@5kt", "mrr@10"] = Field(
        "R@2kt", description="What the choice maximises on the held-out set (ties: R@5kt, then MRR@10, then grid order)."
    )

    @field_validator("query_set")
    @classmethod
    def _name_is_a_path_part(cls, v: str | None) -> str | None:
        return None if v is None else check_name("tune.query_set", v)

    @field_validator("alphas")
    @classmethod
    def _alphas_in_range(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < a <= 1 for a in v):
            raise ValueError(f"tune.alphas must be a non-empty list of values in (0, 1], got {v}")
        return v


class IndexConfig(Strict):
    """FAISS index over passage or fused embeddings."""

    type: Literal["flat", "ivfpq", "hnsw"] = Field(
        "flat",
        description="flat (exact inner product, the paper), ivfpq (compressed) or hnsw (graph); the last two search "
        "approximately.",
    )
    shard_size: int = Field(
        2_000_000, ge=1, description="Most vectors per FAISS shard: bounds one index worker's memory."
    )
    nlist: int = Field(4096, ge=1, description="ivfpq: inverted lists (clusters).")
    pq_m: int = Field(64, ge=1, description="ivfpq: sub-quantizers per vector (a divisor of the embedding size).")
    pq_nbits: int = Field(8, ge=1, le=16, description="ivfpq: bits per sub-quantizer code.")
    train_sample: int = Field(262_144, ge=1, description="ivfpq: vectors sampled to train the quantizers.")
    hnsw_m: int = Field(32, ge=2, description="hnsw: neighbours per node.")
    nprobe: int = Field(64, ge=1, description="ivfpq: lists visited per query at search time (recall against speed).")
    ef_search: int = Field(128, ge=1, description="hnsw: candidate list size at search time (recall against speed).")
    use_gpu: UseGpu = Field("auto", description=USE_GPU_HELP + " Building; search has its own search.use_gpu.")


class SearchConfig(Strict):
    """Top-k search of a query set against an index."""

    depth: int = Field(
        100, ge=1, description="Passages retrieved per query: 100 passages of 100 words hold R@5kt's 5,000 tokens."
    )
    query_set: str | None = Field(None, description="None = the first query set.")

    @field_validator("query_set")
    @classmethod
    def _name_is_a_path_part(cls, v: str | None) -> str | None:
        return None if v is None else check_name("search.query_set", v)
    batch_size: int = Field(1024, ge=1, description="Queries per FAISS search call.")
    use_gpu: UseGpu = Field("auto", description=USE_GPU_HELP)


class EvaluateConfig(Strict):
    """Scoring runs: R@kt as XOR-TyDi, IR metrics when qrels exist, significance."""

    kt: list[int] = Field(
        default_factory=lambda: [2, 5], description="R@kt cut-offs in thousands of tokens (XOR-TyDi's R@2kt and R@5kt)."
    )
    main_label: str = Field("main", description="The main setting's name in the report's lead table.")
    include_title: bool = Field(
        False, description="Count the title's tokens with the text in R@kt; false = text only, as XOR-TyDi's script."
    )
    ir_ks: list[int] = Field(
        default_factory=lambda: [10, 100],
        description="Cut-offs of R@k, MRR@k and nDCG@k when the query set has gold passages.",
    )
    permutations: int = Field(
        10_000, ge=100, description="Random permutations of the paired significance test (baseline vs +xQG)."
    )
    seed: int = Field(0, description="Seed of the permutation test: the report's p-values are reproducible.")


class StorageConfig(Strict):
    """How vectors are stored in the run directory (computation is always float32)."""

    # float32 by default: what the paper's code stored, and every reported number is then exactly the float32
    # one; float16 can swap passages whose scores lie closer than its resolution (tests/test_storage.py). The
    # full-run configs choose float16: it is what brings a paper run under 250 GB (benchmarks/RESULTS.md).
    dtype: Literal["float16", "float32"] = Field(
        "float32",
        description="Passage embeddings, generated-query sums and fused vectors: float16 (half the bytes; sums and "
        "fusion accumulate in float32 and round once when stored; a flat index keeps no second copy of its vectors, "
        "search reads them from the embeddings) or float32 (every vector as written before, flat indexes as FAISS "
        "copies). Query embeddings stay float32. Changing it redoes encode (passages, generated), fuse and index.",
    )


class AskConfig(Strict):
    """Asking a finished run questions (jobs/ask.py, the Ray Serve app in xqg/ask/serve.py): limits and serving."""

    index: str | None = Field(None, description="Index asked when none is named; None = the fused set when built, "
                                                "else the baseline.")
    top_k: int = Field(10, ge=1, description="Passages shown per question when none is asked for.")
    max_top_k: int = Field(100, ge=1, description="The largest top_k a question may ask for.")
    max_question_chars: int = Field(1000, ge=1, description="Longer questions are refused (400 / exit 2).")
    max_request_bytes: int = Field(16_384, ge=256, description="Larger HTTP request bodies are refused (413).")
    why: int = Field(3, ge=0, description="Generated queries shown per passage of an xQG index (0 = none).")
    snippet_chars: int = Field(200, ge=0, description="Characters of the passage shown.")
    host: str = Field("127.0.0.1", description="Where the HTTP app listens: localhost unless told otherwise.")
    port: int = Field(8000, ge=1, le=65535, description="Where the HTTP app listens (its TCP port).")
    min_replicas: int = Field(1, ge=0, description="Serve autoscaling: replicas kept when idle.")
    max_replicas: int = Field(2, ge=1, description="Serve autoscaling: replicas at most (each loads the encoder and "
                                                     "every served index).")
    target_ongoing_requests: float = Field(8.0, gt=0, description="Serve autoscaling target per replica.")
    replica_cpus: float = Field(1.0, ge=0, description="CPUs each replica asks Ray for (also its torch threads).")
    max_batch_size: int = Field(16, ge=1, description="Questions encoded and searched together (serve.batch).")
    batch_wait_timeout_s: float = Field(0.005, ge=0, description="How long a batch waits for more questions.")

    @field_validator("index")
    @classmethod
    def _index_is_a_name(cls, v: str | None) -> str | None:
        return None if v is None else check_name("ask.index", v)

    @model_validator(mode="after")
    def _replicas_ordered(self) -> AskConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"ask.min_replicas={self.min_replicas} exceeds ask.max_replicas={self.max_replicas}")
        if self.top_k > self.max_top_k:
            raise ValueError(f"ask.top_k={self.top_k} exceeds ask.max_top_k={self.max_top_k}")
        return self


class RayConfig(Strict):
    """Connection options; RAY_ADDRESS in the environment wins over address."""

    address: str | None = Field(
        None, description="Ray cluster to connect to (e.g. auto, ray://head:10001); None = start a local Ray."
    )
    num_cpus: int | None = Field(None, ge=1, description="Only for a local Ray started by the job.")


class Config(Strict):
    """A whole run."""

    run_dir: str = Field(
        "runs/default",
        description="The run directory every stage reads and writes: a local path or URI (s3://bucket/prefix).",
    )
    keep_stale: bool = Field(
        False, description="Keep complete units whose inputs changed (counted as stale) instead of redoing them."
    )
    languages: list[str] = Field(
        default_factory=lambda: list(PAPER_LANGUAGES),
        description="Target languages generated for (ISO 639-1 codes; the paper's seven by default).",
    )
    q_max_len: int = Field(32, ge=4, description="Query tokens for the bi-encoder (Tevatron's recipe, the paper: 32).")
    p_max_len: int = Field(
        128, ge=8, description="Passage tokens for the bi-encoder (Tevatron's recipe, the paper: 128)."
    )
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    queries: list[QuerySetConfig] = Field(default_factory=list)
    train_qg: TrainQGConfig = Field(default_factory=TrainQGConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    train_dr: TrainDRConfig = Field(default_factory=TrainDRConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    fuse: FuseConfig = Field(default_factory=FuseConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    ask: AskConfig = Field(default_factory=AskConfig)
    settings: list[SettingConfig] = Field(
        default_factory=list, description="Further bi-encoder settings the pipeline runs after the main one."
    )
    setting: str | None = Field(
        None, description="Run the bi-encoder stages of this named setting (the pipeline sets it); None = the main one."
    )

    @field_validator("languages")
    @classmethod
    def _languages_known(cls, v: list[str]) -> list[str]:
        codes = [normalise_code(c) for c in v]
        if not codes:
            raise ValueError("at least one language is needed")
        if len(set(codes)) != len(codes):
            raise ValueError(f"duplicate language codes in {v}")
        return codes

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        names = [q.name for q in self.queries]
        if len(set(names)) != len(names):
            raise ValueError(f"query set names must be unique, got {names}")
        settings = [s.name for s in self.settings]
        if len(set(settings)) != len(settings):
            raise ValueError(f"setting names must be unique, got {settings}")
        if self.tune.query_set is not None:
            if self.tune.query_set not in names:
                raise ValueError(f"tune.query_set {self.tune.query_set!r} is not one of queries {names}")
            evaluated = {names[0], *([self.search.query_set] if self.search.query_set else [])}
            if self.tune.query_set in evaluated:
                raise ValueError(
                    f"tune.query_set {self.tune.query_set!r} is the evaluated query set: tune on a held-out set, never dev"
                )
        if self.setting is not None and self.setting not in settings:
            raise ValueError(f"setting {self.setting!r} is not one of settings {settings}")
        # Each backend checks what it can before any work starts (e.g. vllm: no encoder-decoder generator).
        from xqg.generate.backends import backend_class

        backend = backend_class(self.generate.backend)
        backend.validate_config(self.generate.model, self.train_qg.model)
        # generate.model None means the run's own trained generator, built from train_qg.model.
        generator = self.generate.model if self.generate.model is not None else self.train_qg.model
        backend.validate_compute_type(generator, self.generate.compute_type)  # e.g. no mT5 in float16
        return self

    def for_setting(self, name: str) -> Config:
        """This config running the bi-encoder stages of one named setting (its train_dr.languages applied)."""
        found = next((s for s in self.settings if s.name == name), None)
        if found is None:
            raise ValueError(f"setting {name!r} is not one of settings {[s.name for s in self.settings]}")
        update: dict[str, Any] = {"languages": found.train_languages}
        update.update({k: v for k in ("xqg_pairs", "epochs", "max_steps") if (v := getattr(found, k)) is not None})
        train_dr = self.train_dr.model_copy(update=update)
        return self.model_copy(update={"setting": name, "train_dr": train_dr})

    def to_yaml(self) -> str:
        """The resolved config as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _is_index(part: str) -> bool:
    """Whether a dotted-key part is a list index (ASCII digits)."""
    return part.isascii() and part.isdigit()


def _default_list(parts: list[str]) -> list[Any] | None:
    """A copy of the default list at a dotted key (languages -> the paper's seven); None where the default is not
    a list."""
    node: Any = Config().model_dump(mode="json")
    for part in parts:
        node = node.get(part) if isinstance(node, dict) else None
    return list(node) if isinstance(node, list) else None


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set tree[a][b][c] = value for 'a.b.c'; list items by index ('queries.0.path'), which must exist.

    A missing mapping on the way is created; an index past a list's end, or a key that is not an index under a
    list, is a ConfigError naming the override.
    """
    parts = dotted.split(".")
    node: Any = tree
    for depth, part in enumerate(parts):
        if isinstance(node, list):
            if not _is_index(part):
                raise ConfigError(
                    f"--set {dotted}: {'.'.join(parts[:depth]) or 'the config'} is a list: "
                    f"address its items by index, e.g. {'.'.join([*parts[:depth], '0', *parts[depth:]])}"
                )
            key: Any = int(part)
            if key >= len(node):
                raise ConfigError(
                    f"--set {dotted}: index {key} is out of range: {'.'.join(parts[:depth])} has {len(node)} "
                    f"item(s); to add items, set the whole list (--set '{'.'.join(parts[:depth])}=[...]')"
                )
        else:
            key = part
        if depth == len(parts) - 1:
            node[key] = value
            return
        child = node.get(key) if isinstance(node, dict) else node[key]
        if child is None and isinstance(node, dict) and key not in node:
            child = _default_list(parts[: depth + 1])  # languages.0 edits the default list; queries.name is refused
            if child is not None:
                node[key] = child
        if not isinstance(child, (dict, list)):
            child = {}  # a new or scalar key becomes a mapping; validation names it if it must not be one
            node[key] = child
        node = child


def parse_override(item: str) -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    if not raw.strip():
        return key, None
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError:
        # Not YAML (e.g. a template "{language} {text}" that YAML reads as a broken mapping): the plain string.
        return key, raw


def _format_errors(err: ValidationError, path: str | Path | None, overridden: list[str]) -> str:
    """One line per bad key, '<where>: key: why' (where: --set for an overridden key, else the file), no header."""
    lines = []
    for e in err.errors():
        if "str" in e["loc"] and isinstance(e["input"], dict):
            continue  # a mapping for `str | ScratchModel`: the ScratchModel branch's errors say what is wrong
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-after", "str", "ScratchModel")))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        from_set = any(f"{k}.".startswith(f"{loc}.") or f"{loc}.".startswith(f"{k}.") for k in overridden if loc)
        where = "--set " if from_set else f"{path}: " if path is not None else ""
        lines.append(f"{where}{loc or '<root>'}: {msg}")
    return "\n".join(lines)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error in one line: what and where (PyYAML's own message spans several, with excerpts)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config, apply --set overrides, validate (relative paths are taken from the working directory)."""
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"config {path} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}): save it as UTF-8"
            ) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config {path} is not valid YAML: {_yaml_problem(e)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping at the top level")
        tree = loaded
    overridden = []
    for item in overrides or []:
        key, value = parse_override(item)
        _set_path(tree, key, value)
        overridden.append(key)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, path, overridden)) from None
