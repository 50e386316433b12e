"""Generate n queries per passage per language: python jobs/generate.py --config X [--languages sw,id] [--shards 0-9] [--encode]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xqg.cli import parse_languages, parse_shards, run_job  # noqa: E402


def add_arguments(p):
    p.add_argument("--languages", help="comma-separated codes to generate for (default: config languages)")
    p.add_argument("--shards", help="corpus shards to work on, e.g. 0-9,12 (default: all)")
    p.add_argument("--encode", action="store_true",
                   help="also encode each unit's queries as soon as it is generated (one pipeline; both stages marked)")


def stage(config, args):
    from xqg.generate.stage import run_generate

    if args.encode:
        from xqg.generate_encode import run_generate_encode

        return run_generate_encode(config, parse_languages(args.languages), parse_shards(args.shards))
    return run_generate(config, parse_languages(args.languages), parse_shards(args.shards))


if __name__ == "__main__":
    raise SystemExit(run_job("Generate queries for every passage (xQG).", stage, add_arguments))
