"""fuse: passage embeddings fused with their generated-query sums (xqg/fuse.py, xqg/tune.py)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from xqg.stages import Stage, StageResult

if TYPE_CHECKING:
    from xqg.config import Config


def _run(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.tune import run_fuse_sets

    return run_fuse_sets(config)


STAGE = Stage(
    "fuse", order=70, run=_run, per_setting=True,
    help="Fuse passage embeddings with their generated-query sums: "
    "e'(p) = (1 - alpha) e(p) + alpha sum_q e(q); with tune.query_set also the tuned fused set.",
)
