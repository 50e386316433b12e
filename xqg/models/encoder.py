"""The bi-encoder, one definition for training and encoding: what trains is what encodes.

- loading: any Hugging Face encoder (AutoModel) without its pooler head (unused by CLS/mean pooling);
- pooling: CLS (first token) or attention-masked mean of the last hidden states;
- tokenizing (as Tevatron, the paper's bi-encoder trainer, at the commit ielab/xQG4xDR used): a query is one
  segment; a passage in one of PASSAGE_FORMATS:
    "title_text_concat" tokenizer(f"{title} {text}"): one segment, [CLS] title text [SEP] for BERT; Tevatron's
                        format (its passage_field_separator " "), the default of training and encoding;
    "title_text_pair"   tokenizer(title, text): [CLS] title [SEP] text [SEP] for BERT, token types 0/1 (an empty
                        title gives [CLS] [SEP] text [SEP]), longest-first truncation (beyond the paper);
    "text"              tokenizer(text);
  one-segment inputs (queries, "title_text_concat", "text") get no token_type_ids, as Tevatron's
  encode_plus(return_token_type_ids=False): the model takes its default, all zeros; a pair gets the
  tokenizer's segment ids;
- BiEncoder: the nn.Module training fine-tunes (query and passage encoders, shared or separate);
- Encoder: inference on one device, length-sorted batches padded to their own longest row;
- the meta file <model dir>/xqg_dr.json, telling the encode stage how the model was trained:
    {"pooling", "shared_encoder", "q_max_len", "p_max_len", "passage_format", "query_format": "text",
     "similarity": "dot", "base_model"}

A saved bi-encoder is <dir>/ (shared) or <dir>/query + <dir>/passage (separate), each with its tokenizer, plus
<dir>/xqg_dr.json.
"""

from __future__ import annotations

import itertools
import json
import os
import posixpath
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from xqg.rundir import RunDir

META_FILE = "xqg_dr.json"
PASSAGE_FORMATS = ("title_text_pair", "title_text_concat", "text")
PASSAGE_FORMAT = "title_text_concat"  # Tevatron's format: the default of training and of encoding a model
# that records none (a hub model)
POOLINGS = ("cls", "mean")


# ---- loading, pooling, tokenizing -----------------------------------------------------------------------


def load_encoder(path: str, trust_remote_code: bool = False) -> nn.Module:
    """AutoModel without the pooler head (unused by CLS/mean pooling) when the architecture allows it."""
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(path, add_pooling_layer=False, trust_remote_code=trust_remote_code)
    except TypeError:
        # Architectures without a pooler option (e.g. DistilBERT) take no such argument.
        return AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """CLS (first token) or attention-masked mean of the last hidden states (in the dtype of `hidden`)."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def passage_texts(titles: list[str], texts: list[str], fmt: str) -> tuple[list[str], ...]:
    """The tokenizer's text arguments for passages in a format: (titles, texts) for a pair, else one list."""
    if fmt == "title_text_pair":
        return titles, texts
    if fmt == "title_text_concat":
        return ([f"{a} {b}".strip() for a, b in zip(titles, texts)],)
    if fmt == "text":
        return (texts,)
    raise ValueError(f"passage_format {fmt!r} is not one of {PASSAGE_FORMATS}")


def _tokenize(tokenizer: Any, args: tuple[list[str], ...], max_len: int, padded: bool) -> Any:
    """padded: tensors padded to the longest row, attention mask included (a training batch);
    else token-id lists of the model inputs besides the attention mask, which Encoder rebuilds when it pads.
    One segment (one text list): no token_type_ids, as Tevatron; a pair: the tokenizer's segment ids."""
    types = {} if len(args) > 1 else {"return_token_type_ids": False}
    if padded:
        return tokenizer(*args, truncation=True, max_length=max_len, padding=True, return_tensors="pt", **types)
    enc = tokenizer(*args, truncation=True, max_length=max_len, **types)
    return {n: enc[n] for n in tokenizer.model_input_names if n != "attention_mask" and n in enc}


def tokenize_queries(tokenizer: Any, queries: list[str], max_len: int, padded: bool = True) -> Any:
    """Queries as the bi-encoder sees them, truncated to max_len (padded: see _tokenize)."""
    return _tokenize(tokenizer, (queries,), max_len, padded)


def tokenize_passages(
    tokenizer: Any, titles: list[str], texts: list[str], max_len: int, fmt: str = PASSAGE_FORMAT,
    padded: bool = True,
) -> Any:
    """Passages in a passage format, longest-first truncation to max_len (padded: see _tokenize)."""
    return _tokenize(tokenizer, passage_texts(titles, texts, fmt), max_len, padded)


# ---- the meta file --------------------------------------------------------------------------------------


def dr_meta(
    pooling: str, shared: bool, q_max_len: int, p_max_len: int, base_model: str, passage_format: str = PASSAGE_FORMAT
) -> dict[str, Any]:
    """The xqg_dr.json content of a training (the encode stage reads it back with read_meta)."""
    return {
        "pooling": pooling, "shared_encoder": shared, "q_max_len": q_max_len, "p_max_len": p_max_len,
        "passage_format": passage_format, "query_format": "text", "similarity": "dot", "base_model": base_model,
    }


