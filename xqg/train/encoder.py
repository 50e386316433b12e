"""The bi-encoder: query and passage encoders (shared or separate) over any HF encoder, CLS or mean pooling.

Saved as Hugging Face folders: <dir>/ (shared) or <dir>/query + <dir>/passage (separate), each with its
tokenizer, plus <dir>/xqg_dr.json telling the encode stage how to encode:
  {"pooling", "shared_encoder", "q_max_len", "p_max_len", "passage_format": "title_text_pair",
   "query_format": "text", "similarity": "dot"}
"title_text_pair": a passage is tokenized as the pair tokenizer(title, text) ([CLS] title [SEP] text [SEP] for
BERT, token types 0/1; an empty title gives [CLS] [SEP] text [SEP]), truncated longest-first to p_max_len, and
every tokenizer output (token_type_ids included) goes to the model, as Tevatron does.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

PASSAGE_FORMAT = "title_text_pair"
META_FILE = "xqg_dr.json"


def load_encoder(path: str, trust_remote_code: bool = False) -> nn.Module:
    """AutoModel without the pooler head (unused by CLS/mean pooling) when the architecture allows it."""
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(path, add_pooling_layer=False, trust_remote_code=trust_remote_code)
    except TypeError:
        # Architectures without a pooler option (e.g. DistilBERT) take no such argument.
        return AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """CLS (first token) or attention-masked mean of the last hidden states."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


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
        meta = {**meta, "pooling": self.pooling, "shared_encoder": self.shared}
        with open(os.path.join(out_dir, META_FILE), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1, sort_keys=True)


def dr_meta(pooling: str, shared: bool, q_max_len: int, p_max_len: int, base_model: str) -> dict[str, Any]:
    """The xqg_dr.json content the encode stage reads."""
    return {
        "pooling": pooling, "shared_encoder": shared, "q_max_len": q_max_len, "p_max_len": p_max_len,
        "passage_format": PASSAGE_FORMAT, "query_format": "text", "similarity": "dot", "base_model": base_model,
    }


def tokenize_queries(tokenizer: Any, queries: list[str], max_len: int) -> dict[str, torch.Tensor]:
    """Queries as the bi-encoder sees them: dynamic padding to the longest, truncated to max_len."""
    return tokenizer(queries, truncation=True, max_length=max_len, padding=True, return_tensors="pt")


def tokenize_passages(tokenizer: Any, titles: list[str], texts: list[str], max_len: int) -> dict[str, torch.Tensor]:
    """Passages in the "title_text_pair" format: tokenizer(title, text), longest-first truncation to max_len."""
    return tokenizer(
        titles, texts, truncation="longest_first", max_length=max_len, padding=True, return_tensors="pt"
    )
