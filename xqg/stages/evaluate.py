"""evaluate: score the baseline and +xQG runs of every setting and write the report (xqg/evaluate/)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from xqg.stages import Stage, StageResult

if TYPE_CHECKING:
    from xqg.config import Config


def _run(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.evaluate.stage import run_evaluate

    return run_evaluate(config)  # one report of every setting


STAGE = Stage(
    "evaluate", order=100, run=_run, needs_ray=False,
    help="Score the baseline and +xQG runs (R@2kt / R@5kt, significance); write the report.",
)
