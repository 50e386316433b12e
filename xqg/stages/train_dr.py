"""train_dr: contrastive fine-tuning of the bi-encoder on Ray Train (xqg/train/dr.py), once per setting."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from xqg.stages import Stage, StageResult
from xqg.summary import StageSummary

if TYPE_CHECKING:
    from xqg.config import Config


def _run(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.train.dr import run_train_dr

    return run_train_dr(config)


def _in_pipeline(config: Config) -> StageResult:
    if config.encode.model is not None:  # a given bi-encoder needs no training
        return StageSummary(stage="train_dr", message=f"skipped: encode.model is {config.encode.model!r}")
    return _run(config, argparse.Namespace())


STAGE = Stage(
    "train_dr", order=40, run=_run, in_pipeline=_in_pipeline, per_setting=True,
    help="Contrastive fine-tuning of the bi-encoder (xDR) on Ray Train; resumes from its checkpoints.",
)
