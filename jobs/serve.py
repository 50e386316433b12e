"""Serve a finished run's indexes over HTTP (POST /search) with Ray Serve; see docs/ask.md.

A thin entry point: the same arguments and exit statuses as `xqg serve` (xqg/commands.py, xqg/ask/serve.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the working dir's xqg, installed or not

from xqg.cli import job_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(job_main("serve"))
