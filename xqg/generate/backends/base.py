"""The one small interface every generation backend implements: token ids in, n strings per prompt out."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


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
