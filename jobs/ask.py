"""Ask a finished run's index questions in any language (in-process: no Ray cluster needed); see docs/ask.md.

A thin entry point: the same arguments and exit statuses as `xqg ask` (xqg/commands.py, xqg/ask/cli.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the working dir's xqg, installed or not

from xqg.cli import job_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(job_main("ask"))
