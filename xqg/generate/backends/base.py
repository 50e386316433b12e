"""The one small interface every generation backend implements: token ids in, n strings per prompt out.

A backend is one module of this package: a GeneratorBackend subclass (its name, its config-time checks, its
driver-side preparation, its generation), and a `register(TheBackend)` call at the end of the file. The
package's lookups (xqg.generate.backends) find it by name; nothing else lists the backends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from xqg.models.family import is_t5_family, model_is_encoder_decoder
from xqg.registry import Registry

if TYPE_CHECKING:  # config imports the backends to validate them: importing config here would cycle
    from xqg.config import GenerateConfig
    from xqg.rundir import RunDir

FLOAT_TYPES = ("float16", "bfloat16", "float32")
# Compute types whose activations are float16: T5-family models overflow in them (inf, then NaN or garbage).
FLOAT16_COMPUTE_TYPES = ("float16", "int8_float16")


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (its package is missing, or it cannot serve this model)."""


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample: n queries per prompt with top-k sampling, at most max_new_tokens each."""

    num_queries: int = 5
    top_k: int = 10
    temperature: float = 1.0
    max_new_tokens: int = 32
    min_new_tokens: int = 0  # > 0 only in benchmarks, to make every backend decode the same number of tokens
    max_input_len: int = 256

    @classmethod
    def from_config(cls, gen: Any) -> SamplingSettings:
        """Settings from a GenerateConfig (or anything with the same attributes)."""
        return cls(
            num_queries=gen.num_queries, top_k=gen.top_k, temperature=gen.temperature,
            max_new_tokens=gen.max_new_tokens, max_input_len=gen.max_input_len,
        )


def float16_message(model: object, compute_type: str) -> str:
    """The reason a T5-family generator cannot run in a float16 compute type, and what to use instead."""
    name = getattr(model, "scratch", None) or model
    return (
        f"generate.compute_type {compute_type!r} cannot run the T5-family generator {name}: mT5/T5 activations "
        "overflow float16 (inf, then NaN or empty queries; mT5 is trained in bfloat16). Use 'bfloat16' or "
        "'int8_bfloat16' (GPUs from Ampere on), 'float32', 'int8' / 'int8_float32', or 'auto' (bfloat16 on a "
        "bf16-capable GPU, else float32; int8 / float32 on CPU)."
    )


def float16_refusal(model: object, compute_type: str) -> str | None:
    """Why compute_type cannot run this generator (a T5-family model in float16), or None when it can."""
    if compute_type in FLOAT16_COMPUTE_TYPES and is_t5_family(model):
        return float16_message(model, compute_type)
    return None


def t5_safe_compute_type(compute_type: str, device: str, bf16_ok: bool) -> str:
    """The compute type a T5-family generator runs in on this device (the caller knows it is T5-family).

    On GPU, 'auto' would pick float16 (torch) or int8_float16 (CTranslate2), and 'default' the saved weights'
    type (float16 for some checkpoints): both become bfloat16 where the GPU has it, else float32. 'int8'
    becomes int8_bfloat16 / int8_float32 (its float part must not be float16), and 'int16' (no CUDA kernels:
    CTranslate2 would fall back to float16) bfloat16 / float32. CPU types and explicit float types are kept:
    the config and prepare_backend refuse float16 for a T5-family generator, and benchmarks may time it.
    """
    if not device.startswith("cuda"):
        return compute_type
    if compute_type in ("auto", "default", "int16"):
        return "bfloat16" if bf16_ok else "float32"
    if compute_type == "int8":
        return "int8_bfloat16" if bf16_ok else "int8_float32"
    return compute_type


def float_compute_type(compute_type: str) -> str:
    """compute_type for torch-based engines: an explicit float type as asked, anything else 'auto'."""
    return compute_type if compute_type in FLOAT_TYPES else "auto"


def load_tokenizer(model_path: str, trust_remote_code: bool, encoder_decoder: bool) -> Any:
    """The model's tokenizer, padding on the left for decoder-only models (generation continues the prompt)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right" if encoder_decoder else "left"
    return tok


