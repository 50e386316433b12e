"""encode: passages, generated queries (summed per passage and language) and query sets (xqg/encode/)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from xqg.jobargs import LANGUAGES, SHARDS, positive_int
from xqg.stages import Stage, StageResult

if TYPE_CHECKING:
    from xqg.config import Config


def _arguments(p: argparse.ArgumentParser) -> None:
    # The default, all: one pool of encoder actors for passages, generated queries and query sets, so each actor
    # loads the encoder once, not once per target (three pools would start, scale out and load the models thrice).
    p.add_argument("--target", choices=["passages", "generated", "queries", "all"], default="all",
                   help="what to encode (default: all three with one pool of encoder actors)")
    p.add_argument("--languages", type=LANGUAGES, help="generated target: only these languages, e.g. ar,fi")
    p.add_argument("--shards", type=SHARDS, help="only these corpus shards, e.g. 0-9,12")
    p.add_argument("--num-queries", type=positive_int,
                   help="generated target: first k queries of each list (embeddings/generated-k{k})")


def _run(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.encode.stage import run_encode

    if args.num_queries is not None:
        config.encode.num_queries = args.num_queries
    return run_encode(config, args.target, args.languages, args.shards)


STAGE = Stage(
    "encode", order=50, run=_run, add_arguments=_arguments, per_setting=True,
    help="Encode passages, generated queries (one summed vector per passage and language) and query sets.",
)
