"""The bi-encoder: which model encodes what (models/dr/xqg_dr.json or encode.model), and texts -> vectors."""

from __future__ import annotations

import itertools
import logging
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from xqg.config import Config
from xqg.rundir import RunDir

log = logging.getLogger(__name__)

DR_META = posixpath.join("models", "dr", "xqg_dr.json")
PASSAGE_FORMATS = ("title_text_pair", "title_text_concat", "text")
POOLINGS = ("cls", "mean")


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


def run_texts(run: RunDir) -> Iterator[str]:
    """Titles, passages and questions of the run: tokenizer text for a scratch encoder."""
    for table in run.iter_corpus(columns=["title", "text"]):
        for col in ("title", "text"):
            yield from (t for t in table.column(col).to_pylist() if t)
    for name in run.listdir("queries"):
        if run.parquet_files(posixpath.join("queries", name)):
            yield from (q for q in run.read_dir(posixpath.join("queries", name), ["question"])["question"].to_pylist() if q)


def load_encoder_spec(config: Config, run: RunDir) -> EncoderSpec:
    """Resolve models, pooling, max lengths and passage format: encode.* > models/dr/xqg_dr.json > defaults."""
    enc = config.encode
    meta: dict[str, Any] = {}
    if enc.model is not None:
        from xqg.models.resolve import resolve_model

        path = resolve_model(enc.model, run, lambda: run_texts(run))
        query = passage = path
        pooling = enc.pooling or "cls"
    else:
        if not run.exists(DR_META):
            raise FileNotFoundError(
                f"no bi-encoder in {run.uri}: {DR_META} is missing (run jobs/train_dr.py first, or set encode.model)"
            )
        meta = run.read_json(DR_META)
        from xqg.models.resolve import run_ref

        # A non-local run passes a "run:" ref: each actor localizes it on its own node.
        base = run.path("models", "dr") if run.is_local else run_ref("models/dr")
        if meta.get("shared_encoder", True):
            query = passage = base
        else:
            query, passage = posixpath.join(base, "query"), posixpath.join(base, "passage")
        pooling = enc.pooling or meta.get("pooling", "cls")
        if enc.pooling and meta.get("pooling") and enc.pooling != meta["pooling"]:
            log.warning("encode.pooling=%s differs from the training pooling %s", enc.pooling, meta["pooling"])
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
    fmt = enc.passage_format or meta.get("passage_format") or "title_text_pair"
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


def tokenize_passages(tokenizer: Any, titles: list[str], texts: list[str], max_len: int, fmt: str) -> dict[str, list]:
    """Token ids of passages as the bi-encoder's training formats them (Tevatron: tokenizer(title, text))."""
    if fmt == "title_text_pair":
        enc = tokenizer(titles, texts, truncation=True, max_length=max_len)
    elif fmt == "title_text_concat":
        enc = tokenizer([f"{a} {b}".strip() for a, b in zip(titles, texts)], truncation=True, max_length=max_len)
    elif fmt == "text":
        enc = tokenizer(texts, truncation=True, max_length=max_len)
    else:
        raise ValueError(f"passage_format {fmt!r} is not one of {PASSAGE_FORMATS}")
    return _model_inputs(tokenizer, enc)


def tokenize_queries(tokenizer: Any, texts: list[str], max_len: int) -> dict[str, list]:
    """Token ids of queries (no padding: batches are padded after length sorting)."""
    return _model_inputs(tokenizer, tokenizer(texts, truncation=True, max_length=max_len))


def _model_inputs(tokenizer: Any, enc: Any) -> dict[str, list]:
    # attention_mask is rebuilt from the lengths when padding; keep only what the model needs besides it.
    names = [n for n in tokenizer.model_input_names if n != "attention_mask" and n in enc]
    return {n: enc[n] for n in names}


def autocast_dtype(dtype: str, device_type: str) -> Any:
    """The torch autocast dtype: bf16 (fp16 on older cards) on GPU for 'auto', none (float32) on CPU."""
    import torch

    if dtype == "float32":
        return None
    if dtype == "auto":
        if device_type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, dtype)


def load_model(path: str, trust_remote_code: bool = False) -> Any:
    """AutoModel without the (unused) pooler head when the architecture has one."""
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(path, add_pooling_layer=False, trust_remote_code=trust_remote_code)
    except TypeError:  # architectures without a pooler do not take the argument
        return AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)


def pool(hidden: Any, mask: Any, pooling: str) -> Any:
    """CLS (first token) or attention-masked mean of the last hidden states, in float32."""
    hidden = hidden.float()
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class Encoder:
    """One model + tokenizer on one device; encodes token-id lists in length-sorted, dynamically padded batches."""

    def __init__(
        self, path: str, pooling: str = "cls", dtype: str = "auto", trust_remote_code: bool = False,
        device: str | None = None, threads: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = load_model(path, trust_remote_code).to(self.device).eval()
        self.amp_dtype = autocast_dtype(dtype, self.device.type)
        self.pooling = pooling
        self.dim = int(self.model.config.hidden_size)
        self.pad_id = int(self.tokenizer.pad_token_id or 0)

    def batches(self, features: dict[str, list], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (row indices, float32 embeddings) per batch, longest texts first."""
        import torch

        ids = features["input_ids"]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            inputs = self._pad(features, idx, lengths[idx])
            with torch.inference_mode(), torch.autocast(
                self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
            ):
                hidden = self.model(**inputs).last_hidden_state
                emb = pool(hidden, inputs["attention_mask"], self.pooling)
            yield idx, emb.cpu().numpy()

    def encode(self, features: dict[str, list], batch_size: int) -> np.ndarray:
        """All rows' embeddings in input order, float32 [n, dim]."""
        out = np.zeros((len(features["input_ids"]), self.dim), dtype=np.float32)
        for idx, emb in self.batches(features, batch_size):
            out[idx] = emb
        return out

    def _pad(self, features: dict[str, list], idx: np.ndarray, lens: np.ndarray) -> dict[str, Any]:
        """Right-pad the batch to its own longest row (vectorised scatter into a filled array)."""
        import torch

        mask = np.arange(int(lens.max()))[None, :] < lens[:, None]
        total = int(lens.sum())
        out: dict[str, Any] = {}
        for name, rows in features.items():
            flat = np.fromiter(itertools.chain.from_iterable(rows[i] for i in idx), dtype=np.int64, count=total)
            arr = np.full(mask.shape, self.pad_id if name == "input_ids" else 0, dtype=np.int64)
            arr[mask] = flat
            out[name] = torch.from_numpy(arr).to(self.device, non_blocking=True)
        out["attention_mask"] = torch.from_numpy(mask.astype(np.int64)).to(self.device, non_blocking=True)
        return out


def chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    """(start, stop) ranges covering n rows in steps of size."""
    for start in range(0, n, size):
        yield start, min(n, start + size)
