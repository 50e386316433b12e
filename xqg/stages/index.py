"""index: FAISS indexes of the baseline and the fused sets (xqg/index/)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from xqg.stages import Stage, StageResult

if TYPE_CHECKING:
    from xqg.config import Config


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", action="append",
                   help="'passages' (= the baseline index) or a fused set's name; repeatable. "
                        "Default: baseline, plus fuse.name and its tuned set when they are fused")


def _run(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.index import run_index
    from xqg.layout import BASELINE, FUSE, fused_set, tuned_set
    from xqg.rundir import RunDir

    names = args.name
    if not names:
        names = [BASELINE]
        done = RunDir(config.run_dir).done_units(FUSE)
        for fused in (fused_set(config), tuned_set(config)):  # the paper's fused set, then the tuned one
            if any(u.startswith(f"{fused}/") for u in done):
                names.append(fused)
    return [run_index(config, n) for n in names]


def _in_pipeline(config: Config) -> StageResult:
    """Every index the setting's evaluation compares, whether or not it was fused before."""
    from xqg.index.stage import run_index
    from xqg.layout import index_names

    return [run_index(config, name) for name in index_names(config)]


STAGE = Stage(
    "index", order=80, run=_run, add_arguments=_arguments, in_pipeline=_in_pipeline, per_setting=True,
    help="Build FAISS indexes: the baseline over the passage embeddings and the fused set's.",
)
