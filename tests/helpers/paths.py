"""The paths tests read (the repository root, the bundled demo data, the demo config) and the demo text."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data" / "demo"  # the bundled demo data set (passages, train, dev, held-out questions)
DEMO_CONFIG = REPO / "configs" / "demo.yaml"


def demo_texts() -> list[str]:
    """Every passage, title and question of the bundled demo data (tokenizer training text)."""
    from xqg.models.resolve import read_text_files

    files = [str(DEMO / n) for n in ("passages.jsonl", "train.jsonl", "dev.jsonl")]
    return list(read_text_files([f for f in files if Path(f).exists()]))
