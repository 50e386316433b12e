"""Hugging Face transformers `generate`: the reference backend, any seq2seq or causal model."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from xqg.generate.backends.base import (
    GeneratorBackend, SamplingSettings, float16_message, float_compute_type, is_t5_family, t5_safe_compute_type,
)
from xqg.generate.prompts import stable_seed

if TYPE_CHECKING:
    from xqg.config import GenerateConfig

log = logging.getLogger(__name__)


def torch_dtype(compute_type: str, device: str, model: object = None) -> Any:
    """'auto' on GPU: bf16, else fp16 (fp32 for a T5-family `model`: it overflows in fp16); fp32 on CPU.

    An explicit float type as asked (the config refuses float16 for a T5-family generator; benchmarks may
    still time it, with a warning).
    """
    import torch

    explicit = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    t5_family = is_t5_family(model)
    if t5_family and compute_type == "float16":
        log.warning("%s", float16_message(model, compute_type))
    if compute_type in explicit:
        return explicit[compute_type]
    if compute_type not in ("auto", "default"):
        log.warning("compute_type %r is a CTranslate2 type; the hf backend uses 'auto' instead", compute_type)
    if device.startswith("cuda"):
        bf16 = torch.cuda.is_bf16_supported()
        if t5_family:
            return explicit[t5_safe_compute_type("auto", device, bf16)]
        return torch.bfloat16 if bf16 else torch.float16
    return torch.float32


class HFBackend(GeneratorBackend):
    """transformers generate with top-k sampling and num_return_sequences=n, seeded per batch."""

    name = "hf"

    def __init__(self, model_path: str, sampling: SamplingSettings, **kwargs: Any) -> None:
        super().__init__(model_path, sampling, **kwargs)
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        if self.threads:
            torch.set_num_threads(self.threads)
        cls = AutoModelForSeq2SeqLM if self.encoder_decoder else AutoModelForCausalLM
        self.dtype = torch_dtype(self.compute_type, self.device, model_path)
        self.model = cls.from_pretrained(model_path, dtype=self.dtype, trust_remote_code=self.trust_remote_code)
        self.model.to(self.device).eval()
        gen = copy.deepcopy(self.model.generation_config)
        # Paper: top-k sampling only; a model's own defaults (top_p, repetition penalty, max_length) must not leak in.
        gen.update(
            do_sample=True, top_k=sampling.top_k, top_p=1.0, temperature=sampling.temperature,
            num_beams=1, num_return_sequences=sampling.num_queries, max_new_tokens=sampling.max_new_tokens,
            min_new_tokens=sampling.min_new_tokens or None, max_length=None, repetition_penalty=1.0,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        self.generation_config = gen

    @classmethod
    def output_params(cls, gen: GenerateConfig) -> dict[str, Any]:
        """Backend and the float type asked for (CTranslate2-only types run as 'auto', see torch_dtype)."""
        return {"backend": cls.name, "compute_type": float_compute_type(gen.compute_type)}

    def generate(self, token_ids: list[list[int]], seeds: list[int]) -> list[list[str]]:
        """One generate call for the batch, seeded from the batch's row seeds."""
        import torch

        n = self.sampling.num_queries
        batch = self.tokenizer.pad({"input_ids": token_ids}, return_tensors="pt").to(self.device)
        torch.manual_seed(stable_seed(*seeds))
        with torch.inference_mode():
            out = self.model.generate(**batch, generation_config=self.generation_config)
        if not self.encoder_decoder:
            out = out[:, batch["input_ids"].shape[1]:]  # left padding: every prompt ends at the same column
        texts = self.decode(out.tolist())
        return [texts[i * n:(i + 1) * n] for i in range(len(token_ids))]

    def recover(self) -> None:
        """Free cached GPU memory after an out-of-memory batch."""
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        """Backend, device and the torch dtype in use."""
        return {**super().describe(), "compute_type": str(self.dtype).removeprefix("torch.")}
