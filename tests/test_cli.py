"""The job convention: exit codes and messages of jobs/<stage>.py, stage selection of the pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xqg.cli import parse_languages, parse_shards
from xqg.config import ConfigError
from xqg.pipeline import STAGES, select_steps

REPO = Path(__file__).resolve().parent.parent


def _job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_bad_config_key_exits_2_and_names_the_key(tmp_path: Path) -> None:
    out = _job("jobs/ingest.py", "--config", "configs/demo.yaml", "--set", f"run_dir={tmp_path}", "--set", "corpus.shards=3")
    assert out.returncode == 2
    assert "corpus.shards: unknown key" in out.stderr


def test_missing_input_exits_nonzero_with_a_message(tmp_path: Path) -> None:
    out = _job("jobs/ingest.py", "--set", f"run_dir={tmp_path}", "--set", f"corpus.path={tmp_path / 'nope.jsonl'}")
    assert out.returncode != 0 and "nope.jsonl" in out.stderr


def test_stage_selection() -> None:
    assert [s.stage for s in select_steps()] == list(STAGES)
    assert [s.stage for s in select_steps(start="fuse")] == ["fuse", "index", "search", "evaluate"]
    assert [s.stage for s in select_steps(only=["evaluate", "ingest"])] == ["ingest", "evaluate"]
    with pytest.raises(ValueError, match="unknown stage 'fusion'"):
        select_steps(only=["fusion"])


def test_selectors() -> None:
    assert parse_shards("0-3,7") == {0, 1, 2, 3, 7}
    assert parse_languages(" SW,id") == ["sw", "id"]
    with pytest.raises(ConfigError, match="--shards"):
        parse_shards("a-b")
    with pytest.raises(ConfigError, match="unknown language code"):
        parse_languages("sw,klingon")
