"""generate: n sampled queries per passage per language (xqg/generate/); with --encode, streamed into encode."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from xqg.jobargs import LANGUAGES, SHARDS
from xqg.stages import Stage, StageResult

if TYPE_CHECKING:
    from xqg.config import Config


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--languages", type=LANGUAGES,
                   help="comma-separated codes to generate for (default: config languages)")
    p.add_argument("--shards", type=SHARDS, help="corpus shards to work on, e.g. 0-9,12 (default: all)")
    p.add_argument("--encode", action="store_true",
                   help="also encode each unit's queries as soon as it is generated (one pipeline; both stages marked)")


def _run(config: Config, args: argparse.Namespace) -> StageResult:
    if args.encode:
        from xqg.generate.stage import run_generate_encode

        return run_generate_encode(config, args.languages, args.shards)
    from xqg.generate.stage import run_generate

    return run_generate(config, args.languages, args.shards)


STAGE = Stage(
    "generate", order=30, run=_run, add_arguments=_arguments,
    help="Generate n queries per passage per language (xQG).",
)
