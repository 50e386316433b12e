"""Build FAISS indexes: 'baseline' over embeddings/passages and the fused set (fuse.name) when it exists."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xqg.cli import run_job  # noqa: E402


def add_arguments(p):
    p.add_argument("--name", action="append",
                   help="'passages' (= the baseline index) or a fused set's name; repeatable. "
                        "Default: baseline, plus fuse.name when fused/<fuse.name> exists")


def stage(config, args):
    from xqg.index import run_index
    from xqg.layout import BASELINE, FUSE, fused_set
    from xqg.rundir import RunDir

    names = args.name
    if not names:
        names = [BASELINE]
        if any(u.startswith(f"{fused_set(config)}/") for u in RunDir(config.run_dir).done_units(FUSE)):
            names.append(fused_set(config))
    return [run_index(config, n) for n in names]


if __name__ == "__main__":
    raise SystemExit(run_job(__doc__, stage, add_arguments))
