"""Encoding passages, generated queries (reduced to one sum per passage and language) and query sets."""

from xqg.encode.stage import TARGETS, run_encode

__all__ = ["TARGETS", "run_encode"]
