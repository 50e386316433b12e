"""Ingest a passage corpus into hash-sharded Parquet and the query sets into Parquet (no Ray needed).

A thin entry point for `ray job submit --working-dir . -- python jobs/ingest.py --config FILE [...]`: the same
arguments and exit statuses as `xqg ingest` (xqg/stages/ingest.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the working dir's xqg, installed or not

from xqg.cli import job_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(job_main("ingest"))
