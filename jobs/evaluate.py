"""Score the baseline and +xQG runs (R@2kt / R@5kt, significance) and write the report."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xqg.cli import run_job  # noqa: E402
from xqg.evaluate.stage import run_evaluate  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run_job(__doc__, lambda config, args: run_evaluate(config), needs_ray=False))
