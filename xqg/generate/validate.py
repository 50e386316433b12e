"""Config-time checks for generation backends (fail at validation, not deep in a worker)."""

from __future__ import annotations

import json
import re
from pathlib import Path

# Hub names of encoder-decoder families vLLM cannot serve.
_ENCODER_DECODER_NAME = re.compile(r"(^|[/_-])(m?t5|mt0|byt5|umt5|flan-t5|bart|mbart|pegasus|marian|opus-mt|nllb|m2m100)", re.I)


def is_encoder_decoder(model: object) -> bool:
    """Best guess without the network: a scratch mT5, a local folder's config, or the hub name's family."""
    if model is None:
        return False
    scratch = getattr(model, "scratch", None)
    if scratch is not None:
        return scratch == "mt5"
    name = str(model)
    cfg = Path(name) / "config.json"
    if cfg.is_file():
        data = json.loads(cfg.read_text(encoding="utf-8"))
        return bool(data.get("is_encoder_decoder", False))
    return bool(_ENCODER_DECODER_NAME.search(name))


def check_vllm_model(generate_model: object, trained_model: object) -> None:
    """Raise ValueError when backend vllm is asked to run an encoder-decoder (mT5) generator."""
    # generate.model None means the run's own trained generator, which is built from train_qg.model.
    model = generate_model if generate_model is not None else trained_model
    if is_encoder_decoder(model):
        shown = getattr(model, "scratch", None) or model
        raise ValueError(
            f"generate.backend 'vllm' cannot run the encoder-decoder model {shown!r}: vLLM has no T5/mT5 "
            "support. Use generate.backend 'ctranslate2' (fast, CPU and GPU) or 'hf'; keep 'vllm' for "
            "decoder-only generators."
        )
