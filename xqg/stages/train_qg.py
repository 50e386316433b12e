"""train_qg: fine-tune the cross-lingual query generator on Ray Train (xqg/train/qg.py)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from xqg.stages import Stage, StageResult
from xqg.summary import StageSummary

if TYPE_CHECKING:
    from xqg.config import Config


def _run(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.train.qg import run_train_qg

    return run_train_qg(config)


def _in_pipeline(config: Config) -> StageResult:
    if config.generate.model is not None:  # a given generator (e.g. the paper's released one) needs no training
        return StageSummary(stage="train_qg", message=f"skipped: generate.model is {config.generate.model!r}")
    return _run(config, argparse.Namespace())


STAGE = Stage(
    "train_qg", order=20, run=_run, in_pipeline=_in_pipeline,
    help="Fine-tune the cross-lingual query generator (mT5) on Ray Train; resumes from its checkpoints.",
)
