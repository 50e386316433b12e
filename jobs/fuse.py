"""Fuse passage embeddings with their generated-query sums: e'(p) = (1 - alpha) e(p) + alpha sum_q e(q).

A thin entry point for `ray job submit --working-dir . -- python jobs/fuse.py --config FILE [...]`: the same
arguments and exit statuses as `xqg fuse` (xqg/stages/fuse.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the working dir's xqg, installed or not

from xqg.cli import job_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(job_main("fuse"))
