"""Generation backends behind one interface: each is one module of this package that registers itself.

Looking a backend up imports every module of the package (they import their engines, torch, ctranslate2 or
vllm, only when a backend is built), so a new backend is a new file here and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xqg.generate.backends.base import (
    BACKENDS, BackendUnavailable, GeneratorBackend, SamplingSettings, float16_refusal, register,
)
from xqg.registry import import_package

if TYPE_CHECKING:
    from xqg.config import GenerateConfig
    from xqg.rundir import RunDir


def backend_names() -> list[str]:
    """The names of every backend of this package, sorted."""
    import_package(__name__)
    return BACKENDS.names()


def backend_class(name: str) -> type[GeneratorBackend]:
    """The backend class registered under name."""
    import_package(__name__)
    return BACKENDS.get(name)


def make_backend(name: str, model_path: str, sampling: SamplingSettings, **kwargs: Any) -> GeneratorBackend:
    """Load a backend (model loaded once): hf, ctranslate2 (pass ct2_path), vllm or any other registered one."""
    return backend_class(name)(model_path, sampling, **kwargs)


def prepare_backend(gen: GenerateConfig, run: RunDir, model_path: str, use_gpu: bool) -> dict[str, Any]:
    """Driver-side preparation of gen.backend before any actor starts -> extra actor constructor kwargs."""
    # The config check guessed the family from names; here a local model folder's config.json says it.
    refusal = float16_refusal(model_path, gen.compute_type)
    if refusal:
        raise ValueError(refusal)
    return backend_class(gen.backend).prepare(gen, run, model_path, use_gpu)


__all__ = [
    "BackendUnavailable", "GeneratorBackend", "SamplingSettings", "backend_class", "backend_names", "make_backend",
    "prepare_backend", "register",
]
