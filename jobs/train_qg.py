"""Fine-tuning of the cross-lingual query generator (mT5) on Ray Train; resumes from its checkpoints.

A thin entry point for `ray job submit --working-dir . -- python jobs/train_qg.py --config FILE [...]`: the same
arguments and exit statuses as `xqg train_qg` (xqg/stages/train_qg.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the working dir's xqg, installed or not

from xqg.cli import job_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(job_main("train_qg"))
