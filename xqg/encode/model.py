"""Which bi-encoder encodes what (driver side): encode.* settings, else <run>/models/dr/xqg_dr.json, else defaults.

The model code itself (loading, pooling, tokenizing, inference) is xqg.models.encoder, shared with training;
this module imports it (and so torch) only when a spec is resolved.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import asdict, dataclass
from typing import Any

from xqg.config import Config
from xqg.models.texts import run_texts
from xqg.rundir import RunDir

log = logging.getLogger(__name__)

DR_DIR = posixpath.join("models", "dr")


@dataclass(frozen=True)
class EncoderSpec:
    """Everything an actor needs to encode like the bi-encoder was trained (plain data: it travels to actors)."""

    query_model: str
    passage_model: str
    pooling: str = "cls"
    q_max_len: int = 32
    p_max_len: int = 128
    passage_format: str = "title_text_pair"
    dtype: str = "auto"
    trust_remote_code: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (constructor kwargs of actors, marker info)."""
        return asdict(self)


def load_encoder_spec(config: Config, run: RunDir) -> EncoderSpec:
    """Resolve models, pooling, max lengths and passage format: encode.* > models/dr/xqg_dr.json > defaults."""
    from xqg.models.encoder import META_FILE, PASSAGE_FORMAT, PASSAGE_FORMATS, POOLINGS, read_meta

    enc = config.encode
    meta: dict[str, Any] = {}
    if enc.model is not None:
        from xqg.models.resolve import resolve_model

        path = resolve_model(enc.model, run, lambda: run_texts(run))
        query = passage = path
        pooling = enc.pooling or "cls"
    else:
        found = read_meta(run, DR_DIR)
        if found is None:
            raise FileNotFoundError(
                f"no bi-encoder in {run.uri}: {posixpath.join(DR_DIR, META_FILE)} is missing "
                "(run jobs/train_dr.py first, or set encode.model)"
            )
        meta = found
        from xqg.models.resolve import run_ref

        # A non-local run passes a "run:" ref: each actor localizes it on its own node.
        base = run.path("models", "dr") if run.is_local else run_ref(DR_DIR)
        if meta.get("shared_encoder", True):
            query = passage = base
        else:
            query, passage = posixpath.join(base, "query"), posixpath.join(base, "passage")
        pooling = enc.pooling or meta.get("pooling", "cls")
        if enc.pooling and meta.get("pooling") and enc.pooling != meta["pooling"]:
            log.warning("encode.pooling=%s differs from the training pooling %s", enc.pooling, meta["pooling"])
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
    fmt = enc.passage_format or meta.get("passage_format") or PASSAGE_FORMAT
    if fmt not in PASSAGE_FORMATS:
        raise ValueError(f"passage_format {fmt!r} is not one of {PASSAGE_FORMATS}")
    # Lengths set explicitly in this run's config win; else those the model was trained with; else the defaults.
    explicit = config.model_fields_set
    q_max_len = config.q_max_len if "q_max_len" in explicit else int(meta.get("q_max_len", config.q_max_len))
    p_max_len = config.p_max_len if "p_max_len" in explicit else int(meta.get("p_max_len", config.p_max_len))
    return EncoderSpec(
        query_model=query, passage_model=passage, pooling=pooling, q_max_len=q_max_len, p_max_len=p_max_len,
        passage_format=fmt, dtype=enc.dtype, trust_remote_code=enc.trust_remote_code,
    )
