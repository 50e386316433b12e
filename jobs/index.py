"""Build FAISS indexes: 'baseline' over embeddings/passages and the fused set (fuse.name) when it exists.

A thin entry point for `ray job submit --working-dir . -- python jobs/index.py --config FILE [...]`: the same
arguments and exit statuses as `xqg index` (xqg/stages/index.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the working dir's xqg, installed or not

from xqg.cli import job_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(job_main("index"))
