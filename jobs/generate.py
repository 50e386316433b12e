"""Generate n queries per passage per language (xQG), optionally encoding them as they come (--encode).

A thin entry point for `ray job submit --working-dir . -- python jobs/generate.py --config FILE [...]`: the same
arguments and exit statuses as `xqg generate` (xqg/stages/generate.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the working dir's xqg, installed or not

from xqg.cli import job_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(job_main("generate"))
