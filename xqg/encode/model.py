"""Which bi-encoder encodes what (driver side): encode.* settings, else the model's xqg_dr.json, else defaults.

The model is the run's trained bi-encoder (<run>/models/dr) or encode.model (a hub model, a local folder, a
"run:" ref or a from-scratch spec). Whatever it is, its xqg_dr.json, when it has one, says how it was trained
(pooling, lengths, passage format, shared or separate encoders), and encoding follows it. The passage format
is never changed silently: an explicit encode.passage_format that differs from the recorded one is a config
error naming both (encoding passages in another format than the one the passage encoder was trained with
degrades retrieval without any other sign); a model without xqg_dr.json (a hub model such as the paper's
released xDR, trained by Tevatron) is encoded in Tevatron's format, title_text_concat, unless
encode.passage_format says otherwise.

The model code itself (loading, pooling, tokenizing, inference) is xqg.models.encoder, shared with training;
this module imports it (and so torch) only when a spec is resolved.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from dataclasses import asdict, dataclass
from typing import Any

from xqg.config import Config, ConfigError
from xqg.layout import dr_name
from xqg.models.texts import run_texts
from xqg.rundir import RunDir

log = logging.getLogger(__name__)

DR_DIR = posixpath.join("models", dr_name())  # the main setting's


@dataclass(frozen=True)
class EncoderSpec:
    """Everything an actor needs to encode like the bi-encoder was trained (plain data: it travels to actors)."""

    query_model: str
    passage_model: str
    pooling: str = "cls"
    q_max_len: int = 32
    p_max_len: int = 128
    passage_format: str = "title_text_concat"
    dtype: str = "auto"
    trust_remote_code: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (constructor kwargs of actors, marker info)."""
        return asdict(self)


def model_meta(path: str, run: RunDir) -> tuple[dict[str, Any] | None, str]:
    """(xqg_dr.json of a model folder, where it was read): a "run:" ref or a local folder; (None, "") for a hub
    model or a folder without one."""
    from xqg.models.encoder import META_FILE, read_meta
    from xqg.models.resolve import RUN_PREFIX

    if path.startswith(RUN_PREFIX):
        rel = path[len(RUN_PREFIX):]
        found = read_meta(run, rel)
        return found, run.path(rel, META_FILE)
    file = os.path.join(path, META_FILE)
    if os.path.isfile(file):
        with open(file, encoding="utf-8") as f:
            return json.load(f), file
    return None, ""


def resolve_passage_format(explicit: str | None, recorded: str | None, where: str) -> str:
    """The passage format to encode with: the recorded one (how the model was trained), an explicit
    encode.passage_format only where it agrees or nothing is recorded, else Tevatron's title_text_concat."""
    from xqg.models.encoder import PASSAGE_FORMAT, PASSAGE_FORMATS

    if explicit is not None and recorded is not None and explicit != recorded:
        raise ConfigError(
            f"encode.passage_format={explicit} differs from passage_format={recorded} recorded in {where}, the "
            f"format the bi-encoder was trained with: encoding passages in another format silently degrades "
            f"retrieval. Remove encode.passage_format to encode as trained ({recorded}), or retrain with "
            f"train_dr.passage_format={explicit}"
        )
    fmt = explicit or recorded or PASSAGE_FORMAT
    if fmt not in PASSAGE_FORMATS:
        where = where or "encode.passage_format"
        raise ValueError(f"passage_format {fmt!r} (in {where}) is not one of {PASSAGE_FORMATS}")
    return fmt


def load_encoder_spec(config: Config, run: RunDir) -> EncoderSpec:
    """Resolve models, pooling, max lengths and passage format: encode.* > the model's xqg_dr.json > defaults
    (an encode.passage_format that contradicts xqg_dr.json is an error, see resolve_passage_format)."""
    from xqg.models.encoder import META_FILE, POOLINGS, read_meta

    enc = config.encode
    meta: dict[str, Any] | None
    if enc.model is not None:
        from xqg.models.resolve import resolve_model

        base = resolve_model(enc.model, run, lambda: run_texts(run))
        meta, where = model_meta(base, run)
    else:
        dr_dir = posixpath.join("models", dr_name(config.setting))  # the setting's own bi-encoder
        meta = read_meta(run, dr_dir)
        where = run.path(dr_dir, META_FILE)
        if meta is None:
            raise FileNotFoundError(
                f"no bi-encoder in {run.uri}: {posixpath.join(dr_dir, META_FILE)} is missing "
                "(run jobs/train_dr.py first, or set encode.model)"
            )
        from xqg.models.resolve import run_ref

        # A non-local run passes a "run:" ref: each actor localizes it on its own node.
        base = run.path(dr_dir) if run.is_local else run_ref(dr_dir)
    meta = meta or {}
    if meta and not meta.get("shared_encoder", True):
        query, passage = posixpath.join(base, "query"), posixpath.join(base, "passage")
    else:
        query = passage = base
    pooling = enc.pooling or meta.get("pooling") or "cls"
    if enc.pooling and meta.get("pooling") and enc.pooling != meta["pooling"]:
        log.warning("encode.pooling=%s differs from the training pooling %s", enc.pooling, meta["pooling"])
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
    fmt = resolve_passage_format(enc.passage_format, meta.get("passage_format"), where)
    if enc.passage_format is None and not meta.get("passage_format"):
        log.info("encode: %s records no passage format: passages as %s (Tevatron's)", enc.model, fmt)
    # Lengths set explicitly in this run's config win; else those the model was trained with; else the defaults.
    explicit = config.model_fields_set
    q_max_len = config.q_max_len if "q_max_len" in explicit else int(meta.get("q_max_len", config.q_max_len))
    p_max_len = config.p_max_len if "p_max_len" in explicit else int(meta.get("p_max_len", config.p_max_len))
    return EncoderSpec(
        query_model=query, passage_model=passage, pooling=pooling, q_max_len=q_max_len, p_max_len=p_max_len,
        passage_format=fmt, dtype=enc.dtype, trust_remote_code=enc.trust_remote_code,
    )