def write_meta(out_dir: str, meta: dict[str, Any]) -> None:
    """<out_dir>/xqg_dr.json (a local folder: a checkpoint being written)."""
    with open(os.path.join(out_dir, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, sort_keys=True)


def read_meta(run: RunDir, model_rel: str) -> dict[str, Any] | None:
    """xqg_dr.json of a bi-encoder folder of the run (e.g. "models/dr"); None when there is none."""
    rel = posixpath.join(model_rel, META_FILE)
    return run.read_json(rel) if run.exists(rel) else None


# ---- training -------------------------------------------------------------------------------------------


class BiEncoder(nn.Module):
    """Query and passage encoders; the passage encoder is the query encoder when shared."""

    def __init__(self, query_model: nn.Module, passage_model: nn.Module | None, pooling: str = "cls") -> None:
        super().__init__()
        self.query_model = query_model
        self.passage_model = passage_model  # None = shared
        self.pooling = pooling

    @property
    def shared(self) -> bool:
        """True when one encoder encodes both sides."""
        return self.passage_model is None

    def encode(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled representations of a tokenized batch (token types as the tokenizer made them, like Tevatron)."""
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = model(input_ids=input_ids, attention_mask=attention_mask, **extra)
        return pool(out.last_hidden_state, attention_mask, self.pooling)

    def forward(
        self, q_ids: torch.Tensor, q_mask: torch.Tensor, p_ids: torch.Tensor, p_mask: torch.Tensor,
        q_types: torch.Tensor | None = None, p_types: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(query reps, passage reps) in one forward call, as DDP wants it."""
        q = self.encode(self.query_model, q_ids, q_mask, q_types)
        passage_model = self.passage_model if self.passage_model is not None else self.query_model
        return q, self.encode(passage_model, p_ids, p_mask, p_types)

    @classmethod
    def from_pretrained(
        cls, path: str, pooling: str, shared: bool, trust_remote_code: bool = False
    ) -> BiEncoder:
        """A base model (one folder) or a saved bi-encoder (folder with query/ and passage/) as a BiEncoder."""
        q_dir, p_dir = os.path.join(path, "query"), os.path.join(path, "passage")
        if os.path.isdir(q_dir) and os.path.isdir(p_dir):
            query = load_encoder(q_dir, trust_remote_code)
            passage = load_encoder(p_dir, trust_remote_code)
            return cls(query, None if shared else passage, pooling)
        query = load_encoder(path, trust_remote_code)
        passage = None if shared else load_encoder(path, trust_remote_code)
        return cls(query, passage, pooling)

    def save(self, out_dir: str, tokenizer: Any, meta: dict[str, Any]) -> None:
        """save_pretrained (safetensors) of the encoder(s) and tokenizer, plus xqg_dr.json."""
        os.makedirs(out_dir, exist_ok=True)
        if self.shared:
            self.query_model.save_pretrained(out_dir)
            tokenizer.save_pretrained(out_dir)
        else:
            for name, model in (("query", self.query_model), ("passage", self.passage_model)):
                model.save_pretrained(os.path.join(out_dir, name))  # type: ignore[union-attr]
                tokenizer.save_pretrained(os.path.join(out_dir, name))
        write_meta(out_dir, {**meta, "pooling": self.pooling, "shared_encoder": self.shared})


# ---- inference ------------------------------------------------------------------------------------------


def autocast_dtype(dtype: str, device_type: str) -> Any:
    """The torch autocast dtype: bf16 (fp16 on older cards) on GPU for 'auto', none (float32) on CPU."""
    if dtype == "float32":
        return None
    if dtype == "auto":
        if device_type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, dtype)


class Encoder:
    """One model + tokenizer on one device; encodes token-id lists (tokenize_* with padded=False) in
    length-sorted, dynamically padded batches; embeddings are pooled in float32."""

    def __init__(
        self, path: str, pooling: str = "cls", dtype: str = "auto", trust_remote_code: bool = False,
        device: str | None = None, threads: int | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = load_encoder(path, trust_remote_code).to(self.device).eval()
        self.amp_dtype = autocast_dtype(dtype, self.device.type)
        self.pooling = pooling
        self.dim = int(self.model.config.hidden_size)
        self.pad_id = int(self.tokenizer.pad_token_id or 0)

    def batches(self, features: dict[str, list], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (row indices, float32 embeddings) per batch, longest texts first."""
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
                emb = pool(hidden.float(), inputs["attention_mask"], self.pooling)
            yield idx, emb.cpu().numpy()

    def encode(self, features: dict[str, list], batch_size: int) -> np.ndarray:
        """All rows' embeddings in input order, float32 [n, dim]."""
        out = np.zeros((len(features["input_ids"]), self.dim), dtype=np.float32)
        for idx, emb in self.batches(features, batch_size):
            out[idx] = emb
        return out

    def _pad(self, features: dict[str, list], idx: np.ndarray, lens: np.ndarray) -> dict[str, Any]:
        """Right-pad the batch to its own longest row (vectorised scatter into a filled array)."""
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
