"""ingest: the passage corpus into hash-sharded Parquet and the query sets into Parquet (xqg/ingest/)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from xqg.stages import Stage, StageResult

if TYPE_CHECKING:
    from xqg.config import Config


def _run(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.ingest.stage import run_ingest

    return run_ingest(config)


STAGE = Stage(
    "ingest", order=10, run=_run, needs_ray=False,
    help="Ingest a passage corpus into hash-sharded Parquet and the query sets into Parquet.",
)
