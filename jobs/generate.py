"""Generate n queries per passage per language: python jobs/generate.py --config X [--languages sw,id] [--shards 0-9]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xqg.cli import parse_languages, parse_shards, run_job  # noqa: E402


def add_arguments(p):
    p.add_argument("--languages", help="comma-separated codes to generate for (default: config languages)")
    p.add_argument("--shards", help="corpus shards to work on, e.g. 0-9,12 (default: all)")


def stage(config, args):
    from xqg.generate.stage import run_generate

    return run_generate(config, parse_languages(args.languages), parse_shards(args.shards))


if __name__ == "__main__":
    raise SystemExit(run_job("Generate queries for every passage (xQG).", stage, add_arguments))
