"""Searching a query-embedding set against a sharded index: one Ray task per index shard, merged top-k, run files."""

from xqg.search.stage import run_search

__all__ = ["run_search"]
