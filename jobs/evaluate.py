"""Score the baseline and +xQG runs (R@2kt / R@5kt, significance) and write the report.

A thin entry point for `ray job submit --working-dir . -- python jobs/evaluate.py --config FILE [...]`: the same
arguments and exit statuses as `xqg evaluate` (xqg/stages/evaluate.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the working dir's xqg, installed or not

from xqg.cli import job_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(job_main("evaluate"))
