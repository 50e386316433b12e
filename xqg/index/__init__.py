"""FAISS indexes over passage or fused embeddings, in shards with docid maps and a manifest."""

from xqg.index.build import BASELINE
from xqg.index.stage import run_index

__all__ = ["BASELINE", "run_index"]
