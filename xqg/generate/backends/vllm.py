"""vLLM: one engine per GPU actor for decoder-only generators (vLLM has no T5/mT5 support).

vllm is imported lazily: the CPU install does not have it, and this module must import without it.
"""

from __future__ import annotations

from typing import Any

from xqg.generate.backends.base import BackendUnavailable, GeneratorBackend, SamplingSettings

INSTALL_HINT = (
    "generate.backend 'vllm' needs the vllm package on the GPU workers (pip install 'xqg[vllm]'); it is not "
    "installed here. Use generate.backend 'ctranslate2' or 'hf' on CPU-only machines."
)


def import_vllm() -> Any:
    """The vllm module, or BackendUnavailable with an install hint."""
    try:
        import vllm
    except ImportError as e:
        raise BackendUnavailable(INSTALL_HINT) from e
    return vllm


def vllm_installed() -> bool:
    """Whether vllm can be imported in this process (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class VLLMBackend(GeneratorBackend):
    """vLLM offline engine with per-request seeds: a row's queries do not depend on its batch."""

    name = "vllm"
    schedules_itself = True  # continuous batching: hand it large batches and let it schedule

    def __init__(self, model_path: str, sampling: SamplingSettings, **kwargs: Any) -> None:
        vllm = import_vllm()
        super().__init__(model_path, sampling, **kwargs)
        if self.encoder_decoder:
            raise BackendUnavailable(
                f"generate.backend 'vllm' cannot run the encoder-decoder model {model_path!r}: vLLM has no "
                "T5/mT5 support. Use 'ctranslate2' or 'hf'."
            )
        if not self.device.startswith("cuda"):
            raise BackendUnavailable("generate.backend 'vllm' needs a GPU; this actor has none")
        dtype = self.compute_type if self.compute_type in ("float16", "bfloat16", "float32") else "auto"
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=model_path, tokenizer=model_path, dtype=dtype, seed=0,
            trust_remote_code=self.trust_remote_code,
            max_model_len=sampling.max_input_len + sampling.max_new_tokens + 8,
        )

    def params(self, seed: int) -> Any:
        """SamplingParams for one request: n samples, top-k (0 = off), the row's own seed."""
        s = self.sampling
        kwargs: dict[str, Any] = dict(
            n=s.num_queries, top_k=s.top_k if s.top_k > 0 else -1, top_p=1.0, temperature=s.temperature,
            max_tokens=s.max_new_tokens, seed=seed & 0x7FFFFFFF,
        )
        if s.min_new_tokens:
            kwargs["min_tokens"] = s.min_new_tokens
        return self._vllm.SamplingParams(**kwargs)

    def generate(self, token_ids: list[list[int]], seeds: list[int]) -> list[list[str]]:
        """One engine call for the batch; prompts as token ids (already truncated), one seed per request."""
        prompts = [{"prompt_token_ids": ids} for ids in token_ids]
        outputs = self.llm.generate(prompts, [self.params(s) for s in seeds], use_tqdm=False)
        return [[c.text.strip() for c in out.outputs] for out in outputs]
