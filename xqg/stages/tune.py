"""tune: choose the fusion (alpha, reduction) on the held-out query set tune.query_set (xqg/tune.py)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from xqg.stages import Stage, StageResult

if TYPE_CHECKING:
    from xqg.config import Config


def _run(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.tune import run_tune

    return run_tune(config)  # a summary saying it is skipped when no tune.query_set is configured


STAGE = Stage(
    "tune", order=60, run=_run, per_setting=True,
    help="Choose the fusion (alpha, reduction) on the held-out query set tune.query_set, never dev.",
)
