"""Search a query-embedding set against an index; writes runs/<name>.tsv and runs/<name>.trec."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xqg.cli import run_job  # noqa: E402


def add_arguments(p):
    p.add_argument("--index", action="append",
                   help="index name (baseline, or a fused set's name); repeatable. "
                        "Default: baseline, plus fuse.name when index/<fuse.name> exists")
    p.add_argument("--queries", help="query set (default: search.query_set, else the first configured set)")


def stage(config, args):
    from xqg.index.build import MANIFEST
    from xqg.layout import BASELINE, fused_set, index_dir
    from xqg.rundir import RunDir
    from xqg.search import run_search

    names = args.index
    if not names:
        names = [BASELINE]
        if RunDir(config.run_dir).exists(index_dir(fused_set(config)), MANIFEST):
            names.append(fused_set(config))
    return [run_search(config, n, args.queries) for n in names]


if __name__ == "__main__":
    raise SystemExit(run_job(__doc__, stage, add_arguments))
