"""Text of a run for training a from-scratch tokenizer: the ingested corpus, and the query sets."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from xqg.rundir import RunDir


def corpus_texts(run: RunDir, missing_ok: bool = False) -> Iterator[str]:
    """Non-empty titles and texts of the ingested corpus, shard by shard.

    A run without an ingested corpus raises FileNotFoundError, or yields nothing with missing_ok.
    """
    try:
        for table in run.iter_corpus(columns=["title", "text"]):
            for col in ("title", "text"):
                yield from (t for t in table.column(col).to_pylist() if t)
    except FileNotFoundError:
        if not missing_ok:
            raise


def run_texts(run: RunDir) -> Iterator[str]:
    """The corpus texts, then the non-empty questions of every query set of the run (<run>/queries/<set>)."""
    yield from corpus_texts(run)
    for name in run.listdir("queries"):
        rel = posixpath.join("queries", name)
        if run.parquet_files(rel):
            yield from (q for q in run.read_dir(rel, ["question"])["question"].to_pylist() if q)
