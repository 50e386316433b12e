"""Hugging Face transformers `generate`: the reference backend, any seq2seq or causal model."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from xqg.generate.backends.base import (
    GeneratorBackend, SamplingSettings, float16_message, float_compute_type, register, t5_safe_compute_type,
)
from xqg.models.family import is_t5_family
from xqg.generate.prompts import stable_seed

if TYPE_CHECKING:
    from xqg.config import GenerateConfig

log = logging.getLogger(__name__)

# How the hf backend draws its samples; part of every generate unit's fingerprint, so a change redoes old units.
# per-row-v1: each of a row's n samples has its own random stream, seeded from the row's seed (see RowSampler).
SAMPLER = "per-row-v1"


def sample_seed(row_seed: int, j: int) -> int:
    """The seed of sample j of a row: depends on the row's seed (seed, language, docid) and j only."""
    return stable_seed(row_seed, "sample", j)


class RowSampler:
    """A transformers logits processor that samples top-k / temperature itself, each sequence from its own stream.

    transformers draws every sequence of a batch from one global torch generator, so a row's samples would depend
    on the other rows of its batch (batch_size, length sorting, chunking, a retry alone). Here sequence b (sample
    j of row i, as generate's num_return_sequences expansion orders them) draws step t's uniform from its own
    pre-drawn stream, picks a token by inverse CDF over the top-k softmax, and returns logits that allow only that
    token: generate's own multinomial then has a single choice. Put last, after generate's processors (e.g.
    min_new_tokens), with generate's own top_k / temperature / top_p off.
    """

    def __init__(self, seeds: list[int], n: int, top_k: int, temperature: float, max_steps: int) -> None:
        import torch

        self.top_k, self.temperature = top_k, temperature
        streams = []
        for seed in seeds:
            for j in range(n):
                g = torch.Generator().manual_seed(sample_seed(seed, j) & 0x7FFFFFFFFFFFFFFF)
                streams.append(torch.rand(max_steps, generator=g, dtype=torch.float64))
        self.uniforms = torch.stack(streams)  # (rows * n, steps), on the CPU: the same numbers on every device
        self.start: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.start is None:
            self.start = input_ids.shape[1]
        step = input_ids.shape[1] - self.start
        u = self.uniforms[:, min(step, self.uniforms.shape[1] - 1)].to(scores.device)
        scaled = scores.float() / self.temperature
        k = scaled.shape[-1] if self.top_k <= 0 else min(self.top_k, scaled.shape[-1])
        values, indices = scaled.topk(k, dim=-1)  # sorted, best first
        cdf = torch.softmax(values, dim=-1).double().cumsum(-1)
        pick = (cdf < u[:, None] * cdf[:, -1:]).sum(-1).clamp(max=k - 1)
        tokens = indices.gather(1, pick[:, None])
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, tokens, 0.0)


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
    """transformers generate with top-k sampling and num_return_sequences=n, each sample from its own seeded stream.

    Per-row deterministic: a row's queries depend on its seed (seed, language, docid) and the model only, not on
    batch_size, chunking or a retry alone after a failed batch (up to float rounding of a padded batch, which can
    move a draw that falls exactly on a probability boundary).
    """

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
        # RowSampler applies top_k and temperature itself: generate's own warpers stay off.
        gen.update(
            do_sample=True, top_k=0, top_p=1.0, temperature=1.0, min_p=None, typical_p=1.0, epsilon_cutoff=0.0,
            eta_cutoff=0.0,
            num_beams=1, num_return_sequences=sampling.num_queries, max_new_tokens=sampling.max_new_tokens,
            min_new_tokens=sampling.min_new_tokens or None, max_length=None, repetition_penalty=1.0,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        self.generation_config = gen

    @classmethod
    def output_params(cls, gen: GenerateConfig) -> dict[str, Any]:
        """Backend and the float type asked for (CTranslate2-only types run as 'auto', see torch_dtype)."""
        return {"backend": cls.name, "compute_type": float_compute_type(gen.compute_type), "sampler": SAMPLER}

    def generate(self, token_ids: list[list[int]], seeds: list[int]) -> list[list[str]]:
        """One generate call for the batch; each row's samples drawn from streams seeded by its own seed."""
        import torch
        from transformers import LogitsProcessorList

        s = self.sampling
        n = s.num_queries
        batch = self.tokenizer.pad({"input_ids": token_ids}, return_tensors="pt").to(self.device)
        sampler = RowSampler(seeds, n, s.top_k, s.temperature, s.max_new_tokens)
        with torch.inference_mode():
            out = self.model.generate(
                **batch, generation_config=self.generation_config, logits_processor=LogitsProcessorList([sampler])
            )
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


register(HFBackend)
