"""Write runs in XOR-TyDi's official prediction format (runs/<run>.xor.json) for evals/eval_xor_retrieve.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xqg.cli import run_job  # noqa: E402


def add_arguments(p):
    p.add_argument("--index", action="append",
                   help="index whose run to export (baseline, or a fused set's name); repeatable. "
                        "Default: baseline and fuse.name, the two runs evaluate scores")
    p.add_argument("--queries", help="query set of the run (default: search.query_set, else the first configured set)")


def stage(config, args):
    from xqg.evaluate.export import export_runs

    return export_runs(config, args.index, args.queries)


if __name__ == "__main__":
    raise SystemExit(run_job(__doc__, stage, add_arguments, needs_ray=False))
