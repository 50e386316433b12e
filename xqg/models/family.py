"""Which family a model belongs to (encoder-decoder or decoder-only, T5 or not), read without the network.

The one place that probes a model's family: the generation backends, the generator's training and config
validation ask here. Imports nothing of xqg, so any module can use it without an import cycle.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# Hub names of encoder-decoder families, for guessing at config time without the network.
_ENCODER_DECODER_NAME = re.compile(r"(^|[/_-])(m?t5|mt0|byt5|umt5|flan-t5|bart|mbart|pegasus|marian|opus-mt|nllb|m2m100)", re.I)
# T5-family hub names (t5, mt5, umt5, byt5, flan-t5, mt0, long-t5) and config.json model types.
_T5_FAMILY_NAME = re.compile(r"(^|[/_.-])(u?m?t5|byt5|mt0|long-?t5)(?=$|[/_.-])", re.I)
_T5_MODEL_TYPES = {"t5", "mt5", "umt5", "byt5", "longt5"}


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


def is_t5_family(model: object) -> bool:
    """Whether a generator is a T5-family model (mT5, T5, umT5, ByT5, mT0, Flan-T5), without the network.

    A scratch spec, a local folder's config.json model_type, or else the hub name (`google/mt5-base`,
    `ielabgroup/xor-tydi-docTquery-mt5-base`, `bigscience/mt0-base`, ...).
    """
    if model is None:
        return False
    scratch = getattr(model, "scratch", None)
    if scratch is not None:
        return scratch == "mt5"
    name = str(model)
    cfg = Path(name) / "config.json"
    if cfg.is_file():
        try:
            model_type = json.loads(cfg.read_text(encoding="utf-8")).get("model_type", "")
        except (OSError, ValueError):
            model_type = ""
        if model_type:
            return str(model_type).lower() in _T5_MODEL_TYPES
    return bool(_T5_FAMILY_NAME.search(name))
