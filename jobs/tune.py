"""Choose the fusion (alpha, reduction) of a setting on the held-out query set tune.query_set (never dev).

A thin entry point for `ray job submit --working-dir . -- python jobs/tune.py --config FILE [...]`: the same
arguments and exit statuses as `xqg tune` (xqg/stages/tune.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the working dir's xqg, installed or not

from xqg.cli import job_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(job_main("tune"))
