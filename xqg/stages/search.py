"""search: a query set against indexes, written as runs (xqg/search/)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from xqg.stages import Stage, StageResult

if TYPE_CHECKING:
    from xqg.config import Config


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", action="append",
                   help="index name (baseline, or a fused set's name); repeatable. "
                        "Default: baseline, plus fuse.name and its tuned set when they are indexed")
    p.add_argument("--queries", help="query set (default: search.query_set, else the first configured set)")


def _run(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.index.build import MANIFEST
    from xqg.layout import BASELINE, fused_set, index_dir, tuned_set
    from xqg.rundir import RunDir
    from xqg.search import run_search

    names = args.index
    if not names:
        names = [BASELINE]
        for fused in (fused_set(config), tuned_set(config)):  # the paper's fused set, then the tuned one
            if RunDir(config.run_dir).exists(index_dir(fused), MANIFEST):
                names.append(fused)
    return [run_search(config, n, args.queries) for n in names]


def _in_pipeline(config: Config) -> StageResult:
    """Every index the setting's evaluation compares, with the default query set."""
    from xqg.layout import index_names
    from xqg.search.stage import run_search

    return [run_search(config, name) for name in index_names(config)]


STAGE = Stage(
    "search", order=90, run=_run, add_arguments=_arguments, in_pipeline=_in_pipeline, per_setting=True,
    help="Search a query set against indexes; writes runs/<name>.tsv and runs/<name>.trec.",
)
