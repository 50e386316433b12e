"""Ingest a passage corpus into hash-sharded Parquet and the query sets into Parquet (no Ray needed)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xqg.cli import run_job  # noqa: E402
from xqg.ingest.stage import run_ingest  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run_job(__doc__, lambda config, args: run_ingest(config), needs_ray=False))
