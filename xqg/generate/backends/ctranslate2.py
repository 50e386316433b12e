"""CTranslate2: the fast path for mT5 on CPU and GPU (Translator), also decoder-only models (Generator)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xqg.generate.backends.base import (
    BackendUnavailable, GeneratorBackend, SamplingSettings, register, t5_safe_compute_type,
)
from xqg.models.family import is_t5_family

if TYPE_CHECKING:
    from xqg.config import GenerateConfig
    from xqg.rundir import RunDir


class CT2Backend(GeneratorBackend):
    """translate_batch / generate_batch with random top-k sampling and num_hypotheses=n.

    CTranslate2 seeds a thread-local random generator once, on a worker thread's first sample, from the
    global seed; reseeding later has no effect. So each unit sets the seed and, if the model has sampled
    before, loads a fresh model (new worker threads): a unit's queries then do not depend on which units
    the actor ran earlier.

    Deterministic per unit, not per row: CTranslate2 (4.x) takes no per-request seed, and a batch's rows draw
    from one stream, so a passage's queries also depend on batch_size, chunking and a retry alone after a failed
    batch. Redoing a unit with the same settings gives the same queries; use hf (per-row streams) or vllm
    (per-request seeds) where a passage's queries must not depend on how it was batched.
    """

    name = "ctranslate2"

    def __init__(self, model_path: str, sampling: SamplingSettings, *, ct2_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(model_path, sampling, **kwargs)
        try:
            import ctranslate2
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise BackendUnavailable("generate.backend 'ctranslate2' needs the ctranslate2 package") from e
        self._ct2 = ctranslate2
        if is_t5_family(model_path):  # CTranslate2's 'auto' on GPU is int8_float16: mT5 overflows in it
            self.compute_type = t5_safe_compute_type(self.compute_type, self.device, self._bf16_ok())
        if ct2_path is None:
            raise ValueError("the ctranslate2 backend needs ct2_path (CT2Backend.prepare or xqg.generate.convert)")
        self.ct2_path = ct2_path
        self._model = self._load()
        self._used = False

    @classmethod
    def prepare(cls, gen: GenerateConfig, run: RunDir, model_path: str, use_gpu: bool) -> dict[str, Any]:
        """Convert the generator once, on the driver, before any actor starts -> {"ct2_path": ...}."""
        from xqg.generate.convert import convert_for_run

        return {"ct2_path": convert_for_run(run, model_path, gen.compute_type, gen.trust_remote_code)}

    @classmethod
    def localize_kwargs(cls, prepared: dict[str, Any], run: RunDir) -> dict[str, Any]:
        """ct2_path as this node's local copy (a non-local run publishes it as a "run:" ref)."""
        from xqg.models.resolve import localize

        ct2_path = prepared.get("ct2_path")
        return {**prepared, "ct2_path": localize(ct2_path, run)} if ct2_path else prepared

    def _bf16_ok(self) -> bool:
        """Whether this actor's GPU runs bfloat16 in CTranslate2 (compute capability 8 and up)."""
        if not self.device.startswith("cuda"):
            return False
        try:
            return "bfloat16" in self._ct2.get_supported_compute_types("cuda", 0)
        except (RuntimeError, ValueError):  # pragma: no cover - no CUDA driver
            return False

    def _load(self) -> Any:
        """A Translator (encoder-decoder) or Generator (decoder-only) on this actor's device."""
        cls = self._ct2.Translator if self.encoder_decoder else self._ct2.Generator
        device = "cuda" if self.device.startswith("cuda") else "cpu"
        return cls(
            self.ct2_path, device=device, device_index=0, compute_type=self.compute_type,
            inter_threads=1, intra_threads=self.threads or 0,
        )

    def begin_unit(self, seed: int) -> None:
        """Seed CTranslate2 for this unit, with fresh worker threads if the old ones have sampled."""
        self._ct2.set_random_seed(seed & 0xFFFFFFFF)
        if self._used:
            self._model = None  # join the old worker threads before starting new ones
            self._model = self._load()
            self._used = False

    def generate(self, token_ids: list[list[int]], seeds: list[int]) -> list[list[str]]:
        """One CTranslate2 call for the batch (seeded per unit in begin_unit)."""
        s = self.sampling
        tokens = [self.tokenizer.convert_ids_to_tokens(ids) for ids in token_ids]
        self._used = True
        if self.encoder_decoder:
            results = self._model.translate_batch(
                tokens, beam_size=1, num_hypotheses=s.num_queries, sampling_topk=s.top_k,
                sampling_temperature=s.temperature, max_decoding_length=s.max_new_tokens,
                min_decoding_length=s.min_new_tokens or 1, max_input_length=0,
            )
            seqs = [self.tokenizer.convert_tokens_to_ids(h) for r in results for h in r.hypotheses]
        else:
            results = self._model.generate_batch(
                tokens, beam_size=1, num_hypotheses=s.num_queries, sampling_topk=s.top_k,
                sampling_temperature=s.temperature, max_length=s.max_new_tokens, min_length=s.min_new_tokens,
                include_prompt_in_result=False,
            )
            seqs = [ids for r in results for ids in r.sequences_ids]
        n = s.num_queries
        texts = self.decode(seqs)
        return [texts[i * n:(i + 1) * n] for i in range(len(token_ids))]

    def describe(self) -> dict[str, Any]:
        """Backend, device, compute type and the converted model folder."""
        return {**super().describe(), "ct2_path": self.ct2_path}


register(CT2Backend)
