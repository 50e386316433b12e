"""Ask a finished run's index questions in any language (in-process: no Ray cluster needed); see docs/ask.md."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xqg.ask.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
