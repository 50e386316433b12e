"""Choose the fusion (alpha, reduction) of a setting on the held-out query set tune.query_set (never dev)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xqg.cli import run_job  # noqa: E402


def stage(config, args):
    from xqg.tune import run_tune

    return run_tune(config)


if __name__ == "__main__":
    raise SystemExit(run_job(__doc__, stage))
