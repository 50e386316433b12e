"""Write runs in XOR-TyDi's official prediction format (runs/<run>.xor.json) for evals/eval_xor_retrieve.py.

A thin entry point for `ray job submit --working-dir . -- python jobs/export.py --config FILE [...]`: the same
arguments and exit statuses as `xqg export` (xqg/commands.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the working dir's xqg, installed or not

from xqg.cli import job_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(job_main("export"))
