"""Fine-tuning of the cross-lingual query generator (mT5) on Ray Train; resumes from its checkpoints.

    python jobs/train_qg.py --config configs/demo.yaml [--set train_qg.epochs=2 ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xqg.cli import run_job  # noqa: E402
from xqg.train.qg import run_train_qg  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run_job(__doc__.splitlines()[0], lambda config, args: run_train_qg(config)))
