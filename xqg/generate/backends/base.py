"""The one small interface every generation backend implements: token ids in, n strings per prompt out."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # config imports the backends to validate them: importing config or rundir here would cycle
    from xqg.config import GenerateConfig
    from xqg.rundir import RunDir

FLOAT_TYPES = ("float16", "bfloat16", "float32")
# Hub names of encoder-decoder families, for guessing at config time without the network.
_ENCODER_DECODER_NAME = re.compile(r"(^|[/_-])(m?t5|mt0|byt5|umt5|flan-t5|bart|mbart|pegasus|marian|opus-mt|nllb|m2m100)", re.I)


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (its package is missing, or it cannot serve this model)."""


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample: n queries per prompt with top-k sampling, at most max_new_tokens each."""

    num_queries: int = 5
    top_k: int = 10
    temperature: float = 1.0
    max_new_tokens: int = 64
    min_new_tokens: int = 0  # > 0 only in benchmarks, to make every backend decode the same number of tokens
    max_input_len: int = 512

    @classmethod
    def from_config(cls, gen: Any) -> SamplingSettings:
        """Settings from a GenerateConfig (or anything with the same attributes)."""
        return cls(
            num_queries=gen.num_queries, top_k=gen.top_k, temperature=gen.temperature,
            max_new_tokens=gen.max_new_tokens, max_input_len=gen.max_input_len,
        )


def model_is_encoder_decoder(model_path: str, trust_remote_code: bool = False) -> bool:
    """Whether a local folder or hub model is encoder-decoder (mT5) rather than decoder-only."""
    cfg = Path(model_path) / "config.json"
    if cfg.is_file():
        return bool(json.loads(cfg.read_text(encoding="utf-8")).get("is_encoder_decoder", False))
    from transformers import AutoConfig

    return bool(AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code).is_encoder_decoder)


def guess_encoder_decoder(model: object) -> bool:
    """Best guess without the network: a scratch mT5, a local folder's config, or the hub name's family."""
    if model is None:
        return False
    scratch = getattr(model, "scratch", None)
    if scratch is not None:
        return scratch == "mt5"
    name = str(model)
    if (Path(name) / "config.json").is_file():
        return model_is_encoder_decoder(name)
    return bool(_ENCODER_DECODER_NAME.search(name))


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
