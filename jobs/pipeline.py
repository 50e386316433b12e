"""Run the whole xQG pipeline (ingest -> ... -> evaluate) for a config; complete stages are skipped."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xqg.cli import run_job  # noqa: E402
from xqg.pipeline import STAGES, run_pipeline  # noqa: E402


def add_arguments(parser):
    """--from STAGE starts there; --only STAGE[,STAGE] runs just those."""
    parser.add_argument("--from", dest="start", choices=STAGES, help="run this stage and every later one")
    parser.add_argument("--only", help=f"comma-separated stages to run, of: {','.join(STAGES)}")


def main(config, args):
    """Run the selected stages; the per-stage summaries print as they finish, the overall one at the end."""
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    return run_pipeline(config, start=args.start, only=only)[-1]


if __name__ == "__main__":
    raise SystemExit(run_job(__doc__, main, add_arguments))
