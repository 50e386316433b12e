"""Ingest: a passage corpus into hash-sharded Parquet, evaluation query sets into Parquet."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xqg.config import Config
    from xqg.summary import StageSummary


def run_ingest(config: Config) -> StageSummary:
    """Run the ingest stage (see xqg.ingest.stage.run_ingest)."""
    from xqg.ingest.stage import run_ingest as _run

    return _run(config)
