"""Encode passages, generated queries (one summed vector per passage and language) and query sets."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xqg.cli import parse_languages, parse_shards, run_job  # noqa: E402


def add_arguments(p):
    p.add_argument("--target", choices=["passages", "generated", "queries", "all"], default="all")
    p.add_argument("--languages", help="generated target: only these languages, e.g. ar,fi")
    p.add_argument("--shards", help="only these corpus shards, e.g. 0-9,12")
    p.add_argument("--num-queries", type=int, help="generated target: first k queries of each list (embeddings/generated-k{k})")


def stage(config, args):
    from xqg.encode import run_encode

    if args.num_queries is not None:
        config.encode.num_queries = args.num_queries
    return run_encode(config, args.target, parse_languages(args.languages), parse_shards(args.shards))


if __name__ == "__main__":
    raise SystemExit(run_job(__doc__, stage, add_arguments))
