"""Contrastive fine-tuning of the bi-encoder (xDR) on Ray Train; resumes from its checkpoints.

A thin entry point for `ray job submit --working-dir . -- python jobs/train_dr.py --config FILE [...]`: the same
arguments and exit statuses as `xqg train_dr` (xqg/stages/train_dr.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the working dir's xqg, installed or not

from xqg.cli import job_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(job_main("train_dr"))
