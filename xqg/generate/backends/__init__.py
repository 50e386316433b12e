"""Generation backends behind one interface; each is imported only when asked for."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from xqg.generate.backends.base import BackendUnavailable, GeneratorBackend, SamplingSettings, float16_refusal

if TYPE_CHECKING:
    from xqg.config import GenerateConfig
    from xqg.rundir import RunDir

BACKENDS: dict[str, str] = {
    "hf": "xqg.generate.backends.hf:HFBackend",
    "ctranslate2": "xqg.generate.backends.ctranslate2:CT2Backend",
    "vllm": "xqg.generate.backends.vllm:VLLMBackend",
}


def backend_class(name: str) -> type[GeneratorBackend]:
    """The backend class registered under name."""
    if name not in BACKENDS:
        raise ValueError(f"unknown generation backend {name!r}; choose one of {sorted(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_backend(name: str, model_path: str, sampling: SamplingSettings, **kwargs: Any) -> GeneratorBackend:
    """Load a backend (model loaded once): hf, ctranslate2 (pass ct2_path) or vllm."""
    return backend_class(name)(model_path, sampling, **kwargs)


def prepare_backend(gen: GenerateConfig, run: RunDir, model_path: str, use_gpu: bool) -> dict[str, Any]:
    """Driver-side preparation of gen.backend before any actor starts -> extra actor constructor kwargs."""
    # The config check guessed the family from names; here a local model folder's config.json says it.
    refusal = float16_refusal(model_path, gen.compute_type)
    if refusal:
        raise ValueError(refusal)
    return backend_class(gen.backend).prepare(gen, run, model_path, use_gpu)


__all__ = [
    "BACKENDS", "BackendUnavailable", "GeneratorBackend", "SamplingSettings", "backend_class", "make_backend",
    "prepare_backend",
]
