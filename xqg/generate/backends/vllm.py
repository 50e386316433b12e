"""vLLM: one engine per GPU actor for decoder-only generators (vLLM has no T5/mT5 support).

vllm is imported lazily: the CPU install does not have it, and this module must import without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xqg.generate.backends.base import (
    BackendUnavailable, GeneratorBackend, SamplingSettings, float_compute_type, register,
)
from xqg.models.family import guess_encoder_decoder, model_is_encoder_decoder

if TYPE_CHECKING:
    from xqg.config import GenerateConfig
    from xqg.rundir import RunDir

INSTALL_HINT = (
    "generate.backend 'vllm' needs the vllm package on the GPU workers (pip install 'xqg[vllm]'); it is not "
    "installed here. Use generate.backend 'ctranslate2' or 'hf' on CPU-only machines."
)


def no_encoder_decoder(model: object) -> str:
    """Why vLLM cannot run an encoder-decoder generator, and what to use instead."""
    return (
        f"generate.backend 'vllm' cannot run the encoder-decoder model {model!r}: vLLM has no T5/mT5 support. "
        "Use generate.backend 'ctranslate2' (fast, CPU and GPU) or 'hf'; keep 'vllm' for decoder-only generators."
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


def sampling_kwargs(sampling: SamplingSettings, seed: int) -> dict[str, Any]:
    """vllm.SamplingParams arguments of one request: n samples, top-k only (0 = off: -1), the row's own seed.

    The seed is cut to 31 bits (vLLM keeps it in a C int); top_p stays 1 so a model's own defaults cannot leak in.
    """
    kwargs: dict[str, Any] = dict(
        n=sampling.num_queries, top_k=sampling.top_k if sampling.top_k > 0 else -1, top_p=1.0,
        temperature=sampling.temperature, max_tokens=sampling.max_new_tokens, seed=seed & 0x7FFFFFFF,
    )
    if sampling.min_new_tokens:
        kwargs["min_tokens"] = sampling.min_new_tokens
    return kwargs


def token_prompts(token_ids: list[list[int]]) -> list[dict[str, list[int]]]:
    """vLLM prompts as token ids (already truncated by the stage): vLLM does not tokenize the text again."""
    return [{"prompt_token_ids": list(ids)} for ids in token_ids]


def engine_kwargs(
    model_path: str, sampling: SamplingSettings, compute_type: str, trust_remote_code: bool,
) -> dict[str, Any]:
    """vllm.LLM arguments: the model, a torch float type (CTranslate2-only types as 'auto'), room for prompt + query."""
    return dict(
        model=model_path, tokenizer=model_path, dtype=float_compute_type(compute_type), seed=0,
        trust_remote_code=trust_remote_code, max_model_len=sampling.max_input_len + sampling.max_new_tokens + 8,
    )


class VLLMBackend(GeneratorBackend):
    """vLLM offline engine with per-request seeds: a row's queries do not depend on its batch."""

    name = "vllm"
    schedules_itself = True  # continuous batching: hand it large batches and let it schedule

    def __init__(self, model_path: str, sampling: SamplingSettings, **kwargs: Any) -> None:
        vllm = import_vllm()
        super().__init__(model_path, sampling, **kwargs)
        if self.encoder_decoder:
            raise BackendUnavailable(no_encoder_decoder(model_path))
        if not self.device.startswith("cuda"):
            raise BackendUnavailable("generate.backend 'vllm' needs a GPU; this actor has none")
        self._vllm = vllm
        self.llm = vllm.LLM(**engine_kwargs(model_path, sampling, self.compute_type, self.trust_remote_code))

    @classmethod
    def validate_config(cls, generate_model: object, trained_model: object) -> None:
        """Reject an encoder-decoder (mT5) generator when the config is loaded, not deep in a worker."""
        # generate.model None means the run's own trained generator, which is built from train_qg.model.
        model = generate_model if generate_model is not None else trained_model
        if guess_encoder_decoder(model):
            raise ValueError(no_encoder_decoder(getattr(model, "scratch", None) or model))

    @classmethod
    def prepare(cls, gen: GenerateConfig, run: RunDir, model_path: str, use_gpu: bool) -> dict[str, Any]:
        """Fail on the driver, readably, when vLLM cannot run: an encoder-decoder model, no GPUs, no vllm."""
        import ray

        from xqg.models.resolve import localize

        if model_is_encoder_decoder(localize(model_path, run), gen.trust_remote_code):
            raise ValueError(no_encoder_decoder(model_path))
        if not use_gpu:
            raise ValueError("generate.backend 'vllm' needs GPUs and this Ray cluster has none; use 'ctranslate2' or 'hf'")
        # The driver may be a CPU-only head node: ask a GPU worker whether it has vllm.
        if not ray.get(ray.remote(num_gpus=1)(vllm_installed).remote()):
            raise ValueError(INSTALL_HINT)
        return {}

    @classmethod
    def output_params(cls, gen: GenerateConfig) -> dict[str, Any]:
        """Backend and the dtype vLLM runs in (CTranslate2-only types fall back to 'auto')."""
        return {"backend": cls.name, "compute_type": float_compute_type(gen.compute_type)}

    def params(self, seed: int) -> Any:
        """SamplingParams for one request: n samples, top-k (0 = off), the row's own seed."""
        return self._vllm.SamplingParams(**sampling_kwargs(self.sampling, seed))

    def generate(self, token_ids: list[list[int]], seeds: list[int]) -> list[list[str]]:
        """One engine call for the batch; prompts as token ids (already truncated), one seed per request."""
        outputs = self.llm.generate(token_prompts(token_ids), [self.params(s) for s in seeds], use_tqdm=False)
        return [[c.text.strip() for c in out.outputs] for out in outputs]


register(VLLMBackend)
