"""Fuse passage embeddings with their generated-query sums: e'(p) = (1 - alpha) e(p) + alpha sum_q e(q).

With tune.query_set configured, also the tuned fused set ('<fuse name>-tuned', the fusion jobs/tune.py chose).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xqg.cli import run_job  # noqa: E402


def stage(config, args):
    from xqg.fuse import run_fuse_sets

    return run_fuse_sets(config)


if __name__ == "__main__":
    raise SystemExit(run_job(__doc__, stage))