class GeneratorBackend(ABC):
    """Load a generator once; turn batches of prompt token ids into n sampled strings each."""

    name: ClassVar[str]
    # True when one call may take a whole unit at once (the engine batches and schedules itself).
    schedules_itself: ClassVar[bool] = False

    def __init__(
        self,
        model_path: str,
        sampling: SamplingSettings,
        *,
        device: str = "cpu",
        compute_type: str = "auto",
        trust_remote_code: bool = False,
        threads: int | None = None,
    ) -> None:
        self.model_path = model_path
        self.sampling = sampling
        self.device = device
        self.compute_type = compute_type
        self.trust_remote_code = trust_remote_code
        self.threads = threads
        self.encoder_decoder = model_is_encoder_decoder(model_path, trust_remote_code)
        self.tokenizer = load_tokenizer(model_path, trust_remote_code, self.encoder_decoder)

    # Driver-side hooks: classmethods, so the driver needs no model loaded and no heavy package imported.
    @classmethod
    def validate_config(cls, generate_model: object, trained_model: object) -> None:
        """Config-time check that this backend can run the generator; ValueError with the reason if not."""

    @classmethod
    def validate_compute_type(cls, model: object, compute_type: str) -> None:
        """Config-time check of generate.compute_type for the generator `model` (generate.model, or when that is
        None the train_qg.model the run's generator is built from): a T5-family model in float16 or int8_float16
        is a ValueError saying why (it overflows). Every backend: the rule is about the model, not the engine."""
        refusal = float16_refusal(model, compute_type)
        if refusal:
            raise ValueError(refusal)

    @classmethod
    def prepare(cls, gen: GenerateConfig, run: RunDir, model_path: str, use_gpu: bool) -> dict[str, Any]:
        """Driver-side work before any actor starts (conversion, checks); returns extra constructor kwargs."""
        return {}

    @classmethod
    def localize_kwargs(cls, prepared: dict[str, Any], run: RunDir) -> dict[str, Any]:
        """prepare's kwargs as seen on this node ("run:" refs become local copies), in the actor."""
        return prepared

    @classmethod
    def output_params(cls, gen: GenerateConfig) -> dict[str, Any]:
        """The backend settings that change the generated text, for fingerprinting a unit's output."""
        return {"backend": cls.name, "compute_type": gen.compute_type}

    def tokenize(self, prompts: list[str], truncate: bool = True) -> list[list[int]]:
        """Token ids of each prompt (special tokens added), cut to max_input_len tokens when truncate."""
        if not prompts:
            return []
        enc = self.tokenizer(
            prompts, add_special_tokens=True, truncation=truncate,
            max_length=self.sampling.max_input_len if truncate else None,
        )
        return [list(ids) for ids in enc["input_ids"]]

    def decode(self, sequences: list[list[int]]) -> list[str]:
        """Generated token ids to stripped strings (special tokens dropped)."""
        return [s.strip() for s in self.tokenizer.batch_decode(sequences, skip_special_tokens=True)]

    def begin_unit(self, seed: int) -> None:
        """Called before each unit of work: backends with process-wide random state reseed here."""

    @abstractmethod
    def generate(self, token_ids: list[list[int]], seeds: list[int]) -> list[list[str]]:
        """num_queries sampled strings per prompt; seeds has one stable seed per prompt."""

    def recover(self) -> None:
        """Called after a failed batch (e.g. out of GPU memory) before rows are retried one by one."""

    def describe(self) -> dict[str, Any]:
        """What ran, for markers and summaries."""
        return {"backend": self.name, "device": self.device, "compute_type": self.compute_type}


BACKENDS: Registry[type[GeneratorBackend]] = Registry("generation backend")


def register(backend: type[GeneratorBackend]) -> type[GeneratorBackend]:
    """Make a backend available under its name: every backend module ends with this call."""
    return BACKENDS.register(backend.name, backend)
